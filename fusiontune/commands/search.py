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
    p.add_argument("--join", action="store_true",
                   help="work on a shared run with other workers (any machine) through --storage; "
                        "creates it if absent (see docs/parallel.md)")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="start N local worker processes on one shared run (implies --join)")
    p.add_argument("--heartbeat", type=float, default=None, metavar="SECONDS",
                   help="shared runs: a worker silent this long is presumed dead and its claimed "
                        "candidates go to the others (default 30)")
    p.add_argument("--engine", choices=("local", "ray"), default=None,
                   help="where candidates are scored: local (this process) or ray (Ray actors, each holding "
                        "one shard of the log; default: the study's [engine], else local; docs/engine.md)")
    p.add_argument("--address", default=None,
                   help="ray: address of a running Ray cluster to join, e.g. 10.0.0.1:6379 (implies "
                        "--engine ray; default: start a local Ray instance)")
    p.add_argument("--actors", type=positive_int, default=None,
                   help="ray: number of shards / actors (default: the cluster's CPUs)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")


def settings(study, args) -> dict:
    """The search settings: :func:`fusiontune.search_settings` (the API's, so both run alike)."""
    from ..api import search_settings

    return search_settings(study, **{k: getattr(args, k, None) for k in
                                     ("method", "budget", "seed", "population", "patience")})[0]


def run(args) -> int:
    from .. import rundir
    from ..errors import InputError
    from ..pipeline import prepare
    from ..results import default_run_dir
    from ..search.storage import default_storage_url, stored_config

    study = load(args)
    s = settings(study, args)
    out = args.out or default_run_dir(study.name, s["method"], s["seed"])
    url = args.storage or default_storage_url(out)
    name = f"{study.name}-{s['method']}-{s['seed']}"
    shared = bool(args.join or (args.workers or 0) > 1)
    if args.resume and not shared:
        stored = stored_config(url, name)
        if stored is not None and stored.get("shared"):
            shared = True  # a shared run is continued by joining it
    # the output location is checked before the log is read or anything is evaluated
    plan = rundir.plan(out, kind="search", study=study.name, method=s["method"], seed=s["seed"],
                       storage=url, mode="join" if shared else "resume" if args.resume else "fresh")
    from ..engine import engine_settings

    engine = engine_settings(study, args.engine, args.address, args.actors)
    if shared:
        if engine["name"] != "local":
            raise InputError("--join/--workers share a run between local workers; the ray engine already "
                             "spreads each generation over its actors (use one or the other)")
        return _run_shared(args, study, s, out, url, name, plan)
    if args.resume:
        stored = stored_config(url, name)
        if stored is None:
            raise InputError(f"--resume: no stored run {name!r} in {url} (nothing to resume; "
                             f"run without --resume to start it)")
        for key in ("budget", "population", "patience", "min_delta"):  # unless given again
            if getattr(args, key, None) is None and key in stored:
                s[key] = stored[key]
    elif args.storage is not None and stored_config(url, name) is not None:
        raise _exists(url, name)  # before the run directory is touched
    if engine["name"] == "ray" and not args.quiet:
        where = f"the Ray cluster at {engine['address']}" if engine["address"] else "a local Ray instance"
        print(f"ray engine: {engine['actors'] or 'one actor per CPU'} actor(s) on {where}, each reading its "
              f"shard of {study.log}", file=sys.stderr, flush=True)
    prep = prepare(study, engine=engine)
    try:
        return _search_and_write(args, study, s, out, url, name, plan, prep)
    finally:
        prep.close()


