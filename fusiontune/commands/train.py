"""``fusiontune train``: train a multi-task model and write a prediction log for its test part.

Settings come from the command line or from the ``[train]`` table of a TOML spec
(``--spec studies/x.toml``; the same keys with underscores, lists as TOML arrays or
comma-separated strings, paths relative to the spec file); a flag given on the command line
overrides the spec.  torch is imported only inside :func:`run`.
"""

from __future__ import annotations

from pathlib import Path

from .common import positive_int

HELP = "train a multi-task model (Shared-Bottom/OMoE/MMoE/PLE/ESMM) and write its prediction log"

MODELS = ("shared_bottom", "omoe", "mmoe", "ple", "cgc", "esmm")
BALANCERS = ("fixed", "uncertainty", "gradnorm", "dwa")

# key -> (kind, default); kind: str, path, list, ints, floats, int, float, bool
KEYS = {
    "data": ("path", None), "features": ("list", []), "categorical": ("list", []), "tasks": ("list", None),
    "model": ("str", "mmoe"), "out": ("path", None), "group": ("str", None), "time": ("str", None),
    "pass_through": ("list", []), "balance": ("str", "fixed"), "weights": ("floats", None),
    "pcgrad": ("bool", False), "epochs": ("int", 5), "seed": ("int", 0), "valid_fraction": ("float", 0.2),
    "test_fraction": ("float", 0.2), "study_out": ("path", None), "task_type": ("str", "binary"),
    "batch_size": ("int", 512), "lr": ("float", 1e-3), "patience": ("int", 2), "emb_dim": ("int", 8),
    "bottom_hidden": ("ints", [128, 64]), "experts": ("int", 4), "expert_hidden": ("ints", [64, 32]),
    "tower_hidden": ("ints", [32]), "levels": ("int", 1), "specific_experts": ("int", 1),
    "shared_experts": ("int", 2), "esmm_score": ("str", "cvr"), "gradnorm_alpha": ("float", 1.5),
    "dwa_temperature": ("float", 2.0), "threads": ("int", None),
}


def add_arguments(p) -> None:
    p.add_argument("--spec", type=Path, default=None, help="TOML file with a [train] table of these settings")
    p.add_argument("--data", type=Path, help="training table (.csv or .parquet)")
    p.add_argument("--features", help="numeric feature columns, comma-separated")
    p.add_argument("--categorical", help="categorical feature columns (embedded), comma-separated")
    p.add_argument("--tasks", help="label columns, one per task (0/1, empty = not observed), comma-separated")
    p.add_argument("--model", choices=MODELS, help="model (default: mmoe)")
    p.add_argument("--out", type=Path, help="prediction log to write (.parquet or .csv)")
    p.add_argument("--group", help="group column (request id): split by group, GAUC in the study")
    p.add_argument("--time", help="time column: passed through, and the study's time split")
    p.add_argument("--pass-through", dest="pass_through", help="more columns copied to the log, comma-separated")
    p.add_argument("--balance", choices=BALANCERS, help="loss balancing (default: fixed)")
    p.add_argument("--weights", help="fixed task weights, comma-separated (default: 1 each)")
    p.add_argument("--pcgrad", action="store_true", default=None, help="project conflicting task gradients")
    p.add_argument("--task-type", dest="task_type", choices=("binary", "regression"),
                   help="binary (BCE, AUC; default) or regression (MSE)")
    p.add_argument("--epochs", type=positive_int)
    p.add_argument("--seed", type=int)
    p.add_argument("--valid-fraction", dest="valid_fraction", type=float, help="default 0.2")
    p.add_argument("--test-fraction", dest="test_fraction", type=float, help="default 0.2 (the logged part)")
    p.add_argument("--study-out", dest="study_out", type=Path, help="also write a ready study TOML for the log")
    p.add_argument("--batch-size", dest="batch_size", type=positive_int, help="default 512")
    p.add_argument("--lr", type=float, help="Adam learning rate (default 1e-3)")
    p.add_argument("--patience", type=int, help="early-stopping epochs on the validation loss (0: off; default 2)")
    p.add_argument("--emb-dim", dest="emb_dim", type=positive_int, help="embedding size (default 8)")
    p.add_argument("--experts", type=positive_int, help="experts of OMoE/MMoE (default 4)")
    p.add_argument("--expert-hidden", dest="expert_hidden", help="expert layer sizes (default 64,32)")
    p.add_argument("--tower-hidden", dest="tower_hidden", help="tower hidden sizes (default 32)")
    p.add_argument("--bottom-hidden", dest="bottom_hidden", help="shared-bottom sizes (default 128,64)")
    p.add_argument("--levels", type=positive_int, help="PLE extraction levels (default 1 = CGC)")
    p.add_argument("--specific-experts", dest="specific_experts", type=positive_int, help="PLE, per task")
    p.add_argument("--shared-experts", dest="shared_experts", type=positive_int, help="PLE shared experts")
    p.add_argument("--esmm-score", dest="esmm_score", choices=("cvr", "ctcvr"),
                   help="ESMM: the conversion task's logged score (default cvr = pCTCVR / pCTR)")
    p.add_argument("--threads", type=positive_int, help="torch CPU threads (default 1: small nets, shared cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no table")


