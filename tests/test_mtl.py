"""Unit tests of fusiontune.mtl: models, gates, ESMM, masking, loss balancers, PCGrad, data."""

import math

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from fusiontune.mtl.balance import DWA, GradNorm, UncertaintyWeighting, dwa_weights, pcgrad  # noqa: E402
from fusiontune.mtl.data import Encoder, split_rows  # noqa: E402
from fusiontune.mtl.models import MODELS, Bank, build_model  # noqa: E402
from fusiontune.mtl.synthetic import mmoe_synthetic  # noqa: E402
from fusiontune.mtl.train import Arrays, TrainConfig, fit, predict, task_losses  # noqa: E402

torch.set_num_threads(1)
B, F_NUM, CARDS = 16, 3, [5, 7]


def _inputs(seed=0, b=B):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, F_NUM, generator=g), torch.randint(0, 5, (b, len(CARDS)), generator=g)


@pytest.mark.parametrize("name", [*MODELS, "cgc"])
def test_output_shapes(name):
    torch.manual_seed(0)
    k = 2 if name == "esmm" else 3
    m = build_model(name, F_NUM, CARDS, k, levels=2, experts=4, specific=2, shared=2)
    out = m(*_inputs())
    assert out["logits"].shape == (B, k)
    s = m.scores(out)
    assert s.shape == (B, k) and bool(((s >= 0) & (s <= 1)).all())
    if name == "omoe":
        assert out["gates"].shape == (B, 1, 4)
    if name == "mmoe":
        assert out["gates"].shape == (B, k, 4)
    if name == "ple":  # level 1: K task gates + 1 shared gate over K*2 + 2 experts; last level: K gates
        assert [g.shape for g in out["gates"]] == [(B, k + 1, 3 * 2 + 2), (B, k, 3 * 2 + 2)]
    if name == "cgc":
        assert [g.shape for g in out["gates"]] == [(B, k, 3 * 2 + 2)]


@pytest.mark.parametrize("name", ["omoe", "mmoe", "ple"])
def test_gates_sum_to_one(name):
    torch.manual_seed(1)
    m = build_model(name, F_NUM, CARDS, 3, levels=2, experts=5, specific=2, shared=1)
    gates = m(*_inputs(1))["gates"]
    for g in (gates if isinstance(gates, list) else [gates]):
        assert torch.allclose(g.sum(-1), torch.ones(g.shape[:2]), atol=1e-6)
        assert bool((g >= 0).all())
    if name == "ple":
        g0 = gates[0]  # task 0 may use only its own experts (0, 1) and the shared one (6)
        assert torch.all(g0[:, 0, 2:6] == 0) and torch.all(g0[:, 0, [0, 1, 6]] > 0)
        assert torch.all(g0[:, 3, :] > 0)  # the shared gate mixes every expert


def test_bank_is_the_same_as_separate_mlps():
    torch.manual_seed(2)
    bank = Bank(4, 6, [5, 3])
    x = torch.randn(8, 6)
    out = bank(x)
    for e in range(4):  # reference: expert e on its own, with its slices of the stacked weights
        h = x
        for i, layer in enumerate(bank.layers):
            h = h @ layer.weight[e] + layer.bias[e]
            h = torch.relu(h)
        assert torch.allclose(out[:, e, :], h, atol=1e-6)
    xs = torch.randn(8, 4, 6)  # one input per member
    out2 = bank(xs)
    assert torch.allclose(out2[:, 2, :], bank(xs[:, 2, :])[:, 2, :], atol=1e-6)


