"""``hwmarket stripe sync|enqueue-meters|status``: the Stripe outbox from the command line.

The Stripe client comes from the environment only: ``STRIPE_API_KEY`` (required),
``STRIPE_API_BASE`` (e.g. a fake's URL) and ``HWMARKET_STRIPE_FLAVOR`` (stripe, fake,
localstripe). Progress goes to stderr; the report to stdout (``--format json`` for programs).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from enum import StrEnum
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from marketplace.cli import fails_cleanly, store
from marketplace.console import OutputFormat, emit, emit_one, err
from marketplace.errors import InvalidInput, Problem

stripe_app = typer.Typer(
    help="Stripe: send the outbox (invoice items, invoices, meter events) exactly once.",
    no_args_is_help=True,
)


class SyncMode(StrEnum):
    items = "items"
    meters = "meters"
    all = "all"


def _when(text: str, name: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            [Problem(name, "expected an ISO time such as 2026-11-01T00:00Z", text)], "command line"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def register(app: typer.Typer) -> None:
    """Add the ``stripe`` commands to ``app``."""

    @stripe_app.command("sync")
    @fails_cleanly
    def stripe_sync(
        mode: Annotated[SyncMode, typer.Option("--mode", help="items, meters or all")] = (
            SyncMode.all
        ),
        concurrency: Annotated[int, typer.Option(help="Stripe calls in flight at once")] = 4,
        rate_limit: Annotated[
            float | None,
            typer.Option(help="at most this many requests per second (live 100, test mode 25)"),
        ] = 20.0,
        retries: Annotated[int, typer.Option(help="retries of a call on network errors")] = 3,
        fmt: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.table,
    ) -> None:
        """Reconcile with Stripe, then send what it lacks; exit 1 if anything failed."""
        from billing.stripe_sync import client_from_env, flavor_from_env, sync

        client = client_from_env(max_network_retries=retries)
        flavor = flavor_from_env()
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=False,
        ) as bar:
            tasks: dict[str, TaskID] = {}

            def progress(phase: str, done: int, total: int) -> None:
                if phase not in tasks:
                    tasks[phase] = bar.add_task(phase, total=total)
                bar.update(tasks[phase], completed=done, total=total)

            report = sync(
                store(),
                client,
                mode=mode.value,
                progress=progress,
                flavor=flavor,
                concurrency=concurrency,
                rate_limit=rate_limit,
            )
        record = dataclasses.asdict(report)
        if fmt is OutputFormat.table:
            for key in ("failures", "problems", "skipped"):
                for line in record.pop(key):
                    err.print(f"[bold]{key[:-1]}:[/] ", end="", highlight=False)
                    err.out(line, highlight=False)
        emit_one(record, fmt, title="Stripe sync")
        if not report.ok:
            raise typer.Exit(1)

    @stripe_app.command("enqueue-meters")
    @fails_cleanly
    def stripe_enqueue_meters(
        start: Annotated[str, typer.Option(help="first hour, ISO (UTC if no zone)")],
        end: Annotated[str, typer.Option(help="end hour (excluded), ISO")],
    ) -> None:
        """Queue the ledger's hours as meter events (and adjustments of changed values)."""
        from billing.stripe_sync import enqueue_meter_events

        added = enqueue_meter_events(
            store(), _when(start, "--start"), _when(end, "--end"), now=dt.datetime.now(dt.UTC)
        )
        err.print(f"{added} outbox rows queued")

    @stripe_app.command("status")
    @fails_cleanly
    def stripe_status(
        fmt: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.table,
    ) -> None:
        """How many outbox rows of each kind are pending, sent, confirmed."""
        from billing.stripe_outbox import state_counts

        counts = state_counts(store())
        kinds = sorted({k for k, _ in counts})
        rows = [
            {"kind": k} | {s: counts.get((k, s), 0) for s in ("pending", "sent", "confirmed")}
            for k in kinds
        ]
        emit(rows, fmt, columns=["kind", "pending", "sent", "confirmed"], title="Stripe outbox")

    app.add_typer(stripe_app, name="stripe")


__all__ = ["register"]
