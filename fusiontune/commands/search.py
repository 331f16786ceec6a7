"""``fusiontune search``: find fusion weights that maximise the study's objective."""

from __future__ import annotations

from pathlib import Path

from .common import add_study_argument, load, positive_int

HELP = "search fusion weights for a study (default: studies/demo.toml with CEM)"


def add_arguments(p) -> None:
    add_study_argument(p)
    p.add_argument("--method", default=None, help="search method (default: the study's, else cem)")
    p.add_argument("--budget", type=positive_int, default=None, help="number of candidate evaluations")
    p.add_argument("--seed", type=int, default=None, help="random seed (same seed, same result)")
    p.add_argument("--population", type=positive_int, default=None, help="candidates per generation")
    p.add_argument("--patience", type=int, default=None,
                   help="stop after this many generations without improvement (0: never)")
    p.add_argument("--out", type=Path, default=None, help="run directory (default: runs/<study>-<method>-<seed>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")


def settings(study, args) -> dict:
    s = dict(study.search)
    for key in ("method", "budget", "seed", "population", "patience"):
        v = getattr(args, key, None)
        if v is not None:
            s[key] = v
    return s


def run(args) -> int:
    from ..pipeline import prepare, search
    from ..results import default_run_dir, print_summary, write_run

    study = load(args)
    s = settings(study, args)
    prep = prepare(study)
    result, trials = search(prep, s["method"], s["budget"], s["seed"], s["population"], s["patience"],
                            s["min_delta"], study.method_options.get(s["method"], {}),
                            show_progress=False if args.quiet else None)
    out = args.out or default_run_dir(study.name, s["method"], s["seed"])
    write_run(out, result, trials)
    if not args.quiet:
        print_summary(result, out)
    return 0
