"""Formulas, the pinned reference weight, and scale invariance."""

import numpy as np
import pytest

from fusiontune.errors import InputError
from fusiontune.fusion import ParamSpace, make_formula
from fusiontune.log import PredictionLog
from fusiontune.metrics import auc


def tiny_log(n=500, k=3, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.random((n, k)).astype(np.float32) * 0.98 + 0.01
    y = (rng.random((n, k)) < p).astype(np.float32)
    return PredictionLog(["a", "b", "c"][:k], p, y, groups=np.repeat(np.arange(n // 10), 10))


def test_formulas_compute_what_they_say():
    log = tiny_log()
    p = log.scores.astype(np.float64)
    a = np.array([1.0, 0.5, 2.0])
    b = np.array([0.1, 0.0, 0.3])
    cases = {
        "additive": p @ a,
        "multiplicative": np.log(p) @ a,
        "power": np.log(b + p) @ a,
    }
    for name, expected in cases.items():
        f = make_formula(name, log.tasks)
        theta = np.concatenate([a, b]) if name == "power" else a
        np.testing.assert_allclose(f.scores(f.prepare(log), theta[None])[0], expected, rtol=1e-6)


def test_rank_formula_uses_per_group_percentiles_and_buckets():
    log = tiny_log()
    f = make_formula("rank", log.tasks, {"buckets": 4})
    r = f.prepare(log)
    assert set(np.unique(r)) <= {0.25, 0.5, 0.75, 1.0}
    g0 = log.groups == 0
    # within a group of 10, the top score of task a gets percentile 1.0
    assert r[g0, 0][np.argmax(log.scores[g0, 0])] == 1.0


@pytest.mark.parametrize("name", ["additive", "multiplicative", "power", "rank"])
def test_scaling_all_weights_keeps_the_ranking(name):
    log = tiny_log()
    f = make_formula(name, log.tasks)
    prep = f.prepare(log)
    a = np.array([1.0, 0.7, 0.3])
    theta = np.concatenate([a, [0.2, 0.1, 0.0]]) if name == "power" else a
    scaled = theta.copy()
    scaled[:3] *= 3.5
    s1, s2 = f.scores(prep, np.stack([theta, scaled]))
    np.testing.assert_allclose(auc(s1, log.labels), auc(s2, log.labels), atol=1e-6)


def test_param_space_pins_the_reference_and_maps_the_unit_cube():
    f = make_formula("power", ["click", "like"])
    base = {"a_click": 2.0, "a_like": 0.5, "b_click": 0.1, "b_like": 0.0}
    space = ParamSpace.build(f, base, {"a": (0.0, 4.0), "b_like": (0.0, 0.5)}, reference="click")
    assert space.free == ["a_like", "b_click", "b_like"] and space.pinned == {"a_click": 2.0}
    full = space.full(np.array([[0.5, 0.0, 1.0]]))[0]
    assert space.as_dict(full) == {"a_click": 2.0, "a_like": 2.0, "b_click": 0.0, "b_like": 0.5}
    np.testing.assert_allclose(space.full(space.baseline_unit)[0], space.baseline)


@pytest.mark.parametrize("baseline, bounds, pattern", [
    ({"a_click": 1.0}, {}, "missing a_like"),
    ({"a_click": 1.0, "a_like": 1.0, "a_x": 1.0}, {}, "'a_x' is not a parameter"),
    ({"a_click": 0.0, "a_like": 1.0}, {}, "must be > 0"),
    ({"a_click": 1.0, "a_like": 9.0}, {}, "outside its bounds"),
    ({"a_click": 1.0, "a_like": 1.0}, {"zz": (0, 1)}, "'zz' is not a parameter"),
])
def test_param_space_errors(baseline, bounds, pattern):
    f = make_formula("additive", ["click", "like"])
    with pytest.raises(InputError, match=pattern):
        ParamSpace.build(f, baseline, bounds)


def test_float32_log_probabilities_rank_like_float64():
    """The multiplicative formula keeps log p as float32 (half the bytes).  Each is the float64
    log rounded once; the fused scores stay within float32 rounding of the float64-log ones,
    the metrics are exact (sklearn, 1e-12) on the fused float32 score, and the objective of a
    realistic log moves by far less than the AUC differences a search ranks by."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    n, k = 200_000, 4
    p = np.clip(rng.beta(0.6, 6.0, (n, k)), 0, 1).astype(np.float32)
    p[:50] = 0.0  # clipped at eps
    p[50:100] = 1.0
    y = (rng.random((n, k)) < p).astype(np.float64)
    log = PredictionLog(["a", "b", "c", "d"], p, y)
    f = make_formula("multiplicative", log.tasks)
    prep = f.prepare(log)
    assert prep.dtype == np.float32 and prep.shape == (n, k)
    ref = np.log(np.clip(p.astype(np.float64), f.eps, 1.0))
    np.testing.assert_array_equal(prep, ref.astype(np.float32))  # the float64 log rounded once
    thetas = np.array([[1.0, 0.2, 0.2, 0.1], [1.0, 2.5, 0.0, 1.3], [1.0, 0.01, 3.0, 0.7]])
    fused = f.scores(prep, thetas)
    fused64 = (ref @ thetas.T).T
    np.testing.assert_allclose(fused, fused64, rtol=3e-7, atol=3e-6)
    for row, row64 in zip(fused, fused64):
        for j in range(k):  # exact on the float32 fused score
            ours = auc(row, y[:, j:j + 1])[0]
            assert abs(ours - roc_auc_score(y[:, j], row)) <= 1e-12
            assert abs(ours - roc_auc_score(y[:, j], row64)) <= 1e-5  # vs the float64-log ranking
