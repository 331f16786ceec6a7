"""Residual DNN fuser: the study's baseline formula plus a learned correction that starts at zero.

The network takes the raw inputs (task probabilities, then context columns) and computes::

    phi_k = p_k                          (additive)
          = log(clip(p_k, eps, 1))       (multiplicative)
          = log(max(b_k + p_k, eps))     (power, b_k: the baseline bias)
    base  = sum_k a_k phi_k              the baseline formula, a_k its weights (fixed)
    lin   = sum_k d_k phi_k              learned change of the formula's weights, d = 0 at start
    z_k   = sign_k (log(max(p_k, 1e-6)) - mu_k) / sd_k        standardised log scores
    c     = (ctx - ctx_mu) / ctx_sd, NaN -> 0                  standardised context
    h_1   = tanh(z @ W_1z + c @ W_1c + b_1),  h_l = tanh(h_{l-1} @ W_l + b_l)
    mlp   = h_L @ w_out                  w_out = 0 at start
    score = base + lin + mlp

At initialisation ``d = 0`` and ``w_out = 0``, so the score *is* the baseline formula's
score and ranks every log exactly as the formula does.  Training can only replace it
by something better on the validation part (see below).  The rank formula (per-group
percentiles) is not supported: use the GBDT fuser there.

**Monotone** (``[ltr] monotone = true``).  The correction never turns the score the wrong
way in a task: ``W_1z``, every ``W_l`` and ``w_out`` are kept ``>= 0`` by projection
after each optimiser step (clipping, so a weight can sit at exactly 0 and still receive a
gradient), ``tanh`` is increasing and ``z_k`` carries the task's sign, so ``mlp`` never
decreases when a positive task's score rises.  The formula part is constrained to
``sign_k (a_k + d_k) >= min(0, sign_k a_k)``: it may move a weight towards the task's
direction, never further against it.  When the baseline's weights already follow the
signs, the whole score is monotone; context columns enter unconstrained.

**Training.**  The ranking score is calibrated for the loss by two free scalars,
``logit = exp(t) * score + c`` (initialised by a 1-D logistic fit of the baseline score), which
never change the ranking.  ``combined``: binary cross-entropy with the soft label,
weighted by the row's business weight (:mod:`fusiontune.ltr.targets`).  ``lambdarank``:
listwise softmax cross-entropy per group on ``exp(t) * score``.  Adam, shuffled
mini-batches, seeded.  After every epoch the validation part is scored with the study's
objective (guardrail-penalised); the best epoch is kept and training stops after
``patience`` epochs without improvement.  Epoch 0 is the zero correction itself, so
the kept network is never below the baseline formula on the validation part: when no
epoch beats it the fuser *is* the formula and ``info["kept_formula"]`` says so.

**Fine-tune** (``[ltr.dnn] finetune = N``): N more epochs on the smooth AUC surrogate of the
business objective from :mod:`fusiontune.surrogate` (the same surrogate as the ``grad``
search method), with the same early stopping on the validation objective.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fit_dnn", "predict_dnn", "build_net", "DnnState", "RESIDUAL_FORMULAS"]

LOG_EPS = 1e-6
from .residual import RESIDUAL_FORMULAS, SHRINKS  # noqa: E402 - re-exported: the formulas a residual fuser starts from


class DnnState:
    """A fitted DNN fuser: the torch module and the JSON-able config that rebuilds it."""

    def __init__(self, net, config: dict):
        self.net = net
        self.config = config  # k, n_ctx, hidden, monotone, signs, mu, sd, ctx_mu, ctx_sd, base

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The trained parameters as plain arrays (saved with ``np.savez``, loaded without pickle)."""
        return {n: p.detach().cpu().numpy() for n, p in self.net.named_parameters()}


