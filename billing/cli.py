"""Billing's commands for the ``hwmarket`` command line (registered through entry points):
``invoice build|finalize|list|show``, ``stripe sync`` and the end-to-end ``demo``."""

from __future__ import annotations

import sys
from importlib import import_module
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from marketplace.cli import fails_cleanly, store
from marketplace.console import OutputFormat, emit, emit_one, err

if TYPE_CHECKING:
    from billing.invoices import Invoice

invoice_app = typer.Typer(
    help="Invoices: build a period's drafts from the usage ledger, finalize, show.",
    no_args_is_help=True,
)

PricesOpt = Annotated[
    Path | None,
    typer.Option(
        "--prices",
        help="a price book file (default: the catalogue's list prices and site energy tariffs)",
    ),
]


def register(app: typer.Typer) -> None:
    """Add billing's commands (and the end-to-end demo) to ``app``."""

    @invoice_app.command("build")
    @fails_cleanly
    def invoice_build(
        period: Annotated[str, typer.Option("--period", help="YYYY-MM")],
        prices: PricesOpt = None,
        currency: Annotated[str, typer.Option(help="currency of the list prices")] = "USD",
        final: Annotated[bool, typer.Option("--finalize", help="also finalize the drafts")] = False,
        fmt: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.table,
    ) -> None:
        """Rate the period's usage into draft invoices (one per customer); all or nothing."""
        from billing.invoicing import build, finalize, price_book_from_catalogue
        from billing.prices import load_price_book

        book = load_price_book(prices) if prices else price_book_from_catalogue(store(), currency)
        report = build(store(), period, book)
        invoices = finalize(store(), period) if final and report.drafts else report.drafts
        err.print(
            f"{len(report.drafts)} invoices ({report.adjustment_lines} adjustment lines); "
            f"{len(report.already_final)} already finalized{'; finalized now' if final else ''}"
        )
        _emit_invoices(invoices, fmt)

    @invoice_app.command("finalize")
    @fails_cleanly
    def invoice_finalize(
        period: Annotated[str, typer.Option("--period", help="YYYY-MM")],
        customer: Annotated[
            list[str] | None, typer.Option("--customer", help="only these customers")
        ] = None,
        fmt: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.table,
    ) -> None:
        """Finalize the period's drafts and queue them for Stripe (outbox)."""
        from billing.invoicing import finalize

        _emit_invoices(finalize(store(), period, customers=customer), fmt)

    @invoice_app.command("list")
    @fails_cleanly
    def invoice_list(
        period: Annotated[str | None, typer.Option("--period", help="YYYY-MM")] = None,
        customer: Annotated[str | None, typer.Option("--customer")] = None,
        fmt: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.table,
    ) -> None:
        """List invoices with their totals."""
        from billing.invoicing import list_invoices

        _emit_invoices(list_invoices(store(), period=period, customer=customer), fmt)

    @invoice_app.command("show")
    @fails_cleanly
    def invoice_show(
        invoice: Annotated[str, typer.Argument(help="invoice id or number")],
        fmt: Annotated[
            str, typer.Option("--format", "-f", help="table, json, csv or html")
        ] = "table",
        out: Annotated[
            Path | None, typer.Option("--out", help="write to this file instead of stdout")
        ] = None,
    ) -> None:
        """Show one invoice line by line (or as JSON, CSV, or a readable HTML page)."""
        from billing.invoices import invoice_record, render_html, to_csv, to_json
        from billing.invoicing import get_invoice

        inv = get_invoice(store(), invoice)
        if fmt in ("json", "csv", "html"):
            text = {
                "json": lambda: to_json([inv]),
                "csv": lambda: to_csv([inv]),
                "html": lambda: render_html(inv),
            }[fmt]()
            if out:
                out.write_text(text)
                err.print(f"wrote {out}")
            else:
                sys.stdout.write(text if text.endswith("\n") else text + "\n")
            return
        record = invoice_record(inv)
        lines = record.pop("lines")
        emit_one(record, OutputFormat.table, title=f"invoice {inv.number or inv.invoice_id}")
        emit(
            lines,
            OutputFormat.table,
            columns=["kind", "description", "quantity", "unit", "unit_price", "amount"],
            title="lines",
        )

    app.add_typer(invoice_app, name="invoice")

    if find_spec("billing.cli_stripe") is not None:
        import_module("billing.cli_stripe").register(app)

    @app.command()
    @fails_cleanly
    def demo(
        workdir: Annotated[Path, typer.Option(help="work folder (emptied first)")] = Path(
            "demo-out"
        ),
        examples: Annotated[
            Path | None, typer.Option(help="folder with listings/ and inventory/")
        ] = None,
    ) -> None:
        """Run the main job end to end on SQLite in WORKDIR, printing what it does."""
        from billing.demo import EXAMPLES, run_demo

        run_demo(workdir, examples or EXAMPLES)


def _emit_invoices(invoices: list[Invoice], fmt: OutputFormat) -> None:
    from billing.invoices import invoice_record

    records = [invoice_record(i) for i in invoices]
    if fmt is OutputFormat.json:
        emit(records, fmt)
        return
    flat = [
        {k: v for k, v in r.items() if k != "lines"} | {"lines": len(r["lines"])} for r in records
    ]
    emit(
        flat,
        fmt,
        title="Invoices",
        columns=[
            "invoice_id",
            "number",
            "customer",
            "period_start",
            "status",
            "currency",
            "total",
            "lines",
        ],
    )
