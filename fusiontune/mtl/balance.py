"""Loss balancing for multi-task training, and PCGrad.

A balancer turns the per-task losses ``L (K,)`` of one step into per-task *terms* whose
sum the optimiser minimises, and reports its current task weights.  The trainer calls,
per step: ``prepare(losses, shared_layer)`` (GradNorm measures gradients here),
``terms(losses)``, backward, optimiser step, ``after_step()``; and ``end_epoch(mean
losses)`` once per epoch (DWA).

* ``fixed``        terms = w_k L_k with given weights (default 1).
* ``uncertainty``  Kendall, Gal & Cipolla (CVPR 2018): one learned ``s_k = log sigma_k^2``
                   per task, terms = ``0.5 exp(-s_k) L_k + 0.5 s_k``; the weight in front of
                   ``L_k`` is ``0.5 exp(-s_k)``, whose optimum for a fixed loss is
                   ``0.5 / L_k``: a noisier task (higher irreducible loss) weighs less.
                   The ``s_k`` are trained by the model's optimiser (``parameters()``).
* ``gradnorm``     Chen et al. (ICML 2018): learned weights ``w_k`` (start at 1).  On the
                   last shared layer ``W``, ``G_k = ||grad_W w_k L_k|| = w_k ||grad_W L_k||``;
                   the target is ``mean(G) * r_k^alpha`` with the relative inverse training
                   rate ``r_k = (L_k / L_k(0)) / mean_j(L_j / L_j(0))`` (target held
                   constant); ``L_grad = sum_k |G_k - target_k|`` is minimised in ``w`` by
                   its own Adam, then ``w`` is clipped positive and renormalised to sum to K.
                   The model sees ``w`` as constants.
* ``dwa``          Liu, Johns & Davison (CVPR 2019): ``w_k(t) = K exp(r_k / T) / sum_j exp(r_j / T)``
                   with ``r_k = L_k(t-1) / L_k(t-2)`` from the epoch-mean losses, ``T = 2``;
                   weights are 1 for the first two epochs.

``pcgrad(grads)`` (Yu et al., NeurIPS 2020) is applied by the trainer to the per-task
gradients of the shared parameters, on top of any balancer: each task's gradient is
projected onto the normal plane of every other task's gradient it conflicts with
(negative dot product), in a random order, and the projected gradients are summed.
"""

from __future__ import annotations


import numpy as np
import torch

__all__ = ["Balancer", "FixedWeights", "UncertaintyWeighting", "GradNorm", "DWA", "dwa_weights",
           "pcgrad", "BALANCERS", "make_balancer"]


