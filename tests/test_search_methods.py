"""Every search method improves on the baseline of a log with a known optimum; CLI errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from fusiontune.pipeline import prepare, search
from fusiontune.search.base import METHODS, make_searcher
from fusiontune.study import load_study

from search_helpers import OPTIMUM, known_study

ALL = ["cem", "cma", "tpe", "gp", "neighborhood", "random", "grid"]


@pytest.fixture(scope="module")
def prep(tmp_path_factory):
    return prepare(load_study(known_study(tmp_path_factory.mktemp("known"))))


def _angle(params: dict) -> float:
    """Angle (radians) between a weight vector and the known optimum direction."""
    a = np.array([params[f"a_{t}"] for t in OPTIMUM])
    b = np.array(list(OPTIMUM.values()))
    return float(np.arccos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1)))


@pytest.mark.parametrize("method", ALL)
def test_method_improves_on_baseline(prep, method):
    budget = 40 if method == "gp" else 96
    population = 8 if method == "gp" else 16
    result, trials = search(prep, method, budget, seed=1, population=population)
    assert len(trials) == result["evaluations"] <= budget
    assert result["method"] == method
    assert result["stop_reason"]
    base, best = result["baseline"], result["best"]
    assert best["objective"] > base["objective"] + 0.01  # the baseline is far from the optimum
    # and the best weights point closer to the known optimum than today's weights
    assert _angle(best["params"]) < _angle(base["params"]) - 0.1
    # trials.csv contract: one row per evaluation, metric columns, best is the max feasible row
    assert {"trial", "generation", "objective", "feasible", "penalised", "auc_click"} <= set(trials.columns)
    assert trials.loc[trials["feasible"], "objective"].max() == pytest.approx(best["objective"])


def test_all_methods_registered():
    make_searcher("cem", dim=2, x0=np.zeros(2))
    assert set(ALL) <= set(METHODS)


@pytest.mark.parametrize("method", ["cem", "cma", "neighborhood", "random", "grid", "tpe"])
def test_same_seed_same_trials(prep, method):
    _, a = search(prep, method, 48, seed=5, population=16)
    _, b = search(prep, method, 48, seed=5, population=16)
    np.testing.assert_array_equal(a[["a_like", "a_finish", "objective"]].to_numpy(),
                                  b[["a_like", "a_finish", "objective"]].to_numpy())


def test_grid_visits_baseline_first_and_stops_when_exhausted(prep):
    result, trials = search(prep, "grid", 1000, seed=0, population=16, options={"points": 4})
    assert len(trials) == 4 ** 2 + 1
    assert result["stop_reason"] == "grid exhausted"
    assert trials.loc[0, "a_like"] == pytest.approx(0.1) and trials.loc[0, "a_finish"] == pytest.approx(0.1)
    assert len(trials[["a_like", "a_finish"]].drop_duplicates()) == len(trials)


def test_early_stopping_says_why(prep):
    result, trials = search(prep, "random", 10_000, seed=0, population=8, patience=3, min_delta=1.0)
    assert "no improvement" in result["stop_reason"] and "3 generations" in result["stop_reason"]
    assert len(trials) == 4 * 8


@pytest.mark.parametrize("method", ["tpe", "gp"])
def test_optuna_samplers_respect_guardrails(tmp_path, method):
    # a guardrail on click the optimum direction breaks: Optuna models it as a constraint
    study = known_study(tmp_path, extra="")
    text = study.read_text().replace('name = "click"\nscore = "p_click"\nlabel = "click"\nweight = 1.0\nmetric = "auc"\n',
                                     'name = "click"\nscore = "p_click"\nlabel = "click"\nweight = 1.0\nmetric = "auc"\nmax_drop = 0.0\n')
    study.write_text(text)
    p = prepare(load_study(study))
    result, trials = search(p, method, 32 if method == "gp" else 64, seed=0, population=8)
    best = result["best"]
    assert best["per_task"]["click"] >= result["baseline"]["per_task"]["click"] - 1e-12
    assert (~trials["feasible"]).any()  # the constraint was active


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "fusiontune", *args], capture_output=True, text=True, cwd=cwd)


def test_unknown_method_exit_2(tmp_path):
    study = known_study(tmp_path)
    r = _cli("search", "--study", str(study), "--method", "annealing", "--out", str(tmp_path / "r"))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "unknown search method 'annealing'" in r.stderr
    assert not (tmp_path / "r" / "result.json").exists()


@pytest.mark.parametrize("method,option", [("cma", "popsize = 4"), ("tpe", "seed = 3"), ("grid", "points = 1"),
                                           ("gp", "deterministic_objective = 3")])
def test_bad_option_exit_2(tmp_path, method, option):
    study = known_study(tmp_path, extra=f"\n[search.{method}]\n{option}\n")
    r = _cli("search", "--study", str(study), "--method", method, "--out", str(tmp_path / "r"))
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and f"search.{method}" in r.stderr
    assert not (tmp_path / "r" / "result.json").exists()
