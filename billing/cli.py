"""Billing's commands for the ``hwmarket`` command line (registered through entry points)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from marketplace.cli import fails_cleanly


def register(app: typer.Typer) -> None:
    """Add billing's commands (and the end-to-end demo) to ``app``."""

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
