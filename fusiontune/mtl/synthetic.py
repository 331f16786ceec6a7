"""Synthetic training tables for ``fusiontune train`` (numpy only, no torch).

``mmoe_synthetic``
    The generator of the MMoE paper (Ma et al., KDD 2018, section 3.2).  Two regression
    tasks whose relatedness is set by the cosine ``p`` of their weight vectors:

    * ``u1, u2``: orthogonal unit vectors in R^d (QR of a Gaussian matrix);
    * ``w1 = c * u1``, ``w2 = c * (p * u1 + sqrt(1 - p^2) * u2)`` so ``cos(w1, w2) = p``;
    * ``x ~ N(0, I_d)``;
    * ``y_i = w_i^T x + sum_{j=1..m} sin(alpha_j * w_i^T x + beta_j) + eps_i``, with the same
      ``alpha_j, beta_j ~ N(0, 1)`` for both tasks (drawn once from ``shape_seed``) and
      ``eps_i ~ N(0, noise^2)``.

    The sinusoids make the label correlation a non-linear function of ``p`` (the paper's
    point: ``p`` controls relatedness, not the Pearson correlation of the labels).
    Columns: ``x0 .. x{d-1}``, the regression targets ``y1, y2`` and their binarised
    versions ``c1, c2`` (1 above the median), plus ``request_id`` (consecutive blocks of
    ``group_size`` rows) so the table can also feed a GAUC study.

``feed_table``
    A small recommender-style table: numeric and categorical features, a request id and a
    timestamp, and three binary tasks ``click`` (~15%), ``like`` (correlated with click) and
    ``convert`` (observed only on clicked rows: NaN elsewhere).  Used by the end-to-end
    tests, the ESMM path and the 200k-row timing.

``feed5_table``
    A bigger feed table for the fuser study on a trained model's log (``studies/mtlfeed5.toml``,
    docs/ltr.md): five tasks ``click``, ``finish``, ``like``, ``share`` and ``convert``
    (observed only on clicked rows), creators with a latent click-bait tendency (more clicks,
    fewer finishes and likes: the tasks conflict), and request context (``user_segment``,
    ``device`` as integer codes, ``hour``, ``user_activity``) that shifts the tasks' base rates
    differently, so a log written by a model trained on it can carry context as numeric
    columns.  Deterministic from ``seed``; ``feed_table`` is unchanged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["mmoe_synthetic", "feed_table", "feed5_table", "FEED_NUMERIC", "FEED_CATEGORICAL", "FEED_TASKS",
           "FEED5_NUMERIC", "FEED5_CATEGORICAL", "FEED5_TASKS", "FEED5_CONTEXT"]

FEED_NUMERIC = ("user_activity", "item_quality", "item_age_days", "price", "hour")
FEED_CATEGORICAL = ("user_segment", "item_category", "device")
FEED_TASKS = ("click", "like", "convert")
FEED5_NUMERIC = ("user_activity", "item_quality", "item_age_days", "duration_s", "price", "hour")
FEED5_CATEGORICAL = ("user_segment", "device", "item_category", "creator_id")
FEED5_TASKS = ("click", "finish", "like", "share", "convert")
FEED5_CONTEXT = ("user_segment", "device", "hour", "user_activity")  # per-request columns, numeric


def mmoe_synthetic(rows: int = 20_000, correlation: float = 0.5, dim: int = 100, sinusoids: int = 10,
                   scale: float = 1.0, noise: float = 0.1, seed: int = 0, group_size: int = 20,
                   shape_seed: int | None = 0) -> pd.DataFrame:
    """The MMoE paper's two-task table (see the module docstring).  ``noise`` is the
    standard deviation of eps (the paper's N(0, 0.01) is a variance of 0.01).  The paper
    treats ``alpha, beta`` as given: they come from ``shape_seed`` (fixed by default, so
    seeds change the weight vectors, inputs and noise but not the shape of the
    non-linearity); ``shape_seed=None`` draws them from ``seed`` too."""
    if not -1.0 <= correlation <= 1.0:
        raise ValueError(f"correlation must be in [-1, 1], got {correlation!r}")
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((dim, 2)))
    u1, u2 = q[:, 0], q[:, 1]
    w1 = scale * u1
    w2 = scale * (correlation * u1 + np.sqrt(max(0.0, 1.0 - correlation ** 2)) * u2)
    shape = rng if shape_seed is None else np.random.default_rng([shape_seed, 0x5EED])
    alpha = shape.standard_normal(sinusoids)
    beta = shape.standard_normal(sinusoids)
    x = rng.standard_normal((rows, dim))
    ys = []
    for w in (w1, w2):
        z = x @ w
        y = z + np.sin(np.outer(z, alpha) + beta).sum(axis=1) + noise * rng.standard_normal(rows)
        ys.append(y)
    df = pd.DataFrame(x.astype(np.float32), columns=[f"x{i}" for i in range(dim)])
    df.insert(0, "request_id", (np.arange(rows) // max(1, group_size)).astype(np.int64))
    for i, y in enumerate(ys, start=1):
        df[f"y{i}"] = y.astype(np.float32)
    for i, y in enumerate(ys, start=1):
        df[f"c{i}"] = (y > np.median(y)).astype(np.float32)
    return df


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def feed_table(rows: int = 20_000, seed: int = 0, group_size: int = 20) -> pd.DataFrame:
    """A feed-like table with numeric + categorical features and three tasks (click, like,
    convert; convert is NaN where there was no click).  See the module docstring."""
    rng = np.random.default_rng(seed)
    n = rows
    req = np.arange(n) // max(1, group_size)
    n_req = int(req[-1]) + 1
    # per-request user: activity and segment are shared by the request's rows
    activity = rng.gamma(2.0, 1.0, n_req)[req]
    segment = rng.integers(0, 12, n_req)[req]
    device = rng.choice(np.array(["ios", "android", "web"]), n_req, p=[0.4, 0.5, 0.1])[req]
    category = rng.integers(0, 40, n)
    quality = rng.normal(0.0, 1.0, n)
    age = rng.exponential(10.0, n)
    price = np.exp(rng.normal(3.0, 0.8, n))
    hour = rng.integers(0, 24, n).astype(np.float64)
    # latent effects of the categoricals (interactions segment x category drive relevance)
    seg_cat = rng.normal(0.0, 0.8, (12, 40))
    cat_buy = rng.normal(0.0, 0.6, 40)
    dev = {"ios": 0.2, "android": 0.0, "web": -0.3}
    dev_eff = np.vectorize(dev.get)(device)
    relevance = seg_cat[segment, category]
    z_click = (-2.3 + 0.9 * relevance + 0.5 * quality + 0.25 * np.log1p(activity) - 0.03 * age
               + dev_eff + 0.3 * np.sin(hour / 24 * 2 * np.pi))
    z_like = -3.2 + 0.6 * relevance + 1.0 * quality + 0.4 * np.tanh(quality * relevance) + 0.5 * dev_eff
    z_conv = -1.6 + 0.8 * cat_buy[category] - 0.6 * (np.log(price) - 3.0) + 0.4 * relevance - 0.3 * quality
    click = (rng.random(n) < _sigmoid(z_click)).astype(np.float32)
    like = (rng.random(n) < _sigmoid(z_like + 1.2 * click)).astype(np.float32)
    convert = (rng.random(n) < _sigmoid(z_conv)).astype(np.float32)
    convert[click == 0] = np.nan
    ts = 1_700_000_000 + req * 30 + rng.integers(0, 30, n)
    return pd.DataFrame({
        "request_id": req.astype(np.int64), "ts": ts.astype(np.int64),
        "user_activity": activity.astype(np.float32), "item_quality": quality.astype(np.float32),
        "item_age_days": age.astype(np.float32), "price": price.astype(np.float32),
        "hour": hour.astype(np.float32),
        "user_segment": np.char.add("seg", segment.astype(str)), "item_category": category.astype(np.int64),
        "device": device,
        "click": click, "like": like, "convert": convert,
    })


def feed5_table(rows: int = 400_000, seed: int = 0, group_size: int = 20, creators: int = 600,
                truth: bool = False) -> pd.DataFrame:
    """A feed table with five conflicting tasks and request context (see the module docstring).

    Per request: a user (``user_activity`` ~ Gamma(2, 1), ``user_segment`` in 0..11), a
    ``device`` (0 ios, 1 android, 2 web) and an ``hour``.  Per row: an item of one of 40
    categories and ``creators`` creators, with quality, age, video length and price.  Latent
    effects: segment x category relevance, each creator's click-bait tendency and quality bias
    (learnt only through the ``creator_id`` embedding), per-segment share affinity, per-device
    finish and conversion rates.  Labels: click; finish and like (like more likely after a
    finish); share (more likely after a like); convert only where there was a click (NaN
    elsewhere).  ``ts`` increases with the request id (for a time split).  ``truth=True`` adds
    the hidden true probabilities ``q_<task>`` given every feature (like and share marginalised
    over finish and like; convert given a click), for headroom studies; the other columns are
    the same with or without it."""
    if rows < 1 or group_size < 1 or creators < 1:
        raise ValueError(f"rows, group_size and creators must be >= 1, got {rows}, {group_size}, {creators}")
    rng = np.random.default_rng([seed, 0xFEED5])
    n = rows
    req = np.arange(n) // group_size
    n_req = int(req[-1]) + 1
    activity = rng.gamma(2.0, 1.0, n_req)[req]
    segment = rng.integers(0, 12, n_req)[req]
    device = rng.choice(3, n_req, p=[0.4, 0.45, 0.15])[req]
    hour = rng.integers(0, 24, n_req)[req].astype(np.float64)
    category = rng.integers(0, 40, n)
    creator = rng.integers(0, creators, n)
    quality = rng.normal(0.0, 1.0, n)
    age = rng.exponential(10.0, n)
    duration = np.exp(rng.normal(3.5, 0.7, n))  # seconds, median ~33
    price = np.exp(rng.normal(3.0, 0.8, n))
    seg_cat = rng.normal(0.0, 0.8, (12, 40))
    cat_buy = rng.normal(0.0, 0.6, 40)
    bait = rng.normal(0.0, 1.0, creators)[creator]
    creator_q = rng.normal(0.0, 0.4, creators)[creator]
    share_seg = rng.normal(0.0, 0.5, 12)[segment]
    dev_click = np.array([0.2, 0.0, -0.3])[device]
    dev_finish = np.array([0.3, 0.1, -0.6])[device]
    dev_conv = np.array([0.1, -0.2, 0.4])[device]
    rel = seg_cat[segment, category]
    q = quality + creator_q
    act = np.log1p(activity)
    day = np.sin(hour / 24 * 2 * np.pi)
    z_click = -2.2 + 0.9 * rel + 0.4 * q + 0.6 * bait + 0.25 * act - 0.02 * age + dev_click + 0.3 * day
    z_finish = (-0.6 + 0.5 * rel + 0.6 * q - 0.8 * bait - 0.6 * (np.log(duration) - 3.5) + dev_finish
                + 0.3 * np.cos(hour / 24 * 2 * np.pi) + 0.2 * act)
    z_like = -3.4 + 0.6 * rel + 0.9 * q + 0.4 * np.tanh(q * rel) - 0.3 * bait
    z_share = -4.3 + 0.5 * rel + 0.7 * q + share_seg - 0.2 * bait
    z_conv = -1.5 + 0.8 * cat_buy[category] - 0.6 * (np.log(price) - 3.0) + 0.4 * rel - 0.2 * q + dev_conv
    u = rng.random((5, n))
    click = (u[0] < _sigmoid(z_click)).astype(np.float32)
    finish = (u[1] < _sigmoid(z_finish)).astype(np.float32)
    like = (u[2] < _sigmoid(z_like + 1.0 * finish)).astype(np.float32)
    share = (u[3] < _sigmoid(z_share + 1.5 * like)).astype(np.float32)
    convert = (u[4] < _sigmoid(z_conv)).astype(np.float32)
    convert[click == 0] = np.nan
    ts = 1_700_000_000 + req * 30 + rng.integers(0, 30, n)
    df = pd.DataFrame({
        "request_id": req.astype(np.int64), "ts": ts.astype(np.int64),
        "user_activity": activity.astype(np.float32), "item_quality": quality.astype(np.float32),
        "item_age_days": age.astype(np.float32), "duration_s": duration.astype(np.float32),
        "price": price.astype(np.float32), "hour": hour.astype(np.float32),
        "user_segment": segment.astype(np.int64), "device": device.astype(np.int64),
        "item_category": category.astype(np.int64), "creator_id": creator.astype(np.int64),
        "click": click, "finish": finish, "like": like, "share": share, "convert": convert,
    })
    if truth:
        q_finish = _sigmoid(z_finish)
        q_like = q_finish * _sigmoid(z_like + 1.0) + (1 - q_finish) * _sigmoid(z_like)
        df["q_click"] = _sigmoid(z_click)
        df["q_finish"] = q_finish
        df["q_like"] = q_like
        df["q_share"] = q_like * _sigmoid(z_share + 1.5) + (1 - q_like) * _sigmoid(z_share)
        df["q_convert"] = _sigmoid(z_conv)
    return df
