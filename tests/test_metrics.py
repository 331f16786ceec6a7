"""The metric kernels against scikit-learn: ties, NaN labels, weights, one-class groups."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from sklearn.metrics import roc_auc_score

from fusiontune.metrics import GaucPlan, GroupIndex, auc, encode_labels, gauc


def ref_auc(scores, labels, weights=None):
    out = []
    for k in range(labels.shape[1]):
        m = ~np.isnan(labels[:, k])
        y = labels[m, k]
        w = None if weights is None else weights[m]
        pos_w = (y == 1).sum() if w is None else w[y == 1].sum()
        neg_w = (y == 0).sum() if w is None else w[y == 0].sum()
        out.append(np.nan if pos_w == 0 or neg_w == 0 else roc_auc_score(y, scores[m], sample_weight=w))
    return np.array(out)


def ref_gauc(scores, labels, groups, weights=None, weighting="rows"):
    out = []
    for k in range(labels.shape[1]):
        num = den = 0.0
        for g in np.unique(groups):
            m = (groups == g) & ~np.isnan(labels[:, k])
            y = labels[m, k]
            w = np.ones(m.sum()) if weights is None else weights[m]
            if w[y == 1].sum() <= 0 or w[y == 0].sum() <= 0:
                continue
            gw = {"rows": w.sum(), "positives": w[y == 1].sum(), "uniform": 1.0}[weighting]
            num += gw * roc_auc_score(y, scores[m], sample_weight=w)
            den += gw
        out.append(num / den if den > 0 else np.nan)
    return np.array(out)


@st.composite
def cases(draw, max_n=120, max_k=4):
    n = draw(st.integers(2, max_n))
    k = draw(st.integers(1, max_k))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    levels = draw(st.sampled_from([2, 5, 50, 10_000]))  # few levels => many ties
    scores = (rng.integers(0, levels, n) / levels - 0.5).astype(np.float32)
    labels = (rng.random((n, k)) < draw(st.floats(0.05, 0.95))).astype(np.float64)
    labels[rng.random((n, k)) < draw(st.sampled_from([0.0, 0.3, 0.7]))] = np.nan
    weights = rng.random(n) * 3 if draw(st.booleans()) else None
    if weights is not None and draw(st.booleans()):
        weights[rng.random(n) < 0.2] = 0.0
    groups = rng.integers(0, draw(st.integers(1, 12)), n)
    return scores, labels, weights, groups


@settings(max_examples=150, deadline=None)
@given(cases())
def test_auc_matches_sklearn(case):
    scores, labels, weights, _ = case
    np.testing.assert_allclose(auc(scores, labels, weights), ref_auc(scores, labels, weights),
                               rtol=0, atol=1e-12, equal_nan=True)


@settings(max_examples=100, deadline=None)
@given(cases(), st.sampled_from(["rows", "positives", "uniform"]))
def test_gauc_matches_per_group_sklearn(case, weighting):
    scores, labels, weights, groups = case
    np.testing.assert_allclose(gauc(scores, labels, groups, weights, weighting),
                               ref_gauc(scores, labels, groups, weights, weighting),
                               rtol=0, atol=1e-12, equal_nan=True)


@settings(max_examples=40, deadline=None)
@given(cases(max_n=80))
def test_float64_scores_are_ranked_exactly(case):
    """float64 values that collapse in float32 must still be told apart."""
    scores, labels, weights, groups = case
    s64 = scores.astype(np.float64) + np.arange(scores.size) * 1e-13
    np.testing.assert_allclose(auc(s64, labels, weights), ref_auc(s64, labels, weights),
                               atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(gauc(s64, labels, groups, weights), ref_gauc(s64, labels, groups, weights),
                               atol=1e-12, equal_nan=True)


def test_batch_equals_one_by_one_and_many_tasks():
    rng = np.random.default_rng(3)
    n, k, p = 3000, 20, 5  # 20 tasks: more than one 16-task label word
    labels = (rng.random((n, k)) < 0.3).astype(float)
    labels[rng.random((n, k)) < 0.25] = np.nan
    scores = np.round(rng.random((p, n)), 2).astype(np.float32)
    batch = auc(scores, labels)
    assert batch.shape == (p, k)
    for i in range(p):
        np.testing.assert_allclose(batch[i], ref_auc(scores[i], labels), atol=1e-12)
    groups = rng.integers(0, 40, n)
    gb = gauc(scores, labels, groups)
    for i in range(p):
        np.testing.assert_allclose(gb[i], ref_gauc(scores[i], labels, groups), atol=1e-12)


def test_negative_zero_ties_with_zero_and_extremes():
    s = np.array([-0.0, 0.0, -1e30, 1e30, 3e38, -3e38, 0.0, -0.0], dtype=np.float32)
    y = np.array([[1], [0], [0], [1], [1], [0], [1], [0]], dtype=float)
    np.testing.assert_allclose(auc(s, y), ref_auc(s, y), atol=1e-12)
    # sklearn refuses infinities; by hand: the four zeros tie (2 pos, 2 neg): 2 * (2 + 1)
    # pairs, plus 4 + 4 for the two large positives, over 4 * 4 pairs.
    s[4], s[5] = np.inf, -np.inf
    assert auc(s, y)[0] == pytest.approx(14 / 16, abs=1e-15)


def test_one_class_task_is_nan_and_group_without_both_classes_is_skipped():
    s = np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32)
    y = np.array([[1, 1], [1, 0], [1, 1], [1, 0]], dtype=float)
    out = auc(s, y)
    assert np.isnan(out[0])  # task 0 has no negative
    assert out[1] == pytest.approx(0.25)  # only (pos 0.3, neg 0.2) of the 4 pairs is ordered right
    groups = np.array([0, 0, 1, 1])
    # task 1: group 0 has (1, 0) at scores (0.1, 0.2) -> 0.0; group 1 (1, 0) at (0.3, 0.4) -> 0.0
    assert gauc(s, y, groups)[1] == 0.0
    assert np.isnan(gauc(s, y, groups)[0])


def test_group_index_detects_contiguous_and_shuffled_groups():
    g = np.array([5, 5, 2, 2, 2, 9])
    assert GroupIndex.build(g).perm is None
    h = np.array([5, 2, 5, 2])
    idx = GroupIndex.build(h)
    assert idx.perm is not None and idx.n_groups == 2
    rng = np.random.default_rng(0)
    s = rng.random(4).astype(np.float32)
    y = np.array([[1], [0], [0], [1]], dtype=float)
    plan = GaucPlan(y, idx)
    np.testing.assert_allclose(plan(s), ref_gauc(s, y, h), atol=1e-12)


def test_bad_labels_and_nan_scores_raise():
    with pytest.raises(ValueError, match="0, 1 or NaN"):
        encode_labels(np.array([[0.0], [2.0]]))
    with pytest.raises(ValueError, match="NaN"):
        auc(np.array([0.1, np.nan]), np.array([[0.0], [1.0]]))
    with pytest.raises(ValueError, match="shape"):
        auc(np.zeros(3), np.zeros((4, 1)))
