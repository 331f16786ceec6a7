"""Where a log's rows come from: a file, a directory of Parquet files or a glob, read as a
pyarrow dataset in record batches; the row ``filter`` language; the group hash that samples
and shards whole groups.

:func:`fusiontune.log.load_log` is the only caller that turns these batches into a
:class:`~fusiontune.log.PredictionLog`; this module knows nothing about tasks or labels.

- :func:`open_source`: a CSV/Parquet file, a directory of Parquet files (Hive partitions
  ``key=value/`` become columns), a glob (``logs/day=*/part-*.parquet``), or an in-memory
  pandas DataFrame / pyarrow Table, as a :class:`LogSource` that yields record batches of
  only the wanted columns, part (file) by part in a fixed order.
- :func:`parse_filter`: ``"country == 'US' and day >= 20261101"`` -> a pyarrow compute
  Expression, through Python's :mod:`ast` (never ``eval``): comparisons, ``and`` / ``or`` /
  ``not``, ``in`` / ``not in`` a list, ``is null`` / ``is not null``.
- :func:`group_hash_of` / :func:`keep_mask`: a stable 64-bit hash of the raw group id; a
  ``sample`` keeps the rows whose hash lies in the lowest ``sample`` share of the 64-bit range
  (high bits), a ``shard=(i, n)`` the rows whose hash is ``i`` modulo ``n`` (low bits), so a
  group is never split by either and the two are independent.
- :func:`bucketing_of` / :class:`Bucketing`: a directory written by ``fusiontune bucket``
  (:mod:`fusiontune.bucket`, ``ft_bucket=<b>/`` directories and a ``_fusiontune_buckets.json``
  sidecar) read with its group column: shard ``(i, n)`` is the buckets ``b % n == i`` and opens
  only their files; every row's hash is checked against its directory's bucket.
"""

from __future__ import annotations

import ast
import glob as globmod
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .errors import InputError, StudyError

__all__ = ["LogSource", "open_source", "parse_filter", "filter_columns", "group_hash_of", "keep_mask",
           "is_dataset_path", "source_files", "BATCH_ROWS", "Bucketing", "bucketing_of", "BUCKET_META",
           "BUCKET_COLUMN", "HASH_NAME"]

#: rows per record batch (a batch is converted to the compact arrays, then dropped)
BATCH_ROWS = 1 << 18
_GLOB_CHARS = frozenset("*?[")
_READ_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OSError, ValueError)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def is_glob(path: str | Path) -> bool:
    return any(c in _GLOB_CHARS for c in str(path))


def _is_csv(path: Path) -> bool:
    return "".join(path.suffixes[-2:]).lower().endswith((".csv", ".csv.gz"))


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def is_dataset_path(path: str | Path) -> bool:
    """True for a directory or a glob (a log made of several files)."""
    return is_glob(path) or Path(path).is_dir()


def source_files(path: str | Path) -> list[Path]:
    """The files a log path stands for, sorted: the file itself, the data files under a
    directory (names starting with ``.`` or ``_`` are skipped, as pyarrow does), or the
    files a glob matches."""
    path = Path(path)
    if is_glob(path):
        return sorted(Path(p) for p in globmod.glob(str(path), recursive=True) if Path(p).is_file())
    if path.is_dir():
        out = []
        for p in sorted(path.rglob("*")):
            rel = p.relative_to(path).parts
            if p.is_file() and not any(part.startswith((".", "_")) for part in rel):
                out.append(p)
        return out
    return [path] if path.exists() else []


def _glob_base(pattern: str) -> str:
    """The directory above a glob's first wildcard (where Hive ``key=value`` parts start)."""
    parts = Path(pattern).parts
    keep = []
    for p in parts:
        if is_glob(p):
            break
        keep.append(p)
    return str(Path(*keep)) if keep else "."


