"""The trained-model fuser study (issue 16): feed5 table -> `fusiontune train` -> log -> formula vs fusers.

Real pieces end to end on a tiny size: the generator, the real MMoE training (torch), the real
search and the real line-up fusers with the study's context features; no timing asserts."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from fusiontune import cli  # noqa: E402
from fusiontune.mtl.synthetic import FEED5_CONTEXT, FEED5_TASKS, feed5_table  # noqa: E402

pytest.importorskip("torch")
pytest.importorskip("lightgbm")


def test_feed5_table_is_deterministic_and_truth_adds_columns_only():
    a, b = feed5_table(2000, seed=3), feed5_table(2000, seed=3)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(feed5_table(2000, seed=4))
    t = feed5_table(2000, seed=3, truth=True)
    pd.testing.assert_frame_equal(t[a.columns], a)
    assert [c for c in t.columns if c not in a.columns] == [f"q_{k}" for k in FEED5_TASKS]
    assert np.isnan(a.loc[a["click"] == 0, "convert"]).all()
    assert not np.isnan(a.loc[a["click"] == 1, "convert"]).any()
    for c in FEED5_CONTEXT:  # the fusers' context: numeric, constant within a request
        assert pd.api.types.is_numeric_dtype(a[c])
        assert (a.groupby("request_id")[c].nunique() == 1).all()
    # the tasks conflict through the creators' click-bait: finish is less likely where click is likelier
    assert np.corrcoef(t["q_click"], t["q_finish"])[0, 1] < np.corrcoef(t["q_like"], t["q_finish"])[0, 1]


def test_simulate_mtl_feed5_writes_the_table(tmp_path):
    out = tmp_path / "t.parquet"
    assert cli.main(["simulate", "--mtl", "--kind", "feed5", "--rows", "1000", "--seed", "2", "--out", str(out)]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out), feed5_table(1000, seed=2))


def test_trained_log_pipeline_end_to_end(tmp_path):
    """bench_ltr's mtlfeed5: the model scores only requests it never trained on, the log keeps the
    context, and the best formula and the line-up fusers (with the context features) run on it."""
    from bench_ltr import MTL_STUDIES, best_formula, trained_log

    from fusiontune.ltr.config import parse_config
    from fusiontune.ltr.fit import ensure_features
    from fusiontune.ltr.lineup import fit_lineup
    from fusiontune.mtl.data import split_rows
    from fusiontune.pipeline import prepare
    from fusiontune.study import load_study

    # a tiny, fast training run of the committed spec: 1 epoch, small nets (options override the spec)
    path = Path(trained_log("mtlfeed5", str(tmp_path), rows=8000, data_seed=1,
                            train_args=["--epochs", "1", "--expert-hidden", "16", "--tower-hidden", "8"]))
    spec = tomllib.loads(MTL_STUDIES["mtlfeed5"].read_text())
    got = tomllib.loads(path.read_text())
    assert got["tasks"] == spec["tasks"] and got["fusion"] == spec["fusion"] and got["ltr"] == spec["ltr"]

    table = pd.read_parquet(tmp_path / "mtlfeed5_8000rows_seed1_table.parquet")
    log = pd.read_parquet(Path(got["log"]))
    t = spec["train"]
    _, _, test = split_rows(len(table), (t["valid_fraction"], t["test_fraction"]), t["seed"],
                            table["request_id"].to_numpy())
    logged = set(table["request_id"].to_numpy()[test])
    assert set(log["request_id"]) == logged  # only the test part, whole requests
    assert len(log) == len(test)
    for c in [*FEED5_CONTEXT, *(f"p_{k}" for k in FEED5_TASKS)]:
        assert c in log.columns and np.isfinite(log[c].to_numpy(np.float64)).all()
    assert ((log[[f"p_{k}" for k in FEED5_TASKS]] > 0) & (log[[f"p_{k}" for k in FEED5_TASKS]] < 1)).all().all()

    study = load_study(path)
    prep = ensure_features(prepare(study), parse_config(study.sections.get("ltr"), None, str(path)).features)
    res, _, method = best_formula(prep, ["cma"], 0, 48, tmp_path)
    hobj = prep.holdout_objective
    for name in ("ltr-gbdt", "ltr-dnn"):
        r, _, fuser = fit_lineup(prep, name, 0, start=res["best"]["params"], options={"dnn": {"epochs": 3}})
        cc = r["ltr"]["context_check"]  # the context was offered, and kept only if it won on validation
        assert cc["context"] == list(FEED5_CONTEXT)
        assert fuser.spec.context == (list(FEED5_CONTEXT) if cc["kept_context"] else [])
        fused = fuser.predict(hobj.log)
        assert fused.shape == (hobj.log.n,) and np.isfinite(fused).all()
        j = float(hobj.score_metrics(np.asarray(fused, dtype=np.float64)[None, :])[0] @ hobj.w)
        assert j == pytest.approx(r["holdout"]["best"]["objective"], abs=1e-6)
        if r["ltr"].get("kept_formula"):  # kept the start formula: the best formula's holdout objective
            assert j == pytest.approx(res["holdout"]["best"]["objective"], abs=1e-4)
