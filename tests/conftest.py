"""Shared fixtures: a small simulated log and a study that points at it."""

from pathlib import Path

import pytest

from fusiontune.simulate import DEMO_BASELINE, simulate_log, write_table

STUDY = """
name = "small"
log = "{log}"
group = "request_id"
time = "ts"

[[tasks]]
name = "click"
score = "p_click"
label = "click"
weight = 1.0
metric = "gauc"
max_drop = 0.02

[[tasks]]
name = "like"
score = "p_like"
label = "like"
weight = 0.6

[[tasks]]
name = "finish"
score = "p_finish"
label = "finish"
metric = "gauc"

[[tasks]]
name = "convert"
score = "p_convert"
label = "convert"
weight = 0.8

[fusion]
formula = "{formula}"
reference = "click"

[fusion.baseline]
{baseline}

[split]
by = "time"
holdout = 0.3

[search]
method = "cem"
budget = 96
population = 16
seed = 0
"""


def write_study(tmp_path: Path, log: Path, formula: str = "multiplicative", extra_baseline: str = "") -> Path:
    baseline = "\n".join(f"{k} = {v}" for k, v in DEMO_BASELINE.items()) + extra_baseline
    path = tmp_path / "study.toml"
    path.write_text(STUDY.format(log=log.as_posix(), formula=formula, baseline=baseline))
    return path


@pytest.fixture(scope="session")
def small_log(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "small.parquet"
    write_table(simulate_log(requests=1500, candidates=10, seed=1), path)
    return path


@pytest.fixture()
def small_study(tmp_path, small_log) -> Path:
    return write_study(tmp_path, small_log)