def _convert(key: str, value, src: str):
    from ..errors import InputError

    kind = KEYS[key][0]
    if value is None:
        return None
    try:
        if kind in ("list", "ints", "floats"):
            items = value if isinstance(value, list) else [s.strip() for s in str(value).split(",") if s.strip()]
            if kind == "ints":
                out = [int(x) for x in items]
                if any(x < 1 for x in out):
                    raise ValueError
                return out
            if kind == "floats":
                return [float(x) for x in items]
            if not all(isinstance(x, str) for x in items):
                raise ValueError
            return items
        if kind == "bool":
            if not isinstance(value, bool):
                raise ValueError
            return value
        if kind == "int":
            if isinstance(value, bool) or int(value) != float(value):
                raise ValueError
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind == "path":
            return Path(value)
        if not isinstance(value, str):
            raise ValueError
        return value
    except (TypeError, ValueError):
        raise InputError(f"{src}: {key} has a bad value {value!r} (expected {kind})") from None


def settings(args) -> dict:
    """defaults <- spec [train] table <- command-line flags."""
    import tomllib

    from ..errors import InputError

    s = {k: d for k, (kind, d) in KEYS.items()}
    if args.spec is not None:
        if not args.spec.exists():
            raise InputError(f"{args.spec}: spec file not found")
        try:
            data = tomllib.loads(args.spec.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"{args.spec}: invalid TOML: {exc}") from None
        table = data.get("train")
        if not isinstance(table, dict):
            raise InputError(f"{args.spec}: no [train] table")
        for key, value in table.items():
            k = key.replace("-", "_")
            if k not in KEYS:
                raise InputError(f"{args.spec}: unknown key {key!r} in [train] (allowed: {', '.join(KEYS)})")
            v = _convert(k, value, f"{args.spec} [train]")
            if KEYS[k][0] == "path":
                v = v if v.is_absolute() else args.spec.parent / v
            s[k] = v
    for k in KEYS:
        v = getattr(args, k, None)
        if v is not None:
            s[k] = _convert(k, v, f"--{k.replace('_', '-')}")
    for k in ("data", "tasks", "out"):
        if not s[k]:
            raise InputError(f"missing --{k} (or '{k}' in the spec's [train] table)")
    if s["model"] not in MODELS:
        raise InputError(f"model must be one of {', '.join(MODELS)}, got {s['model']!r}")
    if s["balance"] not in BALANCERS:
        raise InputError(f"balance must be one of {', '.join(BALANCERS)}, got {s['balance']!r}")
    if s["task_type"] not in ("binary", "regression"):
        raise InputError(f"task_type must be binary or regression, got {s['task_type']!r}")
    if s["esmm_score"] not in ("cvr", "ctcvr"):
        raise InputError(f"esmm_score must be cvr or ctcvr, got {s['esmm_score']!r}")
    for k in ("epochs", "batch_size", "emb_dim", "experts", "levels", "specific_experts", "shared_experts"):
        if s[k] < 1:
            raise InputError(f"{k} must be >= 1, got {s[k]!r}")
    if not s["lr"] > 0:
        raise InputError(f"lr must be > 0, got {s['lr']!r}")
    return s


def build_spec(s: dict):
    from ..mtl.train import TrainConfig, TrainSpec

    cfg_keys = set(TrainConfig.__dataclass_fields__)
    cfg = TrainConfig(**{k: v for k, v in s.items() if k in cfg_keys and v is not None})
    if s["model"] == "cgc":
        cfg.model, cfg.levels = "ple", 1
    return TrainSpec(data=s["data"], features=s["features"], categorical=s["categorical"], tasks=s["tasks"],
                     out=s["out"], group=s["group"], time=s["time"], pass_through=s["pass_through"],
                     valid_fraction=s["valid_fraction"], test_fraction=s["test_fraction"],
                     study_out=s["study_out"], config=cfg)


def print_table(metrics: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    binary = metrics["task_type"] == "binary"
    tab = Table(title=f"{metrics['model']} on the test part ({metrics['rows']['test']} rows)")
    tab.add_column("task")
    tab.add_column("rows", justify="right")
    cols = ["positive_rate", "auc", "gauc"] if binary else ["mse", "label_variance"]
    cols = [c for c in cols if any(c in r for r in metrics["test"].values())]
    for c in cols:
        tab.add_column(c, justify="right")
    tab.add_column("weight", justify="right")
    for t, r in metrics["test"].items():
        tab.add_row(t, str(r["rows"]), *[f"{r[c]:.4f}" if c in r else "" for c in cols],
                    f"{metrics['task_weights'][t]:.3f}")
    Console().print(tab)


def run(args) -> int:
    from ..errors import InputError

    s = settings(args)
    spec = build_spec(s)
    try:
        import torch  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the install
        raise InputError("fusiontune train needs torch: pip install torch==2.13.0") from None
    from ..mtl.train import train_to_log

    metrics = train_to_log(spec, show_progress=False if args.quiet else None)
    if not args.quiet:
        print_table(metrics)
        print(f"log: {spec.out}  metrics: {metrics['metrics_file']}"
              + (f"  study: {metrics['study_file']}" if "study_file" in metrics else "")
              + f"  ({metrics['seconds']:.1f}s, {metrics['epochs_run']} epochs, best {metrics['best_epoch']})")
    return 0