class Balancer:
    name = "base"

    def __init__(self, n_tasks: int):
        self.k = n_tasks

    def parameters(self) -> list[torch.nn.Parameter]:
        """Parameters trained by the model's optimiser (uncertainty's log-variances)."""
        return []

    def prepare(self, losses: torch.Tensor, shared_layer) -> None:
        """Called before the model's backward pass (GradNorm)."""

    def terms(self, losses: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def after_step(self) -> None:
        """Called after the model's optimiser step."""

    def end_epoch(self, mean_losses: np.ndarray) -> None:
        """Called once per epoch with the epoch's mean training loss per task."""

    def weights(self) -> np.ndarray:
        """The current weight in front of each task's loss."""
        raise NotImplementedError


class FixedWeights(Balancer):
    name = "fixed"

    def __init__(self, n_tasks: int, weights=None):
        super().__init__(n_tasks)
        w = np.ones(n_tasks) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != (n_tasks,) or (w < 0).any() or not np.isfinite(w).all():
            raise ValueError(f"fixed weights must be {n_tasks} numbers >= 0, got {list(w)}")
        self.w = torch.tensor(w, dtype=torch.float32)

    def terms(self, losses):
        return self.w * losses

    def weights(self):
        return self.w.numpy().astype(np.float64)


class UncertaintyWeighting(Balancer):
    name = "uncertainty"

    def __init__(self, n_tasks: int):
        super().__init__(n_tasks)
        self.log_var = torch.nn.Parameter(torch.zeros(n_tasks))

    def parameters(self):
        return [self.log_var]

    def terms(self, losses):
        return 0.5 * torch.exp(-self.log_var) * losses + 0.5 * self.log_var

    def weights(self):
        return (0.5 * torch.exp(-self.log_var.detach())).numpy().astype(np.float64)


class GradNorm(Balancer):
    name = "gradnorm"

    def __init__(self, n_tasks: int, alpha: float = 1.5, lr: float = 0.025):
        super().__init__(n_tasks)
        self.alpha = alpha
        self.w = torch.nn.Parameter(torch.ones(n_tasks))
        self.opt = torch.optim.Adam([self.w], lr=lr)
        self.initial: torch.Tensor | None = None
        self.last_grad_norms: np.ndarray | None = None

    def prepare(self, losses, shared_layer):
        params = list(shared_layer)
        loss = losses.detach()
        if self.initial is None:
            self.initial = loss.clone()
        else:  # a task unobserved in the first batches gets its first non-zero loss as L(0)
            fill = self.initial <= 0
            self.initial[fill] = loss[fill]
        norms = torch.zeros(self.k)
        for i in range(self.k):
            if not losses[i].requires_grad or float(loss[i]) == 0.0:
                continue
            grads = torch.autograd.grad(losses[i], params, retain_graph=True, allow_unused=True)
            norms[i] = torch.sqrt(sum((g * g).sum() for g in grads if g is not None))
        self.last_grad_norms = norms.numpy().copy()
        w = self.w.detach()
        G = w * norms  # ||grad_W w_k L_k||
        active = norms > 0
        if active.sum() == 0:
            self.w.grad = torch.zeros_like(w)
            return
        ratio = torch.where(self.initial > 0, loss / self.initial.clamp(min=1e-12), torch.ones_like(loss))
        r = ratio / ratio[active].mean()
        target = G[active].mean() * r ** self.alpha
        # d/dw_k sum_j |w_j n_j - target_j| = sign(w_k n_k - target_k) * n_k (target held constant)
        self.w.grad = torch.where(active, torch.sign(G - target) * norms, torch.zeros_like(w))

    def terms(self, losses):
        return self.w.detach() * losses

    def after_step(self):
        if self.w.grad is None:
            return
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            self.w.clamp_(min=1e-3)
            self.w.mul_(self.k / self.w.sum())

    def weights(self):
        return self.w.detach().numpy().astype(np.float64)


def dwa_weights(history: list, temperature: float = 2.0) -> np.ndarray:
    """DWA weights for the next epoch from the list of past epoch-mean loss vectors."""
    k = len(history[0]) if history else 0
    if len(history) < 2:
        return np.ones(k) if k else np.ones(0)
    prev, prev2 = np.asarray(history[-1], np.float64), np.asarray(history[-2], np.float64)
    r = np.where(prev2 > 0, prev / np.where(prev2 > 0, prev2, 1.0), 1.0)
    z = np.exp((r - r.max()) / temperature)
    return len(r) * z / z.sum()


class DWA(Balancer):
    name = "dwa"

    def __init__(self, n_tasks: int, temperature: float = 2.0):
        super().__init__(n_tasks)
        self.temperature = temperature
        self.history: list[np.ndarray] = []
        self.w = torch.ones(n_tasks)

    def end_epoch(self, mean_losses):
        self.history.append(np.asarray(mean_losses, np.float64))
        self.w = torch.tensor(dwa_weights(self.history, self.temperature), dtype=torch.float32)

    def terms(self, losses):
        return self.w * losses

    def weights(self):
        return self.w.numpy().astype(np.float64)


def pcgrad(grads: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Project conflicting gradients.  ``grads (K, P)`` flat per-task gradients ->
    ``(sum of projected (P,), projected (K, P))``."""
    k = grads.shape[0]
    out = grads.clone()
    sq = (grads * grads).sum(dim=1)
    for i in range(k):
        order = torch.randperm(k, generator=generator).tolist()
        for j in order:
            if j == i or sq[j] <= 0:
                continue
            dot = torch.dot(out[i], grads[j])
            if dot < 0:
                out[i] = out[i] - dot / sq[j] * grads[j]
    return out.sum(dim=0), out


BALANCERS = ("fixed", "uncertainty", "gradnorm", "dwa")


def make_balancer(name: str, n_tasks: int, *, weights=None, alpha: float = 1.5,
                  temperature: float = 2.0) -> Balancer:
    if name == "fixed":
        return FixedWeights(n_tasks, weights)
    if name == "uncertainty":
        return UncertaintyWeighting(n_tasks)
    if name == "gradnorm":
        return GradNorm(n_tasks, alpha)
    if name == "dwa":
        return DWA(n_tasks, temperature)
    raise ValueError(f"unknown balancer {name!r} (choose from {', '.join(BALANCERS)})")


