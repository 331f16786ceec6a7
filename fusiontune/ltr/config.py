"""The study's ``[ltr]`` table: which context features, which backend, hyper-parameters.

Example (every key optional)::

    [ltr]
    features = ["hour"]      # numeric context columns of the log, besides the task scores
    context_check = true     # also fit without the features; keep them only if they win on the validation part
    backend = "sklearn"      # gbdt: "sklearn" (HistGradientBoosting) or "lightgbm"
    monotone = true          # fused score monotone in every task score (sign from [[tasks]])
    validation = 0.2         # share of the search part held out for early stopping
    target = "combined"      # training target: combined | lambdarank
    balance = "variance"     # task weights in the target: variance | observed | none (see targets.py)
    residual = true          # LightGBM GBDT (backend "lightgbm" or target lambdarank): trees on top of the
                             # baseline formula (init score), so they start where the formula is
    guardrail_rounds = 5     # refits that up-weight a task whose guardrail breaks (0: off)
    guardrail_margin = 0.2   # on the validation part keep drops within (1 - margin) * max_drop
    guardrail_bar = "start"  # started from a formula (--start): no guarded task below that formula's
                             # validation metric ("start", the Pareto bar) or only the limit above ("limit")

    [ltr.gbdt]
    learning_rate = 0.1
    max_iter = 300           # boosting rounds (upper bound; early stopping cuts it)
    max_leaf_nodes = 31
    min_samples_leaf = 200
    l2_regularization = 1.0
    patience = 20            # rounds without validation improvement before stopping
    threads = 1              # OpenMP / LightGBM threads

    [ltr.dnn]                # the residual DNN: baseline formula + a correction that starts at 0
    hidden = [32, 16]
    epochs = 200             # upper bound; early stopping on the validation objective cuts it
    batch_size = 4096
    lr = 0.003
    weight_decay = 0.0
    patience = 8             # epochs without validation improvement before stopping
    threads = 1              # torch CPU threads (1: spinning threads crawl on busy shared cores)
    finetune = 0             # extra epochs on the smooth AUC surrogate (fusiontune.surrogate)
    finetune_lr = 0.001
    finetune_steps = 10      # full-batch surrogate steps per fine-tune epoch
    warmup = 4               # first epochs of each phase at lr / 3**(warmup - epoch): small steps first,
                             # so early stopping sees the small corrections of a strong start formula

``run_ltr(..., options=...)`` takes the same structure and overrides the study's table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError

__all__ = ["LtrConfig", "parse_config", "MODELS", "TARGETS", "GBDT_DEFAULTS", "DNN_DEFAULTS"]

MODELS = ("gbdt", "dnn")
TARGETS = ("combined", "lambdarank")
BACKENDS = ("sklearn", "lightgbm")
BALANCES = ("observed", "variance", "none")
GUARDRAIL_BARS = ("start", "limit")

GBDT_DEFAULTS: dict[str, float] = {"learning_rate": 0.1, "max_iter": 300, "max_leaf_nodes": 31,
                                   "min_samples_leaf": 200, "l2_regularization": 1.0, "patience": 20,
                                   "threads": 1}
DNN_DEFAULTS: dict[str, Any] = {"hidden": [32, 16], "epochs": 200, "batch_size": 4096, "lr": 0.003,
                                "weight_decay": 0.0, "patience": 8, "threads": 1, "finetune": 0,
                                "finetune_lr": 0.001, "finetune_steps": 10, "warmup": 4}
_INTS = {"max_iter", "max_leaf_nodes", "min_samples_leaf", "patience", "epochs", "batch_size", "threads",
         "finetune", "finetune_steps", "warmup"}
_TOP = {"features", "backend", "monotone", "validation", "target", "guardrail_rounds", "guardrail_margin", "balance",
        "residual", "guardrail_bar", "context_check", "gbdt", "dnn"}


@dataclass
class LtrConfig:
    features: list[str] = field(default_factory=list)
    backend: str = "sklearn"
    monotone: bool = True
    validation: float = 0.2
    target: str = "combined"
    guardrail_rounds: int = 5
    balance: str = "variance"
    guardrail_margin: float = 0.2
    residual: bool = True
    guardrail_bar: str = "start"
    gbdt: dict[str, float] = field(default_factory=lambda: dict(GBDT_DEFAULTS))
    dnn: dict[str, Any] = field(default_factory=lambda: dict(DNN_DEFAULTS))
    context_check: bool = True


def _merge(base: dict, over: dict | None) -> dict:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out


def _hyper(src: str, table: str, got: dict, defaults: dict) -> dict:
    out = dict(defaults)
    for k, v in got.items():
        if k not in defaults:
            raise InputError(f"{src}: unknown key {k!r} in [{table}] (allowed: {', '.join(sorted(defaults))})")
        if k == "hidden":
            if (not isinstance(v, list) or not v
                    or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v)):
                raise InputError(f"{src}: [{table}] hidden must be a list of layer sizes >= 1, e.g. [32, 16], "
                                 f"got {v!r}")
            out[k] = list(v)
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InputError(f"{src}: [{table}] {k} must be a number, got {v!r}")
        if k in _INTS:
            low = 0 if k in ("patience", "finetune", "warmup") else 1
            if int(v) != v or v < low:
                raise InputError(f"{src}: [{table}] {k} must be a whole number >= {low}, got {v!r}")
            v = int(v)
        elif v < 0 or (k in ("learning_rate", "lr", "finetune_lr") and v == 0):
            raise InputError(f"{src}: [{table}] {k} must be "
                             f"{'> 0' if k in ('learning_rate', 'lr', 'finetune_lr') else '>= 0'}, got {v!r}")
        out[k] = v
    return out


def parse_config(section: dict | None, options: dict | None = None, src: str = "<study>") -> LtrConfig:
    """Validate the study's ``[ltr]`` table merged with ``options`` (which win)."""
    raw = _merge(dict(section or {}), options)
    for k in raw:
        if k not in _TOP:
            raise InputError(f"{src}: unknown key {k!r} in [ltr] (allowed: {', '.join(sorted(_TOP))})")
    feats = raw.get("features", [])
    if not isinstance(feats, list) or not all(isinstance(f, str) and f for f in feats):
        raise InputError(f"{src}: [ltr] features must be a list of column names, e.g. [\"hour\"], got {feats!r}")
    if len(set(feats)) != len(feats):
        raise InputError(f"{src}: [ltr] features lists a column twice: {feats!r}")
    backend = raw.get("backend", "sklearn")
    if backend not in BACKENDS:
        raise InputError(f"{src}: [ltr] backend must be \"sklearn\" or \"lightgbm\", got {backend!r}")
    monotone = raw.get("monotone", True)
    if not isinstance(monotone, bool):
        raise InputError(f"{src}: [ltr] monotone must be true or false, got {monotone!r}")
    val = raw.get("validation", 0.2)
    if isinstance(val, bool) or not isinstance(val, (int, float)) or not 0.0 < val < 0.9:
        raise InputError(f"{src}: [ltr] validation must be a fraction in (0, 0.9), e.g. 0.2, got {val!r}")
    target = raw.get("target", "combined")
    if target not in TARGETS:
        raise InputError(f"{src}: [ltr] target must be \"combined\" or \"lambdarank\", got {target!r}")
    rounds = raw.get("guardrail_rounds", 5)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or not 0 <= rounds <= 20:
        raise InputError(f"{src}: [ltr] guardrail_rounds must be a whole number in 0..20, got {rounds!r}")
    margin = raw.get("guardrail_margin", 0.2)
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0.0 <= margin < 1.0:
        raise InputError(f"{src}: [ltr] guardrail_margin must be a fraction in [0, 1), e.g. 0.2, got {margin!r}")
    balance = raw.get("balance", "variance")
    if balance not in BALANCES:
        raise InputError(f"{src}: [ltr] balance must be \"observed\", \"variance\" or \"none\", got {balance!r}")
    residual = raw.get("residual", True)
    if not isinstance(residual, bool):
        raise InputError(f"{src}: [ltr] residual must be true or false, got {residual!r}")
    bar = raw.get("guardrail_bar", "start")
    if bar not in GUARDRAIL_BARS:
        raise InputError(f"{src}: [ltr] guardrail_bar must be \"start\" or \"limit\", got {bar!r}")
    context_check = raw.get("context_check", True)
    if not isinstance(context_check, bool):
        raise InputError(f"{src}: [ltr] context_check must be true or false, got {context_check!r}")
    for t in ("gbdt", "dnn"):
        if not isinstance(raw.get(t, {}), dict):
            raise InputError(f"{src}: [ltr.{t}] must be a table, got {raw[t]!r}")
    return LtrConfig(list(feats), backend, monotone, float(val), target, rounds, balance, float(margin), residual, bar,
                     _hyper(src, "ltr.gbdt", raw.get("gbdt", {}), GBDT_DEFAULTS),
                     _hyper(src, "ltr.dnn", raw.get("dnn", {}), DNN_DEFAULTS), context_check)
