"""``fusiontune ltr``: fit a learn-to-rank fuser (GBDT or DNN) and judge it like a formula."""

from __future__ import annotations

from pathlib import Path

from .common import add_study_argument, load

HELP = "fit a GBDT or DNN fuser over the task scores, judged by the study's objective"


def add_arguments(p) -> None:
    add_study_argument(p)
    p.add_argument("--model", required=True, choices=("gbdt", "dnn"), help="fuser: gbdt or dnn")
    p.add_argument("--target", default=None, choices=("combined", "lambdarank"),
                   help="training target (default: the study's [ltr] target, else combined)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the study's [search] seed)")
    p.add_argument("--out", type=Path, default=None,
                   help="run directory (default: runs/<study>-ltr-<model>[-lambdarank]-<seed>)")
    p.add_argument("--vs", type=Path, default=None, metavar="RUN",
                   help="formula search run to judge the fuser against (default: the study's search run with "
                        "the best in-sample objective in the folder of --out, e.g. runs/)")
    p.add_argument("--start", default="auto", metavar="auto|baseline|best|RUN",
                   help="formula the residual fusers (DNN, LightGBM GBDT) start from: 'auto' (default: the best "
                        "formula run, the one --vs names or the one found, if there is one, else the baseline), "
                        "'baseline' (the study's baseline weights), 'best' (like auto, but an error without a "
                        "formula run), or a search run dir")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")


def run(args) -> int:
    from .. import rundir
    from ..fusion import make_formula
    from ..ltr.config import parse_config
    from ..ltr.fit import fit_ltr, starts_from_formula
    from ..ltr.io import save_fuser
    from ..ltr.versus import START_CHOICES, best_formula_run, resolve_start, summary_lines
    from ..pipeline import load_study_log, prepare
    from ..results import default_run_dir, print_summary, write_run

    study = load(args)
    src = str(study.path or "<study>")
    cfg = parse_config(study.sections.get("ltr"), None, src)
    target = args.target or cfg.target
    seed = study.search.get("seed", 0) if args.seed is None else args.seed
    name = f"ltr-{args.model}" + ("-lambdarank" if target == "lambdarank" else "")
    out = args.out or default_run_dir(study.name, name, seed)
    plan = rundir.plan(out, kind="ltr", study=study.name, method=f"ltr-{args.model}", seed=seed)  # before fitting
    formula = make_formula(study.formula, study.task_names, study.fusion_options, src)
    log = load_study_log(study, formula.needs_probabilities, extra=cfg.features or None)
    prep = prepare(study, log)
    from ..errors import RunError

    if args.vs is not None and not (args.vs / "result.json").exists():
        raise RunError(f"{args.vs / 'result.json'}: not found (--vs names a finished formula search run)")
    vs_run = args.vs if args.vs is not None else best_formula_run(Path(out).parent, prep)
    if args.start not in START_CHOICES and not (Path(args.start) / "result.json").exists():
        raise RunError(f"{Path(args.start) / 'result.json'}: not found (--start names auto, baseline, best or a "
                       f"finished formula search run)")
    residual = starts_from_formula(prep, args.model, cfg, target)
    start, start_run = resolve_start(prep, args.start, vs_run, residual, where=str(Path(out).parent))
    result, trials, fuser = fit_ltr(prep, args.model, target, seed, show_progress=False if args.quiet else None,
                                    start=start, start_run=start_run, vs=vs_run)

    def build(d: Path) -> None:  # the whole folder is ready before it replaces an older one
        result["model_files"] = save_fuser(fuser, d)
        result["run_id"] = plan.owner.run_id
        write_run(d, result, trials, study=study)  # result.json last: the folder is complete once it exists

    claim = plan.claim(build)
    if args.quiet:
        print(f"wrote {Path(out) / 'result.json'} and the fuser ({', '.join(result['model_files'])}; "
              f"run {claim.run_id})")
    else:
        print_summary(result, out)
        ltr = result["ltr"]
        imp = ", ".join(f"{k}={v:+.4f}" for k, v in sorted(result["feature_importance"].items(),
                                                            key=lambda kv: -kv[1]))
        print(f"{fuser.name} ({ltr['backend']}, target {ltr['target']}): {ltr['iterations']} iterations, "
              f"fit {ltr['fit_seconds']:.2f}s ({ltr['guardrails']['fits']} fit(s)), total {result['seconds']:.2f}s")
        if ltr["guardrails"]["multipliers"]:
            mult = ", ".join(f"{k} x{v:.3g}" for k, v in ltr["guardrails"]["multipliers"].items() if v != 1.0)
            print(f"guardrails: training weights raised for {mult or 'no task'}")
        print(f"permutation importance (objective drop): {imp}")
        if ltr.get("recommendation"):
            print(f"WARNING: {ltr['recommendation']}")
        print(f"started from {'the formula run ' + str(start_run) if start_run else 'the baseline formula'} "
              f"(--start {args.start})" if residual else
              f"fitted from scratch (the {ltr['backend']} GBDT has no formula to start from)")
        for line in summary_lines(result["versus"]):
            print(line)
        print(f"saved the fuser in {out} ({', '.join(result['model_files'])})")
    return 0
