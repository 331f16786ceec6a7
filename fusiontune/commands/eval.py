"""``fusiontune eval``: re-score a weight set (e.g. an exported weights.json) or an LTR fuser on a log.

A fuser is read from ONNX, LightGBM text or the DNN's ``.npz``; a pickle only with
``--trust-pickle`` (see :mod:`fusiontune.ltr.io`)."""

from __future__ import annotations

import json
from pathlib import Path

from .common import add_study_argument, load

HELP = ("re-score a weight set (weights.json|yaml) or an LTR fuser on the study's log or another one, vs the "
        "baseline")


def add_arguments(p) -> None:
    add_study_argument(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--params", type=Path, help="weights file written by `fusiontune export`")
    src.add_argument("--model", type=Path,
                     help="an LTR fuser: `fusiontune ltr` run directory, or an exported model.onnx / LightGBM "
                          "model.txt with its sidecar JSON")
    p.add_argument("--log", type=Path, default=None, help="prediction log to score (default: the study's)")
    p.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON to this file")
    from .score import add_trust_pickle

    add_trust_pickle(p)


def print_eval(res: dict) -> None:
    import sys

    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
    parts = res["parts"]
    table = Table(title=f"{res['study']} · {res['formula']} · {res['log']}", title_justify="left")
    table.add_column("task")
    for part, blk in parts.items():
        table.add_column(f"{part} ({blk['rows']} rows)", justify="right")
        table.add_column("Δ vs baseline", justify="right")
    first = next(iter(parts.values()))
    for t in first["per_task"]:
        cells = []
        for blk in parts.values():
            v, b = blk["per_task"][t], blk["baseline_per_task"][t]
            cells += [f"{v:.5f}", f"{v - b:+.5f}"]
        table.add_row(t, *cells)
    cells = []
    for blk in parts.values():
        cells += [f"{blk['objective']:.6f}", f"{blk['gain']:+.5f}"]
    table.add_row("objective", *cells, style="bold")
    console.print(table)
    for part, blk in parts.items():
        if not blk["feasible"]:
            console.print(f"warning: breaks a guardrail on the {part} part")


def run(args) -> int:
    from ..export import evaluate_params, read_weights
    from ..results import _jsonable, atomic_write_text

    study = load(args)
    if args.model is not None:
        from ..ltr.evaluate import evaluate_fuser
        from .score import load_model

        res = evaluate_fuser(study, load_model(args.model, args.trust_pickle), str(args.model), args.log)
    else:
        doc = read_weights(args.params)
        res = evaluate_params(study, doc, str(args.params), args.log)
    print_eval(res)
    if args.out:
        atomic_write_text(args.out, json.dumps(res, indent=2, default=_jsonable) + "\n")
        print(f"wrote {args.out}")
    return 0
