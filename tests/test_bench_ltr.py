"""benchmarks/bench_ltr.py --requests: feed6's study on a bigger log of the same simulator (issue 16)."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_ltr import best_formula, bigger_feed6  # noqa: E402

from fusiontune.pipeline import prepare  # noqa: E402
from fusiontune.simulate import simulate_feed6  # noqa: E402
from fusiontune.study import load_study  # noqa: E402


def test_bigger_feed6_is_feed6s_study_on_the_simulated_log(tmp_path):
    path = Path(bigger_feed6(300, str(tmp_path / "data"), data_seed=3))
    got, want = tomllib.loads(path.read_text()), tomllib.loads((ROOT / "studies" / "feed6.toml").read_text())
    log = Path(got.pop("log"))
    assert log.is_absolute() and log.parent == (tmp_path / "data").resolve()
    assert got.pop("name") == "feed6-300r"
    want.pop("log"), want.pop("name")
    assert got == want  # tasks, formula, baseline, bounds, split, search: unchanged
    df = pd.read_parquet(log)
    ref = simulate_feed6(300, 20, 3)
    assert len(df) == 6000
    assert np.array_equal(df["p_share"].to_numpy(), ref["p_share"].to_numpy())
    assert np.array_equal(df["convert"].to_numpy(), ref["convert"].to_numpy(), equal_nan=True)
    before = log.stat().st_mtime_ns
    assert bigger_feed6(300, str(tmp_path / "data"), data_seed=3) == str(path)  # made once, reused
    assert log.stat().st_mtime_ns == before
    prep = prepare(load_study(path))
    assert prep.holdout_log.n == 1800  # the time split's 0.3 holdout, whole requests


def test_best_formula_cache_reads_back_the_same_search(tmp_path, capsys):
    prep = prepare(load_study(bigger_feed6(200, str(tmp_path), data_seed=1)))
    first, _, _ = best_formula(prep, ["cma"], 0, 32, tmp_path)
    cached = list(tmp_path.glob("*.cma-b32-s0.json"))
    assert len(cached) == 1
    again, secs, method = best_formula(prep, ["cma"], 0, 32, tmp_path)
    assert "read back" in capsys.readouterr().out
    assert method == "cma" and secs > 0
    assert again["best"]["params"] == first["best"]["params"]
    assert again["holdout"]["best"]["objective"] == first["holdout"]["best"]["objective"]
