"""Training loop, prediction, and the writers of the prediction log, metrics and study.

``fit(config, train, valid, cardinalities)`` trains one model with mini-batch Adam; per
step it masks unobserved (NaN) labels out of each task's loss (a task's loss is the mean
over its observed rows of the batch; a batch without any observed row of a task gives that
task a zero loss and zero gradient), lets the balancer weigh the tasks and, with
``pcgrad``, projects the per-task gradients of the shared parameters.  After every epoch
it measures the validation loss (the unweighted sum of the tasks' mean losses) and keeps
the best epoch's weights (early stopping after ``patience`` epochs without improvement).

Regression tasks are standardised with the training mean / std for the optimiser and
predicted back in the original units.

``train_to_log(spec)`` runs the whole command: read + validate the table, split
train / valid / test (by group when a group column is given), fit, predict the test part,
write the log (``p_<task>``, ``<task>``, group and pass-through columns), the metrics JSON
beside it and optionally a ready study TOML.
"""

from __future__ import annotations

import json
import math
import os
import time as _time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from .config import TrainConfig, TrainSpec
from .balance import Balancer, make_balancer, pcgrad
from .models import MultiTaskModel, build_model

__all__ = ["TrainConfig", "Arrays", "FitResult", "fit", "predict", "evaluate_losses", "task_losses",
           "TrainSpec", "train_to_log", "study_toml"]


@dataclass
class Arrays:
    x_num: np.ndarray  # (N, F) float32
    x_cat: np.ndarray  # (N, C) int64
    y: np.ndarray  # (N, K) float32, NaN = not observed

    @property
    def n(self) -> int:
        return len(self.y)


@dataclass
class FitResult:
    model: MultiTaskModel
    balancer: Balancer
    history: list[dict]
    best_epoch: int
    best_valid: float
    seconds: float
    steps: int


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def task_losses(model: MultiTaskModel, out: dict, labels: torch.Tensor, task_type: str) -> torch.Tensor:
    """Per-task mean loss over the observed rows ``(K,)``; NaN labels contribute nothing."""
    y = model.loss_labels(labels)
    mask = ~torch.isnan(y)
    elem = model.elementwise_loss(out, torch.where(mask, y, torch.zeros_like(y)), task_type)
    elem = torch.where(mask, elem, torch.zeros_like(elem))
    return elem.sum(0) / mask.sum(0).clamp(min=1)


def _standardise(model, y: np.ndarray) -> np.ndarray:
    mean, std = getattr(model, "y_mean", None), getattr(model, "y_std", None)
    if mean is None:
        return y
    return ((y - mean) / std).astype(np.float32)


@torch.no_grad()
def evaluate_losses(model: MultiTaskModel, data: Arrays, task_type: str, batch: int = 8192) -> np.ndarray:
    """Mean loss per task over the observed rows of ``data`` (training units)."""
    model.eval()
    y = _standardise(model, data.y)
    k = model.n_tasks
    total, count = np.zeros(k), np.zeros(k)
    for s in range(0, data.n, batch):
        sl = slice(s, s + batch)
        out = model(_t(data.x_num[sl]), _t(data.x_cat[sl]))
        yy = model.loss_labels(_t(y[sl]))
        mask = ~torch.isnan(yy)
        elem = model.elementwise_loss(out, torch.where(mask, yy, torch.zeros_like(yy)), task_type)
        total += torch.where(mask, elem, torch.zeros_like(elem)).sum(0).double().numpy()
        count += mask.sum(0).double().numpy()
    model.train()
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


@torch.no_grad()
def predict(model: MultiTaskModel, x_num: np.ndarray, x_cat: np.ndarray, batch: int = 8192) -> np.ndarray:
    """``(N, K)`` float32: probabilities (binary) or predictions in the label's units (regression)."""
    model.eval()
    parts = [model.scores(model(_t(x_num[s:s + batch]), _t(x_cat[s:s + batch]))) if
             getattr(model, "y_mean", None) is None else
             model(_t(x_num[s:s + batch]), _t(x_cat[s:s + batch]))["logits"]
             for s in range(0, len(x_num), batch)]
    model.train()
    out = torch.cat(parts).numpy().astype(np.float32) if parts else np.zeros((0, model.n_tasks), np.float32)
    if getattr(model, "y_mean", None) is not None:
        out = (out * model.y_std + model.y_mean).astype(np.float32)
    return out