def test_esmm_cvr_is_ctcvr_over_ctr():
    torch.manual_seed(3)
    m = build_model("esmm", F_NUM, CARDS, 2)
    out = m(*_inputs(3))
    ctr, cvr, ctcvr = m.probabilities(out)
    assert torch.allclose(ctcvr, ctr * cvr)
    assert torch.allclose(ctcvr / ctr, cvr, rtol=1e-5)
    assert torch.allclose(m.scores(out)[:, 1], cvr)
    m2 = build_model("esmm", F_NUM, CARDS, 2, esmm_score="ctcvr")
    m2.load_state_dict(m.state_dict())
    assert torch.allclose(m2.scores(m2(*_inputs(3)))[:, 1], ctcvr)
    # loss targets: CTCVR label is 0 without a click even when conversion is unobserved
    labels = torch.tensor([[0.0, float("nan")], [1.0, 1.0], [1.0, 0.0], [1.0, float("nan")]])
    y = m.loss_labels(labels)
    assert y[:, 0].tolist() == [0, 1, 1, 1]
    assert y[:3, 1].tolist() == [0, 1, 0] and math.isnan(y[3, 1])
    # the CTCVR loss is the BCE of the product probability
    yy = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    out = {"logits": torch.tensor([[0.3, -0.2], [1.0, 0.5]])}
    elem = m.elementwise_loss(out, yy, "binary")
    p = torch.sigmoid(out["logits"]).prod(1)
    ref = torch.nn.functional.binary_cross_entropy(p, yy[:, 1], reduction="none")
    assert torch.allclose(elem[:, 1], ref, atol=1e-6)


def test_nan_labels_are_masked():
    torch.manual_seed(4)
    m = build_model("mmoe", F_NUM, CARDS, 2)
    xn, xc = _inputs(4)
    labels = (torch.rand(B, 2) < 0.5).float()
    labels[::2, 1] = float("nan")
    out = m(xn, xc)
    out["logits"].retain_grad()
    losses = task_losses(m, out, labels, "binary")
    assert torch.isfinite(losses).all()
    losses.sum().backward()
    g = out["logits"].grad
    assert torch.all(g[::2, 1] == 0) and torch.all(g[1::2, 1] != 0)
    # the masked loss equals the loss on the observed rows only
    keep = ~torch.isnan(labels[:, 1])
    ref = torch.nn.functional.binary_cross_entropy_with_logits(out["logits"][keep, 1].detach(), labels[keep, 1])
    assert torch.allclose(losses[1].detach(), ref, atol=1e-6)
    # a task with no observed row gives zero loss and zero gradient
    m.zero_grad()
    labels[:, 1] = float("nan")
    out = m(xn, xc)
    losses = task_losses(m, out, labels, "binary")
    assert float(losses[1].detach()) == 0.0
    losses[1].backward()
    assert all(p.grad is None or torch.all(p.grad == 0) for p in m.parameters())


def test_uncertainty_weights_the_noisier_task_less():
    # fixed losses: the optimum of 0.5 exp(-s) L + 0.5 s is exp(-s) = 1 / L, weight 0.5 / L
    bal = UncertaintyWeighting(2)
    opt = torch.optim.Adam(bal.parameters(), lr=0.05)
    losses = torch.tensor([0.2, 2.0])
    history = []
    for _ in range(400):
        opt.zero_grad()
        bal.terms(losses).sum().backward()
        opt.step()
        history.append(bal.weights())
    w = bal.weights()
    assert np.allclose(w, 0.5 / losses.numpy(), rtol=0.02)
    assert history[10][1] < history[10][0]  # moves the right way from the start (both start at 0.5)
    # in training: task 2 has the same signal with 10x the noise -> it ends with the lower weight
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 4)).astype(np.float32)
    f = x @ np.array([1.0, -0.5, 0.3, 0.0]) + np.sin(2 * x[:, 0])
    y = np.stack([f + 0.1 * rng.standard_normal(3000), f + 1.5 * rng.standard_normal(3000)], 1)
    data = Arrays(x, np.zeros((3000, 0), np.int64), y.astype(np.float32))
    cfg = TrainConfig(model="shared_bottom", task_type="regression", balance="uncertainty", epochs=6,
                      batch_size=128, lr=5e-3, bottom_hidden=[32], tower_hidden=[8], patience=0, threads=1)
    res = fit(cfg, data, None, [], show_progress=False)
    w0, w1 = res.balancer.weights()
    assert w1 < w0 / 1.1  # started equal (0.5 each)


