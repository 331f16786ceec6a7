"""Arguments and helpers that several commands share."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError

DEMO_STUDY = Path("studies") / "demo.toml"


def default_study() -> Path:
    """``studies/demo.toml`` in the working directory, else the one beside the package."""
    if DEMO_STUDY.exists():
        return DEMO_STUDY
    here = Path(__file__).resolve().parents[2] / DEMO_STUDY
    if here.exists():
        return here
    raise InputError(f"{DEMO_STUDY}: not found; pass --study FILE")


def add_study_argument(p) -> None:
    p.add_argument("--study", type=Path, default=None,
                   help="study TOML file (default: studies/demo.toml)")


def load(args):
    from ..study import load_study

    return load_study(args.study or default_study())


def positive_int(text: str) -> int:
    import argparse

    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {v}")
    return v
