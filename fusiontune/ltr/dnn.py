"""DNN fuser: a small PyTorch MLP over the task scores (torch is imported only in here).

Inputs.  Each task score p_k becomes ``z_k = sign_k * (log(max(p_k, eps)) - mu_k) / sd_k``
(standardised on the training part; ``sign_k = -1`` for a negative task), so a network that
increases in ``z`` increases in every positive task and decreases in every negative one.
Context columns are standardised, missing values set to the mean (0).

Architecture (``hidden = [h1, h2, ...]``)::

    h_1 = tanh(z @ |W_1z| + c @ W_1c + b_1)        # task part: non-negative weights
    h_l = tanh(h_{l-1} @ |W_l| + b_l)              # non-negative weights
    f   = h_L @ |w_out| + z @ |a| + b              # plus a linear skip on the log scores

With ``monotone = true`` every weight on a path from a task score to the output is
non-negative (stored as a free parameter, used through ``abs``) and tanh is increasing, so
``f`` can never decrease when a positive task's score rises, whatever the context (which
enters unconstrained).  The skip term ``z @ |a|`` is exactly the multiplicative formula
``sum_k a_k log p_k``, so the network starts from the formula family and learns what a
formula cannot.  With ``monotone = false`` the same network uses the raw weights.

Losses.  ``combined``: binary cross-entropy with logits on the soft label, weighted by the
row's business weight (:mod:`fusiontune.ltr.targets`).  ``lambdarank``: listwise softmax
cross-entropy per group (ListNet top-one): the target distribution is the group's
relevance normalised to sum 1, groups without relevance are skipped, each group weighs its
number of rows (as GAUC's default "rows" weighting does).

Training: Adam, shuffled mini-batches (whole groups for the listwise loss), seeded
(``torch.manual_seed`` + a numpy generator for the batch order, deterministic CPU kernels),
``threads`` CPU threads (default 2).  After every epoch the validation part is scored with
the study's objective (the same business-weighted AUC/GAUC); the best epoch's weights are
kept and training stops after ``patience`` epochs without improvement.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fit_dnn", "predict_dnn", "build_net", "DnnState"]

LOG_EPS = 1e-6


class DnnState:
    """A fitted DNN fuser: the torch module and everything needed to rebuild its inputs."""

    def __init__(self, net, config: dict):
        self.net = net
        self.config = config  # k, n_ctx, hidden, monotone, signs, mu, sd, ctx_mu, ctx_sd

    def inputs(self, x: np.ndarray):
        c = self.config
        k = c["k"]
        z = (np.log(np.maximum(x[:, :k], LOG_EPS)) - np.asarray(c["mu"])) / np.asarray(c["sd"])
        z = z * np.asarray(c["signs"], dtype=np.float64)
        ctx = x[:, k:]
        if ctx.shape[1]:
            ctx = (ctx - np.asarray(c["ctx_mu"])) / np.asarray(c["ctx_sd"])
            ctx = np.where(np.isnan(ctx), 0.0, ctx)
        return np.ascontiguousarray(z, dtype=np.float32), np.ascontiguousarray(ctx, dtype=np.float32)


def build_net(k: int, n_ctx: int, hidden: list[int], monotone: bool):
    import torch
    from torch import nn

    class MonotoneMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.monotone = monotone
            sizes = [k] + list(hidden)
            self.w_task = nn.Parameter(torch.empty(k, sizes[1]))
            self.w_ctx = nn.Parameter(torch.empty(n_ctx, sizes[1]))
            self.b = nn.ParameterList([nn.Parameter(torch.zeros(h)) for h in hidden])
            self.w_hidden = nn.ParameterList(
                [nn.Parameter(torch.empty(sizes[i], sizes[i + 1])) for i in range(1, len(hidden))])
            self.w_out = nn.Parameter(torch.empty(hidden[-1], 1))
            self.skip = nn.Parameter(torch.full((k, 1), 0.5))
            self.b_out = nn.Parameter(torch.zeros(1))
            for w in [self.w_task, self.w_ctx, *self.w_hidden, self.w_out]:
                bound = 1.0 / max(w.shape[0], 1) ** 0.5
                nn.init.uniform_(w, -bound, bound)

        def pos(self, w):
            return w.abs() if self.monotone else w

        def forward(self, z, ctx):
            h = z @ self.pos(self.w_task) + self.b[0]
            if ctx.shape[1]:
                h = h + ctx @ self.w_ctx
            h = torch.tanh(h)
            for w, b in zip(self.w_hidden, list(self.b)[1:]):
                h = torch.tanh(h @ self.pos(w) + b)
            return (h @ self.pos(self.w_out) + z @ self.pos(self.skip) + self.b_out).squeeze(-1)

    return MonotoneMLP()


def _group_batches(sizes: np.ndarray, batch_rows: int, rng) -> list[np.ndarray]:
    """Row indices of mini-batches made of whole groups, in a shuffled group order."""
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    order = rng.permutation(len(sizes))
    out, cur, n = [], [], 0
    for g in order:
        cur.append(g)
        n += sizes[g]
        if n >= batch_rows:
            out.append(cur)
            cur, n = [], 0
    if cur:
        out.append(cur)
    batches = []
    for gs in out:
        gs = np.asarray(gs)
        ln = sizes[gs]
        rows = np.repeat(starts[gs] - np.concatenate([[0], np.cumsum(ln)[:-1]]), ln) + np.arange(ln.sum())
        batches.append(rows)
    return batches


def fit_dnn(train, val, target: str, hyper: dict, spec, monotone: bool, seed: int,
            val_score=None, show_progress: bool | None = None):
    """Fit on ``train`` (a :class:`~fusiontune.ltr.fit.Part`); ``val_score(fused) -> float``
    rates a validation prediction (higher is better; the study objective).  Returns
    ``(DnnState, info)``."""
    import torch

    from ..progress import progress

    old_threads = torch.get_num_threads()
    torch.set_num_threads(int(hyper["threads"]))
    try:
        torch.manual_seed(int(seed))
        rng = np.random.default_rng(seed)
        k = spec.k
        x = train.x
        logp = np.log(np.maximum(x[:, :k], LOG_EPS))
        mu, sd = logp.mean(axis=0), logp.std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        ctx = x[:, k:]
        with np.errstate(invalid="ignore"):
            cmu = np.nanmean(ctx, axis=0) if ctx.shape[1] else np.zeros(0)
            csd = np.nanstd(ctx, axis=0) if ctx.shape[1] else np.zeros(0)
        cmu = np.where(np.isnan(cmu), 0.0, cmu)
        csd = np.where(np.isnan(csd) | (csd <= 0), 1.0, csd)
        config = {"k": k, "n_ctx": int(ctx.shape[1]), "hidden": [int(h) for h in hyper["hidden"]],
                  "monotone": bool(monotone), "signs": [int(s) for s in spec.signs],
                  "mu": mu.tolist(), "sd": sd.tolist(), "ctx_mu": cmu.tolist(), "ctx_sd": csd.tolist(),
                  "threads": int(hyper["threads"])}
        net = build_net(k, config["n_ctx"], config["hidden"], monotone)
        if target != "lambdarank":  # start at the base rate, not at 0.5: saves many epochs
            m = float(np.clip((train.ybar * train.sw).sum() / max(train.sw.sum(), 1e-12), 1e-4, 1 - 1e-4))
            with torch.no_grad():
                net.b_out.fill_(float(np.log(m / (1 - m))))
        state = DnnState(net, config)
        z, c = (torch.from_numpy(a) for a in state.inputs(x))
        opt = torch.optim.Adam(net.parameters(), lr=float(hyper["lr"]), weight_decay=float(hyper["weight_decay"]))
        bs = int(hyper["batch_size"])
        if target == "lambdarank":
            rel = torch.from_numpy(train.rel.astype(np.float32))
            gid_all = np.repeat(np.arange(len(train.sizes)), train.sizes)
        else:
            yb = torch.from_numpy(train.ybar.astype(np.float32))
            wb = torch.from_numpy(train.sw.astype(np.float32))
            wsum = float(train.sw.sum()) or 1.0

        def loss_batch(rows):
            idx = torch.from_numpy(rows)
            f = net(z[idx], c[idx])
            if target != "lambdarank":
                l = torch.nn.functional.binary_cross_entropy_with_logits(f, yb[idx], weight=wb[idx], reduction="sum")
                return l * (len(x) / wsum / len(rows))
            g_np = gid_all[rows]
            _, g_local = np.unique(g_np, return_inverse=True)
            g = torch.from_numpy(g_local)
            n_g = int(g_local.max()) + 1
            r = rel[idx]
            m = torch.full((n_g,), -torch.inf).scatter_reduce(0, g, f.detach(), "amax", include_self=True)
            e = torch.exp(f - m[g])
            lse = torch.log(torch.zeros(n_g).index_add(0, g, e)) + m
            rsum = torch.zeros(n_g).index_add(0, g, r)
            cnt = torch.zeros(n_g).index_add(0, g, torch.ones_like(r))
            q = r / torch.where(rsum[g] > 0, rsum[g], torch.ones_like(rsum[g]))
            per_group = -torch.zeros(n_g).index_add(0, g, q * (f - lse[g]))
            has = rsum > 0
            return (per_group * cnt)[has].sum() / cnt[has].sum().clamp(min=1.0)

        best, best_state, best_epoch, bad = -np.inf, None, 0, 0
        epochs, patience = int(hyper["epochs"]), int(hyper["patience"])
        history = []
        ran = 0
        with progress(epochs, "dnn fuser", enabled=show_progress) as bar:
            for epoch in range(epochs):
                net.train()
                if target == "lambdarank":
                    batches = _group_batches(train.sizes, bs, rng)
                else:
                    perm = rng.permutation(len(x))
                    batches = [perm[s:s + bs] for s in range(0, len(x), bs)]
                tot = 0.0
                for rows in batches:
                    opt.zero_grad(set_to_none=True)
                    loss = loss_batch(rows)
                    loss.backward()
                    opt.step()
                    tot += float(loss.detach()) * len(rows)
                ran = epoch + 1
                train_loss = tot / len(x)
                if val is not None and val_score is not None:
                    score = float(val_score(predict_dnn(state, val.x)))
                else:
                    score = -train_loss
                history.append({"epoch": ran, "train_loss": round(train_loss, 6), "validation": score})
                bar.update(advance=1, info=f"loss {train_loss:.4f} val {score:.5f}")
                if score > best + 1e-7:
                    best, best_epoch, bad = score, ran, 0
                    best_state = {n: t.detach().clone() for n, t in net.state_dict().items()}
                else:
                    bad += 1
                    if patience and bad >= patience:
                        break
        if best_state is not None:
            net.load_state_dict(best_state)
        net.eval()
        info = {"iterations": best_epoch, "epochs_run": ran, "stopped_early": ran < epochs,
                "validation_score": best, "history": history}
        return state, info
    finally:
        torch.set_num_threads(old_threads)


def predict_dnn(state: DnnState, x: np.ndarray, batch: int = 65536) -> np.ndarray:
    """Fused score (N,) float64 (the network's float32 output, widened)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(int(state.config.get("threads", 2)))
    try:
        z, c = state.inputs(x)
        out = np.empty(len(z), dtype=np.float32)
        state.net.eval()
        with torch.no_grad():
            for s in range(0, len(z), batch):
                out[s:s + batch] = state.net(torch.from_numpy(z[s:s + batch]),
                                             torch.from_numpy(c[s:s + batch])).numpy()
        return out.astype(np.float64)
    finally:
        torch.set_num_threads(old)
