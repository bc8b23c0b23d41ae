"""What machine a benchmark ran on: printed with every benchmark's figures.

>>> from bench.machine import describe_machine
>>> text = describe_machine()  # prints it too
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
from typing import TextIO


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20  # the kernel reports KiB
    except OSError:
        pass
    return None


def _usable_cores() -> int:
    # A container may be limited to fewer cores than the host has; benchmarks share what it gets.
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _os_name() -> str:
    try:
        return platform.freedesktop_os_release().get("PRETTY_NAME", platform.system())
    except OSError:
        return platform.system()


def describe_machine(*, file: TextIO | None = sys.stdout) -> str:
    """Print (to ``file``; ``None`` prints nothing) and return the machine a benchmark runs on.

    CPU model from /proc/cpuinfo, usable and total cores, memory, Python, OS and the UTC date.
    """
    memory = _memory_gib()
    lines = [
        f"machine: {_cpu_model()}, {_usable_cores()} usable cores of {os.cpu_count()}, "
        + (f"{memory:.1f} GiB memory" if memory is not None else "memory unknown"),
        f"python:  {platform.python_implementation()} {platform.python_version()} "
        f"on {_os_name()}, kernel {platform.release()} ({platform.machine()})",
        f"date:    {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
    ]
    text = "\n".join(lines)
    if file is not None:
        print(text, file=file)
    return text


if __name__ == "__main__":
    describe_machine()
