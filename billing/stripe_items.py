"""Invoice items and invoices: reconcile with Stripe, send what it lacks, finalize when complete.

For each customer, before sending anything, the sync reads what Stripe holds: the customer's
invoice items, the customer's invoices (matched on ``metadata.hwmarket_invoice_id``) and their
lines (matched on ``metadata.hwmarket_line_id``). Rows found there are confirmed with their
Stripe ids; only rows Stripe lacks are sent, with an idempotency key made from the row id (which
also covers a crash inside Stripe's 24-hour key memory). A hwmarket invoice becomes one Stripe
draft; its items are created on it (``invoice=in_...``); it is finalized only when its lines are
exactly the finalize row's ``item_ids`` and add up to its ``total_minor``.

On a Stripe that makes no one-off invoices (localstripe) the items are created as pending
invoice items of the customer and confirmed from the customer's item list; finalize rows are
left pending and reported as skipped.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from billing import stripe_outbox as outbox
from billing.stripe_api import Obj, StripeSyncError
from billing.stripe_outbox import OutboxEntry
from billing.stripe_run import SyncRun


@dataclass
class _Seen:
    """What Stripe holds for one customer: hwmarket line id -> Stripe item ids."""

    items: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    def note(self, obj: Obj) -> None:
        line_id = (obj.get("metadata") or {}).get("hwmarket_line_id")
        if line_id:
            self.items[line_id].add(_item_id(obj))


def _item_id(obj: Obj) -> str:
    """The invoice item behind an item or an invoice line (shapes differ across API versions)."""
    if obj.get("object") == "invoiceitem":
        return str(obj["id"])
    parent = (obj.get("parent") or {}).get("invoice_item_details") or {}
    return str(parent.get("invoice_item") or obj.get("invoice_item") or obj["id"])


def sync_customer_items(run: SyncRun, customer: str, rows: Sequence[OutboxEntry]) -> None:
    """Reconcile, send and finalize one customer's invoice rows (raises StripeSyncError when
    Stripe cannot be read for this customer; refusals of single rows are reported)."""
    cus = run.stripe_customer(customer)
    seen = _Seen()
    for item in run.calls.invoice_items(cus):
        seen.note(item)
    by_invoice: dict[str, list[OutboxEntry]] = defaultdict(list)
    for r in rows:
        by_invoice[r.invoice_id or r.payload.get("invoice_id", "")].append(r)
    drafts: dict[str, Obj] = {}
    if run.calls.flavor.invoices:
        for inv in run.calls.invoices(cus):
            hid = (inv.get("metadata") or {}).get("hwmarket_invoice_id")
            if hid not in by_invoice:
                continue
            if hid in drafts:
                run.report.problems.append(
                    f"Stripe holds two invoices for hwmarket invoice {hid}: "
                    f"{drafts[hid]['id']} and {inv['id']}"
                )
                continue
            drafts[hid] = inv
            for line in run.calls.invoice_lines(inv["id"]):
                seen.note(line)
    _confirm_seen(run, rows, seen)
    for hid in sorted(by_invoice):
        try:
            if run.calls.flavor.invoices:
                _sync_invoice(run, cus, hid, by_invoice[hid], drafts.get(hid), seen)
            else:
                _sync_pending_items(run, cus, hid, by_invoice[hid], seen)
        except StripeSyncError as exc:
            run.fail([r for r in by_invoice[hid] if r.state != "confirmed"], exc)


def _confirm_seen(run: SyncRun, rows: Sequence[OutboxEntry], seen: _Seen) -> None:
    found: dict[str, str] = {}
    for r in rows:
        ids = seen.items.get(r.id)
        if r.kind != "invoice_item" or not ids:
            continue
        if len(ids) > 1:
            run.report.problems.append(
                f"invoice line {r.id} is in Stripe {len(ids)} times: {', '.join(sorted(ids))}"
            )
        found[r.id] = min(ids)
    run.report.items_confirmed += outbox.mark_confirmed(run.store, found)
    run.tick(len(found))


def _item_params(run: SyncRun, cus: str, row: OutboxEntry, invoice: str | None) -> Obj:
    p = row.payload
    params: Obj = {
        "customer": cus,
        "amount": int(p["amount_minor"]),
        "currency": str(p["currency"]).lower(),
        "description": p.get("description") or row.id,
        "metadata": {k: str(v) for k, v in (p.get("metadata") or {}).items()}
        | {"hwmarket_line_id": row.id},
    }
    if invoice is not None:
        params["invoice"] = invoice
    if run.calls.flavor.item_period and p.get("period_start") is not None:
        params["period"] = {"start": int(p["period_start"]), "end": int(p["period_end"])}
    return params


def _send_items(
    run: SyncRun, cus: str, rows: Sequence[OutboxEntry], invoice: str | None, seen: _Seen
) -> None:
    def send(row: OutboxEntry) -> Obj:
        return run.calls.create_invoice_item(
            _item_params(run, cus, row, invoice), key=f"hwm-ii-{row.id}"
        )

    def record(row: OutboxEntry, item: Obj) -> None:
        outbox.mark_sent(run.store, row.id, str(item["id"]))
        seen.note(item)
        run.report.items_sent += 1

    def refused(row: OutboxEntry, exc: StripeSyncError) -> None:
        run.fail([row], exc)

    run.send_all(run.usable(rows), send, record, refused)


def _unseen(run: SyncRun, rows: Sequence[OutboxEntry], seen: _Seen) -> list[OutboxEntry]:
    """Pending item rows Stripe lacks; a row recorded as sent but not in Stripe is a problem."""
    todo = []
    for r in rows:
        if r.kind != "invoice_item" or r.id in seen.items:
            continue
        if r.state == "sent":
            run.report.problems.append(
                f"invoice line {r.id} was sent as {r.stripe_id} but Stripe no longer has it"
            )
            continue
        todo.append(r)
    return todo


def _sync_invoice(
    run: SyncRun,
    cus: str,
    hid: str,
    rows: Sequence[OutboxEntry],
    draft: Obj | None,
    seen: _Seen,
) -> None:
    fin = next((r for r in rows if r.kind == "invoice_finalize"), None)
    todo = _unseen(run, rows, seen)
    if not todo and fin is None:
        return
    if draft is None:
        first = (fin or todo[0]).payload
        draft = run.calls.create_invoice(
            {
                "customer": cus,
                "currency": str(first["currency"]).lower(),
                "auto_advance": False,
                "pending_invoice_items_behavior": "exclude",
                "metadata": {"hwmarket_invoice_id": hid}
                | ({"hwmarket_invoice_number": str(fin.payload["number"])} if fin else {}),
            },
            key=f"hwm-inv-{hid}",
        )
        run.report.invoices_created += 1
    if fin is not None:
        outbox.set_stripe_id(run.store, fin.id, str(draft["id"]))
    if draft.get("status") != "draft":
        if todo:
            run.fail(
                todo,
                f"Stripe invoice {draft['id']} of hwmarket invoice {hid} is already "
                f"{draft.get('status')}; {len(todo)} lines cannot be added to it (first: "
                f"{todo[0].id}): carry them on a later invoice",
            )
        if fin is not None:
            outbox.mark_confirmed(run.store, {fin.id: str(draft["id"])})
        return
    _send_items(run, cus, todo, str(draft["id"]), seen)
    lines: dict[str, set[str]] = defaultdict(set)
    total, foreign = 0, []
    for line in run.calls.invoice_lines(str(draft["id"])):
        line_id = (line.get("metadata") or {}).get("hwmarket_line_id")
        total += int(line.get("amount") or 0)
        if line_id:
            lines[line_id].add(_item_id(line))
        else:
            foreign.append(str(line.get("id")))
    on_it = {r.id: min(lines[r.id]) for r in rows if r.kind == "invoice_item" and r.id in lines}
    run.report.items_confirmed += outbox.mark_confirmed(run.store, on_it)
    if fin is None or fin.state == "confirmed":
        return
    _finalize_if_complete(run, hid, fin, str(draft["id"]), lines, total, foreign)


def _finalize_if_complete(
    run: SyncRun,
    hid: str,
    fin: OutboxEntry,
    draft: str,
    lines: dict[str, set[str]],
    total: int,
    foreign: list[str],
) -> None:
    expected = {str(i) for i in fin.payload.get("item_ids", [])}
    missing, extra = expected - set(lines), set(lines) - expected
    doubled = sorted(k for k, v in lines.items() if len(v) > 1)
    if missing:
        return  # some items failed this run (reported); finalize on a later run
    if extra or foreign or doubled:
        run.report.problems.append(
            f"Stripe draft {draft} of hwmarket invoice {hid} does not match the invoice: "
            f"unexpected lines {sorted(extra) + foreign}, doubled {doubled}; not finalized"
        )
        return
    if total != int(fin.payload["total_minor"]):
        run.report.problems.append(
            f"Stripe draft {draft} of hwmarket invoice {hid} totals {total}, the invoice "
            f"{fin.payload['total_minor']} (minor units); not finalized"
        )
        return
    done = run.calls.finalize_invoice(draft, key=f"hwm-fin-{hid}")
    outbox.mark_confirmed(run.store, {fin.id: str(done["id"])})
    run.report.invoices_finalized += 1
    run.tick()


def _sync_pending_items(
    run: SyncRun, cus: str, hid: str, rows: Sequence[OutboxEntry], seen: _Seen
) -> None:
    todo = _unseen(run, rows, seen)
    for fin in (r for r in rows if r.kind == "invoice_finalize"):
        run.report.skipped.append(
            f"{fin.id}: this Stripe ({run.calls.flavor.name}) makes no one-off invoices; "
            "the items are left pending on the customer"
        )
    if not todo:
        return
    # Reconciliation already confirmed what Stripe held; these are the ones it lacked.
    _send_items(run, cus, todo, None, seen)
    seen = _Seen()
    for item in run.calls.invoice_items(cus):
        seen.note(item)
    found = {r.id: min(seen.items[r.id]) for r in todo if r.id in seen.items}
    run.report.items_confirmed += outbox.mark_confirmed(run.store, found)


__all__ = ["sync_customer_items"]
