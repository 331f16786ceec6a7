"""``fusiontune export``: write a run's weights (best, baseline or an A/B arm) for serving."""

from __future__ import annotations

from pathlib import Path

HELP = "export a run's weights (best, baseline or an A/B arm) to a flat JSON/YAML file for serving"


def add_arguments(p) -> None:
    p.add_argument("--run", type=Path, required=True, help="run directory written by `fusiontune search`")
    p.add_argument("--arm", default=None,
                   help="best (default), baseline, or an arm name from candidates.json (e.g. arm-2)")
    p.add_argument("--to", type=Path, required=True, help="output file: weights.json or weights.yaml")


def run(args) -> int:
    from ..errors import InputError
    from ..export import SUFFIXES, resolve_arm, weights_document, write_weights
    from ..fusion import ParamSpace, make_formula
    from ..results import read_run
    from ..study import load_study

    if args.to.suffix.lower() not in SUFFIXES:
        raise InputError(f"{args.to}: unknown weights file type {args.to.suffix!r} (use .json, .yaml or .yml)")
    if not args.run.is_dir():
        raise InputError(f"{args.run}: run directory not found")
    result, _ = read_run(args.run)
    if str(result.get("formula", "")).startswith("ltr-"):
        raise InputError(f"{args.run / 'result.json'}: formula {result['formula']!r} is a learned fuser, not a "
                         f"weight set; export its model with the ltr commands")
    sf = result.get("study_file")
    if not sf:
        raise InputError(f"{args.run / 'result.json'}: key 'study_file' is missing")
    study = load_study(sf)
    formula = make_formula(study.formula, study.task_names, study.fusion_options, str(sf))
    space = ParamSpace.build(formula, study.baseline, study.bounds, study.reference, str(sf))
    name, params, extra = resolve_arm(args.run, result, args.arm)
    source = {"run": str(args.run.resolve()), "study": result.get("study"), "study_file": sf, "arm": name,
              "method": result.get("method"), "seed": result.get("seed"), **extra}
    doc = weights_document(formula, space, study, params, source)
    write_weights(args.to, doc)
    pretty = ", ".join(f"{k}={v:.6g}" for k, v in doc["params"].items())
    print(f"wrote {args.to}: {formula.name} {pretty} ({name} of {args.run})")
    return 0
