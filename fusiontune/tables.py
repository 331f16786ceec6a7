"""Terminal tables that never cut a number.

Rich shrinks a table that is wider than the terminal by cutting cells (``0.736…``).  The
commands' tables are built here instead: :func:`table` makes number columns that do not
wrap or shrink, :func:`fits` says whether a table fits the console, and the commands stack
(or transpose) a table that does not, so an 80-column terminal shows every digit.

:func:`stdout_console` is the console the commands print results with: the terminal's width
on a terminal (or ``COLUMNS`` when set), else wide enough that a log file gets whole tables.
"""

from __future__ import annotations

import os
import sys

__all__ = ["stdout_console", "table", "fits", "width_of"]

PIPE_WIDTH = 160


def stdout_console(width: int | None = None):
    from rich.console import Console

    if width is None and not sys.stdout.isatty() and not os.environ.get("COLUMNS"):
        width = PIPE_WIDTH
    return Console(highlight=False, width=width)


def table(columns: list[tuple[str, str]], title: str | None = None):
    """A rich Table; ``columns`` is ``[(header, "text" | "num")]``.  Number columns are
    right-aligned, never wrapped and never shrunk below their widest cell."""
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for header, kind in columns:
        if kind == "num":
            t.add_column(header, justify="right", no_wrap=True, overflow="fold")
        else:
            t.add_column(header, justify="left", overflow="fold")
    return t


def width_of(console, renderable) -> int:
    """Columns the renderable needs to show every cell whole."""
    from rich.measure import Measurement

    return Measurement.get(console, console.options.update_width(100_000), renderable).maximum


def fits(console, renderable) -> bool:
    return width_of(console, renderable) <= console.width
