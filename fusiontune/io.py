"""One I/O layer: atomic writes, the weights reader and the log fingerprint.

- :func:`atomic_write` (and ``_text`` / ``_bytes`` / ``_json``): write to a uniquely named
  temp file in the target folder, then rename; the temp file is removed on any failure, so
  a reader never sees a half-written file and two writers never share a temp name.
- :func:`read_weights`: the one reader of weight sets (``fusiontune export`` files in JSON
  or YAML, a flat ``{name: value}`` mapping, or a run directory / result.json).
- :func:`log_fingerprint` / :func:`check_fingerprint`: what a run records about its log
  (path, size, mtime, rows, schema hash) and the check that refuses a changed log.

The log reader itself is :func:`fusiontune.log.load_log` (a file, a pandas DataFrame or a
pyarrow Table), shared by search, LTR scoring and eval.

Examples
--------
>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> atomic_write_json(d / "w.json", {"formula": "additive", "params": {"a_click": 1.0}})
>>> read_weights(d / "w.json")["params"]
{'a_click': 1.0}
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import LogError, RunError

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_bytes", "atomic_write_json", "jsonable",
           "read_weights", "WEIGHT_SUFFIXES", "log_fingerprint", "check_fingerprint"]

WEIGHT_SUFFIXES = (".json", ".yaml", ".yml")


def jsonable(o):
    """``default=`` for :func:`json.dumps`: numpy scalars and arrays, paths."""
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a unique temp path beside ``path``, then rename it to ``path``.

    The temp file is removed when ``write`` or the rename fails (also on KeyboardInterrupt);
    the final file gets the usual permissions (``0666`` minus the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_json(path: str | Path, obj) -> None:
    """``obj`` as indented JSON, atomically (numpy values and paths converted)."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=jsonable) + "\n")


# --------------------------------------------------------------------------- weights
def read_weights(path: str | Path) -> dict:
    """A weight set from a file or a run: ``{"formula", "params", "tasks", "study_file",
    "group", "options", "source", "document"}``.

    Reads a ``fusiontune export`` file (.json, .yaml, .yml), a flat ``{name: number}``
    mapping (``formula`` is then ``None``), or a search run directory / its result.json (the
    best params).  ``document`` is the file's mapping as read.  Errors are one line naming
    the file and the key.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "result.json"
    if not path.exists():
        raise RunError(f"{path}: weights file not found", param="params")
    suffix = path.suffix.lower()
    if suffix not in WEIGHT_SUFFIXES:
        raise RunError(f"{path}: unknown weights file type {path.suffix!r} (use .json, .yaml or .yml)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RunError(f"{path}: not a UTF-8 text file") from None
    if suffix == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RunError(f"{path}: invalid JSON: {exc}") from None
    else:
        import yaml

        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise RunError(f"{path}: invalid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(doc, dict):
        raise RunError(f"{path}: expected a mapping with a 'params' table (e.g. {{\"params\": "
                       f"{{\"a_click\": 1.0}}}}), got {type(doc).__name__}")
    formula = doc.get("formula")
    if formula is not None and not isinstance(formula, str):
        raise RunError(f"{path}: key 'formula' must be a formula name, got {formula!r}")
    if "params" in doc:
        params = doc["params"]
    elif isinstance(doc.get("best"), dict):  # a result.json
        params = doc["best"].get("params")
    elif formula is None:  # a flat mapping
        params = doc
    else:
        params = None
    source = doc.get("source") if isinstance(doc.get("source"), dict) else {}
    return {"formula": formula, "params": params, "tasks": doc.get("tasks"),
            "study_file": doc.get("study_file") or source.get("study_file"), "group": doc.get("group"),
            "options": {k: doc[k] for k in ("eps", "buckets", "rank_scope") if k in doc},
            "source": str(path), "document": doc}


# --------------------------------------------------------------------------- log fingerprint
def schema_hash(columns: dict[str, str]) -> str:
    """A short hash of ``{column: type}``."""
    text = json.dumps(sorted(columns.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def log_fingerprint(source, rows: int) -> dict:
    """What a run records about its log: ``{"path", "size", "mtime", "rows", "schema_hash"}``.

    ``source`` is a file path, a directory or glob of Parquet files (then ``size`` is the files'
    total and ``mtime`` the newest), a pandas DataFrame or a pyarrow Table (then ``path``,
    ``size`` and ``mtime`` are ``None`` and the schema is the in-memory one).
    """
    import pyarrow as pa

    if isinstance(source, (str, Path)):
        path = Path(source).resolve()
        size, mtime = _size_mtime(path)
        return {"path": str(path), "size": size, "mtime": mtime, "rows": int(rows),
                "schema_hash": schema_hash(_file_schema(path))}
    table = source if isinstance(source, pa.Table) else pa.Table.from_pandas(source, preserve_index=False)
    return {"path": None, "size": None, "mtime": None, "rows": int(rows),
            "schema_hash": schema_hash({f.name: str(f.type) for f in table.schema})}


def _size_mtime(path: Path) -> tuple[int, float]:
    """(bytes, modification time) of a log file, or the total bytes and newest time of the
    files a directory or glob holds."""
    from .dataset import is_dataset_path, source_files

    if not is_dataset_path(path):
        st = path.stat()
        return int(st.st_size), float(st.st_mtime)
    stats = [f.stat() for f in source_files(path)]
    return int(sum(s.st_size for s in stats)), float(max((s.st_mtime for s in stats), default=0.0))


def _file_schema(path: Path) -> dict[str, str]:
    from .dataset import is_dataset_path

    if is_dataset_path(path):
        import pyarrow.dataset as ds

        from .dataset import _glob_base, is_glob, source_files

        kw = {"partition_base_dir": _glob_base(str(path))} if is_glob(path) else {}
        where = [str(f) for f in source_files(path)] if is_glob(path) else str(path)
        return {f.name: str(f.type) for f in ds.dataset(where, format="parquet", partitioning="hive", **kw).schema}
    suffix = "".join(path.suffixes[-2:]).lower()
    if suffix.endswith((".parquet", ".pq")):
        import pyarrow.parquet as pq

        return {f.name: str(f.type) for f in pq.read_schema(path)}
    import gzip

    opener = gzip.open if suffix.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as fh:  # CSV: the header line
        line = fh.readline().strip()
    return {c: "csv" for c in line.split(",")}


def check_fingerprint(stored: dict | None, where: str) -> None:
    """Refuse a log file that changed since a run recorded ``stored`` (one :class:`LogError`
    line naming what changed).  In-memory logs (no path) are not checked here."""
    if not stored or not stored.get("path"):
        return
    from .dataset import source_files

    path = Path(stored["path"])
    if not source_files(path):
        raise LogError(f"{path}: the log of {where} is gone (moved or deleted since the run)")
    size, mtime = _size_mtime(path)
    changed = []
    if stored.get("size") is not None and size != int(stored["size"]):
        changed.append(f"size {stored['size']} -> {size} bytes")
    if stored.get("schema_hash") and schema_hash(_file_schema(path)) != stored["schema_hash"]:
        changed.append("columns/types (schema hash)")
    if stored.get("mtime") is not None and abs(mtime - float(stored["mtime"])) > 1e-6:
        changed.append("modification time")
    if changed:
        raise LogError(f"{path}: the log changed since {where} was made ({', '.join(changed)}); "
                       f"re-run the search on the new log")
