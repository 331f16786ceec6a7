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


# --------------------------------------------------------------------------- sort paths
from fusiontune import metrics as M  # noqa: E402
from fusiontune.metrics import AucPlan, pack_label_codes, sort_keys  # noqa: E402


def adversarial_scores():
    rng = np.random.default_rng(11)
    n = 5000
    tiny = np.float32(1e-45)  # smallest subnormal
    sub = (rng.integers(-50, 50, n) * tiny).astype(np.float32)  # subnormals of both signs, and zeros
    return {
        "all equal": np.full(n, 0.37, dtype=np.float32),
        "two values": np.where(rng.random(n) < 0.5, np.float32(0.25), np.float32(-3.0)),
        "negative zero": np.where(rng.random(n) < 0.5, np.float32(-0.0), np.float32(0.0)),
        "zeros and subnormals": sub,
        "already sorted": np.sort(rng.standard_normal(n).astype(np.float32)),
        "reverse sorted": np.sort(rng.standard_normal(n).astype(np.float32))[::-1].copy(),
        "powers of two": np.ldexp(np.float32(1), rng.integers(-30, 30, n)).astype(np.float32),
        "infinities": np.where(rng.random(n) < 0.1, np.float32(np.inf),
                               np.where(rng.random(n) < 0.1, np.float32(-np.inf),
                                        np.round(rng.random(n), 2).astype(np.float32))),
    }


def _keys(s, low=None):
    keys = np.empty((1, s.size), dtype=np.uint64)
    lo = np.zeros(1, dtype=np.uint32) if low is None else low.astype(np.uint32)
    M._keys_rows_ser(s[None, :].view(np.uint32), lo, low is not None, keys)
    return keys


@pytest.mark.parametrize("name", list(adversarial_scores()))
def test_every_sort_path_agrees_on_adversarial_keys(name):
    s = adversarial_scores()[name]
    rng = np.random.default_rng(5)
    # (score, row) keys: numpy's full sort and the stable radix sort must give the same keys
    by = {}
    for method in ("radix", "numpy"):
        k = _keys(s)
        sort_keys(k, method)
        by[method] = k[0]
    np.testing.assert_array_equal(by["radix"], by["numpy"])
    # the order of the high halves is the float order, -0.0 tied with +0.0
    hi = by["numpy"] >> np.uint64(32)
    assert (np.diff(hi.astype(np.int64)) >= 0).all()
    rows = (by["numpy"] & M._LOW32).astype(np.int64)
    fs = s[rows].astype(np.float64)
    assert (fs[1:] >= fs[:-1]).all()
    # (score, label code) keys: same high halves, same multiset
    low = rng.integers(0, 256, s.size)
    a, b = _keys(s, low), _keys(s, low)
    sort_keys(a, "radix")
    sort_keys(b, "numpy")
    np.testing.assert_array_equal(a >> np.uint64(32), b >> np.uint64(32))
    np.testing.assert_array_equal(np.sort(a[0]), b[0])
    # the one-candidate fused path (keys built while scattering) and the batch path
    y = (rng.random((s.size, 3)) < 0.4).astype(float)
    y[rng.random((s.size, 3)) < 0.2] = np.nan
    ref = ref_auc(s, y) if np.isfinite(s).all() else None
    outs = [AucPlan(y, sort=m)(s, parallel=par) for m in ("radix", "numpy") for par in (False, True)]
    outs += [AucPlan(y, np.ones(s.size), sort=m)(np.stack([s, s]))[1] for m in ("radix", "numpy")]
    for o in outs:
        np.testing.assert_allclose(o, outs[0], rtol=0, atol=1e-15, equal_nan=True)
    if ref is not None:
        np.testing.assert_allclose(outs[0], ref, rtol=0, atol=1e-12, equal_nan=True)


