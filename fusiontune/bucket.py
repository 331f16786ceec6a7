"""Bucketed datasets: a log rewritten so that every Ray actor reads only its own part.

Without buckets, ``load_log(shard=(i, n))`` scans the whole log and keeps the rows whose group
hash is ``i`` modulo ``n``: with ``n`` actors the log is read ``n`` times.  :func:`write_buckets`
(``fusiontune bucket``) reads the log once and writes it as a Hive-partitioned Parquet dataset
(the layout Spark calls bucketing)::

    DIR/ft_bucket=0/part-00000.parquet      (one file per bucket, row groups of up to 2^20 rows)
    DIR/ft_bucket=1/part-00000.parquet
    ...
    DIR/_fusiontune_buckets.json      {"bucket_column", "buckets", "group", "hash", "rows"}

with each row in bucket ``group_hash_of(group) % buckets`` (:func:`fusiontune.dataset.group_hash_of`,
the hash the shards use), all columns kept, rows in their source order within a bucket.
Reading such a directory with the recorded group column, shard ``(i, n)`` is the union of the
buckets ``b`` with ``b % n == i``: it opens only those directories (see
:func:`fusiontune.dataset.bucketing_of`), so an actor reads its share of the log, not the whole.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa

from .dataset import BUCKET_COLUMN, BUCKET_META, HASH_NAME, group_hash_of, open_source
from .errors import InputError

__all__ = ["write_buckets", "BUCKET_COLUMN", "BUCKET_META"]

#: rows a bucket gathers before they are written as one row group of its Parquet file
FLUSH_ROWS = 1 << 20
#: at most this many buckets (each holds one open Parquet file while writing)
MAX_BUCKETS = 4096
#: rows all buckets may hold in memory together before every bucket is written out
PENDING_ROWS = 1 << 21


def write_buckets(source, group: str, buckets: int, out: str | Path, *, show_progress: bool | None = None,
                  flush_rows: int = FLUSH_ROWS) -> dict:
    """Rewrite the log ``source`` (a file, a directory of Parquet files or a glob: anything
    :func:`fusiontune.dataset.open_source` reads) into ``buckets`` buckets by the hash of its
    ``group`` column, as a new Parquet dataset in the directory ``out``.  Returns the sidecar's
    content (also written to ``out/_fusiontune_buckets.json``).

    The source is streamed batch by batch into one Parquet file per bucket
    (``ft_bucket=<b>/part-00000.parquet``): a bucket's rows are written as a row group each time
    it holds ``flush_rows`` rows (and whenever all buckets together hold :data:`PENDING_ROWS`),
    so memory stays bounded whatever the log's size, and a reader gets full-size batches.  Everything is written
    into a temporary directory next to ``out`` that is renamed to ``out`` at the end: an error
    leaves nothing behind.  ``out`` must not exist or be an empty directory; a missing ``group``
    column, ``buckets < 1``, a source column named like the bucket column or an empty group id
    is one :class:`InputError` line."""
    import pyarrow.parquet as pq

    from .progress import progress

    out = Path(out)
    if isinstance(buckets, bool) or not isinstance(buckets, (int, np.integer)) or not 1 <= buckets <= MAX_BUCKETS:
        raise InputError(f"{out}: buckets must be an integer in [1, {MAX_BUCKETS}], got {buckets!r}",
                         param="buckets")
    buckets = int(buckets)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out}: already exists and is not an empty directory (choose a new directory)",
                         param="out")
    src = open_source(source, [group])
    name = src.name
    if BUCKET_COLUMN in src.schema.names:
        raise InputError(f"{name}: has a column {BUCKET_COLUMN!r} already (is it a bucketed dataset?)")
    columns = list(src.schema.names)
    total = _count_rows(src)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    pending: dict[int, list[pa.Table]] = {}
    pending_rows: dict[int, int] = {}
    writers: dict = {}  # bucket -> its one open Parquet file (a row group per flush)
    held = 0
    rows = 0

    def flush(b: int) -> None:
        nonlocal held
        parts = pending.pop(b)
        held -= pending_rows.pop(b)
        table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
        if b not in writers:
            d = tmp / f"{BUCKET_COLUMN}={b}"
            d.mkdir()
            writers[b] = pq.ParquetWriter(d / "part-00000.parquet", table.schema)
        writers[b].write_table(table, row_group_size=max(table.num_rows, 1))

    try:
        with progress(total, "bucket", unit="rows", enabled=show_progress) as bar:
            for part, row0, batch in src.batches(columns):
                arr = batch.column(group)
                if arr.null_count:
                    i = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
                    raise InputError(f"{part}: column {group!r} (group) is empty at row {row0 + i + 1}")
                b_of = (group_hash_of(arr) % np.uint64(buckets)).astype(np.int64)
                order = np.argsort(b_of, kind="stable")  # rows of a bucket keep their source order
                sorted_b = b_of[order]
                cuts = np.flatnonzero(np.diff(sorted_b)) + 1
                table = pa.Table.from_batches([batch])
                for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(order)]):
                    b = int(sorted_b[lo])
                    pending.setdefault(b, []).append(table.take(pa.array(order[lo:hi])))
                    pending_rows[b] = pending_rows.get(b, 0) + int(hi - lo)
                    held += int(hi - lo)
                    if pending_rows[b] >= flush_rows:
                        flush(b)
                if held >= PENDING_ROWS:
                    for b in sorted(pending):
                        flush(b)
                rows += batch.num_rows
                bar.update(advance=batch.num_rows)
            for b in sorted(pending):
                flush(b)
        for w in writers.values():
            w.close()
        writers.clear()
        if rows == 0:
            raise InputError(f"{name}: empty log (no rows)")
        meta = {"format": "fusiontune-buckets", "version": 1, "bucket_column": BUCKET_COLUMN,
                "buckets": buckets, "group": group, "hash": HASH_NAME, "rows": rows,
                "buckets_with_rows": len(list(tmp.glob(f"{BUCKET_COLUMN}=*"))), "source": name}
        (tmp / BUCKET_META).write_text(json.dumps(meta, indent=1) + "\n")
        if out.exists():
            out.rmdir()  # empty (checked above)
        tmp.rename(out)
    except BaseException:
        for w in writers.values():
            try:
                w.close()
            except (OSError, pa.ArrowException):
                pass
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def _count_rows(src) -> int | None:
    """Rows of a Parquet source from the files' footers (for the progress total), else None."""
    if src.dataset is None:
        return sum(p.num_rows for _, p in src.parts if isinstance(p, pa.Table)) or None
    try:
        return int(sum(f.count_rows() for _, f in src.parts))
    except (pa.ArrowInvalid, OSError, ValueError):
        return None