def _backward(model: MultiTaskModel, terms: torch.Tensor, use_pcgrad: bool, gen: torch.Generator) -> None:
    if not use_pcgrad:
        terms.sum().backward()
        return
    specific = {id(p) for p in model.task_specific_parameters()}
    shared = [p for p in model.parameters() if p.requires_grad and id(p) not in specific]
    flat = []
    for k in range(terms.shape[0]):
        if not terms[k].requires_grad:
            flat.append(torch.cat([torch.zeros(p.numel()) for p in shared]))
            continue
        g = torch.autograd.grad(terms[k], shared, retain_graph=True, allow_unused=True)
        flat.append(torch.cat([(x if x is not None else torch.zeros_like(p)).reshape(-1)
                               for x, p in zip(g, shared)]))
    combined, _ = pcgrad(torch.stack(flat), gen)
    others = [p for p in model.parameters() if p.requires_grad and id(p) in specific]
    extra = [p for p in getattr(model, "_balancer_params", []) if p.requires_grad]
    if others or extra:
        torch.autograd.backward(terms.sum(), inputs=others + extra)
    offset = 0
    for p in shared:
        n = p.numel()
        p.grad = combined[offset:offset + n].view_as(p).clone()
        offset += n


def fit(config: TrainConfig, train: Arrays, valid: Arrays | None, cardinalities: list[int],
        show_progress: bool | None = None, description: str | None = None) -> FitResult:
    """Train one model (see the module docstring)."""
    from ..progress import progress

    # one intra-op thread by default: these nets are small, and on a shared 2-core machine two
    # spinning torch threads made a step ~30x slower (188 ms vs 6 ms for a 512-row MMoE batch)
    torch.set_num_threads(config.threads or 1)
    torch.manual_seed(config.seed)
    k = train.y.shape[1]
    model = build_model(config.model, train.x_num.shape[1], cardinalities, k, emb_dim=config.emb_dim,
                        bottom=config.bottom_hidden, experts=config.experts, expert=config.expert_hidden,
                        tower=config.tower_hidden, levels=config.levels, specific=config.specific_experts,
                        shared=config.shared_experts, esmm_score=config.esmm_score)
    if config.task_type == "regression":
        mean = np.nanmean(train.y, axis=0)
        std = np.nanstd(train.y, axis=0)
        model.y_mean = mean.astype(np.float32)
        model.y_std = np.where(std > 1e-12, std, 1.0).astype(np.float32)
    balancer = make_balancer(config.balance, k, weights=config.weights, alpha=config.gradnorm_alpha,
                             temperature=config.dwa_temperature)
    model._balancer_params = balancer.parameters()
    opt = torch.optim.Adam([{"params": list(model.parameters()), "weight_decay": config.weight_decay},
                            {"params": balancer.parameters(), "weight_decay": 0.0}], lr=config.lr)
    shared_layer = model.shared_layer() if config.balance == "gradnorm" else None

    xn, xc, y = _t(train.x_num), _t(train.x_cat), _t(_standardise(model, train.y))
    n = train.n
    bs = max(1, min(config.batch_size, n))
    steps_per_epoch = math.ceil(n / bs)
    gen = torch.Generator().manual_seed(config.seed)
    history: list[dict] = []
    best, best_epoch, best_state, bad = math.inf, 0, None, 0
    t0 = _time.perf_counter()
    steps = 0
    desc = description or f"train {config.model}"
    if config.lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {config.lr_schedule!r}")
    total_steps = config.epochs * steps_per_epoch
    with progress(config.epochs * steps_per_epoch, desc, enabled=show_progress) as bar:
        for epoch in range(1, config.epochs + 1):
            perm = torch.randperm(n, generator=gen)
            sums = torch.zeros(k, dtype=torch.float64)
            for s in range(steps_per_epoch):
                idx = perm[s * bs:(s + 1) * bs]
                out = model(xn[idx], xc[idx])
                losses = task_losses(model, out, y[idx], config.task_type)
                balancer.prepare(losses, shared_layer)
                terms = balancer.terms(losses)
                if config.lr_schedule == "cosine":
                    for group in opt.param_groups:
                        group["lr"] = config.lr * 0.5 * (1.0 + math.cos(math.pi * steps / total_steps))
                opt.zero_grad(set_to_none=True)
                _backward(model, terms, config.pcgrad, gen)
                opt.step()
                balancer.after_step()
                sums += losses.detach().double()
                steps += 1
                if s % 20 == 19 or s == steps_per_epoch - 1:
                    bar.update(advance=(s % 20) + 1, info=f"epoch {epoch} loss {float(losses.detach().sum()):.4f}")
            train_loss = (sums / steps_per_epoch).numpy()
            balancer.end_epoch(train_loss)
            row = {"epoch": epoch, "train_loss": train_loss.tolist(), "weights": balancer.weights().tolist(),
                   "lr": float(opt.param_groups[0]["lr"])}  # the learning rate of the epoch's last step
            if valid is not None and valid.n:
                vl = evaluate_losses(model, valid, config.task_type)
                row["valid_loss"] = vl.tolist()
                score = float(np.nansum(vl))
            else:
                score = float(np.nansum(train_loss))
            history.append(row)
            if score < best - 1e-7:
                best, best_epoch, bad = score, epoch, 0
                best_state = {kk: v.detach().clone() for kk, v in model.state_dict().items()}
            else:
                bad += 1
                if config.patience and bad >= config.patience:
                    bar.update(advance=(config.epochs - epoch) * steps_per_epoch, info="early stop")
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    return FitResult(model, balancer, history, best_epoch, best, _time.perf_counter() - t0, steps)


