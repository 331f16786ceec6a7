"""``fusiontune score``: apply a saved fuser or a weight set to a log, write the fused score.

``--model DIR``   a run directory of ``fusiontune ltr`` (``fuser.json`` + model file), or an
                  exported ``model.onnx`` / LightGBM ``model.txt`` beside its sidecar JSON.
                  Non-executable formats only, unless ``--trust-pickle`` (see ltr/io.py).
``--params FILE`` a weight set: a JSON/YAML file with at least ``formula`` and ``params``
                  (as ``fusiontune export`` writes), or a search run's ``result.json`` (or
                  its folder), whose ``best.params`` are used.

Task score columns come from ``--study`` when given, else from the file (``tasks``: a list
of ``{name, score}`` / ``{name, score_column}`` tables, a ``{task: column}`` table or a list
of columns in parameter order), else from the study recorded in a ``result.json``
(``study_file``).  ``eps`` / ``buckets`` / ``rank_scope`` in the file override the study's.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError

HELP = "apply a saved LTR fuser or a weight set to a log and write the fused score column"


def add_arguments(p) -> None:
    p.add_argument("--log", type=Path, required=True,
                   help="prediction log to score: a .csv or .parquet file, a directory of Parquet files (Hive "
                        "partitions key=value/ become columns) or a quoted glob such as 'logs/day=*/*.parquet'")
    p.add_argument("--out", type=Path, required=True, help="output log (.csv or .parquet): input + fused column")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", type=Path,
                     help="run directory of `fusiontune ltr` (a saved fuser), or an exported model.onnx / "
                          "LightGBM model.txt with its sidecar JSON")
    src.add_argument("--params", type=Path, help="weights file (JSON/YAML with formula + params) or a result.json")
    p.add_argument("--study", type=Path, default=None, help="study TOML: task score columns and formula options")
    p.add_argument("--column", default="fused_score", help="name of the fused score column (default: fused_score)")
    add_trust_pickle(p)


def add_trust_pickle(p) -> None:
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow loading a pickled model (model.joblib / model.pt): unpickling can run arbitrary "
                        "code, so only for run directories you made or trust (default: ONNX, LightGBM text "
                        "or the DNN's .npz only)")


# --------------------------------------------------------------------------- weight sets
def read_weights(path: Path) -> dict:
    """``{"formula", "params", "tasks"?, "study_file"?, "source"}`` from a weights file or run."""
    from ..io import read_weights as _read

    ws = _read(path)
    path, data, params = Path(ws["source"]), ws["document"], ws["params"]
    formula = data.get("formula")
    if not isinstance(formula, str):
        raise InputError(f"{path}: missing key 'formula' (e.g. \"multiplicative\")")
    if formula.startswith("ltr-"):
        raise InputError(f"{path}: is an LTR fuser run ({formula}); use --model {path.parent}")
    if not isinstance(params, dict) or not params:
        raise InputError(f"{path}: missing key 'params' (e.g. {{\"a_click\": 1.0, \"a_like\": 0.3}})")
    for k, v in params.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InputError(f"{path}: params {k!r} must be a number, got {v!r}")
    return {**ws, "params": {k: float(v) for k, v in params.items()}}


def _task_columns(ws: dict, names: list[str], study) -> tuple[list[str], list[str]]:
    """(score columns, scales) of ``names`` (task names in parameter order)."""
    src = ws["source"]
    if study is not None:
        by = {t.name: t for t in study.tasks}
        missing = [n for n in names if n not in by]
        if missing:
            raise InputError(f"{src}: task {missing[0]!r} of the weights is not in the study "
                             f"{study.path} (tasks: {', '.join(by)})")
        return [by[n].score for n in names], [by[n].score_scale for n in names]
    tasks = ws["tasks"]
    cols: dict[str, str] = {}
    scales: dict[str, str] = {}
    if isinstance(tasks, dict):
        cols = {str(k): str(v) for k, v in tasks.items()}
    elif isinstance(tasks, list) and all(isinstance(t, dict) for t in tasks):
        for t in tasks:  # {name, score} as in result.json, {name, score_column} as `fusiontune export` writes
            col = t.get("score", t.get("score_column"))
            if "name" in t and col:
                cols[str(t["name"])] = str(col)
                scales[str(t["name"])] = str(t.get("score_scale", "prob"))
    elif isinstance(tasks, list) and all(isinstance(t, str) for t in tasks) and len(tasks) == len(names):
        cols = dict(zip(names, tasks))
    missing = [n for n in names if n not in cols]
    if missing:
        raise InputError(f"{src}: no score column for task {missing[0]!r}: pass --study, or give "
                         f"'tasks' (e.g. [{{\"name\": \"{missing[0]}\", \"score\": \"p_{missing[0]}\"}}])")
    return [cols[n] for n in names], [scales.get(n, "prob") for n in names]


def _score_params(args, study) -> tuple:
    from ..fusion import FORMULAS, make_formula
    from ..ltr.io import read_scoring_log
    from ..study import load_study

    ws = read_weights(args.params)
    src = ws["source"]
    if ws["formula"] not in FORMULAS:
        raise InputError(f"{src}: formula must be one of {', '.join(FORMULAS)}, got {ws['formula']!r}")
    seg = ws["document"].get("segments")
    if seg is not None:
        return _score_segments(args, study, ws, seg)
    names = [k[2:] for k in ws["params"] if k.startswith("a_")]
    if not names:
        raise InputError(f"{src}: params has no task weight a_<task> (got {', '.join(ws['params'])})")
    if study is None and ws["tasks"] is None and ws["study_file"] and Path(ws["study_file"]).exists():
        study = load_study(ws["study_file"])
    options = {**(study.fusion_options if study else {}), **ws["options"]}  # the file's own eps etc. win
    formula = make_formula(ws["formula"], names, options, src)
    missing = [k for k in formula.param_names if k not in ws["params"]]
    if missing:
        raise InputError(f"{src}: params is missing {missing[0]!r} (the {formula.name} formula needs "
                         f"{', '.join(formula.param_names)})")
    cols, scales = _task_columns(ws, names, study)
    group = (study.group if study else None) or ws.get("group")
    if formula.name == "rank" and formula.rank_scope == "group" and not group:
        raise InputError(f"{src}: the rank formula ranks within groups: pass --study with a group column")
    table, log = read_scoring_log(args.log, names, cols, scales, formula.needs_probabilities,
                                  group if formula.name == "rank" else None)
    from ..fusion import fused_scores

    return table, fused_scores(formula, log, ws["params"]), f"{formula.name} weights from {src}"


def _score_segments(args, study, ws: dict, seg) -> tuple:
    """Per-segment weights (an export of a [segments] study): each row is scored with the
    weights of its segment value, any other value with the default weights."""
    from ..fusion import FORMULAS, make_formula
    from ..ltr.io import read_scoring_log
    from ..segments import DEFAULT, serve_scores
    from ..study import load_study

    src = ws["source"]
    if ws["formula"] not in FORMULAS:
        raise InputError(f"{src}: formula must be one of {', '.join(FORMULAS)}, got {ws['formula']!r}")
    if not isinstance(seg, dict) or not isinstance(seg.get("weights"), dict) or not seg.get("columns"):
        raise InputError(f"{src}: key 'segments' must hold 'columns' and 'weights' ({{segment: {{parameter: number}}}})")
    weights, columns = seg["weights"], [str(c) for c in seg["columns"]]
    if DEFAULT not in weights or not isinstance(weights[DEFAULT], dict):
        raise InputError(f"{src}: segments: no {DEFAULT!r} weights (the weights of any other segment)")
    names = [k[2:] for k in weights[DEFAULT] if k.startswith("a_")]
    if study is None and ws["tasks"] is None and ws["study_file"] and Path(ws["study_file"]).exists():
        study = load_study(ws["study_file"])
    formula = make_formula(ws["formula"], names, {**(study.fusion_options if study else {}), **ws["options"]}, src)
    for s, w in weights.items():
        missing = [k for k in formula.param_names if not isinstance(w, dict) or k not in w]
        if missing:
            raise InputError(f"{src}: segments: weights of {s!r} lack {missing[0]!r} (the {formula.name} formula "
                             f"needs {', '.join(formula.param_names)})")
        bad = [k for k in formula.param_names if isinstance(w[k], bool) or not isinstance(w[k], (int, float))]
        if bad:
            raise InputError(f"{src}: segments: {s}.{bad[0]} must be a number, got {w[bad[0]]!r}")
    cols, scales = _task_columns(ws, names, study)
    group = (study.group if study else None) or ws.get("group")
    if formula.name == "rank" and formula.rank_scope == "group" and not group:
        raise InputError(f"{src}: the rank formula ranks within groups: pass --study with a group column")
    from ..io import _file_schema

    have = list(_file_schema(Path(args.log))) if Path(args.log).is_file() else None
    if have is not None:
        for c in columns:
            if c not in have:
                raise InputError(f"{args.log}: missing column {c!r} (segment column of the weights {src})")
    table, log = read_scoring_log(args.log, names, cols, scales, formula.needs_probabilities,
                                  group if formula.name == "rank" else None, columns)
    fused = serve_scores(formula, log, columns, weights)
    return table, fused, f"{formula.name} weights of {len(weights) - 1} segments + default from {src}"


def load_model(path: Path, trust_pickle: bool):
    """A fuser from an ``ltr`` run directory or an exported ``.onnx`` / LightGBM ``.txt`` file
    (with its sidecar JSON); a pickle only with ``--trust-pickle``."""
    from ..ltr.io import load_fuser

    path = Path(path)
    if path.is_file():
        from ..ltr.export import load_exported

        return load_exported(path)
    return load_fuser(path, trust_pickle=trust_pickle)


def _score_model(args, study) -> tuple:
    from ..ltr.io import read_scoring_log

    fuser = load_model(args.model, args.trust_pickle)
    spec = fuser.spec
    cols = list(spec.scores)
    if study is not None:  # the study may name the score columns of this log differently
        by = {t.name: t.score for t in study.tasks}
        cols = [by.get(t, c) for t, c in zip(spec.tasks, cols)]
    table, log = read_scoring_log(args.log, spec.tasks, cols, spec.scales, fuser.model == "dnn",
                                  None, spec.context)
    return table, fuser.predict(log), f"{fuser.name} from {args.model}"


def run(args) -> int:
    from ..ltr.io import write_scored
    from ..study import load_study

    study = load_study(args.study) if args.study else None
    if not args.column:
        raise InputError("--column must be a non-empty column name, e.g. fused_score")
    table, fused, what = _score_model(args, study) if args.model else _score_params(args, study)
    write_scored(table, args.column, fused, args.out)
    print(f"wrote {args.out}: {table.num_rows} rows, column {args.column!r} = {what}")
    return 0