def build_net(config: dict):
    """The residual network described by ``config`` (as :func:`fit_dnn` records it)."""
    import torch
    from torch import nn

    k, n_ctx, hidden = int(config["k"]), int(config["n_ctx"]), [int(h) for h in config["hidden"]]
    base = config["base"]
    f32 = torch.float32

    class ResidualNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.k = k
            self.formula = base["formula"]
            self.register_buffer("a", torch.tensor(base["a"], dtype=f32))
            self.register_buffer("b", torch.tensor(base.get("b") or [0.0] * k, dtype=f32))
            self.eps = float(base["eps"])
            self.register_buffer("signs", torch.tensor(config["signs"], dtype=f32))
            self.register_buffer("mu", torch.tensor(config["mu"], dtype=f32))
            self.register_buffer("sd", torch.tensor(config["sd"], dtype=f32))
            self.register_buffer("ctx_mu", torch.tensor(config["ctx_mu"], dtype=f32).reshape(n_ctx))
            self.register_buffer("ctx_sd", torch.tensor(config["ctx_sd"], dtype=f32).reshape(n_ctx))
            sizes = [k] + hidden
            self.d = nn.Parameter(torch.zeros(k))
            self.w_task = nn.Parameter(torch.empty(k, sizes[1]))
            self.w_ctx = nn.Parameter(torch.empty(n_ctx, sizes[1]))
            self.bias = nn.ParameterList([nn.Parameter(torch.zeros(h)) for h in hidden])
            self.w_hidden = nn.ParameterList(
                [nn.Parameter(torch.empty(sizes[i], sizes[i + 1])) for i in range(1, len(hidden))])
            self.w_out = nn.Parameter(torch.zeros(hidden[-1]))
            for w in [self.w_task, self.w_ctx, *self.w_hidden]:
                bound = 1.0 / max(w.shape[0], 1) ** 0.5
                nn.init.uniform_(w, -bound, bound)

        def phi(self, p):
            if self.formula == "additive":
                return p
            if self.formula == "multiplicative":
                return torch.log(torch.clamp(p, self.eps, 1.0))
            return torch.log(torch.clamp(self.b + p, min=self.eps))

        def forward(self, x):
            p = x[:, :self.k]
            phi = self.phi(p)
            out = phi @ (self.a + self.d)
            z = (torch.log(torch.clamp(p, min=LOG_EPS)) - self.mu) / self.sd * self.signs
            h = z @ self.w_task + self.bias[0]
            if n_ctx:
                c = (x[:, self.k:] - self.ctx_mu) / self.ctx_sd
                c = torch.where(torch.isnan(c), torch.zeros_like(c), c)
                h = h + c @ self.w_ctx
            h = torch.tanh(h)
            for w, b in zip(self.w_hidden, list(self.bias)[1:]):
                h = torch.tanh(h @ w + b)
            return out + h @ self.w_out

    return ResidualNet()


def project(net, monotone: bool) -> None:
    """Keep the monotone constraints after an optimiser step (module docstring)."""
    if not monotone:
        return
    import torch

    with torch.no_grad():
        for w in [net.w_task, *net.w_hidden, net.w_out]:
            w.clamp_(min=0.0)
        s, a = net.signs, net.a
        lo = torch.minimum(torch.zeros_like(a), s * a)  # sign * (a + d) >= lo
        net.d.copy_(s * torch.maximum(s * (a + net.d), lo) - a)


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


def make_config(train, spec, hyper: dict, monotone: bool, base: dict) -> dict:
    """Everything that rebuilds the network, JSON-able: input scalings from ``train``."""
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
    return {"kind": "residual", "k": k, "n_ctx": int(ctx.shape[1]), "hidden": [int(h) for h in hyper["hidden"]],
            "monotone": bool(monotone), "signs": [int(s) for s in spec.signs],
            "mu": mu.tolist(), "sd": sd.tolist(), "ctx_mu": cmu.tolist(), "ctx_sd": csd.tolist(),
            "base": {"formula": base["formula"], "a": [float(v) for v in base["a"]],
                     "b": [float(v) for v in base.get("b") or [0.0] * k], "eps": float(base["eps"]),
                     **({"baseline": base["baseline"]} if base.get("baseline") else {})},
            "threads": int(hyper["threads"])}


