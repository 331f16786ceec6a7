"""Prediction logs: load CSV/Parquet into a columnar in-memory log, validate once, split.

A prediction log has one row per impression.  Per task: a score column (probability, or
logit when the task says ``score_scale = "logit"``) and a label column (0/1, empty/NaN =
not observed on that row).  Optional: a group column (request or user id; GAUC needs it),
a weight column and a time column (time-based holdout).

Everything is validated here, at load; later stages trust a :class:`PredictionLog`.
Every problem raises :class:`~fusiontune.errors.InputError` with one line that names the
file, the column and an example value.
"""

from __future__ import annotations

from dataclasses import InitVar, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .dataset import group_hash_of
from .errors import InputError, LogError, StudyError

__all__ = ["TaskColumns", "PredictionLog", "load_log", "read_table", "split_log", "encode_label_codes",
           "split_roles", "cut_roles", "join_roles", "SplitParts", "holdout_column", "split_info", "group_hash_of"]


@dataclass(frozen=True)
class TaskColumns:
    name: str
    score: str
    label: str
    score_scale: str = "prob"  # "prob" or "logit" (logits go through a sigmoid at load)


LABEL_MISSING, LABEL_NEGATIVE, LABEL_POSITIVE = 0, 1, 3  # bit 0: observed, bit 1: positive
_DECODE = np.array([np.nan, 0.0, np.nan, 1.0], dtype=np.float32)


def encode_label_codes(labels: np.ndarray) -> np.ndarray:
    """(N, K) labels (1, 0 or NaN) -> (N, K) uint8 codes: 0 not observed, 1 negative, 3 positive.

    Any other label raises ``ValueError`` naming the first bad (row, task)."""
    lab = np.asarray(labels)
    if lab.ndim == 1:
        lab = lab[:, None]
    if lab.dtype.kind not in "fiub":
        lab = lab.astype(np.float64)
    pos = lab == 1
    neg = lab == 0
    bad = ~(pos | neg)
    if lab.dtype.kind == "f":
        bad &= ~np.isnan(lab)
    if bad.any():
        r, c = (int(x[0]) for x in np.nonzero(bad))
        raise ValueError(f"label must be 0, 1 or NaN; task {c} row {r} has {lab[r, c].item()!r}")
    return (neg.view(np.uint8) | (pos.view(np.uint8) * np.uint8(LABEL_POSITIVE))).astype(np.uint8, copy=False)


@dataclass
class PredictionLog:
    """Compact columnar log: ``scores`` (N, K) float32 probabilities, ``label_codes`` (N, K)
    uint8 (0 not observed, 1 negative, 3 positive: one byte per task), optional ``groups``
    (N,) int32 codes, ``weights`` (N,) float64, ``time`` (N,) float64.

    ``labels`` is accepted by the constructor as (N, K) 0/1/NaN and read back as a
    float32 (N, K) matrix with NaN = not observed; reading it decodes ``label_codes`` into
    a NEW array every time, so hot paths should use ``label_codes`` (or take the matrix
    once)."""

    tasks: list[str]
    scores: np.ndarray
    labels: InitVar[np.ndarray | None] = None
    groups: np.ndarray | None = None
    weights: np.ndarray | None = None
    time: np.ndarray | None = None
    source: str = ""
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    group_hash: np.ndarray | None = None  # uint64 hash of the raw group id (stable holdout split)
    label_codes: np.ndarray | None = None
    #: per group CODE (G,), not per row: uint64 hash of the raw group id (:func:`group_hash_of`)
    #: and int64 read key of the group's first row (:func:`unit_hashes`, :func:`order_keys`)
    code_hash: np.ndarray | None = None
    code_first: np.ndarray | None = None
    #: without a group column: (N,) int64 read key of each row (its position among the rows read)
    row_pos: np.ndarray | None = None

    def __post_init__(self, labels):
        self.scores = np.ascontiguousarray(self.scores, dtype=np.float32)
        if labels is not None:
            self.label_codes = encode_label_codes(labels)
        if self.label_codes is None:
            raise ValueError("PredictionLog needs labels (or label_codes)")
        self.label_codes = np.ascontiguousarray(self.label_codes, dtype=np.uint8)
        if self.label_codes.shape != self.scores.shape:
            raise ValueError(f"labels have shape {self.label_codes.shape}, scores {self.scores.shape}")
        if self.groups is not None:
            g = np.asarray(self.groups)
            if g.dtype.kind in "iu" and g.size and (g.min() < 0 or g.max() >= 2**31):
                g = np.unique(g, return_inverse=True)[1]  # re-code ids that int32 cannot hold
            self.groups = g.astype(np.int32, copy=False) if g.dtype.kind in "iub" else \
                np.unique(g, return_inverse=True)[1].astype(np.int32)

    def _get_labels(self) -> np.ndarray:
        return _DECODE[self.label_codes]

    @property
    def n(self) -> int:
        return self.scores.shape[0]

    @property
    def k(self) -> int:
        return self.scores.shape[1]

    @property
    def nbytes(self) -> int:
        """Bytes held by the log's row arrays (what a search's memory is measured against)."""
        arrays = [self.scores, self.label_codes, self.groups, self.weights, self.time, self.group_hash,
                  *self.extra.values()]
        return int(sum(a.nbytes for a in arrays if isinstance(a, np.ndarray)))

    def take(self, rows: np.ndarray) -> "PredictionLog":
        """Rows by index or boolean mask (a new log; arrays are copied)."""
        opt = lambda a: None if a is None else a[rows]  # noqa: E731
        return replace(self, scores=self.scores[rows], labels=None, label_codes=self.label_codes[rows],
                       groups=opt(self.groups), weights=opt(self.weights), time=opt(self.time),
                       extra={k: v[rows] for k, v in self.extra.items()}, group_hash=opt(self.group_hash),
                       row_pos=opt(self.row_pos))

    def without_split_columns(self) -> "PredictionLog":
        """The same rows without the columns only a split reads (``time`` and the uint64
        ``group_hash``: 16 bytes a row); the other arrays are shared, not copied.  What a
        search holds after the split (fusiontune.pipeline.prepare)."""
        if self.time is None and self.group_hash is None:
            return self
        return replace(self, labels=None, time=None, group_hash=None)

    def grouped(self) -> "PredictionLog":
        """The same log with each group's rows contiguous (stable), as GAUC wants them."""
        if self.groups is None:
            return self
        g = self.groups
        if g.size < 2 or (np.diff(g) >= 0).all():
            return self
        return self.take(np.argsort(g, kind="stable"))


