"""``fusiontune compare``: every search method, several seeds, the same evaluation budget."""

from __future__ import annotations

from pathlib import Path

from .common import add_study_argument, load, positive_int

HELP = "compare search methods (and LTR fusers) at an equal evaluation budget over several seeds"


def add_arguments(p) -> None:
    add_study_argument(p)
    p.add_argument("--methods", default="cem,cma,tpe,gp,neighborhood,random",
                   help="comma-separated: cem, cma, tpe, gp, neighborhood, random, grid, and the LTR fusers "
                        "ltr-gbdt, ltr-gbdt-lambdarank, ltr-dnn, ltr-dnn-ft (they start from the best search run "
                        "of the comparison and are judged against it; default: cem,cma,tpe,gp,neighborhood,random)")
    p.add_argument("--budget", type=positive_int, default=None, help="evaluations per run (default: the study's)")
    p.add_argument("--seeds", type=positive_int, default=5, help="seeds per method (default 5)")
    p.add_argument("--population", type=positive_int, default=None, help="candidates per generation")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: runs/compare-<study>)")
    p.add_argument("--quiet", action="store_true", help="no progress and no table: one line saying where it went")


def run(args) -> int:
    from .. import rundir
    from ..compare import compare, markdown_table
    from ..pipeline import prepare
    from ..progress import progress
    from ..results import atomic_write_text

    study = load(args)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    s = dict(study.search)
    budget = args.budget or s["budget"]
    population = args.population or s["population"]
    out = args.out or Path("runs") / f"compare-{study.name}"
    plan = rundir.plan(out, kind="compare", study=study.name)  # checked before the first run, not after an hour
    prep = prepare(study)
    with progress(len(methods) * args.seeds, "compare", False if args.quiet else None, unit="runs") as bar:
        res = compare(prep, methods, budget, args.seeds, population, s["patience"], s["min_delta"],
                      study.method_options, seed0=int(s["seed"]),
                      on_run=lambda r: bar.update(advance=1, info=f"{r['method']} seed {r['seed']}"))
    hobj = prep.holdout_objective
    base_h = float(hobj.baseline_per_task @ hobj.w) if hobj is not None else None
    md = markdown_table(res, budget, args.seeds, base_h)

    def build(d: Path) -> None:
        atomic_write_text(d / "runs.csv", res.runs.to_csv(index=False, float_format="%.10g"))
        atomic_write_text(d / "compare.csv", res.table.to_csv(index=False, float_format="%.10g"))
        atomic_write_text(d / "compare.md", f"# {study.name}: search methods at budget {budget}\n\n" + md)

    claim = plan.claim(build)  # the old comparison is replaced as a whole, new files already in place
    if not args.quiet:
        print(md, end="")
    print(f"wrote {out / 'compare.md'}, compare.csv and runs.csv (run {claim.run_id})")
    return 0
