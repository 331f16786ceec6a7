"""Run directories: result.json + trials.csv, written atomically; the terminal summary."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError

__all__ = ["write_run", "read_run", "atomic_write_text", "print_summary", "default_run_dir"]


def default_run_dir(study: str, method: str, seed: int) -> Path:
    return Path("runs") / f"{study}-{method}-{seed}"


def _jsonable(o):
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temp file in the same folder, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a report is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_run(out: Path, result: dict, trials: pd.DataFrame) -> None:
    """trials.csv first, result.json last: a run dir with result.json is complete."""
    out = Path(out)
    atomic_write_text(out / "trials.csv", trials.to_csv(index=False, float_format="%.10g"))
    atomic_write_text(out / "result.json", json.dumps(result, indent=2, default=_jsonable) + "\n")


def read_run(run_dir: Path) -> tuple[dict, pd.DataFrame]:
    run_dir = Path(run_dir)
    rj = run_dir / "result.json"
    if not rj.exists():
        raise InputError(f"{rj}: not found (is {run_dir} a finished run directory?)")
    try:
        result = json.loads(rj.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{rj}: invalid JSON: {exc}") from None
    tc = run_dir / "trials.csv"
    trials = pd.read_csv(tc) if tc.exists() else pd.DataFrame()
    return result, trials


def run_study(run_dir: Path):
    """The :class:`~fusiontune.study.Study` a run was made with, or ``None`` when the run
    records none (e.g. a directory without result.json: the caller reports that)."""
    from .study import load_study

    rj = Path(run_dir) / "result.json"
    if not rj.exists():
        return None
    try:
        sf = json.loads(rj.read_text(encoding="utf-8")).get("study_file")
    except json.JSONDecodeError:
        return None  # read_run reports it
    if sf and Path(sf).exists():
        return load_study(sf)
    return None


def _fmt_delta(d: float) -> str:
    return f"{d:+.5f}"


def print_summary(result: dict, out_dir: Path | None = None, console=None) -> None:
    """One screen: best vs baseline per task, in-sample and on the holdout.

    On a terminal too narrow for the nine columns (80 columns is), the in-sample and
    holdout parts print as two stacked tables; numbers are never cut."""
    from .tables import fits, stdout_console, table

    console = console or stdout_console()
    hold = result.get("holdout")
    title = (f"{result['study']} · {result['method']} · seed {result['seed']} · {result['formula']} · "
             f"{result['evaluations']} evaluations in {result['seconds']:.1f}s ({result.get('stop_reason', '')})")
    tasks = {t["name"]: t for t in result.get("tasks", [])}
    rows_in, rows_hold = [], []
    for name, b in result["baseline"]["per_task"].items():
        t = tasks.get(name, {})
        best = result["best"]["per_task"][name]
        rows_in.append([name, t.get("metric", ""), f"{t.get('weight', 0):g}", f"{b:.5f}", f"{best:.5f}",
                        _fmt_delta(best - b)])
        if hold:
            hb, hv = hold["baseline"]["per_task"][name], hold["best"]["per_task"][name]
            rows_hold.append([f"{hb:.5f}", f"{hv:.5f}", _fmt_delta(hv - hb)])
    jb, jv = result["baseline"]["objective"], result["best"]["objective"]
    rows_in.append(["objective", "", "", f"{jb:.5f}", f"{jv:.5f}", _fmt_delta(jv - jb)])
    if hold:
        hb, hv = hold["baseline"]["objective"], hold["best"]["objective"]
        rows_hold.append([f"{hb:.5f}", f"{hv:.5f}", _fmt_delta(hv - hb)])
    cols_in = [("task", "text"), ("metric", "text"), ("weight", "num"), ("baseline", "num"), ("best", "num"),
               ("delta", "num")]
    cols_hold = [("holdout base", "num"), ("holdout best", "num"), ("holdout delta", "num")]

    def build(cols, rows, title_):
        t = table(cols, title_)
        for i, r in enumerate(rows):
            t.add_row(*r, style="bold" if i == len(rows) - 1 else None)
        return t

    wide = build(cols_in + (cols_hold if hold else []),
                 [a + b for a, b in zip(rows_in, rows_hold)] if hold else rows_in, None)
    console.print(title)
    if not hold or fits(console, wide):
        console.print(wide)
    else:  # stack: in-sample table, then the holdout table
        console.print(build(cols_in, rows_in, "in-sample"))
        console.print(build([("task", "text")] + [(c.replace("holdout ", ""), k) for c, k in cols_hold],
                            [[r[0]] + h for r, h in zip(rows_in, rows_hold)], "holdout"))
    params = ", ".join(f"{k}={v:.4g}" for k, v in result["best"]["params"].items())
    console.print(f"best params: {params}")
    if result.get("on_bounds"):
        at = ", ".join(f"{b['param']}={b['value']:.4g} ({b['bound']})" for b in result["on_bounds"])
        console.print(f"on a bound: {at} -- the optimum may lie beyond; widen [fusion.bounds] to check")
    if result.get("note"):
        console.print(f"note: {result['note']}")
    if hold:
        lift = hold["best"]["objective"] - hold["baseline"]["objective"]
        verdict = "win" if lift > 0 else "do NOT beat the baseline"
        feas = "" if hold["best"].get("feasible", True) else " but break a guardrail there"
        console.print(f"holdout lift {lift:+.5f}: the best weights {verdict} on held-out data{feas}")
    if out_dir is not None:
        console.print(f"wrote {Path(out_dir) / 'result.json'} and trials.csv")