# ``labels`` is an init-only argument (float 0/1/NaN) and a read-only decoded view.
PredictionLog.labels = property(PredictionLog._get_labels, doc=PredictionLog._get_labels.__doc__)


# --------------------------------------------------------------------------- reading
def read_table(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    """Read a CSV or Parquet file (by extension) into an Arrow table, only ``columns``."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a .csv or .parquet file")
    suffix = "".join(path.suffixes[-2:]).lower()
    try:
        if suffix.endswith(".parquet") or suffix.endswith(".pq"):
            import pyarrow.parquet as pq

            have = pq.read_schema(path).names
            _check_columns(path, have, columns)
            table = pq.read_table(path, columns=columns)
        elif suffix.endswith(".csv") or suffix.endswith(".csv.gz"):
            import pyarrow.csv as pcsv

            if path.stat().st_size == 0:
                raise InputError(f"{path}: empty file")
            with pcsv.open_csv(path) as reader:
                have = reader.schema.names
            _check_columns(path, have, columns)
            table = pcsv.read_csv(
                path, convert_options=pcsv.ConvertOptions(include_columns=columns, strings_can_be_null=True))
        else:
            raise InputError(f"{path}: unknown file type {path.suffix!r} (use .csv or .parquet)")
    except InputError:
        raise
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: cannot read: {first}") from None
    if table.num_rows == 0:
        raise InputError(f"{path}: empty file (no rows)")
    return table


def in_memory_name(source) -> str | None:
    """``"<DataFrame>"`` / ``"<Table>"`` for an in-memory log, ``None`` for a path."""
    if isinstance(source, pd.DataFrame):
        return "<DataFrame>"
    if isinstance(source, pa.Table):
        return "<Table>"
    return None


def memory_table(source, columns: list[str] | None = None) -> pa.Table:
    """The Arrow table of an in-memory log (a pandas DataFrame or a pyarrow Table), only
    ``columns``; a missing column or no rows is a one-line :class:`LogError`."""
    name = in_memory_name(source)
    have = [str(c) for c in source.columns] if isinstance(source, pd.DataFrame) else source.schema.names
    _check_columns(name, have, columns)
    if isinstance(source, pd.DataFrame):
        frame = source[columns] if columns is not None else source
        table = pa.Table.from_pandas(frame, preserve_index=False)
    else:
        table = source.select(columns) if columns is not None else source
    if table.num_rows == 0:
        raise InputError(f"{name}: empty log (no rows)")
    return table


def _check_columns(path: Path, have: list[str], want: list[str] | None) -> None:
    if want is None:
        return
    for col in want:
        if col not in have:
            shown = ", ".join(have[:12]) + (", ..." if len(have) > 12 else "")
            raise InputError(f"{path}: missing column {col!r} (columns are: {shown})")


def _numeric(path, table: pa.Table, col: str, what: str) -> np.ndarray:
    """Column as float64 with nulls as NaN; a non-numeric value is an InputError."""
    return _numeric_array(path, table.column(col), col, what)


def _numeric_array(path, arr, col: str, what: str, rows: "_Rows | None" = None) -> np.ndarray:
    """An Arrow (chunked) array as float64 with nulls as NaN; a non-numeric value is an
    InputError naming ``path``, ``col`` and the row (``rows`` maps batch rows to file rows)."""
    typ = arr.type
    if pa.types.is_dictionary(typ):
        arr = arr.cast(typ.value_type)
        typ = arr.type
    if pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_boolean(typ):
        return arr.to_numpy(zero_copy_only=False).astype(np.float64) if arr.null_count == 0 else \
            pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False)
    if pa.types.is_decimal(typ):
        return pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False)
    if len(arr) and arr.null_count == len(arr):  # e.g. a CSV column with no value at all
        kind = "label" if what.startswith("label") else "value"
        raise InputError(f"{path}: column {col!r} ({what}) is empty on every row: it has no observed {kind}")
    # strings or other: show the first value that is not a number
    values = arr.to_pandas()
    num = pd.to_numeric(values, errors="coerce")
    bad = num.isna() & values.notna()
    i = int(np.flatnonzero(bad.to_numpy())[0]) if bad.any() else 0
    row = rows.row(i) if rows is not None else i + 1
    raise InputError(f"{path}: column {col!r} ({what}) is not numeric: row {row} has {_show(values.iloc[i])}")


class _Rows:
    """Row numbers (1-based, within the file) of a batch's rows, for messages."""

    def __init__(self, row0: int, kept: np.ndarray | None):
        self.row0, self.kept = row0, kept

    def row(self, i: int) -> int:
        return self.row0 + (int(self.kept[i]) if self.kept is not None else i) + 1


def _show(v) -> str:
    """A value as the user wrote it: 1.5, nan, 'high' (no numpy type names)."""
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    if isinstance(v, (int, np.integer)):
        return repr(int(v))
    return repr(v)


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _check_sample_shard(name: str, sample, shard) -> tuple[float | None, tuple[int, int] | None]:
    if sample is not None:
        if isinstance(sample, bool) or not isinstance(sample, (int, float, np.floating, np.integer)) \
                or not 0.0 < float(sample) <= 1.0:
            raise InputError(f"{name}: sample must be a fraction in (0, 1], got {sample!r}", param="sample")
        sample = float(sample)
    if shard is not None:
        ok = isinstance(shard, (tuple, list)) and len(shard) == 2 and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in shard)
        if not ok or not (shard[1] >= 1 and 0 <= shard[0] < shard[1]):
            raise InputError(f"{name}: shard must be (index, count) with 0 <= index < count, got {shard!r}",
                             param="shard")
        shard = (int(shard[0]), int(shard[1]))
    return sample, shard


