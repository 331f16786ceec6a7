"""``fusiontune select``: pick k diverse A/B arms from a finished run, with bootstrap CIs."""

from __future__ import annotations

import json
from pathlib import Path

from .common import positive_int

HELP = "pick k diverse A/B arms from a finished run (holdout deltas with paired bootstrap CIs)"


def level_type(text: str) -> float:
    import argparse

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1) such as 0.95, got {v}")
    return v


DEFAULTS = {"k": 3, "resamples": 1000, "level": 0.95, "candidates": 50, "diversity": "rank", "seed": 0}


def study_defaults(args, table: str, defaults: dict) -> None:
    """Fill the flags the user did not give from the study's ``[<table>]`` table, then from
    ``defaults``.  The study is the one recorded in ``RUN/result.json``."""
    import argparse
    import json

    from ..errors import InputError

    section = {}
    rj = Path(args.run) / "result.json"
    if rj.exists():
        try:
            sf = json.loads(rj.read_text(encoding="utf-8")).get("study_file")
        except json.JSONDecodeError:
            sf = None  # read_run reports it
        if sf and Path(sf).exists():
            from ..study import load_study

            section = load_study(sf).sections.get(table, {}) or {}
            for key, value in section.items():
                if key not in defaults:
                    raise InputError(f"{sf}: unknown key {key!r} in [{table}] (allowed: {', '.join(defaults)})")
                kind = type(defaults[key])
                ok = (isinstance(value, kind) or (kind is float and isinstance(value, int))) and \
                    not isinstance(value, bool)
                if not ok:
                    raise InputError(f"{sf}: [{table}] {key} must be a {kind.__name__}, got {value!r}")
                try:
                    checked = {"level": level_type, "k": positive_int, "resamples": positive_int,
                               "candidates": positive_int, "stability_resamples": positive_int,
                               "stability_candidates": positive_int}.get(key, lambda v: v)(str(value))
                except argparse.ArgumentTypeError as exc:
                    raise InputError(f"{sf}: [{table}] {key}: {exc}") from None
                if key == "diversity" and value not in ("rank", "weights"):
                    raise InputError(f"{sf}: [{table}] diversity must be 'rank' or 'weights', got {value!r}")
                section[key] = checked
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, section.get(key, value))


def add_arguments(p) -> None:
    p.add_argument("--run", type=Path, required=True, help="run directory written by `fusiontune search`")
    p.add_argument("--k", type=positive_int, default=None, help="number of arms (default 3)")
    p.add_argument("--resamples", type=positive_int, default=None, help="bootstrap resamples (default 1000)")
    p.add_argument("--level", type=level_type, default=None, help="confidence level (default 0.95)")
    p.add_argument("--candidates", type=positive_int, default=None,
                   help="best distinct feasible trials considered (default 50)")
    p.add_argument("--diversity", choices=("rank", "weights"), default=None,
                   help="arm distance: 1 - Spearman of fused scores (rank, default) or normalised weights")
    p.add_argument("--seed", type=int, default=None, help="bootstrap seed (default 0)")
    p.add_argument("--out", type=Path, default=None, help="output file (default: RUN/candidates.json)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    p.epilog = "Defaults can also be set in the study's [select] table (keys: " + ", ".join(DEFAULTS) + ")."


def run(args) -> int:
    from ..results import _jsonable, atomic_write_text
    from ..select import arms_table, select_arms

    study_defaults(args, "select", DEFAULTS)
    cands = select_arms(args.run, args.k, args.resamples, args.level, args.candidates, args.diversity,
                        args.seed, show_progress=False if args.quiet else None)
    out = args.out or Path(args.run) / "candidates.json"
    atomic_write_text(out, json.dumps(cands, indent=2, default=_jsonable) + "\n")
    if not args.quiet:
        arms_table(cands)
        print(f"wrote {out} ({len(cands['arms'])} arm(s) from {cands['candidates_considered']} candidates "
              f"in {cands['seconds']:.1f}s)")
    return 0
