"""Serving export of a fitted fuser: ONNX (any fuser) or LightGBM's text model, with a sidecar JSON.

One ONNX graph per fuser, one input and one output:

* input ``features``: float32 ``(N, F)``, the columns in the sidecar's ``features`` order:
  every task's score as a probability (a ``score_scale = "logit"`` column goes through
  ``1 / (1 + exp(-x))`` first), then the ``[ltr] features`` context columns as they are
  (a missing value is NaN);
* output ``score``: float32 ``(N,)``, the ranking score (higher ranks first; not a
  probability), exactly what ``Fuser.predict`` returns, to float32 precision.

Converters: scikit-learn's HistGradientBoosting with ``skl2onnx`` (raw scores, the
positive-class column), LightGBM with ``onnxmltools`` (its ``cross_entropy`` objective is
exported as the identical raw tree sum), the residual DNN with ``torch.onnx`` (the
``torch.export`` exporter, which needs ``onnxscript``): the formula, the input scaling and
the correction are all inside the graph.  Everything here is imported lazily: the ``onnx``
extra (``pip install 'fusiontune[onnx]'``) is needed only to export or to read ONNX.

The sidecar (``<model>.json``) documents the contract for a serving stack; schema
``fusiontune.serving/1``: ``model_file``, ``format`` (onnx | lightgbm-text), ``input`` (name,
dtype, shape), ``output`` (name, dtype, meaning), ``features`` (index, column, kind,
task, sign, transform), ``fuser`` (model, backend, target, monotone, residual formula),
``source`` (run, study, study_file) and ``parity`` (rows compared and the largest absolute
difference between the exported model and the Python fuser).
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np

from ..errors import InputError, missing_dependency

__all__ = ["fuser_to_onnx", "OnnxScorer", "sidecar", "SIDECAR_SCHEMA", "ONNX_PACKAGES"]

SIDECAR_SCHEMA = "fusiontune.serving/1"
INPUT, OUTPUT = "features", "score"
ONNX_PACKAGES = "pip install 'fusiontune[onnx]' (onnx, onnxruntime, skl2onnx, onnxmltools, onnxscript)"
OPSET = 18


def _need(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise missing_dependency(module.split(".")[0], "ONNX export/loading", ONNX_PACKAGES) from None


def fuser_to_onnx(fuser) -> bytes:
    """The serialized ONNX model of a fitted fuser (module docstring)."""
    n = len(fuser.spec.names)
    if fuser.model == "dnn":
        return _dnn_onnx(fuser.estimator, n)
    if fuser.backend == "lightgbm":
        return _lightgbm_onnx(fuser.estimator, n)
    return _sklearn_onnx(fuser.estimator, n)


@contextlib.contextmanager
def _skl2onnx_uint8_fix():
    """skl2onnx 1.20 passes HistGradientBoosting's ``missing_go_to_left`` flags as numpy uint8,
    which onnx 1.23's attribute builder rejects; hand them over as Python ints."""
    import skl2onnx.common.tree_ensemble as te

    orig = te.add_node

    def add_node(*args, nodes_missing_value_tracks_true=0, **kw):
        return orig(*args, nodes_missing_value_tracks_true=int(nodes_missing_value_tracks_true), **kw)

    te.add_node = add_node
    try:
        yield
    finally:
        te.add_node = orig


def _finish(model, src_output: str, column: int | None) -> bytes:
    """Append the node that turns the converter's output into ``score`` (N,) and make it the
    graph's only output."""
    from onnx import TensorProto, helper

    g = model.graph
    idx = helper.make_tensor(f"{OUTPUT}_column", TensorProto.INT64, [], [0 if column is None else column])
    g.initializer.append(idx)
    g.node.append(helper.make_node("Gather", [src_output, f"{OUTPUT}_column"], [OUTPUT], axis=1,
                                   name="fusiontune_score"))
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [None]))
    model.producer_name = "fusiontune"
    return model.SerializeToString()


def _sklearn_onnx(est, n: int) -> bytes:
    _need("onnx")
    skl2onnx = _need("skl2onnx")
    from skl2onnx.common.data_types import FloatTensorType

    with _skl2onnx_uint8_fix():
        model = skl2onnx.convert_sklearn(est, initial_types=[(INPUT, FloatTensorType([None, n]))],
                                         options={id(est): {"zipmap": False, "raw_scores": True}},
                                         target_opset={"": OPSET, "ai.onnx.ml": 3})
    # raw_scores: the second column is the positive class's raw score (decision_function)
    return _finish(model, model.graph.output[1].name, 1)


