"""A vendor's listing script: import our listing file, then print what the marketplace offers.

    python examples/list_skus.py                              # the example listings, ./hwmarket.db
    python examples/list_skus.py my-skus.yaml --db postgresql://user@db/hwmarket

A listing with one bad SKU stores nothing and prints every problem with its file, path and value.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from marketplace import HwmarketError, SkuQuery, Store

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "listings", nargs="*", type=Path, default=sorted((HERE / "listings").iterdir())
    )
    parser.add_argument(
        "--db", default=None, help="database URL (default $HWMARKET_DB or sqlite:///hwmarket.db)"
    )
    args = parser.parse_args(argv)

    store = Store(args.db)
    try:
        report = store.import_listings(args.listings)
    except HwmarketError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(
        f"imported: {len(report.added)} new, {len(report.updated)} new revisions, {report.unchanged} unchanged"
    )

    frame = store.skus().to_frame()
    print(
        frame[
            ["slug", "revision", "vendor", "arch", "cores", "accelerator_count", "on_demand_hourly"]
        ].to_string(index=False)
    )

    accelerated = store.skus(SkuQuery(min_accelerators=1))
    print(f"\n{len(accelerated)} SKUs with accelerators:")
    for sku in accelerated:
        for part in sku.accelerators:
            print(f"  {sku.slug}: {part.count}x {part.kind.value} {part.model}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
