"""Simulated multi-task prediction logs with a known structure.

``simulate_log`` builds the demo log: requests (groups) x candidates, four tasks with
different base rates and correlated, partly conflicting latent utilities:

* ``click``   ~10%  of impressions;
* ``like``    ~2%,  correlated with click;
* ``finish``  ~30%, in conflict with click (click-bait gets clicked, not finished);
* ``convert`` ~8% of clicks, *observed only on clicked rows* (NaN elsewhere), as a
  conversion is defined only after a click.

Each row's true probabilities come from a per-request user effect plus per-item
utilities drawn from a correlated Gaussian.  The logged model scores are calibrated but
noisy: ``logit(score) = logit(p_true) + noise_k`` with a task-specific noise level and a
task-specific temperature (the like model is over-confident, the convert model
under-confident), then rounded to 5 decimals as a serving log stores them (so ties
happen).  ``DEMO_BASELINE`` is a hand-set online weight set that over-weights click: it
is deliberately not optimal for the demo's business weights.

``simulate_known_optimum`` builds logs whose optimal fusion is known exactly: every
task's label depends on the row only through one fused score ``s* = formula(a*)``, so
ranking by ``s*`` maximises every task's AUC at once, and so any business-weighted sum.
Tests use it to check that searches recover ``a*``.

``simulate_feed6`` builds the higher-dimensional benchmark log of ``studies/feed6.toml``:
six tasks (click, like, finish, share, comment, convert) meant for the power formula
``prod_k (b_k + p_k) ** a_k`` (11 free parameters with the click weight pinned).  It adds
two things the demo lacks, both common in production logs:

* **conflict**: click-bait items are clicked but not finished, shared or converted
  (negative latent correlations of click with finish and with share), so weighting the
  business tasks up costs click GAUC, and the study's click guardrail binds;
* **noisy low tails** on the sparse tasks (share, comment): their models separate the
  few likely items well, but below ~1% the score is mostly model noise (the logit noise
  grows as the true probability falls).  In a product of scores, ``log p`` of such a task
  spreads that noise over the whole ranking; a bias ``b_k`` flattens the low tail
  (``log(b_k + p_k)`` is nearly constant for ``p_k << b_k``), so the best ``b_k`` are
  interior and matter, which is what the power formula exists for.

Everything is seeded and deterministic (numpy's PCG64).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["simulate_log", "simulate_segments", "simulate_known_optimum", "simulate_feed6", "DEMO_TASKS",
           "DEMO_BASELINE", "FEED6_TASKS", "FEED6_BASELINE", "write_table", "simulate_dataset"]

DEMO_TASKS = ("click", "like", "finish", "convert")
# online weights of the demo (multiplicative formula): clicks dominate
DEMO_BASELINE = {"a_click": 1.0, "a_like": 0.2, "a_finish": 0.2, "a_convert": 0.1}

# latent correlation between the item utilities of click, like, finish, convert
_CORR = np.array([
    [1.00, 0.45, -0.15, 0.30],
    [0.45, 1.00, 0.30, 0.20],
    [-0.15, 0.30, 1.00, 0.10],
    [0.30, 0.20, 0.10, 1.00],
])
_BIAS = np.array([-2.75, -4.6, -1.0, -2.7])  # base rates ~10%, 2%, 30%, 8% (of clicks)
_UTIL_SCALE = np.array([1.1, 1.2, 1.0, 1.0])
_USER_SCALE = np.array([0.6, 0.7, 0.5, 0.4])  # per-request propensity, correlated across tasks
_NOISE = np.array([0.55, 0.85, 0.65, 0.9])  # model error on the logit scale
_TEMPERATURE = np.array([1.0, 1.3, 1.0, 0.75])  # >1 over-confident, <1 under-confident


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p):
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def simulate_log(requests: int = 10_000, candidates: int = 20, seed: int = 0, decimals: int = 5) -> pd.DataFrame:
    """The demo log: ``requests * candidates`` rows, columns ``request_id, ts, item_id,
    p_<task>, <task>`` for the four demo tasks (see the module docstring)."""
    return _demo(requests, candidates, seed, decimals, _NOISE)


#: model noise multipliers (click, like, finish, convert) of the first three simulated segments:
#: "s0" has good click but poor like / convert models, "s1" a poor click model, "s2" a poor
#: finish but good convert model; further segments draw theirs (log-normal, seeded)
_SEGMENT_NOISE = np.array([[0.5, 2.6, 0.8, 2.6],
                           [2.4, 0.5, 0.6, 1.0],
                           [1.0, 1.0, 2.8, 0.4]])


def simulate_segments(requests: int = 10_000, candidates: int = 20, seed: int = 0, segments: int = 3,
                      identical: bool = False, decimals: int = 5) -> pd.DataFrame:
    """The demo log with a ``user_segment`` column (``s0``, ``s1``, ...; every request's rows
    in one segment, segment sizes unequal).  The segments' models differ in quality per task
    (the per-task logit noise is multiplied by a per-segment factor), so the best fusion
    weights differ by segment: a score that is mostly noise in one segment deserves a
    small weight there only.  ``identical=True`` gives every segment the same models (the
    segment column is then only a label), the control where segment weights must not win."""
    if segments < 1:
        raise ValueError(f"segments must be >= 1, got {segments}")
    rng = np.random.default_rng([seed, 99])
    share = rng.dirichlet(np.full(segments, 4.0)) if segments > 1 else np.ones(1)
    seg_of_request = rng.choice(segments, size=requests, p=share)
    mult = np.ones((segments, len(DEMO_TASKS)))
    if not identical:
        drawn = np.exp(rng.normal(0.0, 0.6, size=(segments, len(DEMO_TASKS))))
        mult[:] = drawn
        m = min(segments, len(_SEGMENT_NOISE))
        mult[:m] = _SEGMENT_NOISE[:m]
    noise = (mult * _NOISE)[np.repeat(seg_of_request, candidates)]
    df = _demo(requests, candidates, seed, decimals, noise)
    df.insert(1, "user_segment", np.array([f"s{i}" for i in range(segments)], dtype=object)[
        np.repeat(seg_of_request, candidates)])
    return df


def _demo(requests: int, candidates: int, seed: int, decimals: int, noise_scale: np.ndarray) -> pd.DataFrame:
    """simulate_log with the model noise ``noise_scale`` (K,) or per row (N, K)."""
    rng = np.random.default_rng(seed)
    n = requests * candidates
    k = len(DEMO_TASKS)
    chol = np.linalg.cholesky(_CORR)
    user = (rng.standard_normal((requests, 1)) * 0.7 + rng.standard_normal((requests, k)) * 0.7) * _USER_SCALE
    item = rng.standard_normal((n, k)) @ chol.T * _UTIL_SCALE
    logit_true = _BIAS + np.repeat(user, candidates, axis=0) + item
    p_true = _sigmoid(logit_true)
    u = rng.random((n, k))
    y = (u < p_true).astype(np.float32)
    y[y[:, 0] == 0, 3] = np.nan  # conversion exists only after a click
    noisy = logit_true + rng.standard_normal((n, k)) * noise_scale
    # temperature around each task's mean logit keeps the scores roughly calibrated on average
    centre = noisy.mean(axis=0)
    scores = _sigmoid(centre + (noisy - centre) * _TEMPERATURE)
    scores = np.round(scores, decimals)
    req = np.repeat(np.arange(requests), candidates)
    # requests arrive over time; all candidates of a request share its timestamp
    ts = np.repeat(1_700_000_000 + np.arange(requests) * 30 + rng.integers(0, 30, requests), candidates)
    df = pd.DataFrame({"request_id": req.astype(np.int64), "ts": ts.astype(np.int64),
                       "item_id": rng.integers(0, 50_000, n).astype(np.int64)})
    for j, t in enumerate(DEMO_TASKS):
        df[f"p_{t}"] = scores[:, j].astype(np.float32)
    for j, t in enumerate(DEMO_TASKS):
        df[t] = y[:, j]
    return df


FEED6_TASKS = ("click", "like", "finish", "share", "comment", "convert")
# online weights of feed6 (power formula): click-heavy, a small bias on every task
FEED6_BASELINE = {"a_click": 1.0, "a_like": 0.3, "a_finish": 0.3, "a_share": 0.2, "a_comment": 0.2,
                  "a_convert": 0.2, "b_click": 0.01, "b_like": 0.01, "b_finish": 0.01, "b_share": 0.01,
                  "b_comment": 0.01, "b_convert": 0.01}
_F6_CORR = np.array([  # click, like, finish, share, comment, convert
    [1.00, 0.35, -0.35, -0.20, 0.10, 0.25],
    [0.35, 1.00, 0.30, 0.45, 0.40, 0.15],
    [-0.35, 0.30, 1.00, 0.35, 0.20, 0.20],
    [-0.20, 0.45, 0.35, 1.00, 0.35, 0.10],
    [0.10, 0.40, 0.20, 0.35, 1.00, 0.05],
    [0.25, 0.15, 0.20, 0.10, 0.05, 1.00],
])
_F6_BIAS = np.array([-2.7, -4.2, -1.0, -5.3, -4.6, -2.4])  # ~10%, 2.5%, 30%, 0.8%, 1.5%, 10% of clicks
_F6_UTIL = np.array([1.1, 1.2, 1.0, 1.3, 1.2, 1.0])
_F6_USER = np.array([0.6, 0.7, 0.5, 0.6, 0.6, 0.4])
_F6_NOISE = np.array([0.5, 0.8, 0.6, 0.7, 0.8, 0.85])  # logit noise at the top of the range
_F6_TAIL = np.array([0.0, 0.3, 0.0, 1.6, 1.2, 0.0])  # extra noise per unit of logit below the task's mean
_F6_TEMP = np.array([1.0, 1.25, 1.0, 1.0, 1.1, 0.8])


def simulate_feed6(requests: int = 4_000, candidates: int = 20, seed: int = 0, decimals: int = 5) -> pd.DataFrame:
    """The feed6 log: ``requests * candidates`` rows, columns ``request_id, ts, item_id,
    p_<task>, <task>`` for the six :data:`FEED6_TASKS` (see the module docstring).
    ``convert`` is observed only on clicked rows."""
    rng = np.random.default_rng(seed)
    n = requests * candidates
    k = len(FEED6_TASKS)
    chol = np.linalg.cholesky(_F6_CORR)
    user = (rng.standard_normal((requests, 1)) * 0.7 + rng.standard_normal((requests, k)) * 0.7) * _F6_USER
    item = rng.standard_normal((n, k)) @ chol.T * _F6_UTIL
    logit_true = _F6_BIAS + np.repeat(user, candidates, axis=0) + item
    y = (rng.random((n, k)) < _sigmoid(logit_true)).astype(np.float32)
    y[y[:, 0] == 0, 5] = np.nan  # conversion exists only after a click
    # below a task's typical logit the model's extra error grows with the distance, but it
    # stays in the tail: it shuffles the unlikely items, it does not lift them to the top
    below = np.clip(_F6_BIAS - logit_true, 0.0, None)
    tail = np.minimum(logit_true + rng.standard_normal((n, k)) * _F6_TAIL * below, _F6_BIAS)
    noisy = np.where(below > 0, tail, logit_true) + rng.standard_normal((n, k)) * _F6_NOISE
    centre = noisy.mean(axis=0)
    scores = np.round(_sigmoid(centre + (noisy - centre) * _F6_TEMP), decimals).clip(10.0 ** -decimals, 1.0)
    req = np.repeat(np.arange(requests), candidates)
    ts = np.repeat(1_700_000_000 + np.arange(requests) * 30 + rng.integers(0, 30, requests), candidates)
    df = pd.DataFrame({"request_id": req.astype(np.int64), "ts": ts.astype(np.int64),
                       "item_id": rng.integers(0, 50_000, n).astype(np.int64)})
    for j, t in enumerate(FEED6_TASKS):
        df[f"p_{t}"] = scores[:, j].astype(np.float32)
    for j, t in enumerate(FEED6_TASKS):
        df[t] = y[:, j]
    return df


def simulate_known_optimum(weights: dict[str, float], rows: int = 50_000, groups: int = 2_500,
                           formula: str = "multiplicative", seed: int = 0, sharpness: float = 1.5,
                           base_rates: dict[str, float] | None = None) -> pd.DataFrame:
    """A log whose best fusion is known: labels depend on the row only through
    ``s* = formula(a*)`` over the logged scores, with ``a* = weights`` (task -> a_k).

    Columns: ``request_id``, ``p_<task>``, ``<task>``.  Supported formulas: additive,
    multiplicative.  Every task ranks best by ``s*``, so the optimum direction of any
    business-weighted objective is ``a*`` (up to scale).
    """
    rng = np.random.default_rng(seed)
    tasks = list(weights)
    a = np.array([weights[t] for t in tasks], dtype=np.float64)
    p = np.round(rng.beta(2.0, 5.0, size=(rows, len(tasks))), 5).clip(1e-5, 1.0)
    if formula == "multiplicative":
        s = np.log(p) @ a
    elif formula == "additive":
        s = p @ a
    else:
        raise ValueError(f"known optimum only for additive or multiplicative, got {formula!r}")
    z = (s - s.mean()) / s.std()
    rates = base_rates or {}
    df = pd.DataFrame({"request_id": rng.integers(0, groups, rows).astype(np.int64)})
    df = df.assign(**{f"p_{t}": p[:, j].astype(np.float32) for j, t in enumerate(tasks)})
    for t in tasks:
        b = _logit(np.array(rates.get(t, 0.2)))
        df[t] = (rng.random(rows) < _sigmoid(b + sharpness * z)).astype(np.float32)
    return df.sort_values("request_id", kind="stable").reset_index(drop=True)


def write_table(df: pd.DataFrame, path) -> None:
    """Write CSV or Parquet by extension, atomically (temp file, then rename)."""
    from pathlib import Path

    from .io import atomic_write

    path = Path(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False, compression="zstd"))
    else:
        atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))


#: 2026-11-01 00:00 UTC, the first day of a simulated dataset
DATASET_START = 1_793_491_200


def simulate_dataset(out, requests: int, candidates: int = 20, seed: int = 0, *, preset: str = "demo",
                     partition_by: str = "day", days: int = 7, chunk_rows: int = 1 << 20,
                     progress=None) -> int:
    """Write a simulated log as a Parquet dataset under the directory ``out``, in chunks, so a
    20M-row log never sits in memory whole.  Returns the rows written.

    Requests are simulated ``chunk_rows // candidates`` at a time (each chunk seeded from
    ``(seed, chunk index)``, so the dataset depends on ``seed`` and ``chunk_rows`` only), their
    ids numbered on across chunks, their times ``ts`` (Unix seconds) spread evenly over
    ``days`` days from 2026-11-01 UTC.  ``partition_by = "day"`` writes Hive partitions
    ``day=YYYYMMDD/part-NNNNN.parquet`` (the ``day`` column comes back from the directory
    names when the dataset is read); ``None`` writes ``part-NNNNN.parquet`` files only.
    Everything is written into a temp directory beside ``out`` and renamed at the end:
    ``out`` either appears whole or not at all.  ``progress(rows_done)`` is called after
    each chunk.
    """
    import os
    import shutil
    import tempfile
    from datetime import datetime, timezone
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    from .errors import InputError

    out = Path(out)
    if partition_by not in (None, "day"):
        raise InputError(f"{out}: partition_by must be 'day' or None, got {partition_by!r}", param="partition_by")
    if days < 1:
        raise InputError(f"{out}: days must be >= 1, got {days}", param="days")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out}: already exists (a dataset is written into a new or empty directory)")
    make = simulate_feed6 if preset == "feed6" else simulate_log
    per_chunk = max(1, chunk_rows // candidates)
    span = days * 86400
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    rows = 0
    try:
        for i, first in enumerate(range(0, requests, per_chunk)):
            n_req = min(per_chunk, requests - first)
            df = make(n_req, candidates, np.random.SeedSequence([seed, i]))
            rid = df["request_id"].to_numpy() + first
            df["request_id"] = rid
            df["ts"] = DATASET_START + (rid * span) // requests
            if partition_by == "day":
                day_start = DATASET_START + ((df["ts"].to_numpy() - DATASET_START) // 86400) * 86400
                for d in np.unique(day_start):
                    name = datetime.fromtimestamp(int(d), timezone.utc).strftime("%Y%m%d")
                    part = df[day_start == d]
                    (tmp / f"day={name}").mkdir(exist_ok=True)
                    pq.write_table(pa.Table.from_pandas(part, preserve_index=False),
                                   tmp / f"day={name}" / f"part-{i:05d}.parquet", compression="zstd")
            else:
                pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp / f"part-{i:05d}.parquet",
                               compression="zstd")
            rows += len(df)
            del df
            if progress is not None:
                progress(rows)
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return rows