def test_radix_sort_is_stable_and_skips_constant_digits():
    rng = np.random.default_rng(2)
    n = 20_000
    hi = rng.integers(0, 7, n).astype(np.uint64) << np.uint64(40)  # digits 0 and 1 constant
    tag = rng.permutation(n).astype(np.uint64)
    keys = (hi << np.uint64(0)) | tag
    want = keys[np.argsort(keys >> np.uint64(32), kind="stable")]
    got = keys.copy()[None, :]
    sort_keys(got, "radix")
    np.testing.assert_array_equal(got[0], want)
    hist = np.empty((3, 2048), dtype=np.int64)
    M._radix_hist(keys, hist)
    tmp = np.empty_like(keys)
    k2 = keys.copy()
    # only the top digit varies: exactly one pass runs, so the result lands in tmp
    assert M._radix_sort(k2, tmp, hist)
    np.testing.assert_array_equal(tmp, want)


@settings(max_examples=60, deadline=None)
@given(cases(max_n=300, max_k=20), st.sampled_from(["radix", "numpy"]), st.booleans())
def test_auc_every_sort_path_and_thread_mode_matches_sklearn(case, method, parallel):
    scores, labels, weights, _ = case
    scores = np.stack([scores, scores[::-1].copy()])
    plan = AucPlan(labels, weights, sort=method)
    got = plan(scores, parallel=parallel)
    for i in range(2):
        np.testing.assert_allclose(got[i], ref_auc(scores[i], labels, weights), rtol=0, atol=1e-12,
                                   equal_nan=True)


