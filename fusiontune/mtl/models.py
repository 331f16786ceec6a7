"""Multi-task models: Shared-Bottom, OMoE, MMoE, PLE (CGC with 1..L levels) and ESMM.

Every model maps ``(x_num (B, F) float32, x_cat (B, C) int64)`` to a dict with
``"logits"`` ``(B, K)`` (one column per loss target) and, for the gated models,
``"gates"``: ``(B, G, E)`` softmax weights (OMoE G = 1, MMoE G = K) or, for PLE, a list of
one such tensor per extraction level (rows of experts a gate may not use have weight 0).

Experts, gates and towers are *banks*: the member count is a tensor dimension and one
``einsum`` evaluates all members at once (:class:`BatchedLinear`), never a Python loop over
experts.  A bank takes either one input shared by all members ``(B, d)`` or one input per
member ``(B, n, d)`` (PLE's upper levels, the towers of the gated models).

The common contract (:class:`MultiTaskModel`): ``loss_labels(labels)`` maps the table's
labels to the loss targets, ``elementwise_loss(out, y, task_type)`` gives ``(B, K)`` losses
(BCE with logits or squared error), ``scores(out)`` the ``(B, K)`` values written to the
log, ``shared_layer()`` the last shared layer (GradNorm), ``task_specific_parameters()``
the towers (PCGrad projects only the other, shared, parameters).

ESMM (Ma et al., SIGIR 2018) models two tasks over the entire impression space: a CTR
tower and a CVR tower on shared embeddings; ``pCTCVR = pCTR * pCVR``.  Its losses are BCE
of pCTR against the click label and of pCTCVR against ``click AND convert`` on *all* rows
(a row without a click has CTCVR label 0 even when its conversion label is NaN), so the
CVR tower is never trained on the click-selected sample only.  The log's second score is
pCVR (= pCTCVR / pCTR) by default, the right score for a conversion label that is observed
only on clicked rows; ``esmm_score="ctcvr"`` writes pCTCVR instead.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BatchedLinear", "Bank", "Inputs", "MultiTaskModel", "SharedBottom", "MixtureOfExperts",
           "PLE", "ESMM", "MODELS", "build_model"]


class BatchedLinear(nn.Module):
    """``n`` independent linear maps ``d_in -> d_out`` stored as one ``(n, d_in, d_out)`` tensor."""

    def __init__(self, n: int, d_in: int, d_out: int):
        super().__init__()
        bound = 1.0 / math.sqrt(max(1, d_in))
        self.weight = nn.Parameter(torch.empty(n, d_in, d_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n, d_out).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # one input for every member
            return torch.einsum("bi,nio->bno", x, self.weight) + self.bias
        return torch.einsum("bni,nio->bno", x, self.weight) + self.bias


class Bank(nn.Module):
    """``n`` parallel MLPs with the same layer sizes: ``(B, d) | (B, n, d) -> (B, n, sizes[-1])``.
    ReLU between layers; after the last one only when ``last_activation``."""

    def __init__(self, n: int, d_in: int, sizes: list[int], last_activation: bool = True):
        super().__init__()
        dims = [d_in, *sizes]
        self.layers = nn.ModuleList(BatchedLinear(n, a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.last_activation = last_activation
        self.d_out = dims[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1 or self.last_activation:
                x = F.relu(x)
        return x


class Inputs(nn.Module):
    """Standardised numeric features concatenated with one embedding per categorical feature
    (one table for all fields, each field offset into it; index 0 of a field is its OOV bucket)."""

    def __init__(self, n_numeric: int, cardinalities: list[int], emb_dim: int = 8):
        super().__init__()
        self.n_numeric = n_numeric
        self.n_cat = len(cardinalities)
        offsets = torch.tensor([0, *cardinalities[:-1]], dtype=torch.long).cumsum(0) if cardinalities else \
            torch.zeros(0, dtype=torch.long)
        self.register_buffer("offsets", offsets, persistent=False)
        self.embedding = nn.Embedding(sum(cardinalities), emb_dim) if cardinalities else None
        if self.embedding is not None:
            nn.init.normal_(self.embedding.weight, std=0.05)
        self.dim = n_numeric + self.n_cat * emb_dim

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        if self.embedding is None:
            return x_num
        e = self.embedding(x_cat + self.offsets).flatten(1)
        return torch.cat([x_num, e], dim=1) if self.n_numeric else e


class MultiTaskModel(nn.Module):
    """Shared contract of the models (see the module docstring)."""

    n_tasks: int
    towers: Bank

    def loss_labels(self, labels: torch.Tensor) -> torch.Tensor:
        return labels

    def elementwise_loss(self, out: dict, y: torch.Tensor, task_type: str) -> torch.Tensor:
        logits = out["logits"]
        if task_type == "regression":
            return (logits - y) ** 2
        return F.binary_cross_entropy_with_logits(logits, y, reduction="none")

    def scores(self, out: dict) -> torch.Tensor:
        return torch.sigmoid(out["logits"])

    def shared_layer(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def task_specific_parameters(self) -> list[nn.Parameter]:
        return list(self.towers.parameters())

    def _towers(self, h: torch.Tensor) -> torch.Tensor:
        return self.towers(h).squeeze(-1)  # (B, K)


class SharedBottom(MultiTaskModel):
    """One shared MLP, then one tower per task."""

    def __init__(self, inputs: Inputs, n_tasks: int, bottom: list[int], tower: list[int]):
        super().__init__()
        self.inputs, self.n_tasks = inputs, n_tasks
        dims = [inputs.dim, *bottom]
        self.bottom = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.towers = Bank(n_tasks, dims[-1], [*tower, 1], last_activation=False)

    def forward(self, x_num, x_cat) -> dict:
        h = self.inputs(x_num, x_cat)
        for layer in self.bottom:
            h = F.relu(layer(h))
        return {"logits": self._towers(h)}

    def shared_layer(self):
        return [self.bottom[-1].weight]


class MixtureOfExperts(MultiTaskModel):
    """OMoE (``gates=1``: one gate shared by the tasks) or MMoE (``gates=n_tasks``)."""

    def __init__(self, inputs: Inputs, n_tasks: int, n_experts: int, expert: list[int], tower: list[int],
                 multi_gate: bool = True):
        super().__init__()
        self.inputs, self.n_tasks, self.n_experts = inputs, n_tasks, n_experts
        self.n_gates = n_tasks if multi_gate else 1
        self.experts = Bank(n_experts, inputs.dim, expert)
        self.gate = nn.Linear(inputs.dim, self.n_gates * n_experts)
        self.towers = Bank(n_tasks, self.experts.d_out, [*tower, 1], last_activation=False)

    def forward(self, x_num, x_cat) -> dict:
        x = self.inputs(x_num, x_cat)
        e = self.experts(x)  # (B, E, h)
        g = torch.softmax(self.gate(x).view(-1, self.n_gates, self.n_experts), dim=-1)  # (B, G, E)
        mixed = torch.einsum("bge,beh->bgh", g, e)
        if self.n_gates == 1:
            mixed = mixed.expand(-1, self.n_tasks, -1)
        return {"logits": self._towers(mixed), "gates": g}

    def shared_layer(self):
        return [self.experts.layers[-1].weight]


class PLE(MultiTaskModel):
    """Progressive Layered Extraction (Tang et al., RecSys 2020); ``levels=1`` is CGC.

    Each level has ``specific`` experts per task and ``shared`` shared experts (one bank of
    ``K*specific + shared`` members).  Task k's gate mixes its own and the shared experts;
    below the last level a shared gate mixes all experts and feeds the next level's shared
    experts.  Gates are masked softmaxes over the whole bank, so the experts a gate may not
    use get weight exactly 0.
    """

    def __init__(self, inputs: Inputs, n_tasks: int, levels: int, specific: int, shared: int,
                 expert: list[int], tower: list[int]):
        super().__init__()
        if levels < 1 or specific < 1 or shared < 1:
            raise ValueError("PLE needs levels, specific and shared experts >= 1")
        self.inputs, self.n_tasks, self.levels = inputs, n_tasks, levels
        K, S, M = n_tasks, specific, shared
        E = K * S + M
        owner = torch.cat([torch.arange(K).repeat_interleave(S), torch.full((M,), K)])  # K = shared
        self.register_buffer("owner", owner, persistent=False)
        self.experts = nn.ModuleList()
        self.gates = nn.ModuleList()
        d = inputs.dim
        for lev in range(levels):
            last = lev == levels - 1
            G = K if last else K + 1
            self.experts.append(Bank(E, d, expert))
            self.gates.append(BatchedLinear(G, d, E))
            rows = torch.arange(G).unsqueeze(1)
            # task gate k: its own + the shared experts; shared gate (row K): every expert
            allowed = (owner.unsqueeze(0) == rows) | (owner.unsqueeze(0) == K) | (rows == K)
            self.register_buffer(f"mask{lev}", allowed, persistent=False)
            d = expert[-1]
        self.towers = Bank(K, d, [*tower, 1], last_activation=False)

    def forward(self, x_num, x_cat) -> dict:
        x = self.inputs(x_num, x_cat)
        h = x  # level 1: one input for all experts and gates
        gates = []
        for lev in range(self.levels):
            mask = getattr(self, f"mask{lev}")
            if h.dim() == 2:
                e = self.experts[lev](h)
                logits = self.gates[lev](h)
            else:  # h: (B, K+1, d): expert of task k reads output k, shared experts read output K
                e = self.experts[lev](h[:, self.owner, :])
                logits = self.gates[lev](h[:, : mask.shape[0], :])
            g = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)  # (B, G, E)
            gates.append(g)
            h = torch.einsum("bge,beh->bgh", g, e)
        return {"logits": self._towers(h), "gates": gates}

    def shared_layer(self):
        return [self.experts[-1].layers[-1].weight]


class ESMM(MultiTaskModel):
    """Entire Space Multi-task Model: tasks = (ctr_task, cvr_task); see the module docstring."""

    def __init__(self, inputs: Inputs, tower: list[int], esmm_score: str = "cvr"):
        super().__init__()
        if esmm_score not in ("cvr", "ctcvr"):
            raise ValueError(f"esmm_score must be 'cvr' or 'ctcvr', got {esmm_score!r}")
        self.inputs, self.n_tasks, self.esmm_score = inputs, 2, esmm_score
        self.towers = Bank(2, inputs.dim, [*tower, 1], last_activation=False)

    def forward(self, x_num, x_cat) -> dict:
        logits = self._towers(self.inputs(x_num, x_cat))  # (B, 2): CTR logit, CVR logit
        return {"logits": logits}

    @staticmethod
    def probabilities(out: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(pCTR, pCVR, pCTCVR)."""
        p = torch.sigmoid(out["logits"])
        return p[:, 0], p[:, 1], p[:, 0] * p[:, 1]

    def loss_labels(self, labels):
        click, conv = labels[:, 0], labels[:, 1]
        ctcvr = torch.where(click == 0, torch.zeros_like(click), click * conv)  # NaN stays NaN on clicks
        return torch.stack([click, ctcvr], dim=1)

    def elementwise_loss(self, out, y, task_type):
        if task_type != "binary":
            raise ValueError("ESMM trains binary tasks only")
        a, b = out["logits"][:, 0], out["logits"][:, 1]
        ctr = F.binary_cross_entropy_with_logits(a, y[:, 0], reduction="none")
        log_p = F.logsigmoid(a) + F.logsigmoid(b)  # log pCTCVR, stable
        log_1mp = torch.log1p(-torch.exp(log_p).clamp(max=1 - 1e-7))
        ctcvr = -(y[:, 1] * log_p + (1 - y[:, 1]) * log_1mp)
        return torch.stack([ctr, ctcvr], dim=1)

    def scores(self, out):
        ctr, cvr, ctcvr = self.probabilities(out)
        return torch.stack([ctr, cvr if self.esmm_score == "cvr" else ctcvr], dim=1)

    def shared_layer(self):
        if self.inputs.embedding is None:
            raise ValueError("ESMM shares only the embeddings: GradNorm needs categorical features")
        return [self.inputs.embedding.weight]

    def task_specific_parameters(self):
        return list(self.towers.parameters())


