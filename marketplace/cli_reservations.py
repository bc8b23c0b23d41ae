"""Reservation commands of ``hwmarket``: quote, reserve, reservation ..., capacity, host
maintenance / fail. Registered on the app by :mod:`marketplace.cli`."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import typer

from marketplace import booking, lifecycle
from marketplace.capacity import capacity as capacity_of
from marketplace.console import OutputFormat, emit, emit_one, err
from marketplace.errors import InvalidInput, Problem
from marketplace.query import SkuQuery
from marketplace.reservations import Request, Reservation

reservation_app = typer.Typer(
    help="List, show, cancel, extend and release reservations.", no_args_is_help=True
)

FormatOpt = Annotated[OutputFormat, typer.Option("--format", "-f", help="table, json or csv")]
NowOpt = Annotated[
    str | None, typer.Option("--now", hidden=True, help="pretend the time is this (simulations)")
]


def parse_time(value: str | None, name: str) -> dt.datetime:
    """An aware UTC datetime from ISO 8601 text (``Z`` or an offset required) or ``now``."""
    if value is None or value == "now":
        return booking.utcnow()
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            [Problem(name, "not an ISO 8601 time such as 2026-12-01T09:00Z", value)]
        ) from None
    if parsed.tzinfo is None:
        raise InvalidInput(
            [Problem(name, "needs a time zone: add Z (UTC) or an offset like +01:00", value)]
        )
    return parsed.astimezone(dt.UTC)


def reservation_record(r: Reservation, now: dt.datetime) -> dict[str, Any]:
    return {
        "id": r.id,
        "customer": r.customer,
        "state": r.state_at(now).value,
        "sku": f"{r.sku}@{r.sku_revision}",
        "site": r.site,
        "count": r.count,
        "start": r.start.isoformat(),
        "end": r.end.isoformat(),
        "hosts": r.hosts,
    }


def _request(
    customer: str,
    count: int,
    sku: str | None,
    where: str | None,
    site: list[str] | None,
    metro: list[str] | None,
    region: list[str] | None,
    start: str,
    end: str,
    latest_start: str | None,
    min_count: int | None,
    term: str,
) -> Request:
    places = [*(site or []), *(metro or []), *(region or [])]
    data: dict[str, Any] = {
        "customer": customer,
        "count": count,
        "sku": sku,
        "where": SkuQuery.parse(where) if where else None,
        "places": places,
        "start": parse_time(start, "--start"),
        "end": parse_time(end, "--end"),
        "latest_start": parse_time(latest_start, "--latest-start") if latest_start else None,
        "min_count": min_count,
        "term": term,
    }
    return booking.as_request(data)


SkuOpt = Annotated[str | None, typer.Option("--sku", help="a SKU slug (or slug@revision)")]
WhereOpt = Annotated[
    str | None,
    typer.Option("--where", help="any SKU meeting a query, e.g. 'accelerator.kind=gpu gpus>=8'"),
]
SiteOpt = Annotated[
    list[str] | None, typer.Option("--site", help="a site (repeat for a preference list)")
]
MetroOpt = Annotated[list[str] | None, typer.Option("--metro", help="a metro (repeatable)")]
RegionOpt = Annotated[list[str] | None, typer.Option("--region", help="a region (repeatable)")]
CountOpt = Annotated[int, typer.Option("--count", "-n", help="how many machines")]
StartOpt = Annotated[str, typer.Option("--start", help="ISO 8601 with Z/offset, or 'now'")]
EndOpt = Annotated[str, typer.Option("--end", help="ISO 8601 with Z/offset (exclusive)")]
CustomerOpt = Annotated[str, typer.Option("--customer", help="customer id")]
LatestOpt = Annotated[
    str | None, typer.Option("--latest-start", help="flexible start: latest acceptable start")
]
MinOpt = Annotated[
    int | None, typer.Option("--min-count", help="accept at least this many instead of all")
]
TermOpt = Annotated[str, typer.Option("--term", help="on-demand, 1y or 3y")]


def register(app: typer.Typer, fails_cleanly: Any) -> None:
    """Add the reservation commands to ``app``."""

    @app.command()
    @fails_cleanly
    def quote(
        customer: CustomerOpt,
        count: CountOpt,
        start: StartOpt,
        end: EndOpt,
        sku: SkuOpt = None,
        where: WhereOpt = None,
        site: SiteOpt = None,
        metro: MetroOpt = None,
        region: RegionOpt = None,
        latest_start: LatestOpt = None,
        min_count: MinOpt = None,
        term: TermOpt = "on-demand",
        fmt: FormatOpt = OutputFormat.table,
        now: NowOpt = None,
    ) -> None:
        """Offers that fit a request, without booking anything (exit 1 when none fits)."""
        from marketplace.cli import store

        req = _request(
            customer,
            count,
            sku,
            where,
            site,
            metro,
            region,
            start,
            end,
            latest_start,
            min_count,
            term,
        )
        offers = booking.quote(store(), req, now=parse_time(now, "--now"))
        emit([o.model_dump(mode="json") for o in offers], fmt, title="Offers")
        if not offers:
            err.print("no capacity: nothing fits this request (see `hwmarket capacity`)")
            raise typer.Exit(1)

    @app.command()
    @fails_cleanly
    def reserve(
        customer: CustomerOpt,
        count: CountOpt,
        start: StartOpt,
        end: EndOpt,
        sku: SkuOpt = None,
        where: WhereOpt = None,
        site: SiteOpt = None,
        metro: MetroOpt = None,
        region: RegionOpt = None,
        latest_start: LatestOpt = None,
        min_count: MinOpt = None,
        term: TermOpt = "on-demand",
        fmt: FormatOpt = OutputFormat.table,
        now: NowOpt = None,
    ) -> None:
        """Book machines atomically; a refused booking exits non-zero with the reason."""
        from marketplace.cli import store

        moment = parse_time(now, "--now")
        req = _request(
            customer,
            count,
            sku,
            where,
            site,
            metro,
            region,
            start,
            end,
            latest_start,
            min_count,
            term,
        )
        r = booking.reserve(store(), req, now=moment)
        emit_one(reservation_record(r, moment), fmt, title=f"reservation {r.id}")

    @app.command()
    @fails_cleanly
    def capacity(
        start: StartOpt = "now",
        end: Annotated[str | None, typer.Option("--end", help="default: start + 24 h")] = None,
        sku: SkuOpt = None,
        site: SiteOpt = None,
        metro: MetroOpt = None,
        region: RegionOpt = None,
        steps: Annotated[
            bool, typer.Option("--steps", help="print the step function, not the levels")
        ] = False,
        fmt: FormatOpt = OutputFormat.table,
    ) -> None:
        """Capacity levels per site and SKU (normal, limited, unavailable), or the step function."""
        from marketplace.cli import store

        t0 = parse_time(start, "--start")
        t1 = parse_time(end, "--end") if end else t0 + dt.timedelta(hours=24)
        view = capacity_of(
            store(), t0, t1, sku=sku, places=[*(site or []), *(metro or []), *(region or [])]
        )
        frame = view.steps if steps else view.levels
        records: list[dict[str, Any]] = [
            {str(k): v for k, v in r.items()}
            for r in frame.astype(object).where(frame.notna(), None).to_dict("records")
        ]
        for r in records:
            for k in ("start", "end"):
                if k in r and r[k] is not None:
                    r[k] = r[k].isoformat()
        emit(records, fmt, title="Capacity", columns=list(frame.columns))

    @reservation_app.command("list")
    @fails_cleanly
    def reservation_list(
        customer: Annotated[str | None, typer.Option(help="only this customer")] = None,
        state: Annotated[
            str | None, typer.Option(help="confirmed, active, ended, cancelled, degraded")
        ] = None,
        fmt: FormatOpt = OutputFormat.table,
        now: NowOpt = None,
    ) -> None:
        """List reservations by start time."""
        from marketplace.cli import store

        moment = parse_time(now, "--now")
        found = lifecycle.list_reservations(store(), customer=customer, state=state, now=moment)
        emit([reservation_record(r, moment) for r in found], fmt, title="Reservations")

    @reservation_app.command("show")
    @fails_cleanly
    def reservation_show(
        reservation_id: str, fmt: FormatOpt = OutputFormat.table, now: NowOpt = None
    ) -> None:
        """Show a reservation and its event log."""
        from marketplace.cli import store

        moment = parse_time(now, "--now")
        r = lifecycle.get_reservation(store(), reservation_id)
        events = lifecycle.reservation_events(store(), reservation_id, now=moment)
        record = reservation_record(r, moment) | {
            "term": r.term,
            "hourly_price": str(r.hourly_price) if r.hourly_price is not None else None,
            "currency": r.currency,
        }
        if fmt is OutputFormat.json:
            record["events"] = [e.model_dump(mode="json") for e in events]
            emit_one(record, fmt)
            return
        emit_one(record, fmt, title=f"reservation {r.id}")
        if fmt is OutputFormat.table:
            emit(
                [e.model_dump(mode="json") for e in events],
                fmt,
                title="Events",
                columns=["at", "kind", "host", "detail", "derived"],
            )

    @reservation_app.command("cancel")
    @fails_cleanly
    def reservation_cancel(
        reservation_id: str, fmt: FormatOpt = OutputFormat.table, now: NowOpt = None
    ) -> None:
        """Cancel (before it starts) or end now (once active); the machines are free at once."""
        from marketplace.cli import store

        moment = parse_time(now, "--now")
        emit_one(
            reservation_record(lifecycle.cancel(store(), reservation_id, now=moment), moment), fmt
        )

    @reservation_app.command("extend")
    @fails_cleanly
    def reservation_extend(
        reservation_id: str, end: EndOpt, fmt: FormatOpt = OutputFormat.table, now: NowOpt = None
    ) -> None:
        """Extend to a later end, on the same hosts or others of the same SKU and site."""
        from marketplace.cli import store

        moment = parse_time(now, "--now")
        r = lifecycle.extend(store(), reservation_id, parse_time(end, "--end"), now=moment)
        emit_one(reservation_record(r, moment), fmt)

    @reservation_app.command("release")
    @fails_cleanly
    def reservation_release(
        reservation_id: str, fmt: FormatOpt = OutputFormat.table, now: NowOpt = None
    ) -> None:
        """Early release: end an active reservation now."""
        from marketplace.cli import store

        moment = parse_time(now, "--now")
        emit_one(
            reservation_record(lifecycle.release(store(), reservation_id, now=moment), moment), fmt
        )

    app.add_typer(reservation_app, name="reservation")


def register_host_commands(host_app: typer.Typer, fails_cleanly: Any) -> None:
    """``host maintenance`` and ``host fail``."""

    @host_app.command("maintenance")
    @fails_cleanly
    def host_maintenance(
        host: str,
        start: StartOpt,
        end: EndOpt,
        reason: Annotated[str, typer.Option(help="why, for the event log")] = "maintenance",
        fmt: FormatOpt = OutputFormat.table,
        now: NowOpt = None,
    ) -> None:
        """Block a host for a window; bookings in the way move (or their reservations degrade)."""
        from marketplace.cli import store

        events = lifecycle.schedule_maintenance(
            store(),
            host,
            parse_time(start, "--start"),
            parse_time(end, "--end"),
            now=parse_time(now, "--now"),
            reason=reason,
        )
        emit(
            [e.model_dump(mode="json") for e in events],
            fmt,
            title="Events",
            columns=["reservation_id", "at", "kind", "host", "detail"],
        )

    @host_app.command("fail")
    @fails_cleanly
    def host_fail(
        host: str,
        reason: Annotated[str, typer.Option(help="why, for the event log")] = "host failed",
        fmt: FormatOpt = OutputFormat.table,
        now: NowOpt = None,
    ) -> None:
        """Mark a host failed; its current and future bookings move to free hosts of its SKU."""
        from marketplace.cli import store

        events = lifecycle.fail_host(store(), host, now=parse_time(now, "--now"), reason=reason)
        emit(
            [e.model_dump(mode="json") for e in events],
            fmt,
            title="Events",
            columns=["reservation_id", "at", "kind", "host", "detail"],
        )


__all__ = ["parse_time", "register", "register_host_commands", "reservation_record"]
