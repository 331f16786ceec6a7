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
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["mmoe_synthetic", "feed_table", "FEED_NUMERIC", "FEED_CATEGORICAL", "FEED_TASKS"]

FEED_NUMERIC = ("user_activity", "item_quality", "item_age_days", "price", "hour")
FEED_CATEGORICAL = ("user_segment", "item_category", "device")
FEED_TASKS = ("click", "like", "convert")


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
