"""Saving and loading fitted fusers; reading a log to score and writing it back.

A saved fuser is a folder (an ``ltr`` run directory) with ``fuser.json`` (model kind,
backend, target, input columns with their signs and scales, settings) and the model in a
format that cannot run code when it is read, whenever the backend has one:

=================  ==========================  ==========================================
fuser              model file(s)               read by
=================  ==========================  ==========================================
dnn (residual)     ``model.npz``               ``numpy.load(allow_pickle=False)``; the
                                               network is rebuilt from ``fuser.json``
gbdt, LightGBM     ``model.txt``               LightGBM's text model format
gbdt, sklearn      ``model.onnx`` (+ ``model.  onnxruntime; ``model.joblib`` is a pickle
                   joblib``)                   and is read only with ``trust_pickle``
=================  ==========================  ==========================================

Older run directories (``model.pt``, a joblib LightGBM model) and a scikit-learn GBDT saved
without the ``onnx`` extra hold only a pickle: :func:`load_fuser` refuses them unless
``trust_pickle=True`` (:class:`PickleRefused`), because unpickling a file from elsewhere can
execute arbitrary code.  Files are written to a temporary name and renamed, so a folder
never holds a half-written model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..errors import InputError, RunError
from ..log import PredictionLog, _numeric, _show, read_table
from ..results import atomic_write_text
from .features import FeatureSpec
from .fit import Fuser

__all__ = ["save_fuser", "load_fuser", "read_scoring_log", "write_scored", "FUSER_FILE", "PickleRefused",
           "LgbText", "lightgbm_text"]

FUSER_FILE = "fuser.json"
FORMAT = 2


class PickleRefused(RunError):
    """A model file is a pickle and the caller did not say it trusts it (``trust_pickle``)."""

    def __init__(self, path: Path, folder: Path):
        self.path, self.folder = Path(path), Path(folder)
        super().__init__(f"{path}: refused to load a pickle: unpickling can run arbitrary code; allow it with "
                         f"trust_pickle only if you trust where {folder} came from, or load its ONNX export",
                         param="trust_pickle")


def _atomic_binary(path: Path, write) -> None:
    """``write(tmp_path_str)`` then rename (the one atomic writer, :func:`fusiontune.io.atomic_write`)."""
    from ..io import atomic_write

    atomic_write(path, lambda tmp: write(str(tmp)))


class LgbText:
    """A LightGBM model read from its text format: ``predict(x, raw_score=True)`` like the estimator."""

    def __init__(self, booster):
        self.booster = booster

    def predict(self, x, raw_score=True):
        return self.booster.predict(x, raw_score=raw_score)


def lightgbm_text(estimator) -> str:
    """The LightGBM text model of a fitted estimator (or :class:`LgbText`), cut at its best iteration."""
    n = None
    if hasattr(estimator, "start"):  # residual trees: the trees alone (the formula part is in fuser.json)
        n = estimator.n_trees
        estimator = estimator.trees
    if n is None:
        n = getattr(estimator, "best_iteration_", None) or None
    if n == 0:
        n = 1  # LightGBM reads 0 as "all"; trees_used = 0 in the residual block says none is used
    if isinstance(estimator, LgbText):
        return estimator.booster.model_to_string(num_iteration=n)
    return estimator.booster_.model_to_string(num_iteration=n)


def save_fuser(fuser: Fuser, folder: str | Path) -> list[str]:
    """Write the model file(s) and ``fuser.json`` into ``folder``; returns the file names."""
    folder = Path(folder)
    meta = {"format": FORMAT, "model": fuser.model, "backend": fuser.backend, "target": fuser.target,
            "features": fuser.spec.to_dict(), "settings": fuser.settings}
    files = []
    if fuser.model == "dnn":
        state = fuser.estimator
        meta["network"] = state.config
        meta["model_file"] = "model.npz"
        arrays = state.state_arrays()

        def write_npz(p):
            with open(p, "wb") as fh:
                np.savez(fh, **arrays)

        _atomic_binary(folder / "model.npz", write_npz)
        files.append("model.npz")
    elif fuser.backend == "lightgbm":
        meta["model_file"] = "model.txt"
        if hasattr(fuser.estimator, "describe"):
            meta["residual"] = fuser.estimator.describe()
        text = lightgbm_text(fuser.estimator)
        _atomic_binary(folder / "model.txt", lambda p: Path(p).write_text(text, encoding="utf-8"))
        files.append("model.txt")
    else:
        import joblib

        meta["model_file"] = "model.joblib"
        _atomic_binary(folder / "model.joblib", lambda p: joblib.dump(fuser.estimator, p))
        files.append("model.joblib")
        try:
            from .serving import fuser_to_onnx
        except ImportError:  # pragma: no cover - the onnx extra is not installed
            fuser_to_onnx = None
        if fuser_to_onnx is not None:
            try:
                blob = fuser_to_onnx(fuser)
            except ImportError:
                blob = None
            if blob is not None:
                _atomic_binary(folder / "model.onnx", lambda p: Path(p).write_bytes(blob))
                meta["onnx_file"] = "model.onnx"
                files.append("model.onnx")
    atomic_write_text(folder / FUSER_FILE, json.dumps(meta, indent=2) + "\n")
    return files + [FUSER_FILE]


def load_fuser(folder: str | Path, trust_pickle: bool = False) -> Fuser:
    """The fuser saved in ``folder``, from a non-executable model file when there is one;
    a pickle only with ``trust_pickle`` (else :class:`PickleRefused`).  With ``trust_pickle``
    a scikit-learn GBDT is the original pickled estimator, not its ONNX twin."""
    folder = Path(folder)
    cfg = folder / FUSER_FILE
    if not cfg.exists():
        search_run = (folder / "result.json").exists()
        hint = " (it is a search run: score its weights, i.e. params, instead)" if search_run else ""
        raise InputError(f"{cfg}: not found: {folder} is not a saved LTR fuser{hint}",
                         param="params" if search_run else None)
    try:
        meta = json.loads(cfg.read_text(encoding="utf-8"))
        spec = FeatureSpec.from_dict(meta["features"])
        model, mfile = meta["model"], folder / meta["model_file"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"{cfg}: not a valid fuser description ({type(exc).__name__}: {exc})") from None
    if model not in ("gbdt", "dnn"):
        raise InputError(f"{cfg}: unknown model {model!r} (expected \"gbdt\" or \"dnn\")")
    onnx_file = folder / meta["onnx_file"] if meta.get("onnx_file") else None
    if not mfile.exists() and not (onnx_file and onnx_file.exists()):
        raise InputError(f"{mfile}: model file not found")
    backend = meta.get("backend", "")
    if mfile.suffix == ".npz":
        est = _load_npz(mfile, meta)
    elif mfile.suffix == ".txt":
        from .gbdt import import_lightgbm

        lgb = import_lightgbm(f"{mfile}")
        try:
            est = LgbText(lgb.Booster(model_file=str(mfile)))
        except Exception as exc:  # noqa: BLE001 - LightGBM raises its own error type on a bad file
            raise InputError(f"{mfile}: cannot read the LightGBM model: {str(exc).splitlines()[0]}") from None
        est = residual_wrap(est, meta.get("residual"), cfg)
    elif onnx_file is not None and onnx_file.exists() and not (trust_pickle and mfile.exists()):
        from .serving import OnnxScorer

        est = OnnxScorer.from_file(onnx_file)
    elif not trust_pickle:
        raise PickleRefused(mfile, folder)
    elif mfile.suffix == ".pt":
        est = _load_pt(mfile, meta)
    else:
        import joblib

        if backend == "lightgbm":
            from .gbdt import import_lightgbm

            import_lightgbm(f"{mfile}")
        try:
            est = joblib.load(mfile)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
            raise InputError(f"{mfile}: cannot load the model: {type(exc).__name__}: {exc}") from None
    return Fuser(model, backend, meta.get("target", ""), spec, est, meta.get("settings", {}))


def residual_wrap(trees, res: dict | None, src: Path):
    """``trees`` on top of the recorded baseline formula term (residual GBDT), or ``trees``."""
    if not res:
        return trees
    from .residual import ResidualTrees

    try:
        base = {"formula": res["formula"], "a": list(res["a"]), "b": list(res["b"]), "eps": float(res["eps"])}
        used = res.get("trees_used")
        return ResidualTrees(trees, base, float(res["scale"]), float(res["offset"]),
                             0 if used == 0 else None)  # the saved text holds exactly the trees used
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{src}: bad 'residual' block ({type(exc).__name__}: {exc})") from None


def _load_npz(mfile: Path, meta: dict):
    import torch

    from .dnn import DnnState, build_net

    net_cfg = meta["network"]
    net = build_net(net_cfg)
    try:
        with np.load(mfile, allow_pickle=False) as z:
            arrays = {k: torch.from_numpy(np.array(z[k])) for k in z.files}
        missing = net.load_state_dict(arrays, strict=False).missing_keys
    except (ValueError, OSError, RuntimeError, KeyError) as exc:
        raise InputError(f"{mfile}: cannot load the network: {str(exc).splitlines()[0]}") from None
    params = {n for n, _ in net.named_parameters()}
    if params & set(missing):
        raise InputError(f"{mfile}: cannot load the network: missing {sorted(params & set(missing))[0]!r}")
    net.eval()
    return DnnState(net, net_cfg)


def _load_pt(mfile: Path, meta: dict):
    """A format-1 DNN (``model.pt``): only reached with trust_pickle; the old plain MLP is gone."""
    raise InputError(f"{mfile}: a DNN fuser saved by an older fusiontune (plain MLP, model.pt); refit it "
                     f"with the residual DNN")


# --------------------------------------------------------------------------- scoring a new log
def read_scoring_log(path: str | Path, tasks: list[str], scores: list[str], scales: list[str],
                     need_probabilities: bool, group: str | None = None,
                     context: list[str] | None = None) -> tuple[pa.Table, PredictionLog]:
    """The whole table (every column, to write back) and a label-free :class:`PredictionLog`
    with the task scores (validated as ``load_log`` does), group codes and context columns.

    ``path`` is what :func:`fusiontune.log.load_log` takes: a CSV or Parquet file, a directory
    of Parquet files (Hive partitions ``key=value/`` become columns), or a glob.  The files of a
    dataset are read in sorted order into one table; a bad value is reported with the file it
    is in and its row within that file."""
    table, where = _scoring_table(path)
    path = Path(path)
    have = table.column_names
    for c, what in [*((s, f"score of task {t!r}") for t, s in zip(tasks, scores)),
                    *((c, "[ltr] feature") for c in (context or [])),
                    *(((group, "group"),) if group else ())]:
        if c not in have:
            shown = ", ".join(have[:12]) + (", ..." if len(have) > 12 else "")
            raise InputError(f"{path}: missing column {c!r} ({what}; columns are: {shown})")
    n = table.num_rows
    sc = np.empty((n, len(tasks)), dtype=np.float32)
    for j, (t, col, scale) in enumerate(zip(tasks, scores, scales)):
        s = _numeric(path, table, col, f"score of task {t!r}")
        bad = ~np.isfinite(s)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(f"{where(i)} column {col!r} (score of task {t!r}) must be finite: row "
                             f"{where.row(i) + 1} has {_show(s[i])}")
        if scale == "logit":
            s = 1.0 / (1.0 + np.exp(-s))
        elif need_probabilities:
            bad = (s < 0) | (s > 1)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise InputError(f"{where(i)} column {col!r} (score of task {t!r}) must be a probability in "
                                 f"[0, 1]: row {where.row(i) + 1} has {_show(s[i])}")
        sc[:, j] = s
    groups = None
    if group:
        import pandas as pd

        arr = table.column(group)
        if arr.null_count:
            i = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
            raise InputError(f"{where(i)} column {group!r} (group) is empty at row {where.row(i) + 1}")
        groups = pd.factorize(arr.to_numpy(zero_copy_only=False), sort=False)[0].astype(np.int64)
    extra = {c: table.column(c).to_numpy(zero_copy_only=False) for c in (context or [])}
    labels = np.full((n, len(tasks)), np.nan, dtype=np.float32)
    return table, PredictionLog(list(tasks), sc, labels, groups, None, None, str(path), extra)


class _Rows:
    """Maps a row of the concatenated scoring table to its file (``where(i)`` -> ``"file:"``) and
    its row within that file (``where.row(i)``)."""

    def __init__(self, names: list[str], starts: list[int]):
        self.names, self.starts = names, np.asarray(starts, dtype=np.int64)

    def _part(self, i: int) -> int:
        return int(np.searchsorted(self.starts, i, side="right")) - 1

    def __call__(self, i: int) -> str:
        return f"{self.names[self._part(i)]}:"

    def row(self, i: int) -> int:
        return int(i - self.starts[self._part(i)])


def _scoring_table(path: str | Path) -> tuple[pa.Table, _Rows]:
    """Every column of the log at ``path`` (a file, a directory / Hive dataset or a glob) as one
    table, and where each row came from."""
    from ..dataset import is_dataset_path, open_source

    if not is_dataset_path(path):
        return read_table(Path(path)), _Rows([str(path)], [0])
    src = open_source(str(path))
    names, starts, tables, n = [], [], [], 0
    for name, part in src.parts:
        try:
            t = part.to_table(schema=src.schema)  # partition columns (key=value/) included
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise InputError(f"{name}: cannot read: {str(exc).splitlines()[0] if str(exc) else exc}") from None
        names.append(name)
        starts.append(n)
        tables.append(t)
        n += t.num_rows
    if not tables:
        raise InputError(f"{path}: no data file")
    try:
        table = pa.concat_tables(tables).combine_chunks()
    except (ValueError, pa.ArrowException) as exc:
        raise InputError(f"{path}: the files do not share one schema: {str(exc).splitlines()[0]}") from None
    return table, _Rows(names, starts)


def write_scored(table: pa.Table, column: str, values: np.ndarray, out: str | Path) -> None:
    """The table plus ``column`` (replacing a column of that name), CSV or Parquet by the
    extension of ``out``, written to a temporary file and renamed."""
    out = Path(out)
    name = out.name.lower()
    if name.endswith((".parquet", ".pq")):
        kind = "parquet"
    elif name.endswith(".csv"):
        kind = "csv"
    else:
        raise InputError(f"{out}: unknown output type {out.suffix!r} (use .csv or .parquet)")
    if column in table.column_names:
        table = table.drop_columns([column])
    table = table.append_column(column, pa.array(np.asarray(values, dtype=np.float64)))

    def write(tmp):
        if kind == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, tmp, compression="zstd")
        else:
            import pyarrow.csv as pcsv

            pcsv.write_csv(table, tmp)

    try:
        _atomic_binary(out, write)
    except OSError as exc:
        raise InputError(f"{out}: cannot write: {exc.strerror or exc}") from None