class _Growing:
    """A column that grows batch by batch into ONE array, by exactly each batch, through
    ``ndarray.resize`` (``realloc``: glibc moves a large block's pages with ``mremap`` instead of
    copying them).  No spare capacity: numpy zero-fills what ``resize`` adds, so a doubled
    capacity would be resident.  Holding chunks and concatenating them at the end would hold
    the log twice (freed chunks stay in the C heap), which a large load cannot afford."""

    def __init__(self, dtype, tail: tuple = ()):
        self.a = np.empty((0, *tail), dtype=dtype)
        self.n = 0
        self.tail = tail

    def add(self, x: np.ndarray) -> None:
        need = self.n + len(x)
        if need > len(self.a):
            self.a.resize((need, *self.tail), refcheck=False)
        self.a[self.n:need] = x
        self.n = need

    def done(self) -> np.ndarray:
        a, self.a = self.a, None
        a.resize((self.n, *self.tail), refcheck=False)
        return a


def load_log(path, tasks: list[TaskColumns], *, group: str | None = None,
             weight: str | None = None, time: str | None = None,
             need_probabilities: bool = True, extra: list[str] | None = None,
             filter=None, sample: float | None = None,
             shard: tuple[int, int] | None = None, keep_hash: bool = True) -> PredictionLog:
    """Load and validate a prediction log.  See the module docstring and ``docs/logs.md``.

    Parameters
    ----------
    path
        A CSV or Parquet file, a directory of Parquet files (Hive partitions ``key=value/`` are
        columns too), a glob such as ``"logs/day=2026*/*.parquet"``, or an in-memory pandas
        DataFrame / pyarrow Table (messages then name it ``<DataFrame>`` / ``<Table>``).  Only
        the study's columns are read, in record batches; each batch goes straight into the
        compact arrays (float32 scores, uint8 label codes, int32 group codes, uint64 group
        hash), so the load's peak memory is near the compact log, not the Arrow table.
    filter
        Rows to keep: a pyarrow compute Expression, or a string in the filter language of
        :func:`fusiontune.dataset.parse_filter` (``"country == 'US' and day >= 20261101"``).
        Pushed down into the scan (partitions that cannot match are not opened).
    sample
        A fraction in (0, 1]: keep the groups whose :func:`group_hash_of` lies in the lowest
        ``sample`` share of the 64-bit range (whole groups; the row's position among the rows
        read when there is no group column).  Deterministic: the same rows in every run and
        process.
    shard
        ``(index, count)``: keep only the groups whose hash modulo ``count`` is ``index``.
        The ``count`` shards are disjoint, together they hold exactly the rows of the
        unsharded load (with the same filter and sample), and a group never straddles two
        shards, so per-group metrics (GAUC) of a shard are exact.  Group codes are
        ``0..G_shard-1`` in order of first appearance within the shard; ``group_hash`` holds
        the raw id's hash, equal across shards.  Every shard scans the whole log (it must hash
        each row's group to know whether it is its own), except on a bucketed directory
        (``fusiontune bucket``, :mod:`fusiontune.bucket`) read with its recorded ``group``: there
        shard ``(index, count)`` is the buckets ``b`` with ``b % count == index`` and opens only
        their files (each row's hash is checked against its directory's bucket).  The "has a positive and a negative
        row" check of each label is skipped for a shard (a small shard may lack one; the
        caller combining shards checks the totals).  Rows of a shard keep the log's order.
    keep_hash
        Keep ``group_hash`` (8 bytes a row; only a split by group reads it).  False: the hash is
        still computed for ``sample`` / ``shard`` while reading, then dropped with the batch.

    Every problem raises :class:`~fusiontune.errors.InputError` (a bad ``filter``:
    :class:`~fusiontune.errors.StudyError`) with one line naming the file (the Parquet file
    of a dataset the bad value is in), the column, the row within that file and the value.
    """
    from .dataset import bucketing_of, filter_columns, keep_mask, open_source, parse_filter

    source = path
    name = in_memory_name(source) or str(source)
    if not tasks:
        raise InputError(f"{name}: no tasks given")
    sample, shard = _check_sample_shard(name, sample, shard)
    cols: list[str] = []
    for t in tasks:
        cols += [t.score, t.label]
    for c in (group, weight, time, *(extra or [])):
        if c:
            cols.append(c)
    cols = list(dict.fromkeys(cols))
    expr, names = None, []
    if isinstance(filter, str):
        expr, names = parse_filter(filter, src=name, where="[log] filter")
    elif isinstance(filter, pc.Expression):
        expr, names = filter, None
    elif filter is not None:
        raise StudyError(f"{name}: [log] filter must be a string or a pyarrow Expression, got "
                         f"{type(filter).__name__}", param="filter")
    buckets = bucketing_of(source, group)  # a `fusiontune bucket` directory: a shard reads its buckets only
    src = buckets.open(cols, shard) if buckets is not None else open_source(source, cols, also=names)
    if expr is not None:
        filter_columns(expr, names or [], src.schema, name, filter if isinstance(filter, str) else None,
                       where="[log] filter")
    hashed = sample is not None and sample < 1.0 or (shard is not None and shard[1] > 1 and buckets is None)

    k = len(tasks)
    score_col, code_col = _Growing(np.float32, (k,)), _Growing(np.uint8, (k,))
    inv_col, hash_col = _Growing(np.int32), _Growing(np.uint64)
    weight_col, time_col = _Growing(np.float64), _Growing(np.float64)
    uniq_chunks: list[np.ndarray] = []
    batch_starts: list[int] = []  # first row of each batch (group codes are per batch until the end)
    extra_chunks: dict[str, list[np.ndarray]] = {c: [] for c in (extra or [])}
    seen_pos = np.zeros(k, dtype=bool)
    seen_neg = np.zeros(k, dtype=bool)
    read_rows = 0  # rows read (after the filter): the row id hashed when there is no group column
    # read keys (order_keys): the position among the rows read; on a bucketed directory
    # (bucket << 40) + the position within the bucket, the same whichever buckets a shard opens
    bucket_rows: dict[int, int] = {}
    code_hash_chunks: list[np.ndarray] = []
    code_first_chunks: list[np.ndarray] = []
    pos_col = _Growing(np.int64)
    for part, row0, batch in src.batches(cols, expr):
        n_read = batch.num_rows
        if buckets is not None:
            b = src.bucket_of[part]
            key0 = (b << 40) + bucket_rows.get(b, 0)
            bucket_rows[b] = bucket_rows.get(b, 0) + n_read
        else:
            key0 = read_rows
        h = None
        if group:
            arr = batch.column(group)
            if arr.null_count:
                i = _first_bad(arr.is_null().to_numpy(zero_copy_only=False))
                raise InputError(f"{part}: column {group!r} (group) is empty at row {row0 + i + 1}")
            h = group_hash_of(arr)
            if buckets is not None:
                buckets.check(part, row0, h, src.bucket_of[part])
        elif hashed:
            h = group_hash_of(np.arange(read_rows, read_rows + n_read, dtype=np.int64))
        read_rows += n_read
        kept = None
        mask = keep_mask(h, sample, shard if buckets is None else None) if hashed else None
        if mask is not None:
            kept = np.flatnonzero(mask)
            if kept.size == 0:
                continue
            if kept.size < n_read:
                batch = batch.take(pa.array(kept))
                h = h[kept]
            else:
                kept = None
        rows = _Rows(row0, kept)
        n = batch.num_rows
        sc = np.empty((n, k), dtype=np.float32)
        cd = np.empty((n, k), dtype=np.uint8)
        start = score_col.n
        for j, t in enumerate(tasks):
            s = _numeric_array(part, batch.column(t.score), t.score, f"score of task {t.name!r}", rows)
            bad = ~np.isfinite(s)
            if bad.any():
                i = _first_bad(bad)
                raise InputError(f"{part}: column {t.score!r} (score of task {t.name!r}) must be finite: "
                                 f"row {rows.row(i)} has {_show(s[i])}")
            if t.score_scale == "logit":
                s = 1.0 / (1.0 + np.exp(-s))
            elif need_probabilities:
                bad = (s < 0) | (s > 1)
                if bad.any():
                    i = _first_bad(bad)
                    raise InputError(
                        f"{part}: column {t.score!r} (score of task {t.name!r}) must be a probability in "
                        f"[0, 1] for this formula: row {rows.row(i)} has {_show(s[i])} "
                        f"(set score_scale = \"logit\" for logits)")
            sc[:, j] = s
            lab = _numeric_array(part, batch.column(t.label), t.label, f"label of task {t.name!r}", rows)
            pos, neg = lab == 1, lab == 0
            bad = ~(pos | neg | np.isnan(lab))
            if bad.any():
                i = _first_bad(bad)
                raise InputError(f"{part}: column {t.label!r} (label of task {t.name!r}) must be 0, 1 or "
                                 f"empty: row {rows.row(i)} has {_show(lab[i])}")
            seen_pos[j] |= bool(pos.any())
            seen_neg[j] |= bool(neg.any())
            cd[:, j] = neg.view(np.uint8) | (pos.view(np.uint8) * np.uint8(LABEL_POSITIVE))
            del s, lab, bad, pos, neg
        score_col.add(sc)
        code_col.add(cd)
        del sc, cd
        if group:
            raw = batch.column(group)
            if pa.types.is_dictionary(raw.type):
                raw = raw.cast(raw.type.value_type)
            inv, uniq = pd.factorize(raw.to_numpy(zero_copy_only=False), sort=False)
            inv_col.add(inv)  # local codes of this batch; made global at the end
            uniq_chunks.append(np.asarray(uniq))
            _, first = np.unique(inv, return_index=True)  # first row of each of the batch's groups
            code_hash_chunks.append(h[first])
            code_first_chunks.append(key0 + (kept[first] if kept is not None else first).astype(np.int64))
            del first
            batch_starts.append(start)
            if keep_hash:
                hash_col.add(h)
            del inv, raw
        if weight:
            w = _numeric_array(part, batch.column(weight), weight, "weight", rows)
            bad = ~np.isfinite(w) | (w < 0)
            if bad.any():
                i = _first_bad(bad)
                raise InputError(f"{part}: column {weight!r} (weight) must be finite and >= 0: "
                                 f"row {rows.row(i)} has {_show(w[i])}")
            weight_col.add(w)
        if time:
            arr = batch.column(time)
            if pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type):
                arr = pc.cast(pc.cast(arr, pa.timestamp("us")), pa.int64())
            tc = _numeric_array(part, arr, time, "time", rows)
            if np.isnan(tc).any():
                i = _first_bad(np.isnan(tc))
                raise InputError(f"{part}: column {time!r} (time) is empty at row {rows.row(i)}")
            time_col.add(tc)
        if not group:
            pos_col.add(key0 + (kept.astype(np.int64) if kept is not None else np.arange(n, dtype=np.int64)))
        for c in extra or []:
            extra_chunks[c].append(batch.column(c).to_numpy(zero_copy_only=False))
        del batch

    n_rows = score_col.n
    if n_rows == 0:
        if read_rows == 0 and expr is None:
            raise InputError(f"{name}: empty log (no rows)")
        why = [w for w, on in (("the filter", expr is not None), (f"sample = {sample}", sample is not None),
                               (f"shard {shard}", shard is not None)) if on]
        raise InputError(f"{name}: no rows left after {' and '.join(why) or 'reading'} ({read_rows} rows read)")
    if shard is None:  # a shard may lack a class; whoever combines shards checks the totals
        for j, t in enumerate(tasks):
            if not seen_pos[j]:
                raise InputError(f"{name}: column {t.label!r} (label of task {t.name!r}) has no positive (1) row")
            if not seen_neg[j]:
                raise InputError(f"{name}: column {t.label!r} (label of task {t.name!r}) has no negative (0) row")

    scores, codes = score_col.done(), code_col.done()
    groups = group_hash = code_hash = code_first = None
    if group:
        # one global factorize of the per-batch uniques: codes in order of first appearance,
        # written over each batch's local codes in place
        sizes = [len(u) for u in uniq_chunks]
        all_uniq = np.concatenate(uniq_chunks) if len(uniq_chunks) > 1 else uniq_chunks[0]
        uniq_chunks.clear()
        glob_codes = pd.factorize(all_uniq, sort=False)[0].astype(np.int32)
        del all_uniq
        groups = inv_col.done()
        n_codes = int(glob_codes.max()) + 1
        code_hash = np.zeros(n_codes, dtype=np.uint64)
        code_first = np.full(n_codes, np.iinfo(np.int64).max, dtype=np.int64)
        off = 0
        for b, size in enumerate(sizes):
            lo, hi = batch_starts[b], (batch_starts[b + 1] if b + 1 < len(sizes) else n_rows)
            groups[lo:hi] = glob_codes[off:off + size][groups[lo:hi]]
            gc = glob_codes[off:off + size]
            code_hash[gc] = code_hash_chunks[b]
            code_first[gc] = np.minimum(code_first[gc], code_first_chunks[b])
            off += size
        del glob_codes, code_hash_chunks, code_first_chunks
        group_hash = hash_col.done() if keep_hash else None
    weights = weight_col.done() if weight else None
    tcol = time_col.done() if time else None
    ex = {c: (np.concatenate(v) if len(v) > 1 else v[0]) for c, v in extra_chunks.items()}
    pa.default_memory_pool().release_unused()  # Arrow's allocator keeps freed pages otherwise
    return PredictionLog([t.name for t in tasks], scores, None, groups, weights, tcol, name, ex,
                         group_hash, label_codes=codes, code_hash=code_hash if group else None,
                         code_first=code_first if group else None, row_pos=None if group else pos_col.done())


