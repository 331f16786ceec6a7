"""The run report: :func:`~fusiontune.report.data.collect` computes, :mod:`.plots` draws,
:mod:`.render` writes HTML (images embedded), Markdown (PNGs beside it) or JSON."""

from .data import collect
from .render import write_report

__all__ = ["collect", "write_report"]
