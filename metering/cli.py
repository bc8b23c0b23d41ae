"""Metering's commands for ``hwmarket``: meter, usage, samples import (and collect, bmc)."""

from __future__ import annotations

import datetime as dt
import json
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from marketplace.cli import fails_cleanly, store
from marketplace.cli_reservations import parse_time
from marketplace.console import OutputFormat, emit, emit_one, err
from marketplace.errors import InvalidInput, Problem

samples_app = typer.Typer(
    help="Power samples: import telemetry exported from elsewhere.", no_args_is_help=True
)


def period_bounds(period: str) -> tuple[dt.datetime, dt.datetime]:
    """``2026-11`` -> the month; ``2026-11-05`` -> the day; in UTC."""
    try:
        if len(period) == 7:
            start = dt.datetime.strptime(period, "%Y-%m").replace(tzinfo=dt.UTC)
            end = (start + dt.timedelta(days=32)).replace(day=1)
        else:
            start = dt.datetime.strptime(period, "%Y-%m-%d").replace(tzinfo=dt.UTC)
            end = start + dt.timedelta(days=1)
    except ValueError:
        raise InvalidInput(
            [Problem("--period", "expected YYYY-MM or YYYY-MM-DD", period)]
        ) from None
    return start, end


def read_sample_file(path: Path) -> pd.DataFrame:
    """A CSV or Parquet file of samples (host, time, watts and optional columns)."""
    if not path.exists():
        raise InvalidInput("no such file", source=str(path))
    try:
        if path.suffix.lower() == ".parquet" or path.is_dir():
            return pd.read_parquet(path)
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise InvalidInput(f"cannot read samples: {exc}", source=str(path)) from None
    raise InvalidInput(
        f"unknown file type {path.suffix!r}; accepted: .csv, .parquet", source=str(path)
    )


bmc_app = typer.Typer(
    help="Simulated BMCs that speak real IPMI, for tests, demos and benchmarks.",
    no_args_is_help=True,
)


def parse_duration(text: str, name: str) -> float:
    """Seconds from ``10s``, ``5m``, ``1h``, ``1d`` or a plain number of seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        value = float(text[:-1]) * units[text[-1]] if text and text[-1] in units else float(text)
    except ValueError:
        value = -1
    if not value > 0:
        raise InvalidInput(
            [Problem(name, "expected a positive duration such as 10s, 5m, 1h", text)]
        )
    return value


def simulated_inventory(endpoints: list[Any], sku: str, site: str) -> str:
    """An inventory file (hosts only) for simulated BMCs, with this project's keys."""
    lines = ["hosts:"]
    for ep in endpoints:
        lines.append(
            f"  - {{id: {ep.host}, sku: {sku}, site: {site}, bmc: {{protocol: {ep.protocol}, "
            f"address: {ep.address}, port: {ep.port}, username: {json.dumps(ep.username)}, "
            f"password: {json.dumps(ep.password)}}}}}"
        )
    return "\n".join(lines) + "\n"