# --------------------------------------------------------------------------- splitting
SEARCH, SELECT, HOLDOUT = 0, 1, 2  # row roles (see :func:`split_roles`)
ROLE_NAMES = ("search", "select", "holdout")


@dataclass
class SplitParts:
    """The log cut into its three roles (see :func:`split_roles`).

    ``search``: the rows the search optimises on; ``select``: the rows A/B arms are picked on
    (None without a ``select`` share); ``holdout``: the rows the report judges on, which
    nothing chooses on (None without a split).  ``role`` (N,) int8 holds each row's role
    (0 search, 1 select, 2 holdout) in the original row order; ``info`` the true shares."""

    search: PredictionLog
    select: PredictionLog | None
    holdout: PredictionLog | None
    role: np.ndarray
    info: dict


def _unit_hash(log: PredictionLog, seed: int, chunk: int = 1 << 20) -> np.ndarray:
    """A seeded number in [0, 1) per row, equal for every row of a group (by its raw id).
    Computed ``chunk`` rows at a time: the hashing's uint64 temporaries stay small whatever
    the log's size."""
    key = np.uint64((seed * 0x9E3779B97F4A7C15 + 1) % 2**64)
    out = np.empty(log.n, dtype=np.float64)
    for lo in range(0, log.n, chunk):
        hi = min(lo + chunk, log.n)
        gh = log.group_hash[lo:hi] if log.group_hash is not None else pd.util.hash_array(log.groups[lo:hi])
        h = pd.util.hash_array(gh ^ key)
        out[lo:hi] = (h % np.uint64(1_000_000)).astype(np.float64) / 1_000_000
    return out