def _lightgbm_onnx(est, n: int) -> bytes:
    _need("onnx")
    onnxmltools = _need("onnxmltools")
    lgb = _need("lightgbm")
    from onnxmltools.convert.common.data_types import FloatTensorType

    from .io import lightgbm_text

    # onnxmltools knows no 'cross_entropy' objective; its raw score is the plain tree sum, which
    # is what the 'regression' objective outputs: the same trees under a name it converts
    text = re.sub(r"^objective=cross_entropy.*$", "objective=regression", lightgbm_text(est), flags=re.M)
    text = re.sub(r"^\[objective: cross_entropy\]$", "[objective: regression]", text, flags=re.M)
    text = re.sub(r"^threshold=(.*)$", _float32_thresholds, text, flags=re.M)
    text = re.sub(r"^tree_sizes=.*\n", "", text, flags=re.M)  # byte offsets of the old text: read sequentially
    booster = lgb.Booster(model_str=text)
    model = onnxmltools.convert_lightgbm(booster, initial_types=[(INPUT, FloatTensorType([None, n]))],
                                         target_opset=15, zipmap=False)
    out = model.graph.output[0].name
    if hasattr(est, "start"):  # residual trees: add the scaled baseline formula inside the graph
        out = _add_formula(model, out, est)
    return _finish(model, out, 0)


def _add_formula(model, trees_out: str, est) -> str:
    """Nodes computing ``trees + features[:, :K] -> phi @ (scale * a) + offset`` (N, 1), as
    :func:`fusiontune.ltr.residual.base_score` does in float32; returns the sum's name."""
    from onnx import helper, numpy_helper

    base, k = est.base, len(est.base["a"])
    g = model.graph
    f32 = np.float32

    def const(name, arr):
        g.initializer.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    nodes = [helper.make_node("Slice", [INPUT, const("fz_s0", np.array([0], np.int64)),
                                        const("fz_s1", np.array([k], np.int64)),
                                        const("fz_ax", np.array([1], np.int64))], ["fz_p"])]
    if base["formula"] == "additive":
        phi = "fz_p"
    elif base["formula"] == "multiplicative":
        nodes += [helper.make_node("Clip", ["fz_p", const("fz_eps", f32(base["eps"])), const("fz_one", f32(1.0))],
                                   ["fz_pc"]),
                  helper.make_node("Log", ["fz_pc"], ["fz_phi"])]
        phi = "fz_phi"
    else:  # power
        nodes += [helper.make_node("Add", ["fz_p", const("fz_b", np.asarray(base["b"], f32))], ["fz_pb"]),
                  helper.make_node("Max", ["fz_pb", const("fz_eps", f32(base["eps"]))], ["fz_pm"]),
                  helper.make_node("Log", ["fz_pm"], ["fz_phi"])]
        phi = "fz_phi"
    w = (f32(est.scale) * np.asarray(base["a"], f32)).astype(f32).reshape(k, 1)
    if est.n_trees == 0:  # the fit kept the formula: the one tree of the text model counts zero
        nodes.append(helper.make_node("Mul", [trees_out, const("fz_zero", f32(0.0))], ["fz_trees0"]))
        trees_out = "fz_trees0"
    nodes += [helper.make_node("MatMul", [phi, const("fz_w", w)], ["fz_lin"]),
              helper.make_node("Add", ["fz_lin", const("fz_off", np.array([f32(est.offset)], f32))], ["fz_start"]),
              helper.make_node("Add", [trees_out, "fz_start"], ["fz_total"])]
    g.node.extend(nodes)
    if not any(o.domain in ("", "ai.onnx") and o.version >= 13 for o in model.opset_import):
        for o in model.opset_import:  # Slice with inputs / Clip with min-max inputs need opset >= 11
            if o.domain in ("", "ai.onnx"):
                o.version = max(o.version, 13)
    return "fz_total"


def _float32_thresholds(m: re.Match) -> str:
    """``threshold=`` of a LightGBM text tree, each split moved down to the largest float32 <= it.

    The ONNX tree ensemble stores thresholds as float32 and its input is float32; for a
    float32 input ``x <= t`` and ``x <= floor32(t)`` decide the same way, so the exported
    trees split every float32 input exactly as LightGBM does."""
    t = np.array(m.group(1).split(), dtype=np.float64)
    t32 = t.astype(np.float32)
    up = t32.astype(np.float64) > t
    t32[up] = np.nextafter(t32[up], np.float32(-np.inf))
    return "threshold=" + " ".join(repr(float(v)) for v in t32)