def test_large_groups_and_codes_input():
    """Groups above the insertion-sort size use the radix sort; uint8 codes = float labels."""
    rng = np.random.default_rng(8)
    n = 3000
    groups = np.repeat(np.arange(10), n // 10)
    s = np.round(rng.random(n), 3).astype(np.float32)
    y = (rng.random((n, 3)) < 0.3).astype(float)
    y[rng.random((n, 3)) < 0.3] = np.nan
    c8 = np.where(np.isnan(y), 0, np.where(y == 1, 3, 1)).astype(np.uint8)
    np.testing.assert_array_equal(pack_label_codes(c8), encode_labels(y))
    ref = ref_gauc(s, y, groups)
    for par in (False, True):
        np.testing.assert_allclose(GaucPlan(label_codes=c8, groups=groups)(s, parallel=par), ref, atol=1e-12)
    np.testing.assert_allclose(AucPlan(label_codes=c8)(s), ref_auc(s, y), atol=1e-12)
    with pytest.raises(ValueError, match="0, 1 or 3"):
        pack_label_codes(np.array([[2]], dtype=np.uint8))


def test_group_index_one_pass_matches_a_stable_sort():
    rng = np.random.default_rng(4)
    for g in (rng.integers(0, 50, 1000), rng.integers(-10**12, 10**12, 1000), rng.integers(0, 5, 1000) * 10**9,
              np.array(["b", "a", "b", "c"] * 50)):
        idx = GroupIndex.build(g)
        perm = np.argsort(g, kind="stable")
        _, first = np.unique(g[perm], return_index=True)
        np.testing.assert_array_equal(idx.offsets, np.r_[first, g.size])
        if idx.perm is not None:
            np.testing.assert_array_equal(g[idx.perm], g[perm])


def test_sort_choice_is_cached_outside_the_repository(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("FUSIONTUNE_SORT", raising=False)
    monkeypatch.setattr(M, "_CHOICE", {})
    got = M.sort_choice(1 << 16)
    assert got in ("radix", "numpy")
    stored = (tmp_path / "fusiontune" / "sort-choice.json").read_text()
    assert got in stored
    monkeypatch.setattr(M, "_measure", lambda cls: pytest.fail("measured twice"))
    monkeypatch.setattr(M, "_CHOICE", {})
    assert M.sort_choice(1 << 16) == got  # from the disk cache
    monkeypatch.setenv("FUSIONTUNE_SORT", "radix")
    assert M.sort_choice(1 << 20) == "radix"


@pytest.mark.parametrize("layout", ["sorted", "contiguous unsorted", "shuffled", "one big group", "huge ids"])
@pytest.mark.parametrize("k", [1, 2, 4])
def test_one_pass_gauc_plan_equals_the_general_path(layout, k):
    """The log's case (uint8 codes, <= 4 tasks, no weights) is built in one pass; it must
    give the general path's groups, weights and GAUC whatever the id layout."""
    from fusiontune.log import encode_label_codes

    rng = np.random.default_rng(11)
    n = 70_000 if layout == "one big group" else 3_000
    sizes = rng.integers(1, 40, n)
    ids = np.repeat(np.arange(sizes.size), sizes)[:n]
    if layout == "contiguous unsorted":
        relabel = rng.permutation(ids.max() + 1)
        ids = relabel[ids]  # each id one run, runs not in id order
    elif layout == "shuffled":
        ids = rng.permutation(ids)
    elif layout == "one big group":
        ids = np.zeros(n, dtype=np.int64)  # one run longer than a 16-bit lane: general path
    elif layout == "huge ids":
        ids = ids * 10**12 - 5 * 10**15
    labels = (rng.random((n, k)) < 0.3).astype(np.float64)
    labels[rng.random((n, k)) < 0.4] = np.nan
    s = np.round(rng.random((3, n)), 2).astype(np.float32)
    c8 = encode_label_codes(labels)
    for weighting in ("rows", "positives", "uniform"):
        fast = GaucPlan(label_codes=c8, groups=ids, weighting=weighting)
        slow = GaucPlan(labels, ids, weighting=weighting)
        one_pass = layout != "one big group"
        assert (fast.codes.dtype == np.uint8) == one_pass  # the log's build keeps one byte a row
        np.testing.assert_array_equal(fast.index.offsets, slow.index.offsets)
        assert (fast.index.perm is None) == (slow.index.perm is None) == (layout != "shuffled")
        np.testing.assert_allclose(fast.group_w, slow.group_w, rtol=1e-15, atol=0)
        np.testing.assert_array_equal(fast.valid, slow.valid)
        np.testing.assert_allclose(fast(s), slow(s), atol=1e-12)
    if layout == "sorted":
        np.testing.assert_allclose(fast(s[0]), ref_gauc(s[0], labels, ids, weighting="uniform"), atol=1e-12)
        bad = c8.copy()
        bad[1234, k - 1] = 2
        with pytest.raises(ValueError, match="row 1234"):
            GaucPlan(label_codes=bad, groups=ids)


@pytest.mark.parametrize("k", [1, 3, 4, 7])
def test_gauc_sorted_keys_path_equals_the_per_group_path(monkeypatch, k):
    """GAUC through one numpy sort of (group, score, code) keys (cut into per-thread pieces at
    group boundaries for one candidate) equals the per-group radix / insertion-sort path,
    serial and parallel, on ties, one-class groups and a few large groups."""
    rng = np.random.default_rng(5)
    sizes = np.r_[rng.integers(1, 30, 3000), [500, 2000]]
    groups = np.repeat(np.arange(sizes.size), sizes)
    n = groups.size
    labels = (rng.random((n, k)) < 0.3).astype(np.float64)
    labels[rng.random((n, k)) < 0.3] = np.nan
    s = np.round(rng.standard_normal((3, n)), 1).astype(np.float32)
    s[0, :100] = -0.0
    plan = GaucPlan(labels, groups)
    assert plan._global
    out = {}
    for method in ("numpy", "radix"):
        monkeypatch.setenv("FUSIONTUNE_SORT", method)
        for par in (False, True):
            out[method, par] = (plan(s, parallel=par), plan(s[1], parallel=par))
    ref = out["radix", False]
    for key, (many, one) in out.items():
        np.testing.assert_allclose(many, ref[0], rtol=0, atol=1e-13, err_msg=str(key))
        np.testing.assert_allclose(one, ref[1], rtol=0, atol=1e-13, err_msg=str(key))
    small = np.flatnonzero(groups < 40)
    np.testing.assert_allclose(gauc(s[2, small], labels[small], groups[small]),
                               ref_gauc(s[2, small], labels[small], groups[small]), atol=1e-12)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("layout", ["sorted", "single-row groups", "contiguous unsorted", "shuffled", "one id",
                                    "negative ids", "int32 ids", "sparse shuffled ids"])
def test_gauc_plan_build_over_row_chunks(layout, threads, monkeypatch):
    """The log's plan is built over one row chunk per thread: runs cut by a chunk border
    are joined, and a scattered layout goes through the chunked counting sort.  Every
    chunking gives the general path's groups, weights and GAUC."""
    from fusiontune.log import encode_label_codes

    monkeypatch.setattr(M, "_threads", lambda: threads)
    monkeypatch.setattr(M, "_CHUNK_MIN_ROWS", 1000)
    rng = np.random.default_rng(5)
    n = 90_001
    if layout == "single-row groups":
        ids = np.arange(n)
    else:
        sizes = rng.integers(1, 60, n)
        ids = np.repeat(np.arange(sizes.size), sizes)[:n]
    if layout == "contiguous unsorted":
        ids = rng.permutation(ids.max() + 1)[ids]
    elif layout == "shuffled":
        ids = rng.permutation(ids)
    elif layout == "one id":
        ids = np.full(n, 7)
        ids[: n // 2] = 3  # two groups of 45k rows, one run across the chunk border
    elif layout == "negative ids":
        ids = rng.permutation(ids) - 10**6
    elif layout == "sparse shuffled ids":  # more ids than rows: the counting sort keeps one count row
        ids = rng.permutation(ids) * 37
    elif layout == "int32 ids":
        ids = ids.astype(np.int32)
    labels = (rng.random((n, 3)) < 0.3).astype(np.float64)
    labels[rng.random((n, 3)) < 0.3] = np.nan
    c8 = encode_label_codes(labels)
    s = np.round(rng.random((2, n)), 2).astype(np.float32)
    fast = GaucPlan(label_codes=c8, groups=ids)
    slow = GaucPlan(labels, ids)
    assert fast.codes.dtype == np.uint8
    np.testing.assert_array_equal(fast.index.offsets, slow.index.offsets)
    assert (fast.index.perm is None) == (slow.index.perm is None)
    if fast.index.perm is not None:
        np.testing.assert_array_equal(fast.index.perm, slow.index.perm)
    np.testing.assert_allclose(fast.group_w, slow.group_w, rtol=1e-15, atol=0)
    np.testing.assert_allclose(fast(s), slow(s), atol=1e-12)
    bad = c8.copy()
    bad[n - 3, 1] = 2  # in the last chunk
    with pytest.raises(ValueError, match=f"row {n - 3} has"):
        GaucPlan(label_codes=bad, groups=ids)


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("method", ["radix", "numpy"])
@pytest.mark.parametrize("name", list(adversarial_scores()))
def test_one_candidate_split_over_threads_is_exact(name, method, threads, monkeypatch):
    """A single candidate on several threads (a search on a large log) is split by score
    into one bucket per thread, each sorted and scanned alone and the exact sums joined:
    it must equal sklearn and the one-thread call on every adversarial key layout."""
    monkeypatch.setattr(M, "_threads", lambda: threads)
    monkeypatch.setattr(M, "_SPLIT_MIN_ROWS", 1000)
    s = adversarial_scores()[name]
    rng = np.random.default_rng(9)
    y = (rng.random((s.size, 3)) < np.array([0.5, 0.1, 0.02])).astype(np.float64)
    y[rng.random((s.size, 3)) < 0.3] = np.nan
    y[:, 2][~np.isnan(y[:, 2])] = 1.0  # one-class task: NaN
    plan = AucPlan(y, sort=method)
    split = plan(s, parallel=True)
    np.testing.assert_array_equal(split, plan(s, parallel=False))
    from scipy.stats import rankdata

    ranks = rankdata(s.astype(np.float64))  # sklearn refuses infinities; AUC depends on the order only
    np.testing.assert_allclose(split[:2], ref_auc(ranks, y)[:2], atol=1e-12)
    assert np.isnan(split[2])


def test_batches_on_the_pool_equal_one_thread(monkeypatch):
    """Candidates spread over the kernel's pool (AUC numpy / radix / weighted, GAUC whole
    candidates and pieces of one candidate) give exactly the one-thread values."""
    monkeypatch.setattr(M, "_threads", lambda: 3)
    rng = np.random.default_rng(2)
    n = 20_000
    y = (rng.random((n, 4)) < 0.2).astype(np.float64)
    y[rng.random((n, 4)) < 0.2] = np.nan
    w = rng.random(n) + 0.1
    groups = np.sort(rng.integers(0, 3000, n))
    s = np.round(rng.random((5, n)), 3).astype(np.float32)
    plans = (AucPlan(y, sort="numpy"), AucPlan(y, sort="radix"), AucPlan(y, w), GaucPlan(y, groups),
             GaucPlan(y, groups, w))  # weighted GAUC: the per-group sorts
    for plan in plans:
        for p in (1, 2, 5):
            np.testing.assert_array_equal(plan(s[:p], parallel=True), plan(s[:p], parallel=False))
    monkeypatch.setenv("FUSIONTUNE_SORT", "radix")  # a machine where the radix sort wins: per-group GAUC
    np.testing.assert_array_equal(plans[3](s, parallel=True), plans[3](s, parallel=False))
    np.testing.assert_allclose(plans[3](s, parallel=True)[0], ref_gauc(s[0].astype(np.float64), y, groups),
                               atol=1e-12)
    ref = np.array([ref_gauc(s[0].astype(np.float64), y, groups)])
    np.testing.assert_allclose(GaucPlan(y, groups)(s[:1], parallel=True), ref, atol=1e-12)


@pytest.mark.parametrize("formula", ["multiplicative", "power"])
def test_objective_on_the_pool_equals_one_thread_in_both_modes(tmp_path, formula, monkeypatch):
    """The objective fuses on the kernel's pool (a candidate per thread, or one
    candidate's rows split over the threads on a large log) and scores on it; both modes
    give exactly the one-thread per-task values."""
    from fusiontune import objective as O
    from fusiontune.pipeline import prepare
    from fusiontune.simulate import simulate_known_optimum, write_table
    from fusiontune.study import parse_study

    monkeypatch.setattr(M, "_threads", lambda: 2)
    monkeypatch.setattr(O, "_threads", lambda: 2)
    write_table(simulate_known_optimum({"t1": 1.0, "t2": 0.4}, rows=40_000, groups=2000, seed=1),
                tmp_path / "log.parquet")
    tasks = [{"name": t, "score": f"p_{t}", "label": t, "weight": 1.0, "metric": m}
             for t, m in (("t1", "auc"), ("t2", "gauc"))]
    study = parse_study({"name": "pool", "log": str(tmp_path / "log.parquet"), "group": "request_id",
                         "tasks": tasks, "fusion": {"formula": formula, "reference": "t1",
                                                    "baseline": {"a_t1": 1.0, "a_t2": 1.0, "b_t1": 0.1,
                                                                 "b_t2": 0.1} if formula == "power" else
                                                    {"a_t1": 1.0, "a_t2": 1.0}}}, tmp_path / "s.toml")
    obj = prepare(study).objective
    theta = np.random.default_rng(0).uniform(0.2, 2.0, (5, len(obj.formula.param_names)))
    obj.parallel = False
    one = obj.metrics(theta)
    obj.parallel = None
    np.testing.assert_array_equal(obj.metrics(theta), one)  # a candidate per thread
    monkeypatch.setattr(O, "_MAX_SCRATCH_BYTES", 1)  # "large log": one candidate, threads inside
    monkeypatch.setattr(O, "_MIN_ROWS_PER_THREAD", 100)
    monkeypatch.setattr(M, "_SPLIT_MIN_ROWS", 1000)
    assert obj.batch_size() == 1
    np.testing.assert_array_equal(obj.metrics(theta), one)


def test_spread_runs_every_item_once_and_never_two_threads_on_a_slot(monkeypatch):
    import threading
    import time as _time

    monkeypatch.setattr(M, "_threads", lambda: 3)
    seen, busy, lock = [], set(), threading.Lock()

    def item(i, w):
        with lock:
            assert w not in busy and 0 <= w < 2
            busy.add(w)
            seen.append(i)
        _time.sleep(0.001)
        with lock:
            busy.discard(w)

    M._spread(item, 25, slots=2)
    assert sorted(seen) == list(range(25))
    got = []
    M._spread(lambda i: got.append(i), 7)  # no slots: up to the kernel threads
    assert sorted(got) == list(range(7))

    def boom(i):
        if i == 3:
            raise ValueError("item 3")

    with pytest.raises(ValueError, match="item 3"):
        M._spread(boom, 6)
    nested = []
    M._spread(lambda i: M._spread(lambda j: nested.append((i, j)), 3), 2)  # from a pool thread: serial, no deadlock
    assert sorted(nested) == [(i, j) for i in range(2) for j in range(3)]