def register(app: typer.Typer) -> None:
    """Add metering's commands to ``app``."""

    @app.command("meter")
    @fails_cleanly
    def meter_command(
        start: Annotated[str, typer.Option("--start", help="ISO 8601 (whole UTC hour)")],
        end: Annotated[str, typer.Option("--end", help="ISO 8601 (whole UTC hour)")],
    ) -> None:
        """Compute and store the usage ledger for a period (idempotent; late data -> new versions)."""
        from metering.ledger import meter

        t0, t1 = parse_time(start, "--start"), parse_time(end, "--end")
        with Progress(
            TextColumn("metering"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} h"),
            TimeRemainingColumn(),
            console=err,
        ) as bar:
            task = bar.add_task("meter", total=max(1, int((t1 - t0).total_seconds() // 3600)))
            report = meter(
                store(), t0, t1, progress=lambda done, total: bar.update(task, completed=done)
            )
        err.print(
            f"{report.hours} hours: {report.new_rows} new rows, {report.new_versions} new versions, {report.unchanged} unchanged"
        )

    @app.command("usage")
    @fails_cleanly
    def usage_command(
        period: Annotated[str, typer.Option("--period", help="YYYY-MM or YYYY-MM-DD (UTC)")],
        fmt: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.table,
        idle: Annotated[
            bool, typer.Option("--idle/--no-idle", help="include the operator's idle rows")
        ] = True,
        as_of: Annotated[
            str | None, typer.Option("--as-of", help="the ledger as known at this time")
        ] = None,
    ) -> None:
        """Export the usage ledger of a period (newest version of each row)."""
        from metering.ledger import usage

        t0, t1 = period_bounds(period)
        frame = usage(
            store(),
            t0,
            t1,
            include_idle=idle,
            as_of=parse_time(as_of, "--as-of") if as_of else None,
        )
        if fmt is OutputFormat.csv:
            frame.to_csv(sys.stdout, index=False, date_format="%Y-%m-%dT%H:%M:%SZ")
        elif fmt is OutputFormat.json:
            sys.stdout.write(frame.to_json(orient="records", date_format="iso", indent=2) + "\n")
        else:
            shown = frame.assign(hour=frame["hour"].dt.strftime("%Y-%m-%d %H:%M")).round(3)
            emit(
                json.loads(shown.to_json(orient="records")),
                fmt,
                title=f"usage {period}",
                columns=[
                    "reservation_id",
                    "customer",
                    "host",
                    "hour",
                    "reserved_s",
                    "energy_wh",
                    "energy_uncertainty_wh",
                    "quality",
                    "version",
                ],
            )

    @samples_app.command("import")
    @fails_cleanly
    def samples_import(
        files: Annotated[list[Path], typer.Argument(help="CSV or Parquet files")],
    ) -> None:
        """Load telemetry exported from elsewhere (host, time, watts, optional columns)."""
        from metering.ledger import check_samples, write_samples

        frames = []
        problems: list[Problem] = []
        for path in files:
            try:
                frames.append(check_samples(read_sample_file(path), source=str(path)))
            except InvalidInput as exc:
                problems += exc.problems
        if problems:
            raise InvalidInput(problems)
        n = write_samples(store(), pd.concat(frames, ignore_index=True))
        err.print(f"{n} samples offered (already stored ones skipped)")

    app.add_typer(samples_app, name="samples")

    @app.command("collect")
    @fails_cleanly
    def collect_command(
        once: Annotated[bool, typer.Option("--once", help="poll every BMC once and exit")] = False,
        every: Annotated[str, typer.Option("--every", help="poll interval: 10s, 1m ...")] = "10s",
        duration: Annotated[
            str, typer.Option("--duration", help="how long to keep polling: 1h ...")
        ] = "1h",
        site: Annotated[
            str | None, typer.Option("--site", help="only the hosts of this site")
        ] = None,
        host: Annotated[
            list[str] | None, typer.Option("--host", help="only these hosts (repeatable)")
        ] = None,
        timeout: Annotated[float, typer.Option("--timeout", help="seconds per read")] = 5.0,
        retries: Annotated[
            int, typer.Option("--retries", help="quick retries after a timeout")
        ] = 1,
        parquet: Annotated[
            Path | None,
            typer.Option("--parquet", help="write to a Parquet dataset here instead of the store"),
        ] = None,
        fmt: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.table,
    ) -> None:
        """Poll the BMCs' power (IPMI DCMI / SDR, Redfish) into the store or a Parquet dataset.

        With --once, --format json prints one object per host (host, ok, watts, source, error,
        elapsed_s); otherwise the run's totals (rounds, polled, ok, failed, on_time_ratio ...).
        `hwmarket bmc status` shows each BMC's last success and last error afterwards.
        """
        from metering.collector import Collector, ParquetSink
        from metering.ledger import StoreSink, poll_targets

        targets = poll_targets(store(), site=site, hosts=host)
        if not targets:
            raise InvalidInput("no hosts with a BMC to poll (see `hwmarket host list`)")
        sink = ParquetSink(parquet) if parquet else StoreSink(store())
        with Collector(targets, sink=sink, timeout_s=timeout, retries=retries) as collector:
            if once:
                results = collector.poll_once()
                records = [r.public() for r in results]
                emit(
                    records,
                    fmt,
                    title="Power",
                    columns=["host", "ok", "watts", "source", "error", "elapsed_s"],
                )
                if not any(r.ok for r in results):
                    raise typer.Exit(1)
                return
            every_s = parse_duration(every, "--every")
            duration_s = parse_duration(duration, "--duration")
            if fmt is OutputFormat.table:
                _run_live(collector, every_s, duration_s, len(targets))
                return
            stats = collector.run(every_s, duration_s)
            emit_one(
                {
                    "hosts": len(targets),
                    "every_s": every_s,
                    "rounds": stats.rounds,
                    "due": stats.due,
                    "polled": stats.polled,
                    "ok": stats.ok,
                    "failed": stats.failed,
                    "skipped_backoff": stats.skipped_backoff,
                    "skipped_busy": stats.skipped_busy,
                    "on_time_ratio": round(stats.on_time_ratio, 6),
                    "causes": stats.causes,
                },
                fmt,
            )

    @bmc_app.command("status")
    @fails_cleanly
    def bmc_status_command(
        fmt: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.table,
    ) -> None:
        """Each polled BMC's status: method, last success, last error, consecutive failures."""
        from metering.ledger import bmc_status

        frame = bmc_status(store())
        records = [
            {str(k): (None if pd.isna(v) else v) for k, v in row.items()}
            for row in frame.to_dict("records")
        ]
        emit(records, fmt, title="BMC status", columns=list(frame.columns))

    @bmc_app.command("simulate")
    @fails_cleanly
    def bmc_simulate(
        count: Annotated[int, typer.Option("--count", help="how many BMCs")] = 10,
        base_port: Annotated[
            int, typer.Option("--base-port", help="first UDP port on 127.0.0.1")
        ] = 9623,
        sku: Annotated[
            str, typer.Option("--sku", help="SKU slug for the printed inventory")
        ] = "c3.small.x86",
        site: Annotated[
            str, typer.Option("--site", help="site code for the printed inventory")
        ] = "sjc1",
        password: Annotated[str | None, typer.Option("--password", help="default: random")] = None,
        seed: Annotated[int, typer.Option("--seed")] = 0,
        inventory_out: Annotated[
            Path | None, typer.Option("--inventory-out", help="also write the inventory here")
        ] = None,
    ) -> None:
        """Run simulated IPMI BMCs on loopback (DCMI power from SPECpower curves) until Ctrl-C,
        printing an inventory file that reaches them."""
        from metering.simulator import start_fleet

        try:
            fleet = start_fleet(count, base_port, password=password, seed=seed)
        except OSError as exc:
            raise InvalidInput(
                [
                    Problem(
                        "--base-port",
                        f"cannot listen on 127.0.0.1:{base_port}..{base_port + count - 1}: {exc.strerror}",
                        base_port,
                    )
                ]
            ) from None
        try:
            text = simulated_inventory(fleet.endpoints, sku, site)
            if inventory_out:
                inventory_out.write_text(text)
            sys.stdout.write(text)
            sys.stdout.flush()
            err.print(
                f"{count} BMCs on 127.0.0.1:{base_port}-{base_port + count - 1}; Ctrl-C stops them"
            )
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            fleet.stop()

    app.add_typer(bmc_app, name="bmc")


def _run_live(collector: Any, every_s: float, duration_s: float, n_hosts: int) -> None:
    from rich.live import Live
    from rich.table import Table

    def table(k: int, rs: Any, st: Any) -> Table:
        t = Table(title=f"collecting every {every_s:g} s ({n_hosts} BMCs)")
        for col in ("round", "polled", "ok", "failed", "backing off", "late/busy", "on time"):
            t.add_column(col, justify="right")
        t.add_row(
            str(k + 1),
            str(st.polled),
            str(st.ok),
            str(st.failed),
            str(rs.skipped_backoff),
            str(rs.skipped_busy),
            f"{st.on_time_ratio:.1%}",
        )
        return t

    with Live(console=err, refresh_per_second=2) as live:
        stats = collector.run(
            every_s, duration_s, on_round=lambda k, rs, st: live.update(table(k, rs, st))
        )
    causes = ", ".join(f"{k}: {v}" for k, v in sorted(stats.causes.items())) or "none"
    err.print(
        f"{stats.rounds} rounds, {stats.ok} samples, {stats.failed} failed polls ({causes}); on time {stats.on_time_ratio:.2%}"
    )


__all__ = ["period_bounds", "read_sample_file", "register"]
