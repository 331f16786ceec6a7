"""The report's figures as PNG bytes (matplotlib figures on an Agg canvas, imported lazily; no backend switch)."""

from __future__ import annotations

import io

__all__ = ["make_plots"]


class _Figures:
    """Figures without pyplot: a :class:`matplotlib.figure.Figure` on its own Agg canvas, so
    a report never switches the process's backend (a notebook keeps its own) nor registers
    figures globally."""

    @staticmethod
    def subplots(*args, figsize=None, **kwargs):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize)
        FigureCanvasAgg(fig)
        return fig, fig.subplots(*args, **kwargs)


def _plt():
    return _Figures


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _convergence(plt, c: dict, baseline: float | None) -> bytes:
    import numpy as np

    fig, ax = plt.subplots(figsize=(8, 4))
    ev = np.array(c["evaluation"])
    obj = np.array(c["objective"])
    feas = np.array(c["feasible"], dtype=bool)
    ax.scatter(ev[feas], obj[feas], s=6, alpha=0.5, label="feasible trial", color="tab:blue")
    if (~feas).any():
        ax.scatter(ev[~feas], obj[~feas], s=6, alpha=0.5, label="infeasible (guardrail)", color="tab:red",
                   marker="x")
    ax.plot(ev, c["best_so_far"], color="black", lw=1.5, label="best feasible so far")
    if baseline is not None:
        ax.axhline(baseline, color="gray", ls="--", lw=1, label="baseline")
    lo = np.nanmin(np.r_[obj[feas] if feas.any() else obj, baseline if baseline is not None else np.nan])
    hi = np.nanmax(obj)
    pad = 0.1 * (hi - lo) if hi > lo else 1e-3
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("evaluations")
    ax.set_ylabel("objective J (in-sample)")
    ax.set_title("Convergence")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def _sensitivity(plt, s: dict) -> bytes:
    import numpy as np

    n = len(s)
    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, (name, d) in zip(axes.ravel(), s.items()):
        v, j, f = np.array(d["values"]), np.array(d["objective"]), np.array(d["feasible"], bool)
        ax.plot(v, j, color="tab:blue", lw=1.2)
        ax.scatter(v[~f], j[~f], color="tab:red", marker="x", s=14, label="infeasible")
        ax.axvline(d["best"], color="black", lw=1, label="best")
        ax.axvline(d["baseline"], color="gray", ls="--", lw=1, label="baseline")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("value (others at best)", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    axes[0, 0].set_ylabel("objective J")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Sensitivity of the objective to each free weight around the best", fontsize=11)
    fig.tight_layout()
    return _png(fig)


def _pareto(plt, p: dict) -> bytes:
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 5))
    x, y = np.array(p["x"]), np.array(p["y"])
    feas, front = np.array(p["feasible"], bool), np.array(p["front"], bool)
    ax.scatter(x[~feas], y[~feas], s=6, color="tab:red", alpha=0.3, marker="x", label="infeasible")
    ax.scatter(x[feas], y[feas], s=6, color="tab:blue", alpha=0.35, label="feasible")
    o = np.argsort(x[front])
    ax.plot(x[front][o], y[front][o], "-o", color="tab:orange", ms=4, lw=1.2, label="Pareto front (feasible)")
    ax.scatter([0], [0], color="black", marker="s", s=40, label="baseline", zorder=5)
    for m in p["marks"]:
        ax.scatter([m["x"]], [m["y"]], marker="*", s=120, zorder=6, label=m["name"])
    ax.axhline(0, color="gray", lw=0.6)
    ax.axvline(0, color="gray", lw=0.6)
    ax.set_xlabel(f"Δ {p['tasks'][0]} vs baseline (in-sample)")
    ax.set_ylabel(f"Δ {p['tasks'][1]} vs baseline (in-sample)")
    ax.set_title(f"Pareto front: {p['tasks'][0]} vs {p['tasks'][1]}")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return _png(fig)


def _stability(plt, s: dict) -> bytes:
    names = list(s["params"])
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(names) + 2), 4))
    data = [s["params"][n]["values"] for n in names]
    ax.boxplot(data, showfliers=True)
    ax.set_xticks(range(1, len(names) + 1), names)
    for i, n in enumerate(names, start=1):
        ax.scatter([i], [s["params"][n]["best"]], marker="*", s=120, color="tab:orange", zorder=5,
                   label="run's best" if i == 1 else None)
    ax.axhline(0, color="gray", lw=0.6)
    ax.set_ylabel("weight of the best candidate on a resample")
    ax.set_title(f"Stability over {s['resamples']} bootstrap resamples ({s['units']}) of the search data")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return _png(fig)


def _arms(plt, arms: dict) -> bytes:
    import numpy as np

    tasks = list(arms["baseline"]["per_task"])
    a = arms["arms"]
    fig, ax = plt.subplots(figsize=(max(6, 1.5 * len(tasks) + 3), 4))
    width = 0.8 / max(len(a), 1)
    xs = np.arange(len(tasks))
    for i, arm in enumerate(a):
        v = np.array([arm["delta"][t]["value"] for t in tasks])
        lo = np.array([arm["delta"][t]["lo"] for t in tasks])
        hi = np.array([arm["delta"][t]["hi"] for t in tasks])
        ax.bar(xs + (i - (len(a) - 1) / 2) * width, v, width, yerr=[v - lo, hi - v], capsize=3, label=arm["name"])
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(xs, tasks)
    ax.set_ylabel(f"Δ metric vs baseline ({arms['evaluated_on'].split(' ')[0]})")
    ax.set_title(f"A/B arms: per-task deltas with {int(round(arms['level'] * 100))}% bootstrap CIs")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return _png(fig)


def _importance(plt, fi: dict) -> bytes:
    names = list(fi)[:30]
    vals = [fi[n] for n in names]
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.3 * len(names) + 1)))
    ax.barh(range(len(names))[::-1], vals, color="tab:green")
    ax.set_yticks(range(len(names))[::-1], names, fontsize=8)
    ax.set_xlabel("importance")
    ax.set_title("Learned fuser: feature importances")
    ax.grid(alpha=0.3, axis="x")
    return _png(fig)


def make_plots(rep: dict) -> dict[str, bytes]:
    """name -> PNG bytes for every section of the report that has data."""
    plt = _plt()
    out: dict[str, bytes] = {}
    base = next((r.get("in_sample", {}).get("baseline") for r in rep["tasks"] if r["task"] == "objective"), None)
    if rep.get("convergence"):
        out["convergence"] = _convergence(plt, rep["convergence"], base)
    if rep.get("sensitivity"):
        out["sensitivity"] = _sensitivity(plt, rep["sensitivity"])
    if rep.get("pareto"):
        out["pareto"] = _pareto(plt, rep["pareto"])
    if rep.get("arms") and rep["arms"].get("arms"):
        out["arms"] = _arms(plt, rep["arms"])
    if rep.get("stability") and rep["stability"].get("params"):
        out["stability"] = _stability(plt, rep["stability"])
    if rep.get("ltr", {}).get("feature_importance"):
        out["feature_importance"] = _importance(plt, rep["ltr"]["feature_importance"])
    return out
