"""``fusiontune simulate``: write a simulated multi-task prediction log."""

from __future__ import annotations

from pathlib import Path

from .common import positive_int

HELP = "generate a simulated prediction log (the demo log's generator)"


def add_arguments(p) -> None:
    p.add_argument("--out", type=Path, required=True, help="output file (.parquet or .csv)")
    p.add_argument("--requests", type=positive_int, default=10_000, help="number of requests (groups)")
    p.add_argument("--candidates", type=positive_int, default=20, help="candidates per request")
    p.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    from ..errors import InputError
    from ..simulate import simulate_log, write_table

    if args.out.suffix.lower() not in (".parquet", ".pq", ".csv"):
        raise InputError(f"{args.out}: unknown file type {args.out.suffix!r} (use .csv or .parquet)")
    df = simulate_log(args.requests, args.candidates, args.seed)
    write_table(df, args.out)
    print(f"wrote {len(df)} rows ({args.requests} requests x {args.candidates} candidates) to {args.out}")
    return 0
