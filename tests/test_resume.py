"""Interrupted runs resume from their Optuna storage without losing or repeating a trial."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time

import pandas as pd
import pytest

from fusiontune.errors import InputError
from fusiontune.pipeline import prepare, search
from fusiontune.study import load_study

from search_helpers import known_study

COLS = ["a_like", "a_finish", "objective", "auc_click", "auc_like", "auc_finish", "feasible", "penalised"]


@pytest.fixture(scope="module")
def prep(tmp_path_factory):
    return prepare(load_study(known_study(tmp_path_factory.mktemp("resume"), split=True)))


class Stop(Exception):
    pass


def _interrupt_after(generations: int):
    def on_batch(gen, x, theta, ev):
        if gen >= generations:
            raise Stop
    return on_batch


@pytest.mark.parametrize("method", ["cem", "cma", "neighborhood", "random", "grid", "tpe"])
def test_interrupted_run_resumes_without_loss_or_repeat(prep, tmp_path, method):
    budget, pop = 100, 16  # 7 generations, the last one cut by the budget
    url = f"sqlite:///{tmp_path / 'study.db'}"
    straight, straight_trials = search(prep, method, budget, 3, pop)
    with pytest.raises(Stop):
        search(prep, method, budget, 3, pop, storage=url, on_batch=_interrupt_after(3))
    stored = sqlite3.connect(tmp_path / "study.db").execute("select count(*) from trials").fetchone()[0]
    assert stored == 3 * pop  # the three scored generations, each written whole
    result, trials = search(prep, method, budget, 3, pop, storage=url, resume=True)
    n = len(straight_trials)  # the budget, or fewer when the method converged first
    assert len(trials) == result["evaluations"] == n > 3 * pop
    assert n == budget or straight["stop_reason"] != "budget"
    assert result["storage"]["reused_evaluations"] == 3 * pop
    assert result["storage"]["new_evaluations"] == n - 3 * pop
    assert list(trials["trial"]) == list(range(n))
    # the storage holds every trial exactly once: one per (generation, slot)
    import optuna

    stored = optuna.load_study(study_name=result["storage"]["study_name"], storage=url).get_trials()
    keys = [(t.user_attrs["generation"], t.user_attrs["slot"]) for t in stored]
    assert len(keys) == len(set(keys)) == n
    assert sorted(t.user_attrs["objective"] for t in stored) == sorted(trials["objective"])
    assert {k for k in ("holdout", "best", "baseline", "stop_reason") if k in result} == \
        {"holdout", "best", "baseline", "stop_reason"}
    if method == "tpe":  # resumed from history: a valid run, not bit-identical to a straight one
        pd.testing.assert_frame_equal(trials[COLS].iloc[:3 * pop], straight_trials[COLS].iloc[:3 * pop])
        assert result["best"]["objective"] > result["baseline"]["objective"]
    else:  # deterministic replay: the resumed run IS the straight run
        pd.testing.assert_frame_equal(trials[COLS], straight_trials[COLS])
        assert result["best"] == straight["best"]
        assert result["holdout"] == straight["holdout"]
        assert result["stop_reason"] == straight["stop_reason"]


def test_resume_of_finished_run_evaluates_nothing(prep, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    first, t1 = search(prep, "cem", 64, 0, 16, storage=url)
    k0 = prep.objective.calls
    again, t2 = search(prep, "cem", 64, 0, 16, storage=url, resume=True)
    assert prep.objective.calls == k0
    assert again["storage"]["new_evaluations"] == 0
    assert again["best"] == first["best"]


def test_resume_refuses_other_settings_and_missing_runs(prep, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    search(prep, "cem", 32, 0, 16, storage=url)
    with pytest.raises(InputError, match="population"):
        search(prep, "cem", 32, 0, 8, storage=url, resume=True)
    with pytest.raises(InputError, match="nothing to resume"):
        search(prep, "cem", 32, 1, 16, storage=url, resume=True)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "fusiontune", *args], capture_output=True, text=True)


def test_killed_cli_run_resumes(tmp_path):
    """SIGKILL a real `fusiontune search` mid-run, then `--resume`: same trials as a straight run."""
    study = known_study(tmp_path, rows=60_000)
    out, ref = tmp_path / "run", tmp_path / "ref"
    args = ["search", "--study", str(study), "--method", "cem", "--budget", "480", "--population", "16",
            "--seed", "2", "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "fusiontune", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = out / "study.db"
    deadline = time.time() + 60
    stored = 0
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                stored = sqlite3.connect(db).execute("select count(*) from trials").fetchone()[0]
            except sqlite3.OperationalError:
                stored = 0
            if stored >= 32:
                break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if not db.exists() or (out / "result.json").exists():
        pytest.skip("the run finished before it could be killed")
    stored = sqlite3.connect(db).execute("select count(*) from trials").fetchone()[0]
    assert stored % 16 == 0  # whole generations only
    r = _cli(*args, "--out", str(out), "--resume")
    assert r.returncode == 0, r.stderr
    r = _cli(*args, "--out", str(ref))
    assert r.returncode == 0, r.stderr
    resumed, straight = pd.read_csv(out / "trials.csv"), pd.read_csv(ref / "trials.csv")
    assert len(resumed) == len(straight) > stored  # the budget, or where CEM converged
    pd.testing.assert_frame_equal(resumed, straight)
    assert sqlite3.connect(db).execute("select count(*) from trials").fetchone()[0] == len(straight)


def test_cli_resume_without_stored_run_exit_2(tmp_path):
    study = known_study(tmp_path)
    r = _cli("search", "--study", str(study), "--out", str(tmp_path / "r"), "--resume")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "nothing to resume" in r.stderr