def unit_hashes(log: PredictionLog, rows: np.ndarray | None = None) -> np.ndarray:
    """(N,) uint64 hash of each row's *unit*, the same in every process and shard: the raw group
    id's hash (:func:`group_hash_of`) with a group column, else the hash of the row's position
    among the rows read (after the [log] filter; what ``sample`` and ``shard`` hash too).  A log
    built in memory without these falls back to its group codes, or its row numbers.
    ``rows``: only these rows."""
    g = log.groups if rows is None or log.groups is None else log.groups[rows]
    if g is not None:
        if log.code_hash is not None:
            return log.code_hash[g]
        return group_hash_of(g.astype(np.int64))
    pos = log.row_pos if log.row_pos is not None else np.arange(log.n, dtype=np.int64)
    return group_hash_of(pos if rows is None else pos[rows])


def seeded_units(hashes: np.ndarray, seed: int, salt: int) -> np.ndarray:
    """A seeded number in [0, 1) per unit hash (53 bits): whole groups draw the same number.
    ``salt`` keeps the draws of different uses (random split, screening, surrogate sample)
    independent for one seed."""
    key = np.uint64((int(seed) * 0x9E3779B97F4A7C15 + int(salt) * 0xBF58476D1CE4E5B9 + 1) % 2**64)
    h = pd.util.hash_array(np.asarray(hashes, dtype=np.uint64) ^ key)
    return (h >> np.uint64(11)).astype(np.float64) / 2.0**53


