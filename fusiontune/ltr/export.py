"""Export a fitted fuser for serving, and read an export back (``fusiontune export`` / ``score``).

``export_fuser(fuser, to, source, x)`` writes ``to`` (``.onnx``: any fuser; ``.txt``: the
LightGBM text model, LightGBM backend only) and its sidecar JSON ``to.with_suffix(".json")``
(schema in :mod:`fusiontune.ltr.serving`), after scoring ``x`` with both the exported model
and the Python fuser: the largest absolute difference is recorded in the sidecar's
``parity``.  Both files are written to a temporary name and renamed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..results import atomic_write_text
from .features import FeatureSpec
from .fit import Fuser

__all__ = ["export_fuser", "load_exported", "sidecar_path", "EXPORT_SUFFIXES"]

EXPORT_SUFFIXES = (".onnx", ".txt")


def sidecar_path(to: str | Path) -> Path:
    return Path(to).with_suffix(".json")


def export_fuser(fuser: Fuser, to: str | Path, source: dict, x: np.ndarray | None) -> dict:
    """Write the exported model and its sidecar; returns the sidecar document."""
    from .io import LgbText, _atomic_binary, lightgbm_text
    from .serving import OnnxScorer, fuser_to_onnx, sidecar

    to = Path(to)
    suffix = to.suffix.lower()
    if suffix not in EXPORT_SUFFIXES:
        raise InputError(f"{to}: unknown model file type {to.suffix!r} for an LTR fuser (use .onnx, or .txt for a "
                         f"LightGBM text model)")
    if suffix == ".txt":
        if fuser.backend != "lightgbm":
            raise InputError(f"{to}: a LightGBM text model needs the LightGBM backend; this fuser is "
                             f"{fuser.model} ({fuser.backend}): export it to .onnx")
        text = lightgbm_text(fuser.estimator)
        from .gbdt import import_lightgbm

        from .io import residual_wrap

        exported = residual_wrap(LgbText(import_lightgbm("a LightGBM text model").Booster(model_str=text)),
                                 getattr(fuser.estimator, "describe", lambda: None)(), to)
        blob, fmt = text.encode("utf-8"), "lightgbm-text"
    else:
        blob, fmt = fuser_to_onnx(fuser), "onnx"
        exported = OnnxScorer(blob, str(to))
    parity = None
    if x is not None and len(x):
        ref = fuser.predict_matrix(x)
        got = Fuser(fuser.model, fuser.backend, fuser.target, fuser.spec, exported, fuser.settings).predict_matrix(x)
        parity = {"rows": int(len(x)), "max_abs_diff": float(np.max(np.abs(ref - got))),
                  "compared_with": f"the Python fuser ({type(fuser.estimator).__name__})"}
    doc = sidecar(fuser, to.name, fmt, source, parity)
    doc["fusiontune"] = {"features": fuser.spec.to_dict(), "settings": fuser.settings}
    _atomic_binary(to, lambda p: Path(p).write_bytes(blob))
    atomic_write_text(sidecar_path(to), json.dumps(doc, indent=2) + "\n")
    return doc


def load_exported(path: str | Path) -> Fuser:
    """A fuser from an exported ``.onnx`` / ``.txt`` file and its sidecar (no pickle involved)."""
    from .io import LgbText
    from .serving import OnnxScorer

    path = Path(path)
    side = sidecar_path(path)
    if path.suffix.lower() not in EXPORT_SUFFIXES:
        raise InputError(f"{path}: not an exported fuser (expected a .onnx or LightGBM .txt file with its "
                         f"sidecar JSON, or an ltr run directory)")
    if not side.exists():
        raise InputError(f"{side}: sidecar not found: it names the input columns of {path.name}")
    try:
        doc = json.loads(side.read_text(encoding="utf-8"))
        spec = FeatureSpec.from_dict(doc["fusiontune"]["features"])
        fz = doc["fuser"]
        fmt = doc["format"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"{side}: not a fusiontune sidecar ({type(exc).__name__}: {exc})") from None
    if fmt == "onnx":
        est = OnnxScorer.from_file(path)
    elif fmt == "lightgbm-text":
        from .gbdt import import_lightgbm

        from .io import residual_wrap

        try:
            est = LgbText(import_lightgbm(str(path)).Booster(model_file=str(path)))
        except Exception as exc:  # noqa: BLE001 - LightGBM's own error type
            raise InputError(f"{path}: cannot read the LightGBM model: {str(exc).splitlines()[0]}") from None
        est = residual_wrap(est, fz.get("residual"), side)
    else:
        raise InputError(f"{side}: format must be \"onnx\" or \"lightgbm-text\", got {fmt!r}")
    return Fuser(fz.get("model", ""), fz.get("backend", ""), fz.get("target", ""), spec, est,
                 doc["fusiontune"].get("settings", {}))