# --------------------------------------------------------------------------- the command's pipeline
def _check_spec(spec: TrainSpec) -> None:
    cfg = spec.config
    if cfg.model == "esmm" and len(spec.tasks) != 2:
        raise InputError(f"model esmm needs exactly 2 tasks (the click task, then the conversion task), "
                         f"got tasks {spec.tasks}", param="tasks")
    if cfg.model == "esmm" and cfg.task_type != "binary":
        raise InputError("model esmm trains binary tasks only (got task_type 'regression')", param="task_type")
    if cfg.model == "esmm" and cfg.balance == "gradnorm" and not spec.categorical:
        raise InputError("balance gradnorm with model esmm needs categorical features (ESMM shares only "
                         "the embeddings, GradNorm's shared layer)")
    if cfg.weights is not None and len(cfg.weights) != len(spec.tasks):
        raise InputError(f"weights needs one number per task ({len(spec.tasks)}), got {cfg.weights}", param="weights")
    if spec.study_out and cfg.task_type != "binary":
        raise InputError("study_out needs binary tasks: a study ranks by AUC (got task_type 'regression')", param="study_out")
    if spec.out.suffix.lower() not in (".parquet", ".pq", ".csv"):
        raise InputError(f"{spec.out}: unknown file type {spec.out.suffix!r} (use .csv or .parquet)")
    names = {f"p_{t}" for t in spec.tasks} | set(spec.tasks)
    for c in spec.pass_through:
        if c in names - set(spec.tasks):
            raise InputError(f"pass_through column {c!r} would clash with a score column of the log", param="pass_through")


def metrics_path(out: Path) -> Path:
    return out.with_name(out.name.rsplit(".", 1)[0] + ".metrics.json")