def _dnn_onnx(state, n: int) -> bytes:
    _need("onnx")
    _need("onnxscript")
    import tempfile
    import warnings

    import torch

    net = state.net.eval()
    x = torch.zeros((4, n), dtype=torch.float32)
    x[:, :int(state.config["k"])] = 0.5
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), \
            contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        path = Path(tmp) / "m.onnx"
        torch.onnx.export(net, (x,), str(path), dynamo=True, input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_shapes=({0: torch.export.Dim("rows")},), opset_version=OPSET,
                          external_data=False, verbose=False)
        return path.read_bytes()


class OnnxScorer:
    """An ONNX fuser read with onnxruntime: ``predict_matrix(x) -> (N,) float64``."""

    def __init__(self, blob: bytes, source: str = "<onnx>"):
        ort = _need("onnxruntime")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(blob, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own error types on a bad file
            raise InputError(f"{source}: not a readable ONNX model: {str(exc).splitlines()[0][:200]}") from None
        ins = self.session.get_inputs()
        if len(ins) != 1 or ins[0].name != INPUT:
            raise InputError(f"{source}: expected one input named {INPUT!r}, got "
                             f"{', '.join(i.name for i in ins)}")
        self.n_features = ins[0].shape[1] if isinstance(ins[0].shape[1], int) else None
        self.source = source

    @classmethod
    def from_file(cls, path: str | Path) -> "OnnxScorer":
        path = Path(path)
        try:
            blob = path.read_bytes()
        except OSError as exc:
            raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
        return cls(blob, str(path))

    def predict_matrix(self, x: np.ndarray, batch: int = 262144) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.n_features is not None and x.shape[1] != self.n_features:
            raise InputError(f"{self.source}: the model takes {self.n_features} feature columns, got {x.shape[1]}")
        out = [self.session.run([OUTPUT], {INPUT: x[s:s + batch]})[0].reshape(-1) for s in range(0, len(x), batch)]
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def sidecar(fuser, model_file: str, fmt: str, source: dict, parity: dict | None) -> dict:
    """The sidecar JSON document (module docstring)."""
    spec = fuser.spec
    feats = []
    for i, (t, col, scale, sign) in enumerate(zip(spec.tasks, spec.scores, spec.scales, spec.signs)):
        tr = ("probability in [0, 1], as logged" if scale == "prob" else
              "the logged logit x turned into a probability: 1 / (1 + exp(-x))")
        feats.append({"index": i, "column": col, "kind": "task_score", "task": t, "sign": int(sign),
                      "transform": tr})
    for j, c in enumerate(spec.context):
        feats.append({"index": spec.k + j, "column": c, "kind": "context", "transform":
                      "numeric value as is; missing -> NaN" + (" (the DNN maps NaN to the training mean)"
                                                              if fuser.model == "dnn" else "")})
    settings = fuser.settings or {}
    doc = {
        "schema": SIDECAR_SCHEMA, "model_file": model_file, "format": fmt,
        "input": ({"name": INPUT, "dtype": "float32", "shape": [None, len(feats)]} if fmt == "onnx" else
                  {"dtype": "float64", "shape": [None, len(feats)], "predict": "raw_score=True"}),
        "output": {"name": OUTPUT if fmt == "onnx" else "raw score", "dtype": "float32" if fmt == "onnx" else "float64",
                   "shape": [None], "meaning": "ranking score: higher ranks first; not a probability"},
        "features": feats,
        "fuser": {"model": fuser.model, "backend": fuser.backend, "target": fuser.target,
                  "monotone": bool(settings.get("monotone", False))},
        "source": source, "parity": parity,
    }
    if hasattr(fuser.estimator, "describe"):
        doc["fuser"]["residual"] = {**fuser.estimator.describe(),
                                    "note": ("score = LightGBM raw score + (scale * a) . phi(p) + offset, phi the "
                                             "formula's per-task term; " + ("inside the graph" if fmt == "onnx" else
                                                                            "a serving stack adds it to the trees"))}
    if fuser.model == "dnn":
        base = fuser.estimator.config["base"]
        doc["fuser"]["residual"] = {"formula": base["formula"], "a": base["a"], "b": base["b"], "eps": base["eps"],
                                    "note": "score = formula(baseline weights) + learned correction, in the graph"}
    if fmt == "onnx":
        doc["opset"] = OPSET
    return doc
