"""``fusiontune search``: find fusion weights that maximise the study's objective."""

from __future__ import annotations

import sys
from pathlib import Path

from .common import add_study_argument, load, positive_int

HELP = "search fusion weights for a study (default: studies/demo.toml with CEM)"

METHODS_HELP = "cem, cma, tpe, gp, neighborhood, random, grid"


def add_arguments(p) -> None:
    add_study_argument(p)
    p.add_argument("--method", default=None,
                   help=f"search method: {METHODS_HELP} (default: the study's, else cem)")
    p.add_argument("--budget", type=positive_int, default=None, help="number of candidate evaluations")
    p.add_argument("--seed", type=int, default=None, help="random seed (same seed, same result)")
    p.add_argument("--population", type=positive_int, default=None, help="candidates per generation")
    p.add_argument("--patience", type=int, default=None,
                   help="stop after this many generations without improvement (0: never)")
    p.add_argument("--out", type=Path, default=None, help="run directory (default: runs/<study>-<method>-<seed>)")
    p.add_argument("--storage", default=None,
                   help="Optuna storage URL recording every trial (default: sqlite:///<run dir>/study.db; "
                        "e.g. postgresql://user@host/db)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its storage: stored evaluations are reused, "
                        "only the missing ones are computed")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")


def settings(study, args) -> dict:
    """The search settings: :func:`fusiontune.search_settings` (the API's, so both run alike)."""
    from ..api import search_settings

    return search_settings(study, **{k: getattr(args, k, None) for k in
                                     ("method", "budget", "seed", "population", "patience")})[0]


def run(args) -> int:
    from .. import rundir
    from ..errors import InputError
    from ..interrupt import exit_status, signal_name
    from ..pipeline import prepare, search
    from ..results import default_run_dir, print_summary
    from ..search.storage import default_storage_url, stored_config

    study = load(args)
    s = settings(study, args)
    out = args.out or default_run_dir(study.name, s["method"], s["seed"])
    url = args.storage or default_storage_url(out)
    name = f"{study.name}-{s['method']}-{s['seed']}"
    # the output location is checked before the log is read or anything is evaluated
    plan = rundir.plan(out, kind="search", study=study.name, method=s["method"], seed=s["seed"],
                       storage=url, mode="resume" if args.resume else "fresh")
    if args.resume:
        stored = stored_config(url, name)
        if stored is None:
            raise InputError(f"--resume: no stored run {name!r} in {url} (nothing to resume; "
                             f"run without --resume to start it)")
        for key in ("budget", "population", "patience", "min_delta"):  # unless given again
            if getattr(args, key, None) is None and key in stored:
                s[key] = stored[key]
    prep = prepare(study)
    claim = plan.claim()
    try:
        from ..api import search_settings

        options = search_settings(study, method=s["method"], population=args.population)[1]
        result, trials = search(prep, s["method"], s["budget"], s["seed"], s["population"], s["patience"],
                                s["min_delta"], options,
                                show_progress=False if args.quiet else None, storage=url, resume=args.resume,
                                run_name=name)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: whole generations are stored already
        print(f"fusiontune: stopped by {signal_name(exc)}; finished generations are stored in {url}; "
              f"continue with the same command plus --resume", file=sys.stderr)
        return exit_status(exc)
    claim.write_result(result, trials, study=study)
    if args.quiet:
        print(f"wrote {Path(out) / 'result.json'} and trials.csv (run {claim.run_id}; trials in {url})")
    else:
        print_summary(result, out)
        print(f"run {claim.run_id}; trials stored in {url} (optuna-dashboard {url})")
    return 0