#: salts of :func:`seeded_units` per use
SALT_RANDOM_SPLIT, SALT_SCREENING, SALT_SURROGATE = 1, 2, 3


def order_keys(log: PredictionLog) -> np.ndarray:
    """(N,) int64 key per row that sorts rows of several shards into the order one process holds
    them in after :meth:`PredictionLog.grouped`: the read key of the row's group's first row
    (groups in order of first appearance), or the row's own read key without a group column.
    Rows of one group keep their order under a stable sort (a group never straddles shards)."""
    if log.groups is not None:
        if log.code_first is None:
            raise ValueError("order_keys needs the read keys of load_log (code_first)")
        return log.code_first[log.groups]
    if log.row_pos is None:
        raise ValueError("order_keys needs the read keys of load_log (row_pos)")
    return log.row_pos


def holdout_column(log: PredictionLog, column: str) -> np.ndarray:
    """The explicit 0/1 holdout column ``column`` (loaded as an extra column) as a bool mask.

    Anything but 0/1 (true/false) is a LogError naming the file, column, row and value."""
    if column not in log.extra:
        raise LogError(f"{log.source}: [split] column {column!r} was not loaded with the log")
    raw = log.extra[column]
    values = pd.Series(raw)
    if values.dtype == bool:
        return values.to_numpy(dtype=bool)
    num = pd.to_numeric(values, errors="coerce")
    bad = ~num.isin([0, 1]).to_numpy()
    if bad.any():
        i = _first_bad(bad)
        v = values.iloc[i]
        shown = "an empty value" if v is None or (isinstance(v, float) and np.isnan(v)) else _show(v)
        raise LogError(f"{log.source}: column {column!r} ([split] column) must be 0 or 1 (1 = holdout): "
                         f"row {i + 1} has {shown}")
    return num.to_numpy(dtype=np.float64) == 1


