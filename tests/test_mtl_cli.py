"""End to end: synthetic table -> `fusiontune train` -> log + study -> `fusiontune search`;
the spec file, ESMM, bad input, and torch not imported by commands that do not train."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from fusiontune import cli

FEATURES = "user_activity,item_quality,item_age_days,price,hour"
CATEGORICAL = "user_segment,item_category,device"


def test_cli_does_not_import_torch():
    code = ("import fusiontune.cli as c; c.build_parser(); import sys; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
    code2 = ("import sys; from fusiontune.cli import main; "
             "rc = main(['search', '--budget', '16', '--quiet', '--out', sys.argv[1]]); "
             "assert rc == 0; assert 'torch' not in sys.modules, 'search imported torch'")
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([sys.executable, "-c", code2, d], check=True, cwd=cli.__file__.rsplit("/fusiontune/", 1)[0])


@pytest.fixture(scope="module")
def feed(tmp_path_factory):
    pytest.importorskip("torch")
    d = tmp_path_factory.mktemp("feed")
    assert cli.main(["simulate", "--mtl", "--kind", "feed", "--rows", "6000", "--seed", "1",
                     "--out", str(d / "feed.parquet")]) == 0
    return d


def test_train_log_study_search(feed, capsys):
    d = feed
    rc = cli.main(["train", "--data", str(d / "feed.parquet"), "--features", FEATURES,
                   "--categorical", CATEGORICAL, "--tasks", "click,like,convert", "--group", "request_id",
                   "--time", "ts", "--pass-through", "item_category", "--model", "ple", "--levels", "2",
                   "--epochs", "3", "--batch-size", "256", "--lr", "3e-3", "--balance", "uncertainty",
                   "--out", str(d / "log.parquet"), "--study-out", str(d / "study.toml"), "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out.splitlines()  # --quiet: one line saying where the log went
    assert len(out) == 1 and out[0].startswith(f"log: {d / 'log.parquet'}"), out
    log = pd.read_parquet(d / "log.parquet")
    for t in ("click", "like", "convert"):
        assert f"p_{t}" in log and t in log
        assert log[f"p_{t}"].between(0, 1).all()
    assert {"request_id", "ts", "item_category"} <= set(log.columns)
    assert log["convert"].isna().any() and (log["convert"].isna() == (log["click"] == 0)).all()
    src = pd.read_parquet(d / "feed.parquet")
    assert 0.1 < len(log) / len(src) < 0.3  # the test part only
    assert set(log["request_id"]).isdisjoint(set(src["request_id"]) - set(log["request_id"]))
    # the labels in the log are the source rows' labels
    merged = log.merge(src, on=["request_id", "ts", "item_category"], suffixes=("", "_src"))
    assert len(merged) >= len(log)
    metrics = json.loads((d / "log.metrics.json").read_text())
    assert metrics["rows"]["test"] == len(log) and metrics["model"] == "ple"
    for t in ("click", "like"):
        assert 0.55 < metrics["test"][t]["auc"] <= 1.0
        assert "gauc" in metrics["test"][t]
    # the study runs as is
    out = d / "run"
    assert cli.main(["search", "--study", str(d / "study.toml"), "--budget", "48", "--quiet",
                     "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["baseline"]["params"] == {"a_click": 1.0, "a_like": 1.0, "a_convert": 1.0}
    assert result["best"]["objective"] >= result["baseline"]["objective"] - 1e-9
    assert "holdout" in result and (out / "trials.csv").exists()


def test_spec_file_and_esmm(feed):
    d = feed
    spec = d / "esmm.toml"
    spec.write_text(f"""
[train]
data = "feed.parquet"
features = [{", ".join(repr(f) for f in FEATURES.split(","))}]
categorical = "{CATEGORICAL}"
tasks = ["click", "convert"]
group = "request_id"
model = "esmm"
epochs = 2
batch_size = 256
out = "esmm_log.csv"
study_out = "esmm_study.toml"
""".replace("'", '"'))
    assert cli.main(["train", "--spec", str(spec), "--balance", "dwa", "--quiet"]) == 0
    log = pd.read_csv(d / "esmm_log.csv")
    assert {"p_click", "p_convert", "p_ctcvr", "click", "convert", "request_id"} <= set(log.columns)
    # p_convert is pCVR = pCTCVR / pCTR
    assert np.allclose(log["p_ctcvr"], log["p_click"] * log["p_convert"], rtol=1e-4, atol=1e-7)
    metrics = json.loads((d / "esmm_log.metrics.json").read_text())
    assert metrics["esmm_score"] == "cvr" and metrics["test"]["convert"]["rows"] == int(log["convert"].notna().sum())
    assert cli.main(["search", "--study", str(d / "esmm_study.toml"), "--budget", "16", "--quiet",
                     "--out", str(d / "run_esmm")]) == 0
    assert (d / "run_esmm" / "result.json").exists()


def test_regression_mode(tmp_path):
    pytest.importorskip("torch")
    assert cli.main(["simulate", "--mtl", "--rows", "3000", "--dim", "10", "--correlation", "0.9",
                     "--out", str(tmp_path / "m.parquet")]) == 0
    rc = cli.main(["train", "--data", str(tmp_path / "m.parquet"), "--features",
                   ",".join(f"x{i}" for i in range(10)), "--tasks", "y1,y2", "--task-type", "regression",
                   "--model", "mmoe", "--epochs", "4", "--batch-size", "128", "--lr", "3e-3",
                   "--out", str(tmp_path / "reg.parquet"), "--quiet"])
    assert rc == 0
    m = json.loads((tmp_path / "reg.metrics.json").read_text())
    for t in ("y1", "y2"):  # better than predicting the mean
        assert m["test"][t]["mse"] < 0.8 * m["test"][t]["label_variance"]


@pytest.mark.parametrize("extra, expect", [
    (["--features", FEATURES, "--tasks", "click,nope"], "missing column 'nope'"),
    (["--features", "user_activity", "--tasks", "click,price"], "label column 'price' must be 0, 1 or empty"),
    (["--features", "device", "--tasks", "click"], "numeric feature column 'device' is not numeric"),
    (["--features", FEATURES, "--tasks", "click,like,convert", "--model", "esmm"], "esmm needs exactly 2 tasks"),
    (["--features", FEATURES, "--tasks", "click", "--valid-fraction", "0.9"], "valid + test < 1"),
    (["--features", FEATURES, "--tasks", "click", "--out", "bad.txt"], "unknown file type"),
])
def test_bad_input_one_line(feed, capsys, extra, expect):
    d = feed
    args = ["train", "--data", str(d / "feed.parquet"), "--out", str(d / "bad.parquet"), *extra]
    if "--out" in extra:
        args[args.index("bad.txt")] = str(d / "bad.txt")
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fusiontune: error:") and expect in err[0], err
    assert not (d / "bad.parquet").exists() and not (d / "bad.txt").exists()
