"""``fusiontune simulate``: write a simulated multi-task prediction log, or (``--mtl``) a
training table for ``fusiontune train``."""

from __future__ import annotations

from pathlib import Path

from .common import positive_int

HELP = "generate a simulated prediction log (the demo log's generator) or, with --mtl, a training table"


def add_arguments(p) -> None:
    p.add_argument("--out", type=Path, required=True,
                   help="output file (.parquet or .csv), or with --partition-by a new directory (a dataset)")
    p.add_argument("--preset", choices=("demo", "feed6"), default="demo",
                   help="which prediction log: demo (4 tasks, studies/demo.toml) or feed6 (6 tasks with "
                        "conflicts and noisy sparse tasks, for the power formula, studies/feed6.toml)")
    p.add_argument("--requests", type=positive_int, default=10_000, help="number of requests (groups)")
    p.add_argument("--candidates", type=positive_int, default=20, help="candidates per request")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--partition-by", dest="partition_by", choices=("day", "none"), default=None,
                   help="write a Parquet dataset into the directory --out, simulated in chunks (for logs "
                        "too big for memory): 'day' makes Hive partitions day=YYYYMMDD/, 'none' plain part files")
    p.add_argument("--days", type=positive_int, default=7, help="with --partition-by: days the log spans")
    p.add_argument("--segments", type=positive_int, default=None,
                   help="demo log with a user_segment column of N segments whose best fusion weights differ "
                        "(their models differ in quality per task); see docs/segments.md")
    p.add_argument("--identical-segments", action="store_true",
                   help="with --segments: every segment has the same models (the control: segment weights "
                        "should not beat one global weight set)")
    g = p.add_argument_group("training tables (--mtl)")
    g.add_argument("--mtl", action="store_true",
                   help="write a training table for `fusiontune train` instead of a prediction log")
    g.add_argument("--kind", choices=("mmoe", "feed", "feed5"), default="mmoe",
                   help="mmoe: the MMoE paper's two tasks (x0..x99; y1,y2 regression; c1,c2 binary); "
                        "feed: numeric + categorical features, click/like/convert; feed5: five conflicting "
                        "tasks (click/finish/like/share/convert) with request context (studies/mtlfeed5.toml)")
    g.add_argument("--correlation", type=float, default=0.5,
                   help="mmoe: cosine of the two tasks' weight vectors, in [-1, 1] (default 0.5)")
    g.add_argument("--rows", type=positive_int, default=20_000, help="rows of the training table")
    g.add_argument("--dim", type=positive_int, default=100, help="mmoe: input dimension")


def run(args) -> int:
    from ..errors import InputError
    from ..simulate import simulate_feed6, simulate_log, write_table

    if args.segments and args.partition_by is not None:
        raise InputError("--segments writes one file; it cannot be combined with --partition-by")
    if args.partition_by is not None and not args.mtl:
        return _dataset(args)
    if args.out.suffix.lower() not in (".parquet", ".pq", ".csv"):
        raise InputError(f"{args.out}: unknown file type {args.out.suffix!r} (use .csv or .parquet)")
    if args.mtl:
        from ..mtl.synthetic import feed5_table, feed_table, mmoe_synthetic

        if args.kind == "mmoe":
            if not -1.0 <= args.correlation <= 1.0:
                raise InputError(f"--correlation must be in [-1, 1], got {args.correlation}")
            df = mmoe_synthetic(args.rows, args.correlation, dim=args.dim, seed=args.seed)
            what = f"MMoE synthetic, correlation {args.correlation}"
        elif args.kind == "feed5":
            df = feed5_table(args.rows, seed=args.seed)
            what = "feed5 table"
        else:
            df = feed_table(args.rows, seed=args.seed)
            what = "feed table"
        write_table(df, args.out)
        print(f"wrote {len(df)} rows ({what}) to {args.out}")
        return 0
    if args.identical_segments and not args.segments:
        raise InputError("--identical-segments needs --segments N")
    if args.segments:
        if args.preset != "demo":
            raise InputError("--segments simulates the demo log's tasks; it cannot be combined with --preset feed6")
        from ..simulate import simulate_segments

        df = simulate_segments(args.requests, args.candidates, args.seed, args.segments, args.identical_segments)
        kind = "identical" if args.identical_segments else "differing"
        write_table(df, args.out)
        print(f"wrote {len(df)} rows ({args.requests} requests x {args.candidates} candidates, {args.segments} "
              f"{kind} segments in column 'user_segment') to {args.out}")
        return 0
    make = simulate_feed6 if args.preset == "feed6" else simulate_log
    df = make(args.requests, args.candidates, args.seed)
    write_table(df, args.out)
    print(f"wrote {len(df)} rows ({args.requests} requests x {args.candidates} candidates) to {args.out}")
    return 0


def _dataset(args) -> int:
    from ..progress import progress
    from ..simulate import simulate_dataset

    total = args.requests * args.candidates
    with progress(total, "simulate", unit="rows", enabled=False if getattr(args, "quiet", False) else None) as bar:
        done = [0]

        def step(rows: int) -> None:
            bar.update(advance=rows - done[0])
            done[0] = rows

        rows = simulate_dataset(args.out, args.requests, args.candidates, args.seed, preset=args.preset,
                                partition_by=None if args.partition_by == "none" else args.partition_by,
                                days=args.days, progress=step)
    print(f"wrote {rows} rows ({args.requests} requests x {args.candidates} candidates) as a Parquet dataset "
          f"to {args.out}")
    return 0
