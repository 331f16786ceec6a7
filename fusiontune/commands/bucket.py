"""``fusiontune bucket``: rewrite a log as a bucketed Parquet dataset (one directory per bucket
of the group hash), so that each shard of ``--engine ray`` reads only its own buckets' files."""

from __future__ import annotations

from pathlib import Path

HELP = "rewrite a log as a bucketed dataset (ft_bucket=<b>/ by group hash) so each Ray actor reads only its part"


def add_arguments(p) -> None:
    p.add_argument("--log", required=True,
                   help="the log: a .parquet/.csv file, a directory of Parquet files (Hive partitions) or a glob")
    p.add_argument("--group", required=True, help="the group column (request id) the study shards by")
    p.add_argument("--buckets", type=int, required=True,
                   help="number of buckets (a multiple of the actor count you will use, e.g. 64)")
    p.add_argument("--out", type=Path, required=True, help="a new (or empty) directory for the bucketed dataset")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def run(args) -> int:
    from ..bucket import write_buckets

    meta = write_buckets(args.log, args.group, args.buckets, args.out, show_progress=False if args.quiet else None)
    print(f"{args.out}: {meta['rows']} rows in {meta['buckets_with_rows']} of {meta['buckets']} buckets "
          f"by {meta['group']!r}")
    return 0
