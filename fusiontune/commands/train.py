"""``fusiontune train``: train a multi-task model and write a prediction log for its test part.

Settings are declared once, in :mod:`fusiontune.mtl.config` (``TrainData`` and
``TrainConfig``): the options of this command, the ``[train]`` table of a TOML spec
(``--spec studies/x.toml``; the same keys with underscores, lists as TOML arrays or
comma-separated strings, paths relative to the spec file) and their checks all come from
there; an option given on the command line overrides the spec.  torch is imported only
inside :func:`run`.
"""

from __future__ import annotations

from pathlib import Path

HELP = "train a multi-task model (Shared-Bottom/OMoE/MMoE/PLE/ESMM) and write its prediction log"


def add_arguments(p) -> None:
    from ..mtl.config import TrainConfig, TrainData
    from ..schema import add_options

    p.add_argument("--spec", type=Path, default=None, help="TOML file with a [train] table of these settings")
    add_options(p, TrainData)
    add_options(p, TrainConfig)
    p.add_argument("--quiet", action="store_true", help="no progress bar and no table: one line saying where the log went")
    p.epilog = ("Every option can also be set in the spec's [train] table (the same key with underscores, "
                "lists as TOML arrays or comma-separated strings, paths relative to the spec file); an "
                "option given here overrides the spec.")


def _path_keys(model) -> list[str]:
    from ..schema import _base_type, keys

    return [k for k, info in keys(model).items() if _base_type(info.annotation)[0] is Path]


def settings(args):
    """(TrainData, TrainConfig): defaults <- the spec's [train] table <- command-line options,
    each checked by :mod:`fusiontune.mtl.config` (the one declaration of these settings)."""
    import tomllib

    from ..errors import StudyError
    from ..mtl.config import TrainConfig, TrainData
    from ..schema import keys, validate
    from ..study import check_train_table

    table: dict = {}
    src = "command line"
    if args.spec is not None:
        src = str(args.spec)
        if not args.spec.exists():
            raise StudyError(f"{args.spec}: spec file not found", param="spec")
        try:
            data = tomllib.loads(args.spec.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise StudyError(f"{args.spec}: invalid TOML: {exc}") from None
        raw = data.get("train")
        if not isinstance(raw, dict):
            raise StudyError(f"{args.spec}: no [train] table")
        check_train_table(raw, src)
        table = {k.replace("-", "_"): v for k, v in raw.items()}
        for k in _path_keys(TrainData):
            if isinstance(table.get(k), str) and not Path(table[k]).is_absolute():
                table[k] = str(args.spec.parent / table[k])
    data_keys, cfg_keys = keys(TrainData), keys(TrainConfig)
    given = {k: getattr(args, k) for k in (*data_keys, *cfg_keys) if getattr(args, k, None) is not None}
    merged = {**table, **given}
    spec_data = validate(TrainData, {k: v for k, v in merged.items() if k in data_keys}, src=src, table="train")
    config = validate(TrainConfig, {k: v for k, v in merged.items() if k in cfg_keys}, src=src, table="train")
    return spec_data, config


def build_spec(settings_pair):
    """The :class:`~fusiontune.mtl.config.TrainSpec` of ``settings()``; ``cgc`` is PLE with one level."""
    import dataclasses

    from ..mtl.config import TrainSpec

    spec_data, config = settings_pair
    if config.model == "cgc":
        config = dataclasses.replace(config, model="ple", levels=1)
    return TrainSpec(**{f.name: getattr(spec_data, f.name) for f in dataclasses.fields(spec_data)}, config=config)


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
    from ..errors import missing_dependency

    spec = build_spec(settings(args))
    try:
        import torch  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the install
        raise missing_dependency("torch", "fusiontune train", "pip install 'torch==2.13.0'") from None
    from ..mtl.train import train_to_log

    metrics = train_to_log(spec, show_progress=False if args.quiet else None)
    if not args.quiet:
        print_table(metrics)
    print(f"log: {spec.out}  metrics: {metrics['metrics_file']}"  # --quiet: this one line, where it went
          + (f"  study: {metrics['study_file']}" if "study_file" in metrics else "")
          + f"  ({metrics['seconds']:.1f}s, {metrics['epochs_run']} epochs, best {metrics['best_epoch']})")
    return 0
