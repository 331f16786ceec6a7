"""Saving and loading fitted fusers; reading a log to score and writing it back.

A saved fuser is a folder (an ``ltr`` run directory) with ``fuser.json`` (model kind,
backend, target, input columns with their signs and scales, settings) and the model:
``model.joblib`` (scikit-learn / LightGBM estimator) or ``model.pt`` (the torch
``state_dict``; the network is rebuilt from ``fuser.json``).  Files are written to a
temporary name and renamed, so a folder never holds a half-written model.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..errors import InputError
from ..log import PredictionLog, _numeric, read_table
from ..results import atomic_write_text
from .features import FeatureSpec
from .fit import Fuser

__all__ = ["save_fuser", "load_fuser", "read_scoring_log", "write_scored", "FUSER_FILE"]

FUSER_FILE = "fuser.json"
FORMAT = 1


def _atomic_binary(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_fuser(fuser: Fuser, folder: str | Path) -> list[str]:
    """Write the model file(s) and ``fuser.json`` into ``folder``; returns the file names."""
    folder = Path(folder)
    meta = {"format": FORMAT, "model": fuser.model, "backend": fuser.backend, "target": fuser.target,
            "features": fuser.spec.to_dict(), "settings": fuser.settings}
    if fuser.model == "dnn":
        import torch

        state = fuser.estimator
        meta["network"] = state.config
        meta["model_file"] = "model.pt"
        _atomic_binary(folder / "model.pt", lambda p: torch.save(state.net.state_dict(), p))
    else:
        import joblib

        meta["model_file"] = "model.joblib"
        _atomic_binary(folder / "model.joblib", lambda p: joblib.dump(fuser.estimator, p))
    atomic_write_text(folder / FUSER_FILE, json.dumps(meta, indent=2) + "\n")
    return [meta["model_file"], FUSER_FILE]


def load_fuser(folder: str | Path) -> Fuser:
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
    if not mfile.exists():
        raise InputError(f"{mfile}: model file not found")
    if model == "dnn":
        import torch

        from .dnn import DnnState, build_net

        net_cfg = meta["network"]
        net = build_net(int(net_cfg["k"]), int(net_cfg["n_ctx"]), list(net_cfg["hidden"]), bool(net_cfg["monotone"]))
        try:
            net.load_state_dict(torch.load(mfile, map_location="cpu", weights_only=True))
        except (RuntimeError, OSError, EOFError) as exc:
            raise InputError(f"{mfile}: cannot load the network: {str(exc).splitlines()[0]}") from None
        net.eval()
        est = DnnState(net, net_cfg)
    elif model == "gbdt":
        import joblib

        if meta.get("backend") == "lightgbm":
            from .gbdt import import_lightgbm

            import_lightgbm(f"{mfile}")
        try:
            est = joblib.load(mfile)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
            raise InputError(f"{mfile}: cannot load the model: {type(exc).__name__}: {exc}") from None
    else:
        raise InputError(f"{cfg}: unknown model {model!r} (expected \"gbdt\" or \"dnn\")")
    return Fuser(model, meta.get("backend", ""), meta.get("target", ""), spec, est, meta.get("settings", {}))


# --------------------------------------------------------------------------- scoring a new log
def read_scoring_log(path: str | Path, tasks: list[str], scores: list[str], scales: list[str],
                     need_probabilities: bool, group: str | None = None,
                     context: list[str] | None = None) -> tuple[pa.Table, PredictionLog]:
    """The whole table (every column, to write back) and a label-free :class:`PredictionLog`
    with the task scores (validated as ``load_log`` does), group codes and context columns."""
    path = Path(path)
    table = read_table(path)
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
            raise InputError(f"{path}: column {col!r} (score of task {t!r}) must be finite: row {i + 1} has {s[i]!r}")
        if scale == "logit":
            s = 1.0 / (1.0 + np.exp(-s))
        elif need_probabilities:
            bad = (s < 0) | (s > 1)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise InputError(f"{path}: column {col!r} (score of task {t!r}) must be a probability in "
                                 f"[0, 1]: row {i + 1} has {s[i]!r}")
        sc[:, j] = s
    groups = None
    if group:
        import pandas as pd

        arr = table.column(group)
        if arr.null_count:
            i = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
            raise InputError(f"{path}: column {group!r} (group) is empty at row {i + 1}")
        groups = pd.factorize(arr.to_numpy(zero_copy_only=False), sort=False)[0].astype(np.int64)
    extra = {c: table.column(c).to_numpy(zero_copy_only=False) for c in (context or [])}
    labels = np.full((n, len(tasks)), np.nan, dtype=np.float32)
    return table, PredictionLog(list(tasks), sc, labels, groups, None, None, str(path), extra)


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
