"""The smooth AUC / GAUC surrogate: exact at temperature 0 with every pair enumerated,
close to the exact kernel when sampled, and differentiable in formula parameters."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fusiontune.metrics import auc, gauc  # noqa: E402
from fusiontune.surrogate import FormulaSurrogate, PairSet, smooth_metrics, smooth_objective  # noqa: E402


def _data(n=600, seed=0):
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, 40, n)
    s = np.round(rng.normal(size=n), 1)  # ties on purpose
    lab = (rng.random((n, 3)) < 1 / (1 + np.exp(-(s[:, None] * [1.0, -0.5, 0.3]) + 1))).astype(float)
    lab[rng.random(n) < 0.3, 2] = np.nan
    w = rng.uniform(0.5, 2.0, n)
    return groups, s, lab, w


@pytest.mark.parametrize("weighting", ["rows", "positives", "uniform"])
@pytest.mark.parametrize("weighted", [False, True])
def test_enumerated_step_equals_exact_auc_and_gauc(weighting, weighted):
    groups, s, lab, w = _data()
    wt = w if weighted else None
    pairs = PairSet.from_labels(lab, ["gauc", "auc", "gauc"], groups=groups, weights=wt,
                                gauc_weighting=weighting, signs=[1, 1, -1], n_pairs=10**7)
    assert pairs.exact.all()
    got = smooth_metrics(torch.tensor(s), pairs, temperature=0).numpy()
    order = np.argsort(groups, kind="stable")
    g_exact = gauc(s[order], lab[order], groups[order], wt[order] if weighted else None, weighting)
    a_exact = auc(s, lab, wt)
    np.testing.assert_allclose(got, [g_exact[0], a_exact[1], 1 - g_exact[2]], atol=1e-12)


def test_sampled_pairs_estimate_the_exact_metric():
    groups, s, lab, w = _data(n=5000, seed=1)
    pairs = PairSet.from_labels(lab, ["gauc", "auc", "auc"], groups=groups, n_pairs=50_000, seed=3)
    assert not pairs.exact.any()
    got = smooth_metrics(torch.tensor(s), pairs, temperature=0).numpy()
    exact = [gauc(s, lab, groups)[0], *auc(s, lab)[1:]]
    np.testing.assert_allclose(got, exact, atol=0.01)


def test_smooth_objective_is_differentiable_and_penalises_guardrails():
    groups, s, lab, _ = _data()
    pairs = PairSet.from_labels(lab, ["auc", "auc", "auc"], n_pairs=10**6)
    x = torch.tensor(s, requires_grad=True)
    v, m = smooth_objective(x, pairs, [1.0, 0.5, 0.2], per_task=True)
    v.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    base = m.detach().numpy() + 0.05  # pretend the baseline was 0.05 better on every task
    v2 = smooth_objective(x.detach(), pairs, [1.0, 0.5, 0.2], baseline=base, max_drop=[0.01, np.inf, np.inf])
    assert float(v2) == pytest.approx(float(v.detach()) - 100 * 1.7 * 0.04, rel=1e-9)


def test_formula_surrogate_tracks_the_exact_objective(tmp_path):
    from fusiontune.pipeline import prepare
    from fusiontune.study import load_study
    from pathlib import Path

    study = load_study(Path(__file__).resolve().parents[1] / "studies" / "feed6.toml")
    prep = prepare(study)
    fs = FormulaSurrogate(prep.objective, n_pairs=100_000, seed=0, baseline_row=prep.space.baseline)
    rng = np.random.default_rng(0)
    u = rng.random((12, prep.space.dim))
    theta = prep.space.full(u)
    exact = prep.objective.metrics(theta) @ prep.objective.w
    with torch.no_grad():
        _, m = fs(torch.tensor(theta), guardrails=False, temperature=0.0)
    approx = m.numpy() @ prep.objective.w
    assert np.corrcoef(exact, approx)[0, 1] > 0.98
    t = torch.tensor(prep.space.baseline, requires_grad=True)
    v, _ = fs(t)
    v.backward()
    assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