def fit_dnn(train, val, target: str, hyper: dict, spec, monotone: bool, seed: int, base: dict,
            val_score=None, show_progress: bool | None = None, surrogate_loss=None):
    """Fit on ``train`` (a :class:`~fusiontune.ltr.fit.Part`).  ``base``: ``{"formula", "a", "b",
    "eps"}``, the baseline formula the network starts from.  ``val_score(fused) -> float`` rates a
    validation prediction (higher is better; the study objective).  ``surrogate_loss(fused_tensor,
    rows) -> tensor`` (optional) is the smooth objective for the fine-tune epochs.  Returns
    ``(DnnState, info)``."""
    import torch

    from ..progress import progress

    old_threads = torch.get_num_threads()
    torch.set_num_threads(int(hyper["threads"]))
    try:
        torch.manual_seed(int(seed))
        rng = np.random.default_rng(seed)
        config = make_config(train, spec, hyper, monotone, base)
        net = build_net(config)
        project(net, monotone)
        state = DnnState(net, config)
        x = torch.from_numpy(np.ascontiguousarray(train.x, dtype=np.float32))
        n = len(train.x)
        with torch.no_grad():
            s0 = net(x).numpy().astype(np.float64)
        from .residual import calibration

        scale0, c0 = calibration(s0, train.ybar, train.sw)
        lt0 = float(np.log(scale0))
        log_t = torch.nn.Parameter(torch.tensor(lt0, dtype=torch.float32))
        c_off = torch.nn.Parameter(torch.tensor(c0, dtype=torch.float32))
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
            f = net(x[idx])
            if target != "lambdarank":
                logit = torch.exp(log_t) * f + c_off
                l = torch.nn.functional.binary_cross_entropy_with_logits(logit, yb[idx], weight=wb[idx],
                                                                        reduction="sum")
                return l * (n / wsum / len(rows))
            f = torch.exp(log_t) * f
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

        blocked = np.zeros(spec.k, dtype=bool)  # guardrails broken by better-scoring epochs

        def rate() -> float:
            if val is None or val_score is None:
                return float("nan")
            got = val_score(predict_dnn(state, val.x))
            if not isinstance(got, tuple):
                return float(got)
            pen, raw, viol = got
            if raw > best + 1e-7 and np.asarray(viol).any():
                blocked[np.asarray(viol, dtype=bool)] = True
            return float(pen)

        best = -np.inf
        best = rate()  # epoch 0: the zero correction, i.e. the baseline formula
        best_state = {k_: t.detach().clone() for k_, t in net.state_dict().items()}
        history = [{"epoch": 0, "phase": "start", "train_loss": None, "validation": best}]
        epochs, patience = int(hyper["epochs"]), int(hyper["patience"])
        finetune = int(hyper.get("finetune", 0)) if surrogate_loss is not None else 0
        best_epoch, ran, stopped = 0, 0, {}
        phases = [("fit", epochs, loss_batch, float(hyper["lr"]))]
        if finetune:
            phases.append(("finetune", finetune, surrogate_loss, float(hyper.get("finetune_lr", hyper["lr"]))))
        if finetune:  # the smoothed baseline: the network at its start *is* the baseline formula
            sur_rows = torch.from_numpy(np.asarray(surrogate_loss.rows, dtype=np.int64))
            with torch.no_grad():
                from .residual import base_score

                if getattr(surrogate_loss, "bar", "limit") == "start":  # the start formula is the bar
                    ref = torch.from_numpy(base_score(train.x[surrogate_loss.rows], base))
                    surrogate_loss.set_baseline(ref.to(torch.float32))
                elif base.get("baseline"):  # started elsewhere: the guardrails' reference is the baseline
                    ref = torch.from_numpy(base_score(train.x[surrogate_loss.rows], base["baseline"]))
                    surrogate_loss.set_baseline(ref.to(torch.float32))
                else:
                    surrogate_loss.set_baseline(net(x[sur_rows]))
        steps = int(hyper.get("finetune_steps", 10))
        warmup = int(hyper.get("warmup", 0))
        with progress(epochs + finetune, "dnn fuser", enabled=show_progress) as bar:
            for phase, n_ep, loss_fn, lr in phases:
                if phase == "finetune":  # start the fine-tune from the best network so far
                    net.load_state_dict(best_state)
                params = list(net.parameters()) + ([log_t, c_off] if phase == "fit" else [])
                opt = torch.optim.Adam(params, lr=lr, weight_decay=float(hyper["weight_decay"]))
                bad, done = 0, 0
                for ep in range(n_ep):
                    for group in opt.param_groups:  # geometric warm-up: lr/3**warmup ... lr
                        group["lr"] = lr / 3.0 ** max(warmup - ep, 0)
                    net.train()
                    if phase == "finetune":  # full-batch steps over the rows the pairs touch
                        batches = [None] * steps
                    elif target == "lambdarank":
                        batches = _group_batches(train.sizes, bs, rng)
                    else:
                        perm = rng.permutation(n)
                        batches = [perm[s:s + bs] for s in range(0, n, bs)]
                    tot = 0.0
                    for rows in batches:
                        opt.zero_grad(set_to_none=True)
                        loss = loss_fn(rows) if phase == "fit" else loss_fn(net(x[sur_rows]))
                        loss.backward()
                        opt.step()
                        project(net, monotone)
                        tot += float(loss.detach()) * (len(rows) if rows is not None else n / steps)
                    ran += 1
                    done += 1
                    train_loss = tot / n
                    score = rate()
                    history.append({"epoch": ran, "phase": phase, "train_loss": round(train_loss, 6),
                                    "validation": score})
                    bar.update(advance=1, info=f"{phase} loss {train_loss:.4f} val {score:.5f}")
                    if score > best + 1e-7:
                        best, best_epoch, bad = score, ran, 0
                        best_state = {k_: t.detach().clone() for k_, t in net.state_dict().items()}
                    else:
                        bad += 1
                        if patience and bad >= patience:
                            break
                stopped[phase] = done < n_ep
                if done < n_ep:
                    bar.update(advance=n_ep - done)
        net.load_state_dict(best_state)
        net.eval()
        shrink = None
        if best_epoch > 0 and val is not None and val_score is not None:
            shrink = 1.0  # score = formula + alpha * correction: alpha scales d and w_out exactly
            d0, w0 = net.d.detach().clone(), net.w_out.detach().clone()
            for a in SHRINKS[1:]:
                with torch.no_grad():
                    net.d.copy_(a * d0)
                    net.w_out.copy_(a * w0)
                score = rate()
                history.append({"epoch": ran, "phase": f"shrink {a:g}", "train_loss": None, "validation": score})
                if score > best + 1e-7:
                    best, shrink = score, a
            with torch.no_grad():
                net.d.copy_(shrink * d0)
                net.w_out.copy_(shrink * w0)
        info = {"iterations": best_epoch, "shrink": shrink, "epochs_run": ran, "stopped_early": bool(stopped.get("fit")),
                "finetune_stopped_early": stopped.get("finetune"), "finetune_epochs": finetune,
                "best_phase": history[best_epoch]["phase"] if best_epoch < len(history) else "fit",
                "validation_score": best, "validation_baseline": history[0]["validation"],
                "kept_formula": best_epoch == 0, "history": history,
                "blocked_by": blocked.tolist()}
        return state, info
    finally:
        torch.set_num_threads(old_threads)


def predict_dnn(state: DnnState, x: np.ndarray, batch: int = 65536) -> np.ndarray:
    """Fused score (N,) float64 (the network's float32 output, widened)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(int(state.config.get("threads", 1)))
    try:
        xs = np.ascontiguousarray(x, dtype=np.float32)
        out = np.empty(len(xs), dtype=np.float32)
        state.net.eval()
        with torch.no_grad():
            for s in range(0, len(xs), batch):
                out[s:s + batch] = state.net(torch.from_numpy(xs[s:s + batch])).numpy()
        return out.astype(np.float64)
    finally:
        torch.set_num_threads(old)