def random_units(log: PredictionLog, seed: int) -> np.ndarray:
    """``[split] by = "random"``'s draw per row: :func:`seeded_units` of the row's unit, so whole
    groups go to one part (without a group column each row is its own unit, drawn by its
    position among the rows read).  A function of the unit and the seed only, so the Ray
    engine's shards draw the same numbers while cutting their rows."""
    return seeded_units(unit_hashes(log), seed, SALT_RANDOM_SPLIT)


def split_roles(log: PredictionLog, by: str = "time", holdout: float | None = 0.3, select: float = 0.0,
                seed: int = 0, column: str | None = None, consume: bool = False) -> SplitParts:
    """Cut the log into search / select / holdout rows (disjoint; every row has one role).

    The holdout (the rows the report judges on): with ``column``, the rows where that 0/1
    column is 1; else the share ``holdout`` of the rows by ``by``:

    * ``"time"``: the latest rows (rows at the cut time go to the holdout);
    * ``"group"``: whole groups, by a seeded hash of the group id (a request never straddles
      two parts);
    * ``"random"``: a seeded draw per unit (:func:`random_units`): whole groups with a group
      column, single rows (by their position among the rows read) without one.

    The select part (the rows A/B arms are picked on), a share ``select`` of the whole log,
    is taken from the remaining rows the same way: by time the rows just before the holdout,
    by group the next band of the group hash, at random the next band of the same draw.  The
    holdout rows are therefore the same with or without a ``select`` share; the search part
    shrinks.

    Each part holds its rows in the log's order.  ``consume=True`` moves the log's arrays into
    the parts one column at a time and leaves ``log`` empty (every array None), so a large log
    and its parts never exist together for more than one column; the parts then carry no
    ``time`` or ``group_hash`` (they only assign the roles).  :func:`join_roles` puts the parts
    back together in the log's row order.
    """
    select = float(select or 0.0)
    if column is None:
        if holdout is None or not 0.0 < holdout < 1.0:
            raise StudyError(f"{log.source}: [split] holdout must be in (0, 1), got {holdout!r}")
    elif holdout is not None:
        raise StudyError(f"{log.source}: [split] holdout and column are exclusive: the column {column!r} "
                         f"already says which rows are held out")
    if not 0.0 <= select < 1.0 or (holdout is not None and holdout + select >= 1.0):
        raise StudyError(f"{log.source}: [split] select must be in [0, 1) with holdout + select < 1, "
                         f"got select = {select!r}, holdout = {holdout!r}")
    if by not in ("time", "group", "random"):
        raise StudyError(f"{log.source}: [split] by must be \"time\", \"group\" or \"random\", got {by!r}")
    if by == "time" and log.time is None and (column is None or select > 0):
        raise StudyError(f"{log.source}: [split] by = \"time\" needs a time column in the study")
    if by == "group" and log.groups is None and (column is None or select > 0):
        raise StudyError(f"{log.source}: [split] by = \"group\" needs a group column in the study")

    n = log.n
    role = np.zeros(n, dtype=np.int8)
    u = None
    if column is not None:
        hold = holdout_column(log, column)
    elif by == "time":
        hold = log.time >= np.quantile(log.time, 1.0 - holdout)
    else:
        u = _unit_hash(log, seed) if by == "group" else random_units(log, seed)
        hold = u < holdout
    role[hold] = HOLDOUT
    if select > 0:
        rest = ~hold
        n_rest = int(rest.sum())
        frac = select * n / max(n_rest, 1)  # share of the remaining rows that makes `select` of all
        if frac >= 1.0:
            raise StudyError(f"{log.source}: [split] select = {select} is more than the rows left after the "
                             f"holdout ({n_rest} of {n})")
        if by == "time":
            cut = np.quantile(log.time[rest], 1.0 - frac)
            sel = rest & (log.time >= cut)
        elif column is None:  # the band of the same hash / draw just above the holdout's
            sel = rest & (u < holdout + select)
        else:
            v = _unit_hash(log, seed) if by == "group" else random_units(log, seed)
            sel = rest & (v < frac)
        role[sel] = SELECT
    u = hold = rest = sel = v = None  # noqa: F841 (8-9 bytes a row: let them go before the cut)
    masks = {r: role == r for r in (SEARCH, SELECT, HOLDOUT)}
    masks = {r: m for r, m in masks.items() if m.any()}
    for r in (SEARCH, HOLDOUT) if column is None else (SEARCH,):
        if r not in masks:
            raise LogError(f"{log.source}: the {ROLE_NAMES[r]} part of the split is empty")
    if select > 0 and SELECT not in masks:
        raise LogError(f"{log.source}: the select part of the split is empty (select = {select})")
    for r, m in masks.items():  # checked on the whole log, before anything is cut or consumed
        for j, t in enumerate(log.tasks):
            lab = log.label_codes[:, j]
            has_pos = bool(np.logical_and(lab == LABEL_POSITIVE, m).any())
            has_neg = bool(np.logical_and(lab == LABEL_NEGATIVE, m).any())
            if not (has_pos and has_neg):
                raise LogError(f"{log.source}: the {ROLE_NAMES[r]} part of the split has no "
                                 f"{'positive' if not has_pos else 'negative'} for task {t!r}")
    info = split_info(log, role)
    info.update({"by": by, "holdout": holdout, "select": select, "seed": int(seed), "column": column})
    parts = cut_roles(log, role, consume, masks)
    return SplitParts(parts[SEARCH], parts.get(SELECT), parts.get(HOLDOUT), role, info)


