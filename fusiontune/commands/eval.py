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


def print_eval(res: dict, console=None) -> None:
    """Per-task metrics per part; one table per part when the side-by-side one is wider than
    the terminal (numbers are never cut)."""
    from ..tables import fits, stdout_console, table

    console = console or stdout_console()
    parts = res["parts"]
    console.print(f"{res['study']} · {res['formula']} · {res['log']}")
    first = next(iter(parts.values()))

    def rows(blocks):
        out = []
        for t in first["per_task"]:
            cells = []
            for blk in blocks:
                v, b = blk["per_task"][t], blk["baseline_per_task"][t]
                cells += [f"{v:.5f}", f"{v - b:+.5f}"]
            out.append([t, *cells])
        out.append(["objective", *[c for blk in blocks for c in (f"{blk['objective']:.6f}", f"{blk['gain']:+.5f}")]])
        return out

    def build(names):
        cols = [("task", "text")]
        for part in names:
            cols += [(f"{part} ({parts[part]['rows']} rows)", "num"), ("Δ vs baseline", "num")]
        t = table(cols)
        rs = rows([parts[p] for p in names])
        for i, r in enumerate(rs):
            t.add_row(*r, style="bold" if i == len(rs) - 1 else None)
        return t

    wide = build(list(parts))
    if fits(console, wide):
        console.print(wide)
    else:
        for part in parts:
            console.print(build([part]))
    for part, blk in parts.items():
        for task, g in blk.get("guardrails_broken", {}).items():
            console.print(f"warning: breaks the {task!r} guardrail on the {part} part: {task} drops by "
                          f"{-g['delta']:.5f} vs the baseline, more than its max_drop {g['max_drop']:g}")
        if not blk["feasible"] and not blk.get("guardrails_broken"):
            console.print(f"warning: breaks a guardrail on the {part} part")
    seg = res.get("segments")
    if seg:
        t = table([("segment", "text"), (f"{seg['part']} rows", "num"),
                   *[(f"Δ {k}", "num") for k in first["per_task"]], ("objective gain", "num")],
                  f"per segment ({seg['part']} rows; each row fused with its segment's weights)")
        for s, blk in seg["per_segment"].items():
            if "per_task" in blk:
                t.add_row(s, str(blk["rows"]), *[f"{blk['per_task'][k] - blk['baseline_per_task'][k]:+.5f}"
                                                 for k in first["per_task"]], f"{blk['gain']:+.5f}")
            else:
                t.add_row(s, str(blk["rows"]), *["–"] * len(first["per_task"]), "–")
        console.print(t)


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