def train_to_log(spec: TrainSpec, show_progress: bool | None = None) -> dict:
    """Run ``fusiontune train``: returns the metrics dict (also written as JSON)."""
    import pandas as pd

    from ..metrics import auc, gauc
    from ..results import atomic_write_text
    from ..simulate import write_table
    from .data import Encoder, load_table, split_rows

    _check_spec(spec)
    cfg = spec.config
    passthrough = [c for c in dict.fromkeys([*( [spec.time] if spec.time else []), *spec.pass_through])
                   if c != spec.group and c not in spec.tasks]
    table = load_table(spec.data, spec.features, spec.categorical, spec.tasks, task_type=cfg.task_type,
                       group=spec.group, pass_through=passthrough)
    groups = table.frame[spec.group].to_numpy() if spec.group else None
    tr, va, te = split_rows(table.n, (spec.valid_fraction, spec.test_fraction), cfg.seed, groups)
    enc = Encoder.fit(table.frame.iloc[tr], spec.features, spec.categorical)

    def arrays(idx):
        xn, xc = enc.transform(table.frame.iloc[idx])
        return Arrays(xn, xc, table.labels[idx])

    train, valid, test = arrays(tr), (arrays(va) if len(va) else None), arrays(te)
    for j, t in enumerate(spec.tasks):
        if np.isnan(train.y[:, j]).all():
            raise InputError(f"{spec.data}: label column {t!r} has no observed value in the training part")
    res = fit(cfg, train, valid, enc.cardinalities, show_progress)
    scores = predict(res.model, test.x_num, test.x_cat)

    # ---- the log, in the format `fusiontune search` reads
    cols: dict[str, np.ndarray] = {}
    sub = table.frame.iloc[te]
    if spec.group:
        cols[spec.group] = sub[spec.group].to_numpy()
    for c in passthrough:
        cols[c] = sub[c].to_numpy()
    for j, t in enumerate(spec.tasks):
        cols[f"p_{t}"] = scores[:, j]
    for j, t in enumerate(spec.tasks):
        cols[t] = test.y[:, j]
    if cfg.model == "esmm":
        with torch.no_grad():
            res.model.eval()
            out = res.model(_t(test.x_num), _t(test.x_cat))
            ctr, cvr, ctcvr = (p.numpy().astype(np.float32) for p in res.model.probabilities(out))
        cols["p_ctcvr" if cfg.esmm_score == "cvr" else f"p_{spec.tasks[1]}_cvr"] = \
            ctcvr if cfg.esmm_score == "cvr" else cvr
    log = pd.DataFrame(cols)
    if spec.group:
        log = log.sort_values(spec.group, kind="stable").reset_index(drop=True)

    # ---- per-task metrics on the test part
    per_task = {}
    y_test = log[spec.tasks].to_numpy(np.float32)
    s_test = log[[f"p_{t}" for t in spec.tasks]].to_numpy(np.float32)
    g_codes = pd.factorize(log[spec.group])[0] if spec.group else None
    for j, t in enumerate(spec.tasks):
        obs = ~np.isnan(y_test[:, j])
        row = {"rows": int(obs.sum())}
        if cfg.task_type == "binary":
            row["positive_rate"] = float(np.nanmean(y_test[:, j]))
            row["auc"] = float(auc(s_test[:, j], y_test[:, [j]])[0])
            if g_codes is not None:
                row["gauc"] = float(gauc(s_test[:, j], y_test[:, [j]], g_codes)[0])
        else:
            err = s_test[obs, j] - y_test[obs, j]
            row["mse"] = float(np.mean(err.astype(np.float64) ** 2))
            row["label_variance"] = float(np.var(y_test[obs, j].astype(np.float64)))
        per_task[t] = row
    if cfg.model == "esmm":
        yc = np.where(y_test[:, 0] == 0, 0.0, y_test[:, 0] * y_test[:, 1]).astype(np.float32)
        per_task[spec.tasks[1]]["ctcvr_auc_entire_space"] = float(
            auc(log["p_ctcvr"].to_numpy(np.float32) if "p_ctcvr" in log else s_test[:, 1], yc[:, None])[0])
    test_loss = evaluate_losses(res.model, test, cfg.task_type)
    metrics = {
        "data": str(spec.data), "log": str(spec.out), "model": cfg.model, "task_type": cfg.task_type,
        "balance": cfg.balance, "pcgrad": cfg.pcgrad, "seed": cfg.seed,
        "rows": {"train": len(tr), "valid": len(va), "test": len(te)},
        "split": "group" if spec.group else "random",
        "esmm_score": cfg.esmm_score if cfg.model == "esmm" else None,
        "test": per_task,
        "test_loss": dict(zip(spec.tasks, test_loss.tolist())),
        "best_epoch": res.best_epoch, "epochs_run": len(res.history), "steps": res.steps,
        "seconds": round(res.seconds, 3),
        "parameters": int(sum(p.numel() for p in res.model.parameters())),
        "task_weights": dict(zip(spec.tasks, res.balancer.weights().tolist())),
        "history": res.history,
        "config": {k: (list(v) if isinstance(v, list) else v) for k, v in asdict(cfg).items()},
    }
    write_table(log, spec.out)
    mp = metrics_path(spec.out)
    atomic_write_text(mp, json.dumps(metrics, indent=2, default=str) + "\n")
    metrics["metrics_file"] = str(mp)
    if spec.study_out:
        atomic_write_text(spec.study_out, study_toml(spec, g_codes is not None))
        metrics["study_file"] = str(spec.study_out)
    return metrics


def _q(s: str) -> str:
    return json.dumps(str(s))  # a TOML basic string is JSON-compatible for these characters


def study_toml(spec: TrainSpec, has_group: bool) -> str:
    """A ready study for the produced log: every task weight 1, metric GAUC with a group
    (AUC without), multiplicative fusion with today's weights a_k = 1 as the baseline."""
    study_dir = Path(spec.study_out).resolve().parent
    rel = os.path.relpath(Path(spec.out).resolve(), study_dir)
    name = Path(spec.study_out).stem
    lines = [f"# written by `fusiontune train` ({spec.config.model}) for the log {Path(spec.out).name}",
             f"name = {_q(name)}", f"log = {_q(rel)}"]
    if spec.group:
        lines.append(f"group = {_q(spec.group)}")
    if spec.time:
        lines.append(f"time = {_q(spec.time)}")
    for t in spec.tasks:
        lines += ["", "[[tasks]]", f"name = {_q(t)}", f"score = {_q('p_' + t)}", f"label = {_q(t)}",
                  "weight = 1.0", f"metric = {_q('gauc' if has_group else 'auc')}"]
    lines += ["", "[fusion]", 'formula = "multiplicative"', f"reference = {_q(spec.tasks[0])}", "",
              "[fusion.baseline]"]
    lines += [f"{_q('a_' + t)} = 1.0" for t in spec.tasks]
    lines += ["", "[fusion.bounds]", "a = [0.0, 3.0]", "", "[split]",
              f"by = {_q('time' if spec.time else ('group' if spec.group else 'random'))}",
              "holdout = 0.3", "", "[search]", 'method = "cem"', "budget = 600", "seed = 0", ""]
    return "\n".join(lines)
