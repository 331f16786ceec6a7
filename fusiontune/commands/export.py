"""``fusiontune export``: a search run's weights (best, baseline or an A/B arm), or an LTR run's fuser, for serving."""

from __future__ import annotations

from pathlib import Path

import numpy as np

HELP = ("export a run's weights (best, baseline or an A/B arm) to a flat JSON/YAML file for serving, or an LTR "
        "run's fuser to ONNX (or a LightGBM text model) with a sidecar JSON")


def add_arguments(p) -> None:
    p.add_argument("--run", type=Path, required=True, help="run directory written by `fusiontune search` or `fusiontune ltr`")
    p.add_argument("--arm", default=None,
                   help="best (default), baseline, or an arm name from candidates.json (e.g. arm-2)")
    p.add_argument("--to", type=Path, required=True,
                   help="output file: weights.json or weights.yaml; for an LTR run model.onnx (or a LightGBM "
                        "model.txt), with a sidecar JSON beside it")
    from .score import add_trust_pickle

    add_trust_pickle(p)


def run(args) -> int:
    from ..errors import InputError
    from ..export import SUFFIXES, resolve_arm, weights_document, write_weights
    from ..fusion import ParamSpace, make_formula
    from ..results import read_run, run_study

    if not args.run.is_dir():
        raise InputError(f"{args.run}: run directory not found")
    result, _ = read_run(args.run)
    if str(result.get("formula", "")).startswith("ltr-"):
        return _export_ltr(args, result)
    if args.to.suffix.lower() not in SUFFIXES:
        raise InputError(f"{args.to}: unknown weights file type {args.to.suffix!r} (use .json, .yaml or .yml)")
    study = run_study(args.run)
    if study is None:
        raise InputError(f"{args.run / 'result.json'}: records no study (no study.json, key 'study_file' missing)")
    sf = str(study.path or args.run / "study.json")
    if study.sections.get("segments"):  # the per-segment layout comes from the log (segments.py)
        from ..pipeline import prepare

        prep = prepare(study)
        formula, space = prep.formula, prep.space
    else:
        formula = make_formula(study.formula, study.task_names, study.fusion_options, str(sf))
        space = ParamSpace.build(formula, study.baseline, study.bounds, study.reference, str(sf))
    name, params, extra = resolve_arm(args.run, result, args.arm)
    source = {"run": str(args.run.resolve()), "run_id": result.get("run_id"), "study": result.get("study"), "study_file": sf, "arm": name,
              "method": result.get("method"), "seed": result.get("seed"), **extra}
    doc = weights_document(formula, space, study, params, source)
    write_weights(args.to, doc)
    if "segments" in doc:
        pretty = f"weights of {len(doc['segments']['weights']) - 1} segments + default"
    else:
        pretty = ", ".join(f"{k}={v:.6g}" for k, v in doc["params"].items())
    print(f"wrote {args.to}: {formula.name} {pretty} ({name} of {args.run})")
    return 0


def _export_ltr(args, result: dict) -> int:
    """An LTR run: the fuser as ONNX (or a LightGBM text model) + sidecar, checked for parity."""
    from ..errors import InputError
    from ..ltr.export import EXPORT_SUFFIXES, export_fuser, sidecar_path
    from .score import load_model

    if args.arm not in (None, "best"):
        raise InputError(f"--arm {args.arm}: an LTR run has one model, nothing to choose")
    if args.to.suffix.lower() not in EXPORT_SUFFIXES:
        raise InputError(f"{args.to}: unknown model file type {args.to.suffix!r} for an LTR run (use .onnx, or "
                         f".txt for a LightGBM text model)")
    fuser = load_model(args.run, args.trust_pickle)
    x = _parity_rows(result, fuser)
    source = {"run": str(args.run.resolve()), "study": result.get("study"), "study_file": result.get("study_file"),
              "method": result.get("method"), "seed": result.get("seed")}
    doc = export_fuser(fuser, args.to, source, x)
    par = doc.get("parity")
    check = (f"; parity on {par['rows']} log rows: max |difference| {par['max_abs_diff']:.2g}" if par else "")
    print(f"wrote {args.to} and {sidecar_path(args.to)}: {fuser.name} ({fuser.backend}, {doc['format']}), "
          f"{len(doc['features'])} input columns{check}")
    return 0


def _parity_rows(result: dict, fuser, limit: int = 50_000):
    """Up to ``limit`` rows of the run's study log as the fuser's input matrix (None when the
    study or its log is gone)."""
    from ..pipeline import load_study_log
    from ..study import load_study

    sf = result.get("study_file")
    if not sf or not Path(sf).exists():
        return None
    study = load_study(sf)
    from ..dataset import source_files

    if not source_files(study.log):  # a file, or the files of a directory / glob
        return None
    log = load_study_log(study, fuser.model == "dnn", extra=fuser.spec.context or None)
    if log.n > limit:
        log = log.take(np.random.default_rng(0).choice(log.n, limit, replace=False))
    return fuser.spec.matrix(log)