@dataclass
class LogSource:
    """A log's rows as record batches.  ``name`` is what messages call the whole log (the path as
    given, ``<DataFrame>``, ``<Table>``); ``schema`` its columns (partition columns included);
    ``parts`` (name, dataset or table) in reading order: one per file of a dataset, so a
    message names the file a bad value came from."""

    name: str
    schema: pa.Schema
    parts: list[tuple[str, object]]
    dataset: "pyarrow.dataset.Dataset | None" = None  # noqa: F821 (imported when a dataset is opened)
    #: a bucketed dataset's part name -> its bucket (see :class:`Bucketing`), else None
    bucket_of: dict | None = None
    #: the parts :meth:`batches` has opened, in order (what a shard of a bucketed dataset read)
    opened: list = dc_field(default_factory=list)

    def batches(self, columns: list[str], filter: pc.Expression | None = None,
                batch_rows: int = BATCH_ROWS) -> Iterator[tuple[str, int, pa.RecordBatch]]:
        """``(part name, row offset of the batch within its part, batch)`` of only ``columns``,
        filtered by ``filter``, part by part in order.  A part that cannot be read raises one
        :class:`InputError` line naming it."""
        parts = self.parts
        if filter is not None and self.dataset is not None:  # skip the files whose partition cannot match
            try:
                keep = {f.path for f in self.dataset.get_fragments(filter=filter)}
            except _READ_ERRORS:
                keep = None
            if keep is not None:
                parts = [(n, p) for n, p in parts if getattr(p, "path", None) in keep]
        for part_name, part in parts:
            row0 = 0
            self.opened.append(part_name)
            try:
                if isinstance(part, pa.Table):
                    t = part if filter is None else part.filter(filter)
                    it = iter(t.select(columns).to_batches(max_chunksize=batch_rows))
                elif filter is None and _is_parquet_fragment(part):  # a filter goes through the scanner
                    it = _parquet_batches(part, self.schema, columns, batch_rows)
                else:
                    # one batch read ahead: the default (16) can hold a large file's row groups at once
                    it = iter(part.to_batches(schema=self.schema, columns=columns, filter=filter,
                                              batch_size=batch_rows, batch_readahead=1, use_threads=True))
                while True:
                    try:
                        batch = next(it)
                    except StopIteration:
                        break
                    if batch.num_rows == 0:
                        continue
                    yield part_name, row0, batch
                    row0 += batch.num_rows
            except InputError:
                raise
            except _READ_ERRORS as exc:
                raise InputError(f"{part_name}: cannot read: {_first_line(exc)}") from None


def _is_parquet_fragment(part) -> bool:
    return type(part).__name__ == "ParquetFileFragment"


def _parquet_batches(fragment, schema: pa.Schema, columns: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The rows of one Parquet file of a dataset as batches of ``columns``, typed as in the
    dataset's ``schema`` (Hive partition keys as constant columns, a column this file lacks as
    nulls, as the dataset scanner gives them).

    Read with the file's own reader, ``batch_rows`` rows at a time: the dataset scanner decodes
    a whole row group before it slices it into batches, which for files with 10^6-row row
    groups holds ~100 MB more than a batch (``benchmarks/bench_load.py``).  The allocator's
    freed pages go back to the OS after each file."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    expr = fragment.partition_expression
    keys = ds.get_partition_keys(expr) if expr is not None else {}
    physical = set(fragment.physical_schema.names)
    from_file = [c for c in columns if c not in keys and c in physical]
    target = pa.schema([schema.field(c) for c in columns])
    with fragment.filesystem.open_input_file(fragment.path) as fh:
        reader = pq.ParquetFile(fh)
        for raw in reader.iter_batches(batch_size=batch_rows, columns=from_file, use_threads=False):
            n = raw.num_rows
            arrays = []
            for field in target:
                c = field.name
                if c in from_file:
                    a = raw.column(c)
                    arrays.append(a if a.type == field.type else a.cast(field.type))
                elif c in keys:
                    arrays.append(pa.repeat(pa.scalar(keys[c], type=field.type), n))
                else:
                    arrays.append(pa.nulls(n, type=field.type))
            del raw
            yield pa.RecordBatch.from_arrays(arrays, schema=target)
            del arrays
        del reader
    pa.default_memory_pool().release_unused()


