"""hwmarket metering: BMC power collection, energy integration, the usage ledger."""
