"""The ``plankline`` command line: every command is a few lines calling the library."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="plankline",
    help="Plankton video in; ROIs, measurements and classes out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# --- batch pipeline commands (run, demo, synth) -----------------------------

# --- classifier commands (train, evaluate, export, classify) -----------------

# --- outputs commands (pull-images) ------------------------------------------


if __name__ == "__main__":
    app()