def open_source(source, columns: list[str] | None = None, also: list[str] | None = None) -> LogSource:
    """The :class:`LogSource` of ``source``: a path (file, directory, glob; str or Path) or a
    pandas DataFrame / pyarrow Table.  A missing path, an unknown file type, no matching file
    or a missing column is one :class:`InputError` line.  ``also``: columns an in-memory log or a CSV file
    keeps besides ``columns`` when it has them (those a filter reads; None: all)."""
    from .log import _check_columns, in_memory_name, memory_table, read_table

    memory = in_memory_name(source)
    if memory is not None:
        have = [str(c) for c in source.columns] if isinstance(source, pd.DataFrame) else source.schema.names
        _check_columns(memory, have, columns)
        keep = None if columns is None or also is None else \
            list(dict.fromkeys([*columns, *(c for c in also if c in have)]))
        table = memory_table(source, keep)
        return LogSource(memory, table.schema, [(memory, table)])
    text = str(source)
    path = Path(source)
    if is_glob(text):
        files = source_files(text)
        if not files:
            raise InputError(f"{text}: no file matches this pattern")
        return _parquet_dataset(text, [str(f) for f in files], columns, base=_glob_base(text))
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        if not source_files(path):
            raise InputError(f"{path}: directory holds no data file")
        return _parquet_dataset(str(path), str(path), columns, base=None)
    if _is_csv(path):
        keep = columns
        if columns is not None and also is None:  # an Expression filter: its columns are unknown
            keep = None
        elif columns is not None and also:
            have = _csv_header(path)
            keep = list(dict.fromkeys([*columns, *(c for c in also if c in have)]))
        table = read_table(path, keep)
        _check_columns(str(path), table.schema.names, columns)
        return LogSource(str(path), table.schema, [(str(path), table)])
    if _is_parquet(path):
        src = _parquet_dataset(str(path), str(path), columns, base=None, partitioned=False)
        src.parts = [(str(path), part) for _, part in src.parts]  # messages name the path as given
        return src
    raise InputError(f"{path}: unknown file type {path.suffix!r} (use .csv or .parquet, a directory or a glob)")


def _csv_header(path: Path) -> list[str]:
    import pyarrow.csv as pcsv

    try:
        with pcsv.open_csv(path) as reader:
            return reader.schema.names
    except _READ_ERRORS as exc:
        raise InputError(f"{path}: cannot read: {_first_line(exc)}") from None


def _parquet_dataset(name: str, where, columns, base: str | None, partitioned: bool = True) -> LogSource:
    import pyarrow.dataset as ds  # imported here: ~0.1-0.3 s that a CSV or in-memory log does not need

    from .log import _check_columns

    try:
        kwargs = {}
        if partitioned:
            kwargs["partitioning"] = "hive"
            if base is not None:
                kwargs["partition_base_dir"] = base
        dataset = ds.dataset(where, format="parquet", **kwargs)
        fragments = sorted(dataset.get_fragments(), key=lambda f: f.path)
    except _READ_ERRORS as exc:
        raise InputError(f"{name}: cannot read: {_first_line(exc)}") from None
    _check_columns(name, dataset.schema.names, columns)
    return LogSource(name, dataset.schema, [(f.path, f) for f in fragments], dataset)


# --------------------------------------------------------------------------- filter
_OPS = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}
_WHAT = {ast.Call: "a function call", ast.Attribute: "an attribute", ast.BinOp: "arithmetic",
         ast.Subscript: "indexing", ast.Lambda: "a lambda", ast.IfExp: "an if-expression",
         ast.JoinedStr: "an f-string", ast.Dict: "a dict", ast.NamedExpr: "an assignment"}


class _FilterProblem(Exception):
    pass


@dataclass
class _Col:
    name: str


def parse_filter(text: str, *, where: str = "filter", src: str = "") -> tuple[pc.Expression, list[str]]:
    """``text`` -> (pyarrow compute Expression, the column names it reads).

    The language is a small part of Python's expression syntax, parsed with :mod:`ast` and
    translated node by node (nothing is evaluated)::

        country == 'US' and day >= 20261101
        20261101 <= day < 20261108          (chained comparisons)
        surface in ['feed', 'search']       (also: not in)
        not (is_test or country is null)    (is null / is not null; a bare name is a boolean column)
        col('page type') != 'ad'            (a column whose name is not an identifier)

    Literals: numbers, strings, true/false (or True/False).  A problem is one
    :class:`StudyError` line ``"<src>: <where> '<text>': <problem>"`` (``param`` = "filter").
    """
    prefix = f"{src}: " if src else ""
    if not isinstance(text, str) or not text.strip():
        raise StudyError(f"{prefix}{where} must be a non-empty expression, got {text!r}", param="filter")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        col = f" at column {exc.offset}" if exc.offset else ""
        raise StudyError(f"{prefix}{where} {text!r}: invalid syntax{col}", param="filter") from None
    names: list[str] = []
    try:
        expr = _bool(tree.body, names)
    except _FilterProblem as exc:
        raise StudyError(f"{prefix}{where} {text!r}: {exc}", param="filter") from None
    return expr, list(dict.fromkeys(names))


