"""Harnesses that start real protocol peers on 127.0.0.1 for the integration tests."""