MODELS = ("shared_bottom", "omoe", "mmoe", "ple", "esmm")


def build_model(name: str, n_numeric: int, cardinalities: list[int], n_tasks: int, *, emb_dim: int = 8,
                bottom: list[int] = (128, 64), experts: int = 4, expert: list[int] = (64, 32),
                tower: list[int] = (32,), levels: int = 1, specific: int = 1, shared: int = 2,
                esmm_score: str = "cvr") -> MultiTaskModel:
    """Build a model by name (one of :data:`MODELS`)."""
    inputs = Inputs(n_numeric, list(cardinalities), emb_dim)
    bottom, expert, tower = list(bottom), list(expert), list(tower)
    if name == "shared_bottom":
        return SharedBottom(inputs, n_tasks, bottom, tower)
    if name in ("omoe", "mmoe"):
        return MixtureOfExperts(inputs, n_tasks, experts, expert, tower, multi_gate=name == "mmoe")
    if name in ("ple", "cgc"):
        return PLE(inputs, n_tasks, levels if name == "ple" else 1, specific, shared, expert, tower)
    if name == "esmm":
        if n_tasks != 2:
            raise ValueError(f"ESMM needs exactly 2 tasks (click, then conversion), got {n_tasks}")
        return ESMM(inputs, tower, esmm_score)
    raise ValueError(f"unknown model {name!r} (choose from {', '.join(MODELS)})")