def _bool(node, names) -> pc.Expression:
    if isinstance(node, ast.BoolOp):
        parts = [_bool(v, names) for v in node.values]
        out = parts[0]
        for p in parts[1:]:
            out = (out & p) if isinstance(node.op, ast.And) else (out | p)
        return out
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return ~_bool(node.operand, names)
    if isinstance(node, ast.Compare):
        return _compare(node, names)
    v = _operand(node, names)
    if isinstance(v, _Col):
        return pc.field(v.name)  # a boolean column
    if isinstance(v, bool):
        return pc.scalar(v)
    raise _FilterProblem(f"{_describe(node)} is not a condition")


def _compare(node: ast.Compare, names) -> pc.Expression:
    out = None
    left = node.left
    for op, right in zip(node.ops, node.comparators):
        cond = _one_comparison(left, op, right, names)
        out = cond if out is None else out & cond
        left = right
    return out


def _one_comparison(left, op, right, names) -> pc.Expression:
    if isinstance(op, (ast.Is, ast.IsNot)):
        a, b = _operand(left, names), _operand(right, names)
        if not isinstance(a, _Col) or b is not None:
            raise _FilterProblem("use 'column is null' or 'column is not null'")
        e = pc.field(a.name).is_null()
        return e if isinstance(op, ast.Is) else ~e
    if isinstance(op, (ast.In, ast.NotIn)):
        a = _operand(left, names)
        if not isinstance(a, _Col):
            raise _FilterProblem("'in' needs a column on its left")
        if not isinstance(right, (ast.List, ast.Tuple, ast.Set)):
            raise _FilterProblem("'in' needs a list of values on its right, e.g. x in [1, 2]")
        values = [_operand(v, names) for v in right.elts]
        if not values or any(isinstance(v, _Col) or v is None for v in values):
            raise _FilterProblem("'in' needs a non-empty list of numbers or strings")
        kinds = {str if isinstance(v, str) else float for v in values}
        if len(kinds) > 1:
            raise _FilterProblem("the values of an 'in' list mix strings and numbers")
        e = pc.field(a.name).isin(values)
        return e if isinstance(op, ast.In) else ~e
    if type(op) not in _OPS:
        raise _FilterProblem(f"unsupported comparison {type(op).__name__}")
    a, b = _operand(left, names), _operand(right, names)
    if a is None or b is None:
        raise _FilterProblem("compare with null through 'is null' / 'is not null'")
    if not isinstance(a, _Col) and not isinstance(b, _Col):
        raise _FilterProblem("a comparison needs a column on one side")
    fa = pc.field(a.name) if isinstance(a, _Col) else pc.scalar(a)
    fb = pc.field(b.name) if isinstance(b, _Col) else pc.scalar(b)
    sym = _OPS[type(op)]
    return {"==": fa == fb, "!=": fa != fb, "<": fa < fb, "<=": fa <= fb, ">": fa > fb, ">=": fa >= fb}[sym]


def _operand(node, names):
    """A literal (number, string, bool, None) or a :class:`_Col`."""
    if isinstance(node, ast.Constant):
        if isinstance(node.value, (bool, int, float, str)) or node.value is None:
            return node.value
        raise _FilterProblem(f"unsupported literal {node.value!r}")
    if isinstance(node, ast.Name):
        low = node.id.lower()
        if low in ("null", "none"):
            return None
        if low in ("true", "false"):
            return low == "true"
        names.append(node.id)
        return _Col(node.id)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)) \
            and isinstance(node.operand, ast.Constant) and type(node.operand.value) in (int, float):
        return -node.operand.value if isinstance(node.op, ast.USub) else node.operand.value
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "col" \
            and len(node.args) == 1 and not node.keywords and isinstance(node.args[0], ast.Constant) \
            and isinstance(node.args[0].value, str):
        names.append(node.args[0].value)
        return _Col(node.args[0].value)
    raise _FilterProblem(f"unsupported syntax: {_describe(node)}")


