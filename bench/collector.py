"""Collector benchmark: poll a simulated fleet on loopback every 10 s and count what is on time.

    python -m bench.collector                      # 1,000 BMCs, every 10 s, for 2 minutes
    python -m bench.collector --fleet 3000 --duration 60 --sim-processes 4
    python -m bench.collector --search             # grow the fleet until on-time drops below 99.5 %

The simulated BMCs (real IPMI over UDP, DCMI power) run in separate processes, so the collector's
CPU is measured on its own; their CPU is printed too, to show which side limits. In the same run,
the usual scripted way (one ``ipmitool`` process per poll) is measured against one BMC.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

from bench.machine import describe_machine
from metering.bmc import BmcTarget
from metering.collector import Collector, PollTarget
from metering.demo_ports import free_udp_block

PASSWORD = "bench-secret"


@dataclass
class SimProcesses:
    procs: list[subprocess.Popen[str]]

    def cpu_s(self) -> float:
        total = 0.0
        tick = os.sysconf("SC_CLK_TCK")
        for p in self.procs:
            with open(f"/proc/{p.pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def stop(self) -> None:
        for p in self.procs:
            if p.stdin:
                p.stdin.close()
            p.terminate()
        for p in self.procs:
            p.wait(10)


def start_sims(fleet: int, processes: int) -> tuple[SimProcesses, int]:
    base = free_udp_block(fleet)
    per = -(-fleet // processes)
    procs = []
    for i in range(processes):
        count = min(per, fleet - i * per)
        if count <= 0:
            break
        proc = subprocess.Popen(
            [sys.executable, "-m", "metering.simulator", "--count", str(count), "--base-port", str(base + i * per), "--password", PASSWORD, "--seed", str(i)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        procs.append(proc)
    for proc in procs:
        assert proc.stdout is not None
        json.loads(proc.stdout.readline())
    return SimProcesses(procs), base


def measure(
    fleet: int,
    every: float,
    duration: float,
    processes: int,
    workers: int | None,
    spread: bool = True,
) -> dict[str, float]:
    sims, base = start_sims(fleet, processes)
    try:
        targets = [
            PollTarget(f"sim-{i:05d}", BmcTarget("ipmi", "127.0.0.1", base + i, "admin", PASSWORD))
            for i in range(fleet)
        ]
        with Collector(targets, timeout_s=5.0, retries=1, workers=workers) as collector:
            # One round to log in and detect methods, outside the measurement (spread like the
            # rounds that follow: 10,000 logins at once would only measure the burst)
            collector.run(every, every, spread=spread)
            sim0, cpu0, wall0 = sims.cpu_s(), time.process_time(), time.perf_counter()
            stats = collector.run(every, duration, spread=spread)
            cpu1, wall1, sim1 = time.process_time(), time.perf_counter(), sims.cpu_s()
        return {
            "fleet": fleet,
            "polls": stats.polled,
            "ok": stats.ok,
            "failed": stats.failed,
            "on_time_ratio": stats.on_time_ratio,
            "collector_cpu_ms_per_poll": (cpu1 - cpu0) / max(stats.polled, 1) * 1e3,
            "collector_cpu_share": (cpu1 - cpu0) / (wall1 - wall0),
            "simulator_cpu_share": (sim1 - sim0) / (wall1 - wall0),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    finally:
        sims.stop()


def ipmitool_cpu_ms(runs: int = 50) -> tuple[float, float] | None:
    """CPU per poll of the usual scripted way, one ``ipmitool`` process per poll: (the
    ipmitool processes' own CPU, the script's CPU to start them and read their output)."""
    tool = shutil.which("ipmitool")
    if tool is None:
        return None
    sims, base = start_sims(1, 1)
    try:
        t0, p0 = os.times(), time.process_time()
        for _ in range(runs):
            subprocess.run(
                [tool, "-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p", str(base),
                 "-U", "admin", "-P", PASSWORD, "dcmi", "power", "reading"],
                check=True,
                capture_output=True,
            )  # fmt: skip
        t1, p1 = os.times(), time.process_time()
        children = (t1.children_user - t0.children_user) + (t1.children_system - t0.children_system)
        return children / runs * 1e3, (p1 - p0) / runs * 1e3
    finally:
        sims.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fleet", type=int, default=1000)
    parser.add_argument("--every", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument(
        "--sim-processes",
        type=int,
        default=None,
        help="processes serving the simulated BMCs (default: one per 500 BMCs, at least 2; "
        "pyghmi's select() cannot watch more than ~1,000 sockets in one process)",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="collector threads (default: min(256, fleet))"
    )
    parser.add_argument(
        "--search",
        action="store_true",
        help="grow the fleet (x1, 2, 5, 10, 20, 50) until on-time < 99.5 %%",
    )
    parser.add_argument(
        "--burst",
        action="store_true",
        help="poll every BMC at the start of each interval (default: spread over it)",
    )
    args = parser.parse_args()
    describe_machine()
    schedule = "all at the start of each interval" if args.burst else "spread over the interval"
    print(
        f"polls:   every {args.every:g} s for {args.duration:g} s, {schedule}; "
        f"simulated BMCs in {args.sim_processes or 'one process per 500 BMCs (at least 2)'}"
    )
    tool_ms = ipmitool_cpu_ms()
    sizes = [args.fleet]
    if args.search:
        sizes = [args.fleet * m for m in (1, 2, 5, 10, 20, 50)]
    print(
        f"{'fleet':>6} {'polls':>7} {'failed':>6} {'on time':>8} {'CPU/poll':>9} {'collector CPU':>13} {'sim CPU':>8} {'peak RSS':>9}"
    )
    for fleet in sizes:
        r = measure(
            fleet,
            args.every,
            args.duration,
            args.sim_processes or max(2, -(-fleet // 500)),
            args.workers,
            not args.burst,
        )
        print(
            f"{fleet:>6} {r['polls']:>7.0f} {r['failed']:>6.0f} {r['on_time_ratio']:>8.2%} {r['collector_cpu_ms_per_poll']:>7.3f}ms"
            f" {r['collector_cpu_share']:>12.0%} {r['simulator_cpu_share']:>7.0%} {r['peak_rss_mib']:>6.0f}MiB",
            flush=True,
        )
        if tool_ms is not None and fleet == sizes[0]:
            own, spawn = tool_ms
            ours = r["collector_cpu_ms_per_poll"]
            print(
                f"       one ipmitool process per poll: {own:.1f} ms CPU in ipmitool + {spawn:.1f} ms"
                f" in the script starting it = {own + spawn:.1f} ms -> {(own + spawn) / ours:.0f}x"
                f" the collector's CPU per poll ({own / ours:.0f}x counting ipmitool alone)"
            )
        if r["on_time_ratio"] < 0.995:
            print(
                f"       on-time fell below 99.5 % at {fleet} BMCs (the simulator processes use {r['simulator_cpu_share']:.0%} of a core: see which side limits)"
            )
            break


if __name__ == "__main__":
    main()