def test_gradnorm_weights_positive_renormalised_and_balancing():
    torch.manual_seed(5)
    m = build_model("mmoe", F_NUM, CARDS, 2, experts=3, expert=[8], tower=[4])
    bal = GradNorm(2, alpha=1.5, lr=0.05)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    xn, xc = _inputs(5, 64)
    labels = (torch.rand(64, 2) < 0.3).float()
    seen = []
    for _ in range(40):
        out = m(xn, xc)
        losses = task_losses(m, out, labels, "binary") * torch.tensor([1.0, 10.0])  # task 2 pulls 10x harder
        bal.prepare(losses, m.shared_layer())
        opt.zero_grad()
        bal.terms(losses).sum().backward()
        opt.step()
        bal.after_step()
        w = bal.weights()
        seen.append(w)
        assert (w > 0).all() and abs(w.sum() - 2.0) < 1e-5
    assert seen[-1][1] < seen[-1][0]  # the task with the larger gradient norm is weighed down
    assert bal.last_grad_norms is not None and (bal.last_grad_norms > 0).all()


def test_dwa_follows_the_loss_ratio_formula():
    hist = [np.array([1.0, 2.0, 0.5]), np.array([0.8, 1.9, 0.5]), np.array([0.4, 1.8, 0.55])]
    assert np.allclose(dwa_weights(hist[:1]), 1.0) and np.allclose(dwa_weights(hist[:0] or [[1, 1, 1]]), 1.0)
    for t in (2.0, 0.5):
        for upto in (2, 3):
            r = hist[upto - 1] / hist[upto - 2]
            ref = 3 * np.exp(r / t) / np.exp(r / t).sum()
            assert np.allclose(dwa_weights(hist[:upto], t), ref, rtol=1e-12)
    bal = DWA(3, temperature=2.0)
    assert np.allclose(bal.weights(), 1.0)
    for i, h in enumerate(hist):
        bal.end_epoch(h)
        if i == 0:
            assert np.allclose(bal.weights(), 1.0)
    r = hist[2] / hist[1]
    assert np.allclose(bal.weights(), 3 * np.exp(r / 2) / np.exp(r / 2).sum(), rtol=1e-6)
    # the task whose loss fell fastest (task 0: 0.8 -> 0.4) gets the smallest weight
    assert np.argmin(bal.weights()) == 0 and np.isclose(bal.weights().sum(), 3.0)


def test_pcgrad_projects_conflicting_gradients():
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    assert float(g[0] @ g[1]) < 0
    total, proj = pcgrad(g, torch.Generator().manual_seed(0))
    assert torch.allclose(proj[0], torch.tensor([0.5, 0.5]))
    assert torch.allclose(proj[1], torch.tensor([0.0, 1.0]))
    for i in range(2):
        assert float(proj[i] @ g[1 - i]) >= -1e-7
    assert torch.allclose(total, proj.sum(0))
    # non-conflicting gradients are left alone
    g2 = torch.tensor([[1.0, 0.5, 0.0], [0.2, 1.0, 0.3]])
    total2, proj2 = pcgrad(g2)
    assert torch.equal(proj2, g2) and torch.allclose(total2, g2.sum(0))


