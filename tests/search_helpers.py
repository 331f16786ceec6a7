"""Shared fixtures-as-functions for the search tests: a small log with a known optimum."""

from __future__ import annotations

from pathlib import Path

from fusiontune.simulate import simulate_known_optimum, write_table

OPTIMUM = {"click": 1.0, "like": 0.6, "finish": 1.6}


def known_study(tmp: Path, rows: int = 20_000, split: bool = False, extra: str = "") -> Path:
    df = simulate_known_optimum(OPTIMUM, rows=rows, groups=rows // 20, seed=3)
    df["ts"] = range(len(df))
    write_table(df, tmp / "log.parquet")
    tasks = "".join(f'[[tasks]]\nname = "{t}"\nscore = "p_{t}"\nlabel = "{t}"\nweight = 1.0\nmetric = "auc"\n\n'
                    for t in OPTIMUM)
    text = f'''name = "known"
log = "log.parquet"
group = "request_id"
time = "ts"

{tasks}
[fusion]
formula = "multiplicative"
reference = "click"

[fusion.baseline]
a_click = 1.0
a_like = 0.1
a_finish = 0.1

[fusion.bounds]
a = [0.0, 3.0]
{'[split]' + chr(10) + 'by = "time"' + chr(10) + 'holdout = 0.3' + chr(10) if split else ''}
[search]
method = "cem"
budget = 96
population = 16
{extra}
'''
    path = tmp / "known.toml"
    path.write_text(text)
    return path


def sharded_study(log, budget: int, **over) -> dict:
    """The 4-task multiplicative study (weights, a sign -1 task, GAUC and AUC, a guardrail, a
    group split with a select part) that the sharded-log tests (Ray engine, bucketed logs) run."""
    d = {"name": "sharded", "log": str(log), "group": "request_id", "time": "ts", "weight": "w",
         "tasks": [{"name": "click", "score": "p_click", "label": "click", "metric": "gauc", "max_drop": 0.01},
                   {"name": "like", "score": "p_like", "label": "like", "weight": 0.6, "sign": -1},
                   {"name": "finish", "score": "p_finish", "label": "finish", "metric": "gauc"},
                   {"name": "convert", "score": "p_convert", "label": "convert", "weight": 0.8}],
         "fusion": {"formula": "multiplicative", "reference": "click",
                    "baseline": {"a_click": 1.0, "a_like": 0.2, "a_finish": 0.2, "a_convert": 0.1},
                    "bounds": {"a": [0.0, 3.0]}},
         "split": {"by": "group", "holdout": 0.3, "select": 0.15, "seed": 1},
         "search": {"method": "cem", "budget": budget, "population": 8, "seed": 0}}
    d.update(over)
    return d
