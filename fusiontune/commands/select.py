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


def add_arguments(p) -> None:
    p.add_argument("--run", type=Path, required=True, help="run directory written by `fusiontune search`")
    p.add_argument("--k", type=positive_int, default=3, help="number of arms (default 3)")
    p.add_argument("--resamples", type=positive_int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--level", type=level_type, default=0.95, help="confidence level (default 0.95)")
    p.add_argument("--candidates", type=positive_int, default=50,
                   help="best distinct feasible trials considered (default 50)")
    p.add_argument("--diversity", choices=("rank", "weights"), default="rank",
                   help="arm distance: 1 - Spearman of fused scores (rank, default) or normalised weights")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--out", type=Path, default=None, help="output file (default: RUN/candidates.json)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no table")


def run(args) -> int:
    from ..results import _jsonable, atomic_write_text
    from ..select import arms_table, select_arms

    cands = select_arms(args.run, args.k, args.resamples, args.level, args.candidates, args.diversity,
                        args.seed, show_progress=False if args.quiet else None)
    out = args.out or Path(args.run) / "candidates.json"
    atomic_write_text(out, json.dumps(cands, indent=2, default=_jsonable) + "\n")
    if not args.quiet:
        arms_table(cands)
        print(f"wrote {out} ({len(cands['arms'])} arm(s) from {cands['candidates_considered']} candidates "
              f"in {cands['seconds']:.1f}s)")
    return 0
