"""The `fusiontune` command end to end, including bad input behaviour."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from conftest import write_study

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = {"study", "method", "seed", "budget", "evaluations", "seconds", "formula", "best", "baseline", "holdout"}


def ft(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "fusiontune", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env={"CI": "1", "PATH": "/usr/bin:/bin",
                                                               "HOME": str(Path.home())})


def test_search_writes_the_result_contract(tmp_path, small_study):
    out = tmp_path / "run"
    proc = ft("search", "--study", small_study, "--budget", 64, "--out", out)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "result.json").read_text())
    assert CONTRACT <= set(result)
    assert result["evaluations"] == 64 and result["method"] == "cem" and result["formula"] == "multiplicative"
    assert set(result["best"]) >= {"params", "objective", "per_task", "feasible"}
    assert set(result["holdout"]) == {"best", "baseline"}
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 64
    assert {"a_click", "a_like", "objective", "gauc_click", "auc_like", "feasible"} <= set(trials.columns)
    assert "holdout" in proc.stdout and "objective" in proc.stdout


def test_same_seed_gives_the_same_result(tmp_path, small_study):
    runs = []
    for name in ("a", "b"):
        assert ft("search", "--study", small_study, "--budget", 48, "--seed", 3, "--quiet",
                  "--out", tmp_path / name).returncode == 0
        r = json.loads((tmp_path / name / "result.json").read_text())
        runs.append({k: r[k] for k in ("best", "baseline", "holdout", "evaluations", "lift", "best_trial",
                                       "stop_reason")})
    assert runs[0] == runs[1]


def test_default_study_runs_from_the_repository(tmp_path):
    proc = ft("search", "--budget", 32, "--quiet", "--out", tmp_path / "demo")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "demo" / "result.json").read_text())["study"] == "demo"


def check_one_line_error(proc, *needles):
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fusiontune: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_bad_log_is_one_line_exit_2_and_writes_nothing(tmp_path, small_log):
    df = pd.read_parquet(small_log)
    df.loc[17, "p_like"] = 3.0
    bad = tmp_path / "bad.csv"
    df.to_csv(bad, index=False)
    out = tmp_path / "run"
    proc = ft("search", "--study", write_study(tmp_path, bad), "--out", out)
    check_one_line_error(proc, "bad.csv", "'p_like'", "row 18", "3.0")
    assert not out.exists()


def test_bad_study_key_and_missing_column(tmp_path, small_log):
    study = write_study(tmp_path, small_log)
    study.write_text(study.read_text().replace('metric = "gauc"\nmax_drop', 'metrik = "gauc"\nmax_drop'))
    check_one_line_error(ft("search", "--study", study), "unknown key 'metrik'", "study.toml")
    df = pd.read_parquet(small_log).drop(columns=["finish"])
    log = tmp_path / "nofinish.parquet"
    df.to_parquet(log)
    check_one_line_error(ft("search", "--study", write_study(tmp_path, log)), "missing column 'finish'")
    check_one_line_error(ft("search", "--study", tmp_path / "none.toml"), "none.toml: study file not found")


def test_simulate_is_deterministic(tmp_path):
    for name in ("a.csv", "b.csv"):
        assert ft("simulate", "--out", tmp_path / name, "--requests", 50, "--candidates", 4).returncode == 0
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