def _search_and_write(args, study, s, out, url, name, plan, prep) -> int:
    from ..interrupt import exit_status, signal_name
    from ..pipeline import search
    from ..results import print_summary
    from ..search.storage import StudyExistsError

    claims = []  # the run directory is claimed only once search() has checked every setting
    try:
        from ..api import search_settings

        options = search_settings(study, method=s["method"], population=args.population)[1]
        result, trials = search(prep, s["method"], s["budget"], s["seed"], s["population"], s["patience"],
                                s["min_delta"], options,
                                show_progress=False if args.quiet else None, storage=url, resume=args.resume,
                                run_name=name, on_ready=lambda: claims.append(plan.claim()))
    except StudyExistsError:
        raise _exists(url, name) from None
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: whole generations are stored already
        print(f"fusiontune: stopped by {signal_name(exc)}; finished generations are stored in {url}; "
              f"continue with the same command plus --resume", file=sys.stderr)
        return exit_status(exc)
    claim = claims[0]
    claim.write_result(result, trials, study=study)
    if args.quiet:
        print(f"wrote {Path(out) / 'result.json'} and trials.csv (run {claim.run_id}; trials in {url})")
    else:
        print_summary(result, out)
        print(f"run {claim.run_id}; trials stored in {url} (optuna-dashboard {url})")
    return 0


def _exists(url: str, name: str):
    from ..errors import InputError

    return InputError(f"--storage {url} already holds the run {name!r}; add --resume to continue it or "
                      f"--join to share it with other workers (nothing was deleted)")


def _run_shared(args, study, s, out, url, name, plan) -> int:
    """``--join`` / ``--workers N``: this process is one worker of a shared run; with
    ``--workers N`` it also starts N - 1 local worker processes."""
    import multiprocessing as mp
    import os

    from ..errors import InputError
    from ..pipeline import prepare
    from ..interrupt import exit_status, signal_name
    from ..results import print_summary
    from ..search.coordination import DEFAULT_HEARTBEAT_TIMEOUT, search_shared, worker_process
    from ..search.storage import stored_config

    if args.storage is None:
        raise InputError("--join/--workers need --storage URL, one storage every worker reaches "
                         "(e.g. sqlite:///runs/shared.db or postgresql://user@host/db)")
    heartbeat = DEFAULT_HEARTBEAT_TIMEOUT if args.heartbeat is None else args.heartbeat
    if not heartbeat > 0:
        raise InputError(f"--heartbeat must be a positive number of seconds, got {args.heartbeat}")
    stored = stored_config(url, name)
    if stored is not None:  # joining: take the run's settings unless given again
        for key in ("budget", "population", "patience", "min_delta"):
            if getattr(args, key, None) is None and key in stored:
                s[key] = stored[key]
    options = dict(study.method_options.get(s["method"], {}))
    if args.population is not None:
        options.pop("population", None)
    n = args.workers or 1
    threads = max(1, (os.cpu_count() or 1) // n) if n > 1 else None
    if threads:
        import numba

        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    prep = prepare(study)
    claims, procs = [], []
    ctx = mp.get_context("spawn")

    def ready():  # the settings are checked: claim the run directory, then start the other workers
        claims.append(plan.claim())
        for _ in range(n - 1):
            p = ctx.Process(target=worker_process,
                            args=(study, s["method"], s["budget"], s["seed"], s["population"], s["patience"],
                                  s["min_delta"], options, url, name, heartbeat, threads))
            p.start()
            procs.append(p)
    try:
        result, trials = search_shared(prep, s["method"], s["budget"], s["seed"], s["population"], s["patience"],
                                       s["min_delta"], options, show_progress=False if args.quiet else None,
                                       storage=url, run_name=name, heartbeat_timeout=heartbeat, on_ready=ready)
    except KeyboardInterrupt as exc:  # our claims were handed back to the other workers
        for p in procs:
            p.terminate()
        for p in procs:
            p.join()
        print(f"fusiontune: stopped by {signal_name(exc)}; the shared run stays in {url}; continue it with "
              f"the same command plus --join", file=sys.stderr)
        return exit_status(exc)
    failed = 0
    for p in procs:
        p.join()
        failed += p.exitcode != 0
    claim = claims[0]
    claim.write_result(result, trials, study=study)
    st = result["storage"]
    if args.quiet:
        print(f"wrote {Path(out) / 'result.json'} and trials.csv (run {claim.run_id}; shared run in {url})")
    else:
        print_summary(result, out)
        print(f"shared run {name!r} in {url}: this process scored {st['new_evaluations']}, "
              f"other workers {st['reused_evaluations']}")
    if failed:
        print(f"fusiontune: {failed} of {n - 1} local workers failed; the others finished the run",
              file=sys.stderr)
    return 0
