"""The optional cosine learning-rate schedule of fusiontune.mtl.train.fit (used by the MMoE benchmark)."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fusiontune.mtl.synthetic import mmoe_synthetic  # noqa: E402
from fusiontune.mtl.train import Arrays, TrainConfig, fit  # noqa: E402


def _data(rows=600):
    df = mmoe_synthetic(rows, 0.5, dim=6, seed=3)
    x = df[[f"x{i}" for i in range(6)]].to_numpy(np.float32)
    return Arrays(x, np.zeros((rows, 0), np.int64), df[["y1", "y2"]].to_numpy(np.float32))


def _cfg(**kw):
    base = dict(model="mmoe", task_type="regression", epochs=4, batch_size=100, lr=0.01, patience=0,
                experts=2, expert_hidden=[4], tower_hidden=[4], threads=1, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def test_cosine_decays_the_learning_rate_to_zero():
    res = fit(_cfg(lr_schedule="cosine"), _data(), None, [], show_progress=False)
    lrs = [row["lr"] for row in res.history]
    steps = 6  # 600 rows / batch 100
    total = 4 * steps
    expected = [0.01 * 0.5 * (1 + math.cos(math.pi * (e * steps - 1) / total)) for e in range(1, 5)]
    assert lrs == pytest.approx(expected, rel=1e-9)
    assert lrs[-1] < 0.0005 and all(a > b for a, b in zip(lrs, lrs[1:]))


def test_constant_is_the_default_and_differs_from_cosine():
    const = fit(_cfg(), _data(), None, [], show_progress=False)
    assert [row["lr"] for row in const.history] == [0.01] * 4
    cos = fit(_cfg(lr_schedule="cosine"), _data(), None, [], show_progress=False)
    again = fit(_cfg(lr_schedule="cosine"), _data(), None, [], show_progress=False)
    a = [p.detach().numpy() for p in cos.model.parameters()]
    b = [p.detach().numpy() for p in again.model.parameters()]
    c = [p.detach().numpy() for p in const.model.parameters()]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))  # deterministic
    assert not all(np.allclose(x, y) for x, y in zip(a, c))


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="lr_schedule"):
        fit(_cfg(lr_schedule="step"), _data(), None, [], show_progress=False)