def test_training_with_pcgrad_and_balancers_learns():
    df = mmoe_synthetic(3000, 0.5, dim=10, seed=1)
    x = df[[f"x{i}" for i in range(10)]].to_numpy(np.float32)
    y = df[["c1", "c2"]].to_numpy(np.float32)
    y[::3, 1] = np.nan  # partly unobserved second task
    tr, va, te = split_rows(len(df), (0.2, 0.2), seed=0)
    mk = lambda i: Arrays(x[i], np.zeros((len(i), 0), np.int64), y[i])  # noqa: E731
    from fusiontune.metrics import auc

    for balance in ("fixed", "uncertainty", "gradnorm", "dwa"):
        cfg = TrainConfig(model="mmoe", balance=balance, pcgrad=balance in ("fixed", "gradnorm"), epochs=3,
                          batch_size=128, lr=5e-3, experts=3, expert_hidden=[16], tower_hidden=[8], threads=1)
        res = fit(cfg, mk(tr), mk(va), [], show_progress=False)
        p = predict(res.model, x[te], np.zeros((len(te), 0), np.int64))
        assert p.shape == (len(te), 2) and np.isfinite(p).all()
        a = auc(p[:, 0], y[te][:, [0]])[0]
        assert a > 0.7, (balance, a)
        assert len(res.history) == 3 and all(np.isfinite(h["valid_loss"]).all() for h in res.history)


def test_encoder_standardises_and_buckets_unseen_values():
    tr = pd.DataFrame({"a": [1.0, 2.0, 3.0, np.nan], "c": ["x", "y", "x", None], "n": [3, 3.0, 5, 7]})
    enc = Encoder.fit(tr, ["a"], ["c", "n"])
    assert enc.cardinalities == [3, 4]
    te = pd.DataFrame({"a": [2.0, np.nan, 5.0], "c": ["y", "zzz", None], "n": [3.0, 99, 5]})
    xn, xc = enc.transform(te)
    assert np.allclose(xn[:, 0], [0.0, 0.0, 3.0 / np.std([1.0, 2.0, 3.0])], atol=1e-6)
    assert xc[1, 0] == 0 and xc[2, 0] == 0 and xc[0, 0] > 0  # unseen and missing -> bucket 0
    assert xc[0, 1] == xc[0, 1] > 0 and xc[1, 1] == 0 and xc[2, 1] > 0 and xc[0, 1] != xc[2, 1]


def test_group_split_keeps_groups_whole():
    groups = np.repeat(np.arange(500), 7)
    parts = split_rows(len(groups), (0.2, 0.2), seed=3, groups=groups)
    assert sum(len(p) for p in parts) == len(groups)
    sets = [set(groups[p]) for p in parts]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert 0.12 < len(parts[2]) / len(groups) < 0.28


def test_mmoe_synthetic_correlation_controls_relatedness():
    same = mmoe_synthetic(4000, 1.0, dim=20, seed=0, noise=0.01)
    assert np.corrcoef(same["y1"], same["y2"])[0, 1] > 0.999
    apart = mmoe_synthetic(4000, 0.0, dim=20, seed=0)
    assert abs(np.corrcoef(apart["y1"], apart["y2"])[0, 1]) < 0.5
    assert set(np.unique(apart["c1"])) == {0.0, 1.0} and abs(apart["c1"].mean() - 0.5) < 0.01


def test_same_seed_same_model():
    df = mmoe_synthetic(1500, 0.5, dim=8, seed=2)
    x = df[[f"x{i}" for i in range(8)]].to_numpy(np.float32)
    y = df[["c1", "c2"]].to_numpy(np.float32)
    data = Arrays(x, np.zeros((len(x), 0), np.int64), y)
    cfg = TrainConfig(model="ple", levels=2, balance="dwa", epochs=3, batch_size=128, expert_hidden=[8],
                      tower_hidden=[4], seed=7, threads=1)
    p1 = predict(fit(cfg, data, None, [], show_progress=False).model, x, data.x_cat)
    p2 = predict(fit(cfg, data, None, [], show_progress=False).model, x, data.x_cat)
    cfg.seed = 8
    p3 = predict(fit(cfg, data, None, [], show_progress=False).model, x, data.x_cat)
    assert np.array_equal(p1, p2) and not np.array_equal(p1, p3)
