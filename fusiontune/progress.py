"""Progress bars: rich on an interactive terminal, silent under CI or when piped."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager


def interactive() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI") and not os.environ.get("FUSIONTUNE_QUIET")


class _Silent:
    def update(self, advance: int = 0, **fields) -> None:  # noqa: D401 - same shape as the rich one
        pass


@contextmanager
def progress(total: int, description: str, enabled: bool | None = None):
    """``with progress(n, "cem") as bar: bar.update(advance=k, info="...")``."""
    if enabled is None:
        enabled = interactive()
    if not enabled:
        yield _Silent()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    cols = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*cols, console=Console(stderr=True), transient=False) as prog:
        tid = prog.add_task(description, total=total, info="")

        class _Bar:
            def update(self, advance: int = 0, **fields) -> None:
                prog.update(tid, advance=advance, **fields)

        yield _Bar()
