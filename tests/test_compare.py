"""`fusiontune compare` on a tiny study writes the table; bad method names exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd

from fusiontune.compare import compare
from fusiontune.pipeline import prepare
from fusiontune.study import load_study

from search_helpers import known_study


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "fusiontune", *args], capture_output=True, text=True)


def test_compare_cli_writes_table(tmp_path):
    study = known_study(tmp_path, rows=8_000, split=True)
    out = tmp_path / "cmp"
    r = _cli("compare", "--study", str(study), "--methods", "cem,random,grid", "--budget", "48",
             "--seeds", "2", "--population", "16", "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"wrote {out / 'compare.md'}, compare.csv and runs.csv "
                                     f"(run {json.loads((out / 'run.json').read_text())['run_id']})"]
    assert ("| method | best in-sample | holdout | holdout lift | holdout wins | holdout guardrail breaks "
            "| evals to 99% |") in (out / "compare.md").read_text()
    table = pd.read_csv(out / "compare.csv")
    assert list(table["method"]) == ["cem", "random", "grid"]
    assert (table["runs"] == 2).all()
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 6 and set(runs["seed"]) == {0, 1}
    # the method that found the best gain reached 99% of it within the budget
    best = runs.loc[runs["gain_in_sample"].idxmax()]
    assert 1 <= best["evals_to_99"] <= 48
    assert (out / "compare.md").read_text().startswith("# known")


def test_compare_table_statistics(tmp_path):
    prep = prepare(load_study(known_study(tmp_path, rows=8_000, split=True)))
    res = compare(prep, ["cem", "random"], budget=32, seeds=3, population=16)
    for m, g in res.runs.groupby("method"):
        row = res.table.set_index("method").loc[m]
        assert row["best_mean"] == g["best_in_sample"].mean()
        assert row["holdout_win_share"] == ((g["holdout_lift"] > 0) & g["holdout_feasible"]).mean()
    assert res.target_gain == res.runs["gain_in_sample"].max()


def test_compare_unknown_method_exit_2(tmp_path):
    study = known_study(tmp_path, rows=4_000)
    r = _cli("compare", "--study", str(study), "--methods", "cem,annealing", "--budget", "16", "--seeds", "1",
             "--out", str(tmp_path / "cmp"))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "unknown method 'annealing'" in r.stderr
    assert not (tmp_path / "cmp").exists()


def test_compare_bad_option_fails_before_running(tmp_path):
    study = known_study(tmp_path, rows=4_000, extra="\n[search.cma]\nsigma = 0.3\n")
    r = _cli("compare", "--study", str(study), "--methods", "cem,cma", "--budget", "16", "--seeds", "1",
             "--out", str(tmp_path / "cmp"))
    assert r.returncode == 2 and "[search.cma]: unknown option 'sigma'" in r.stderr
