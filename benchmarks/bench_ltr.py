"""LTR fusers vs the best searched formula, side by side on one holdout.

Per study: the best formula (the search method with the best *in-sample* objective among
``--methods``; the holdout does not choose it), then the line-up fusers of
``fusiontune.ltr.lineup`` (the same ones ``fusiontune compare`` runs: GBDT combined and
lambdarank, residual LightGBM; the residual DNN without and with the surrogate fine-tune),
each started from that best formula.  For each: fit (or search) seconds, in-sample and
holdout objective, the holdout delta vs the baseline and vs the best formula, each with a
paired 95% group-bootstrap interval (every row scored on the very same resamples of the
holdout requests, ``fusiontune.bootstrap.resample_fused``), and whether it keeps the
guardrails on the holdout.  Each guarded task's holdout delta of a fuser minus the best
formula's is given with its paired interval too, and the "Pareto" column says whether the
fuser beats the formula without paying for it: objective interval above 0 and no guarded task
below the formula's (point estimate; ``*`` when that task's interval lies below 0).  Started
from the best formula, the fusers keep no guarded task below it on their validation part
(``[ltr] guardrail_bar = "start"``, docs/ltr.md); ``--bar limit`` gives the older behaviour
(the guardrail's limit), to see what the objective gain costs in guardrails.

    python benchmarks/bench_ltr.py            # quick: feed6, grad search, 200 resamples (a few minutes)
    python benchmarks/bench_ltr.py --full     # demo + feed6, grad,cma,cem, 1000 resamples, and the
                                              # fusers started from the baseline too
    python benchmarks/bench_ltr.py --requests 20000,50000 --from-baseline
                                              # feed6's study on bigger logs of the same simulator
    python benchmarks/bench_ltr.py --studies mtlfeed5 --methods grad,cma --from-baseline
                                              # a log written by a model fusiontune trained itself

``--requests N,...`` asks whether the fusers only lack rows: for each N it simulates a feed6 log
of N requests x 20 candidates (``simulate_feed6``, the generator of data/feed6_log.parquet, seed
``--data-seed``) under ``--data-dir`` (default /tmp; made once, reused), writes a copy of
studies/feed6.toml whose ``log`` points at it (same tasks, formula, guardrails, time split and
0.3 holdout) and runs the line-up on that study.  Nothing is downloaded or committed.

``--studies mtlfeed5`` asks the same on a log whose task scores come from a multi-task model
(MMoE) that ``fusiontune train`` fits on ``feed5_table`` (``--mtl-rows`` rows, seed
``--data-seed``): studies/mtlfeed5.toml is both the training spec and the study; the model
scores only the requests it did not train on, and the fusers also see the request context
(``[ltr] features``).  Table, log and study copy are made once under ``--data-dir``;
``--train-args "--model shared_bottom"`` trains another model (the options name the files).

The machine may be shared: seconds are only indicative; compare within one run.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import numpy as np

from fusiontune.bootstrap import resample_fused
from fusiontune.ltr.config import parse_config
from fusiontune.ltr.fit import ensure_features
from fusiontune.ltr.lineup import LINEUP, fit_lineup
from fusiontune.pipeline import prepare, search
from fusiontune.study import load_study
from machine import cpu_model as cpu_name, loadavg  # noqa: E402  (benchmarks/machine.py)


def ci(samples: np.ndarray) -> str:
    lo, hi = np.quantile(samples, [0.025, 0.975])
    return f"[{lo:+.4f}, {hi:+.4f}]"


FEED6_STUDY = Path(__file__).resolve().parents[1] / "studies" / "feed6.toml"
MTL_STUDIES = {"mtlfeed5": Path(__file__).resolve().parents[1] / "studies" / "mtlfeed5.toml"}


def _study_copy(base: Path, out: Path, log: Path, name: str) -> str:
    """``base`` with its top-level ``log`` and ``name`` replaced, written atomically to ``out``."""
    text = Path(base).read_text(encoding="utf-8")
    text, n = re.subn(r'(?m)^log\s*=.*$', f'log = "{log.resolve()}"', text, count=1)
    text, _ = re.subn(r'(?m)^name\s*=.*$', f'name = "{name}"', text, count=1)
    if n != 1:
        raise SystemExit(f"bench_ltr: {base}: no top-level 'log = ...' line to point at the log")
    tmp = out.with_suffix(".toml.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return str(out)


def trained_log(name: str, data_dir: str, rows: int, data_seed: int = 0, train_args: list[str] | None = None) -> str:
    """A study whose log is written by a multi-task model fusiontune trains itself (issue 16).

    ``name`` is a key of ``MTL_STUDIES`` (``mtlfeed5``): a study file that is also a
    ``fusiontune train`` spec.  Under ``data_dir`` (made once, reused when the files exist):
    the training table (``feed5_table(rows, data_seed)``), the log of ``fusiontune train
    --spec <study>`` (the model scores only its test part, whole requests it never trained on)
    and a copy of the study pointing at that log.  ``train_args``: more ``fusiontune train``
    options over the spec's (e.g. ``["--epochs", "1"]``; they name the files too).  Returns the
    copy's path."""
    import hashlib

    from fusiontune import cli
    from fusiontune.mtl.synthetic import feed5_table
    from fusiontune.simulate import write_table

    base = MTL_STUDIES[name]
    out = Path(data_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{name}_{rows}rows_seed{data_seed}"
    table = out / f"{stem}_table.parquet"
    if train_args:
        stem += "_" + hashlib.sha1(" ".join(train_args).encode()).hexdigest()[:8]
    log = out / f"{stem}_log.parquet"
    if not table.exists():
        print(f"  simulating {table} ({rows} rows)", flush=True)
        write_table(feed5_table(rows, data_seed), table)  # atomic: temp file, then rename
    if not log.exists():
        t0 = time.perf_counter()
        print(f"  training {log} (fusiontune train --spec {base.name})", flush=True)
        code = cli.main(["train", "--spec", str(base), "--data", str(table), "--out", str(log), "--quiet",
                         *(train_args or [])])
        if code:
            raise SystemExit(f"bench_ltr: fusiontune train failed (exit {code})")
        print(f"  ... {time.perf_counter() - t0:.1f}s", flush=True)
    return _study_copy(base, out / f"{stem}.toml", log, stem)


def bigger_feed6(requests: int, data_dir: str, data_seed: int = 0, base: Path = FEED6_STUDY) -> str:
    """A study file like ``base`` whose log is a feed6 log of ``requests`` requests x 20 candidates
    simulated under ``data_dir`` (made once: reused when the file exists).  Returns its path."""
    from fusiontune.simulate import simulate_feed6, write_table

    out = Path(data_dir)
    out.mkdir(parents=True, exist_ok=True)
    log = out / f"feed6_{requests}r_seed{data_seed}.parquet"
    if not log.exists():
        t0 = time.perf_counter()
        print(f"  simulating {log} ({requests} requests x 20 candidates)", flush=True)
        write_table(simulate_feed6(requests, 20, data_seed), log)  # atomic: temp file, then rename
        print(f"  ... {time.perf_counter() - t0:.1f}s", flush=True)
    return _study_copy(base, out / f"feed6_{requests}r_seed{data_seed}.toml", log, f"feed6-{requests}r")


def best_formula(prep, methods: list[str], seed: int, budget: int | None, cache: Path | None = None):
    """The search run with the best in-sample objective: (result, seconds, method).  With ``cache``
    (a directory) a search's result is kept as JSON beside the log and read back by a later run on
    the same study file, method, budget and seed (the fuser sweeps need not redo a 10-minute search)."""
    import json

    s = prep.study.search
    best = None
    for m in methods:
        b = budget or s["budget"]
        hit = None if cache is None else cache / f"{Path(str(prep.study.path)).stem}.{m}-b{b}-s{seed}.json"
        t0 = time.perf_counter()
        if hit is not None and hit.exists():
            res = json.loads(hit.read_text())
            secs = float(res["_bench_search_seconds"])
            print(f"  search {m}: read back from {hit} (it took {secs:.0f}s)", flush=True)
        else:
            res, _ = search(prep, m, b, seed, s["population"], s["patience"], s["min_delta"],
                            prep.study.method_options.get(m, {}), show_progress=False)
            secs = time.perf_counter() - t0
            if hit is not None:
                tmp = hit.with_suffix(".tmp")
                tmp.write_text(json.dumps({**res, "_bench_search_seconds": secs}, default=float))
                tmp.replace(hit)
        print(f"  search {m}: in-sample {res['best']['objective']:.5f}, holdout "
              f"{res['holdout']['best']['objective']:.5f} ({secs:.1f}s)", flush=True)
        if best is None or res["best"]["objective"] > best[0]["best"]["objective"]:
            best = (res, secs, m)
    return best


def guardrails(prep, result: dict) -> str:
    """'kept' or 'crossed' on the holdout, with each guarded task's delta vs the baseline there."""
    h = result["holdout"]
    deltas = [f"{t.name} {h['best']['per_task'][t.name] - h['baseline']['per_task'][t.name]:+.4f}"
              for t in prep.study.tasks if t.max_drop is not None]
    return ("kept" if h["best"]["feasible"] else "crossed") + (f" ({', '.join(deltas)})" if deltas else "")


def fuser_note(r: dict) -> str:
    ltr = r["ltr"]
    note = ""
    if ltr.get("kept_formula") is not None:
        what = "epoch" if ltr["model"] == "dnn" else "trees"
        note = ("kept the start formula" if ltr["kept_formula"] else
                f"{what} {ltr['iterations']}" + (f" ({ltr['best_phase']})" if ltr["model"] == "dnn" else ""))
    g = ltr["guardrails"]
    if g.get("multipliers") and any(v != 1.0 for v in g["multipliers"].values()):
        note += (", " if note else "") + "guardrail x" + ",".join(
            f"{k}{v:.3g}" for k, v in g["multipliers"].items() if v != 1.0)
    return note


def run_study(path: str, seed: int, methods: list[str], resamples: int, fusers: list[str], from_baseline: bool,
              budget: int | None, bar: str = "start", cache: Path | None = None) -> None:
    study = load_study(path)
    # the log with the study's [ltr] context columns, so that the fusers can score the holdout
    prep = ensure_features(prepare(study), parse_config(study.sections.get("ltr"), None, path).features)
    hobj = prep.holdout_objective
    print(f"\n## {study.name}: {len(study.tasks)} tasks, {study.formula} formula, {prep.search_log.n} search rows, "
          f"{hobj.n_rows} holdout rows", flush=True)
    res, secs, m = best_formula(prep, methods, seed, budget, cache)
    theta = prep.space.from_dict(res["best"]["params"])
    rows = [(f"best formula ({m}, budget {res['budget']}; best in-sample of {','.join(methods)})", secs,
             res["best"]["objective"], hobj.formula.scores(hobj.prepared, theta[None, :])[0],
             res["holdout"]["best"]["objective"], guardrails(prep, res), "", False)]
    starts = [("best formula", res["best"]["params"])] + ([("baseline", None)] if from_baseline else [])
    for start_label, start in starts:
        for name in fusers:
            if LINEUP[name].needs_groups and prep.search_log.groups is None:
                continue
            t0 = time.perf_counter()
            r, _, fuser = fit_lineup(prep, name, seed, start=start, options={"guardrail_bar": bar})
            secs = time.perf_counter() - t0
            rows.append((f"{LINEUP[name].label}, from the {start_label}", secs, r["best"]["objective"],
                         fuser.predict(hobj.log), r["holdout"]["best"]["objective"], guardrails(prep, r),
                         fuser_note(r), bool(r["ltr"].get("kept_formula")) and start is not None))
            print(f"  {rows[-1][0]}: holdout {rows[-1][4]:.5f} ({secs:.1f}s)", flush=True)
    base = hobj.formula.scores(hobj.prepared, prep.space.baseline[None, :])[0]
    fused = np.vstack([np.asarray(base, dtype=np.float64)] + [np.asarray(x[3], dtype=np.float64) for x in rows])
    metrics, kind, n_units = resample_fused(hobj, fused, resamples, seed)
    boot = np.nansum(metrics * hobj.w[None, None, :], axis=2)  # (rows + 1, B) objective
    j_base = float(hobj.baseline_per_task @ hobj.w)
    print(f"\nbaseline holdout objective {j_base:.5f}; 95% paired bootstrap intervals over {resamples} resamples "
          f"of the {n_units} holdout {kind}")
    guarded = [j for j, t in enumerate(prep.study.tasks) if t.max_drop is not None]
    full = hobj.score_metrics(fused)  # (rows + 1, K) on the whole holdout
    print("| fuser | fit s | in-sample | holdout | Δ vs baseline [95% CI] | Δ vs best formula [95% CI] | "
          "holdout guardrails (Δ vs baseline) | guardrails − best formula's [95% CI] | Pareto vs best formula "
          "| notes |")
    print("|---|---:|---:|---:|---|---|---|---|---|---|")
    for i, (label, secs, jin, _, jh, feas, note, kept) in enumerate(rows):
        vs_f = gvs = pareto = "—"
        if i:
            vs_f = f"{jh - rows[0][4]:+.4f} {ci(boot[i + 1] - boot[1])}"
            gd = {j: float(full[i + 1, j] - full[1, j]) for j in guarded}
            gvs = ", ".join(f"{prep.study.tasks[j].name} {gd[j]:+.4f} {ci(metrics[i + 1, :, j] - metrics[1, :, j])}"
                            for j in guarded) or "—"
            pareto = pareto_verdict(jh - rows[0][4], boot[i + 1] - boot[1], gd, metrics[i + 1] - metrics[1],
                                    {j: prep.study.tasks[j].name for j in guarded}, kept)
        print(f"| {label} | {secs:.1f} | {jin:.5f} | {jh:.5f} | {jh - j_base:+.4f} {ci(boot[i + 1] - boot[0])} | "
              f"{vs_f} | {feas} | {gvs} | {pareto} | {note} |")
    print("\nPareto vs best formula: 'yes' = the objective's paired 95% interval above 0 and no guarded task's "
          "holdout metric below the formula's (point estimate); 'pays' = a guarded task below the formula's "
          "(its interval given in the column before); 'tie' = the fuser kept the formula.")


def pareto_verdict(dj: float, dj_boot: np.ndarray, gd: dict, g_boot: np.ndarray, guarded: dict[int, str],
                   kept: bool = False) -> str:
    """'yes' / 'tie' / 'no (objective)' / 'pays (task, ...)' for a fuser against the best formula:
    it must beat the formula's objective (paired interval above 0) and be no lower on every
    guarded task (point estimate) on the holdout; ``*`` marks a guardrail whose interval lies below 0.
    ``kept``: the fuser is the formula it started from, which is the best formula (its float32
    scores may re-order a few ties of the float64 formula: differences of 1e-8, not a result)."""
    if kept:
        return "tie (kept the formula)"
    lo = float(np.quantile(dj_boot, 0.025))
    pays = [j for j in guarded if gd[j] < -1e-6]
    if pays:
        sig = [j for j in pays if float(np.quantile(g_boot[:, j], 0.975)) < 0]
        return "pays (" + ", ".join(guarded[j] + (" *" if j in sig else "") for j in pays) + ")"
    return "yes" if lo > 0 else "no (objective interval includes 0)" if dj > 0 else "no (objective)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true",
                    help="demo + feed6, methods grad,cma,cem, 1000 resamples, fusers from the baseline too")
    ap.add_argument("--studies", default=None,
                    help="comma-separated study files or names (default: feed6; --full: demo,feed6); "
                         f"{', '.join(MTL_STUDIES)}: a log written by a multi-task model trained by "
                         "`fusiontune train` (made under --data-dir)")
    ap.add_argument("--mtl-rows", type=int, default=400_000,
                    help="rows of the training table of a trained-model study (default 400000)")
    ap.add_argument("--train-args", default="",
                    help="more `fusiontune train` options for a trained-model study, over its spec's "
                         "[train] table, e.g. \"--model shared_bottom\"")
    ap.add_argument("--methods", default=None, help="search methods for the best formula (default: grad; "
                                                    "--full: grad,cma,cem)")
    ap.add_argument("--fusers", default=",".join(LINEUP), help=f"line-up fusers (default: {','.join(LINEUP)})")
    ap.add_argument("--budget", type=int, default=None, help="search budget (default: the study's)")
    ap.add_argument("--resamples", type=int, default=None, help="bootstrap resamples (default 200; --full 1000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--requests", default=None,
                    help="comma-separated request counts: run feed6's study on feed6 logs of that many requests "
                         "x 20 candidates, simulated under --data-dir (replaces --studies)")
    ap.add_argument("--data-dir", default="/tmp/fusiontune-bench-ltr",
                    help="where --requests logs and trained-model logs are written")
    ap.add_argument("--data-seed", type=int, default=0,
                    help="simulator seed of the --requests logs and of a trained-model study's table")
    ap.add_argument("--from-baseline", action="store_true",
                    help="fit the fusers from the baseline too (always on with --full)")
    ap.add_argument("--bar", choices=["start", "limit"], default="start",
                    help="[ltr] guardrail_bar of the fusers started from the best formula (default: start)")
    args = ap.parse_args()
    studies = args.studies or ("studies/demo.toml,studies/feed6.toml" if args.full else "studies/feed6.toml")
    methods = args.methods or ("grad,cma,cem" if args.full else "grad")
    resamples = args.resamples or (1000 if args.full else 200)
    if args.requests:
        counts = [int(x) for x in args.requests.split(",") if x.strip()]
        if not counts or min(counts) < 100:
            raise SystemExit(f"bench_ltr: --requests must be request counts >= 100, got {args.requests!r}")
        studies = ",".join(bigger_feed6(n, args.data_dir, args.data_seed) for n in counts)
    fusers = [f.strip() for f in args.fusers.split(",") if f.strip()]
    unknown = [f for f in fusers if f not in LINEUP]
    if unknown:
        raise SystemExit(f"bench_ltr: unknown fuser {unknown[0]!r} (line-up: {', '.join(LINEUP)})")
    print(f"# bench_ltr: seed {args.seed}, CPU {cpu_name()}, load average {loadavg()}, "
          f"{'full' if args.full else 'quick'} run, guardrail_bar {args.bar}")
    t0 = time.perf_counter()
    for path in studies.split(","):
        path = path.strip()
        made = bool(args.requests)
        if path in MTL_STUDIES:
            path, made = trained_log(path, args.data_dir, args.mtl_rows, args.data_seed, args.train_args.split()), True
        run_study(path, args.seed, [m.strip() for m in methods.split(",")], resamples, fusers,
                  args.full or args.from_baseline, args.budget, args.bar, Path(args.data_dir) if made else None)
    print(f"\ntotal {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