def _describe(node) -> str:
    for kind, what in _WHAT.items():
        if isinstance(node, kind):
            return what
    try:
        return repr(ast.unparse(node))
    except Exception:  # pragma: no cover - ast.unparse handles every node the parser makes
        return type(node).__name__


def filter_columns(expr: pc.Expression, names: list[str], schema: pa.Schema, src: str,
                   text: str | None = None, where: str = "filter") -> None:
    """Check a filter against the log's columns: an unknown column, or a comparison of types
    that cannot be compared (``country == 5`` on a string column), is one StudyError line."""
    shown = f" {text!r}" if text is not None else ""
    for n in names:
        if n not in schema.names:
            cols = ", ".join(schema.names[:12]) + (", ..." if len(schema.names) > 12 else "")
            raise StudyError(f"{src}: {where}{shown}: unknown column {n!r} (columns are: {cols})", param="filter")
    import pyarrow.dataset as ds

    try:  # bind the expression on an empty table of the log's schema: type errors show here
        ds.dataset(schema.empty_table()).to_table(filter=expr)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, TypeError) as exc:
        raise StudyError(f"{src}: {where}{shown}: {_first_line(exc)}", param="filter") from None


# --------------------------------------------------------------------------- group hash
def group_hash_of(values) -> np.ndarray:
    """A stable uint64 hash per value of a raw group id (numpy or Arrow array).

    Integers of any width hash as int64, floats as float64, strings by their text (pandas'
    ``hash_array``: SipHash with a fixed key for strings, a 64-bit mixer for numbers), so the
    same id hashes the same in a CSV, a Parquet file or any partition, in every process."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        if pa.types.is_dictionary(values.type):
            values = values.cast(values.type.value_type)
        values = values.to_numpy(zero_copy_only=False)
    raw = np.asarray(values)
    if raw.dtype.kind in "iub":
        raw = raw.astype(np.int64, copy=False)
    elif raw.dtype.kind == "f":
        raw = raw.astype(np.float64, copy=False)
    elif raw.dtype.kind in "OSU" or raw.dtype.name.startswith("str"):
        raw = raw.astype(str)
    return pd.util.hash_array(raw)


def keep_mask(h: np.ndarray, sample: float | None = None, shard: tuple[int, int] | None = None) -> np.ndarray | None:
    """Rows to keep by their hash ``h``: the lowest ``sample`` share of the hash range (its top
    53 bits) and hash modulo ``count`` == ``index``; None when everything is kept."""
    keep = None
    if sample is not None and sample < 1.0:
        keep = (h >> np.uint64(11)) < np.uint64(int(round(sample * 2.0**53)))
    if shard is not None and shard[1] > 1:
        index, count = shard
        m = (h % np.uint64(count)) == np.uint64(index)
        keep = m if keep is None else keep & m
    return keep


# --------------------------------------------------------------------------- bucketed datasets
#: the sidecar file a bucketed dataset carries (written by :func:`fusiontune.bucket.write_buckets`)
BUCKET_META = "_fusiontune_buckets.json"
#: the Hive partition key of a bucketed dataset's directories (``ft_bucket=<b>/``)
BUCKET_COLUMN = "ft_bucket"
#: the name of the hash a bucket is taken from (:func:`group_hash_of`, modulo the bucket count)
HASH_NAME = "fusiontune.group_hash_of/pandas-hash_array/v1"


@dataclass
class Bucketing:
    """A bucketed dataset (see :mod:`fusiontune.bucket`): ``root`` holds ``<column>=<b>/``
    directories, ``b = group_hash_of(group) % buckets``; ``dirs`` the bucket -> directory of the
    buckets that hold rows."""

    root: Path
    column: str
    buckets: int
    group: str
    dirs: dict
    #: a glob into the directory: bucket -> the matched files of that bucket (None: every file)
    files: dict | None = None

    def shard_buckets(self, shard: tuple[int, int] | None) -> list[int]:
        """The buckets of shard ``(index, count)``: ``b % count == index`` (all for None)."""
        if shard is None:
            return list(range(self.buckets))
        index, count = shard
        return [b for b in range(self.buckets) if b % count == index]

    def open(self, columns: list[str], shard: tuple[int, int] | None) -> LogSource:
        """A :class:`LogSource` over ONLY the files of the shard's buckets (the other buckets'
        directories are not listed, their files never opened), with ``bucket_of`` set."""
        keep = [b for b in self.shard_buckets(shard) if b in self.dirs]
        files, bucket_of = [], {}
        for b in keep:
            for f in (self.files[b] if self.files is not None else source_files(self.dirs[b])):
                files.append(str(f))
                bucket_of[str(f)] = b
        if not files:
            which = f"shard {shard}'s buckets ({', '.join(map(str, self.shard_buckets(shard))) or 'none'})" \
                if shard is not None else "its buckets"
            hint = " (use at least as many buckets as shards)" if shard is not None and shard[1] > self.buckets else ""
            raise InputError(f"{self.root}: no rows left after shard {shard}: {which} of {self.buckets} hold no "
                             f"file{hint}", param="shard")
        src = _parquet_dataset(str(self.root), files, columns, base=str(self.root))
        src.bucket_of = bucket_of
        return src

    def check(self, part: str, row0: int, h: np.ndarray, bucket: int) -> None:
        """Every row's hash modulo ``buckets`` must be its directory's ``bucket``; a row that is
        not is one :class:`InputError` line naming the file and the row."""
        bad = (h % np.uint64(self.buckets)) != np.uint64(bucket)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(f"{part}: row {row0 + i + 1} belongs to bucket {int(h[i] % np.uint64(self.buckets))}, "
                             f"not {bucket} ({self.column}={bucket}/): this file does not fit the bucketing of "
                             f"{self.root / BUCKET_META} (group {self.group!r}, {self.buckets} buckets)")


def bucketing_of(source, group: str | None) -> Bucketing | None:
    """The :class:`Bucketing` of ``source`` when it is a directory with a bucket sidecar whose
    group column is ``group``, or a glob whose matches all lie in that directory's buckets (then
    only the matched files are read: a glob can pick buckets or files); None otherwise (then the directory reads as a plain dataset, its
    bucket column an ordinary partition column).  A sidecar that cannot be read or does not fit
    the directory is one :class:`InputError` line naming it."""
    import json

    if not group or not isinstance(source, (str, Path)):
        return None
    pattern = str(source) if is_glob(str(source)) else None
    if pattern is not None:  # a glob into a bucketed directory (or into one of its buckets)
        base = Path(_glob_base(pattern))
        root = next((d for d in (base, base.parent) if (d / BUCKET_META).is_file()), None)
        if root is None:
            return None
    else:
        root = Path(source)
    meta_path = root / BUCKET_META
    if not root.is_dir() or not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{meta_path}: cannot read: {_first_line(exc)}") from None
    if not isinstance(meta, dict):
        raise InputError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}")
    for key, kind in (("bucket_column", str), ("buckets", int), ("group", str), ("hash", str)):
        v = meta.get(key)
        if not isinstance(v, kind) or isinstance(v, bool):
            raise InputError(f"{meta_path}: key {key!r} must be a {kind.__name__}, got {v!r}")
    if meta["buckets"] < 1:
        raise InputError(f"{meta_path}: key 'buckets' must be >= 1, got {meta['buckets']!r}")
    if meta["group"] != group:
        return None
    if meta["hash"] != HASH_NAME:
        raise InputError(f"{meta_path}: key 'hash' is {meta['hash']!r}; this version reads {HASH_NAME!r}")
    col, n = meta["bucket_column"], meta["buckets"]
    dirs = {}
    for d in sorted(root.iterdir()):
        if d.name.startswith((".", "_")):
            continue
        key, eq, value = d.name.partition("=")
        if not d.is_dir() or key != col or not eq or not value.isdigit() or int(value) >= n:
            raise InputError(f"{d}: not a bucket of {meta_path} (expected {col}=0 .. {col}={n - 1})")
        dirs[int(value)] = d
    files = None
    if pattern is not None:
        # the matched files by bucket; a file outside every bucket directory: read as a plain glob
        files = {}
        for f in source_files(pattern):
            try:
                rel = f.relative_to(root).parts
            except ValueError:
                return None
            key, eq, value = rel[0].partition("=") if len(rel) > 1 else ("", "", "")
            if key != col or not eq or not value.isdigit() or int(value) not in dirs:
                return None
            files.setdefault(int(value), []).append(f)
        if not files:
            return None  # nothing matches: open_source says so
        dirs = {b: d for b, d in dirs.items() if b in files}
    return Bucketing(root, col, n, group, dirs, files)
