"""LTR fusers vs the best searched formula, on the demo and on the 6-task feed6 study, side by side.

Per study: the best formula (the search method with the best *in-sample* objective among
``--methods`` at the study's budget; the holdout does not choose it), the GBDT fuser
(scikit-learn combined; LightGBM lambdarank and combined as residual trees on the baseline
formula; LightGBM combined on the best formula) and the residual DNN (on the baseline,
without and with the surrogate fine-tune; on the best formula with the fine-tune).  For each: wall seconds (fit or search), in-sample objective, holdout
objective, holdout delta vs the baseline and vs the best formula, each with a paired 95%
group-bootstrap interval (every candidate scored on the very same resamples of the holdout
requests), and whether it keeps the guardrails on the holdout.

    python benchmarks/bench_ltr.py [--studies studies/demo.toml,studies/feed6.toml] [--seed 0]
        [--methods cma,cem] [--resamples 500] [--finetune 40]

The machine is shared: absolute seconds are noisy; compare within one run.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from fusiontune.bootstrap import _Resampling, auc_resampled, gauc_resampled, group_aucs, unit_counts
from fusiontune.ltr import fit_ltr
from fusiontune.pipeline import prepare, search
from fusiontune.study import load_study


def resampled_objective(hobj, fused: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """(P, B) objective of fused scores (P, N) (holdout row order) on B group resamples."""
    r = _Resampling(hobj)
    counts = unit_counts(r.n_units, resamples, np.random.default_rng(seed))
    out = np.empty((fused.shape[0], resamples, len(hobj.tasks)))
    if hobj.auc_idx.size:
        out[:, :, hobj.auc_idx] = auc_resampled(fused, r.auc_labels, r.unit, counts, r.weights)
    if hobj._plan is not None:
        ga = group_aucs(hobj._plan, fused, grouped=hobj._plan.index.perm is None)
        out[:, :, hobj.gauc_idx] = gauc_resampled(ga, hobj._plan.group_w, counts)
    return np.nansum(hobj.orient(out) * hobj.w[None, None, :], axis=2)


def ci(samples: np.ndarray) -> str:
    lo, hi = np.quantile(samples, [0.025, 0.975])
    return f"[{lo:+.4f}, {hi:+.4f}]"


def run_study(path: str, seed: int, methods: list[str], resamples: int, finetune: int) -> None:
    study = load_study(path)
    prep = prepare(study)
    hobj = prep.holdout_objective
    s = study.search
    print(f"\n## {study.name}: {len(study.tasks)} tasks, {study.formula} formula, {prep.search_log.n} search rows, "
          f"{prep.holdout_log.n} holdout rows, budget {s['budget']}")
    rows = []  # (label, seconds, in-sample, fused holdout scores, holdout J, feasible, note)
    best = None
    for m in methods:
        t0 = time.perf_counter()
        res, _ = search(prep, m, s["budget"], seed, s["population"], s["patience"], s["min_delta"],
                        study.method_options.get(m, {}), show_progress=False)
        secs = time.perf_counter() - t0
        theta = prep.space.from_dict(res["best"]["params"])
        print(f"  search {m}: in-sample {res['best']['objective']:.5f}, holdout "
              f"{res['holdout']['best']['objective']:.5f} ({secs:.1f}s)")
        if best is None or res["best"]["objective"] > best[0]["best"]["objective"]:
            best = (res, theta, secs, m)
    res, theta, secs, m = best
    f_scores = hobj.formula.scores(hobj.prepared, theta[None, :])[0]
    rows.append((f"formula: {m} (best of {','.join(methods)})", secs, res["best"]["objective"], f_scores,
                 res["holdout"]["best"]["objective"], res["holdout"]["best"]["feasible"], ""))
    best_params = res["best"]["params"]
    ft = {"dnn": {"finetune": finetune}}
    lgb = {"backend": "lightgbm"}
    for label, model, target, opts, start in [
        ("gbdt combined (sklearn)", "gbdt", "combined", None, None),
        ("gbdt lambdarank (LightGBM, residual on baseline)", "gbdt", "lambdarank", None, None),
        ("gbdt combined (LightGBM, residual on baseline)", "gbdt", "combined", lgb, None),
        ("gbdt combined (LightGBM, residual on best formula)", "gbdt", "combined", lgb, best_params),
        ("dnn residual on baseline", "dnn", "combined", None, None),
        (f"dnn residual on baseline + surrogate fine-tune ({finetune} ep)", "dnn", "combined", ft, None),
        (f"dnn residual on best formula + fine-tune ({finetune} ep)", "dnn", "combined", ft, best_params),
    ]:
        t0 = time.perf_counter()
        r, _, fuser = fit_ltr(prep, model, target, seed, opts, show_progress=False, start=start)
        secs = time.perf_counter() - t0
        note = ""
        ltr = r["ltr"]
        if ltr.get("kept_formula") is not None:
            what = "epoch" if model == "dnn" else "tree count"
            note = ("kept the start formula" if ltr["kept_formula"] else
                    f"best {what} {ltr['iterations']}" + (f" ({ltr['best_phase']})" if model == "dnn" else ""))
            note += f", val {ltr['validation_objective']:.5f} vs start {ltr['validation_baseline']:.5f}"
        g = r["ltr"]["guardrails"]
        if g.get("multipliers") and any(v != 1.0 for v in g["multipliers"].values()):
            note += (", " if note else "") + "guardrail x" + ",".join(
                f"{k}{v:.3g}" for k, v in g["multipliers"].items() if v != 1.0)
        rows.append((label, secs, r["best"]["objective"], fuser.predict(hobj.log), r["holdout"]["best"]["objective"],
                     r["holdout"]["best"]["feasible"], note))
    base_scores = hobj.formula.scores(hobj.prepared, prep.space.baseline[None, :])[0]
    fused = np.vstack([base_scores.astype(np.float64)] + [np.asarray(x[3], dtype=np.float64) for x in rows])
    boot = resampled_objective(hobj, fused, resamples, seed)
    j_base = float(hobj.baseline_per_task @ hobj.w)
    print(f"\nbaseline holdout objective {j_base:.5f}; 95% paired group-bootstrap intervals, {resamples} resamples")
    print("| fuser | seconds | in-sample | holdout | Δ vs baseline [95% CI] | Δ vs best formula [95% CI] | "
          "holdout guardrails | notes |")
    print("|---|---|---|---|---|---|---|---|")
    for i, (label, secs, jin, _, jh, feas, note) in enumerate(rows):
        d_base = boot[i + 1] - boot[0]
        d_form = boot[i + 1] - boot[1]
        vs_f = "—" if i == 0 else f"{jh - rows[0][4]:+.5f} {ci(d_form)}"
        print(f"| {label} | {secs:.1f} | {jin:.5f} | {jh:.5f} | {jh - j_base:+.5f} {ci(d_base)} | {vs_f} | "
              f"{'kept' if feas else 'BROKEN'} | {note} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--studies", default="studies/demo.toml,studies/feed6.toml")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default="cma,cem")
    ap.add_argument("--resamples", type=int, default=500)
    ap.add_argument("--finetune", type=int, default=40)
    args = ap.parse_args()
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
               platform.processor()) if platform.system() == "Linux" else platform.processor()
    print(f"# bench_ltr: seed {args.seed}, CPU {cpu}")
    for path in args.studies.split(","):
        run_study(path.strip(), args.seed, [m.strip() for m in args.methods.split(",")], args.resamples,
                  args.finetune)


if __name__ == "__main__":
    main()