_ROW_ARRAYS = ("scores", "label_codes", "groups", "weights", "time", "group_hash", "row_pos")


def cut_roles(log: PredictionLog, role: np.ndarray, consume: bool = False, masks: dict | None = None) -> dict:
    """The rows of each role present in ``role`` ((N,) int8) as new logs (role -> PredictionLog,
    each in the log's row order), column by column.  ``consume``: each of the log's arrays is
    let go as soon as it is cut, ``time`` / ``group_hash`` are dropped first and not cut, and
    when every row has one role the arrays move over uncopied; the log is left empty."""
    if masks is None:
        masks = {r: m for r in (SEARCH, SELECT, HOLDOUT) if (m := role == r).any()}
    whole = consume and len(masks) == 1  # one role holds every row: nothing to cut
    cols: dict = {r: {} for r in masks}
    # consumed: the split-only columns go first, so they are not held while the others are cut
    for name in (("time", "group_hash", *_ROW_ARRAYS[:4], "row_pos") if consume else _ROW_ARRAYS):
        a = getattr(log, name)
        if consume:
            setattr(log, name, None)
            if name in ("time", "group_hash"):
                a = None
        for r, m in masks.items():
            cols[r][name] = None if a is None else a if whole else np.compress(m, a, axis=0)
        del a
    extra = {r: {} for r in masks}
    for c in list(log.extra):
        a = log.extra.pop(c) if consume else log.extra[c]
        for r, m in masks.items():
            extra[r][c] = a if whole else np.compress(m, a, axis=0)
        del a
    return {r: PredictionLog(log.tasks, cols[r]["scores"], None, cols[r]["groups"], cols[r]["weights"],
                             cols[r]["time"], log.source, extra[r], cols[r]["group_hash"],
                             label_codes=cols[r]["label_codes"], code_hash=log.code_hash,
                             code_first=log.code_first, row_pos=cols[r]["row_pos"]) for r in masks}


def join_roles(parts: dict, role: np.ndarray) -> PredictionLog:
    """The log whose rows of role ``r`` are ``parts[r]`` (role -> PredictionLog, each in the log's
    order): the inverse of :func:`split_roles`, in the original row order.  A column is kept
    when every part has it."""
    parts = {r: p for r, p in parts.items() if p is not None}
    first = next(iter(parts.values()))
    masks = {r: role == r for r in parts}
    out = {}
    for name in _ROW_ARRAYS:
        arrays = {r: getattr(p, name) for r, p in parts.items()}
        if any(a is None for a in arrays.values()):
            out[name] = None
            continue
        a0 = arrays[next(iter(arrays))]
        whole = np.empty((role.shape[0], *a0.shape[1:]), dtype=a0.dtype)
        for r, a in arrays.items():
            whole[masks[r]] = a
        out[name] = whole
    extra = {}
    for c in first.extra:
        if all(c in p.extra for p in parts.values()):
            vals = [p.extra[c] for p in parts.values()]
            whole = np.empty(role.shape[0], dtype=np.result_type(*vals) if all(v.dtype.kind != "O" for v in vals)
                             else object)
            for r, p in parts.items():
                whole[masks[r]] = p.extra[c]
            extra[c] = whole
    return PredictionLog(first.tasks, out["scores"], None, out["groups"], out["weights"], out["time"], first.source,
                         extra, out["group_hash"], label_codes=out["label_codes"], code_hash=first.code_hash,
                         code_first=first.code_first, row_pos=out["row_pos"])


def split_info(log: PredictionLog, role: np.ndarray) -> dict:
    """True row and group counts and shares of each role; groups that have rows in two roles."""
    rows = {ROLE_NAMES[r]: int((role == r).sum()) for r in (SEARCH, SELECT, HOLDOUT)}
    info: dict = {"rows": rows, "share": {"rows": {k: v / max(log.n, 1) for k, v in rows.items()}}}
    if log.groups is not None:
        n_g = int(log.groups.max()) + 1 if log.n else 0
        seen = np.zeros((3, n_g), dtype=bool)
        for r in (SEARCH, SELECT, HOLDOUT):
            seen[r, np.unique(log.groups[role == r])] = True
        groups = {ROLE_NAMES[r]: int(seen[r].sum()) for r in (SEARCH, SELECT, HOLDOUT)}
        info["groups"] = groups
        info["share"]["groups"] = {k: v / max(n_g, 1) for k, v in groups.items()}
        info["groups_in_two_parts"] = int((seen.sum(axis=0) > 1).sum())
    return info


def split_log(log: PredictionLog, by: str, holdout: float, seed: int = 0) -> tuple[PredictionLog, PredictionLog]:
    """Split into (search part, holdout part): :func:`split_roles` without a select share."""
    parts = split_roles(log, by, holdout, 0.0, seed)
    return parts.search, parts.holdout
