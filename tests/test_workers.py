"""Many workers on one study (SQLite and a real PostgreSQL server): with 4 workers, one of them
SIGKILLed while it holds claimed candidates, the stored trials equal the budget (no duplicate
candidate or number, nothing lost) and cem/cma store exactly what one worker stores."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fusiontune.errors import InputError
from fusiontune.pipeline import prepare, search
from fusiontune.study import load_study

from pg_server import PgServer
from search_helpers import known_study

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pg():
    server = PgServer()
    reason = server.start()
    if reason:
        pytest.skip(f"no PostgreSQL server for this test: {reason}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def study_file(tmp_path_factory):
    return known_study(tmp_path_factory.mktemp("workers"), rows=30_000)


def _url(backend, pg_or_none, tmp_path, name):
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    return pg_or_none.new_database(name)


WORKER = r'''
import pathlib, sys, time
from fusiontune.study import load_study
from fusiontune.pipeline import prepare
from fusiontune.search.coordination import search_shared
study, url, method, budget, pop, go, out, slow = sys.argv[1:9]
prep = prepare(load_study(study))
if slow == "1":  # scores slowly, so it is killed while it holds claimed candidates
    real = prep.objective.metrics
    def metrics(theta):
        pathlib.Path(out + ".holding").touch()  # it holds claimed candidates now
        time.sleep(1.0)
        return real(theta)
    prep.objective.metrics = metrics
pathlib.Path(out + ".ready").touch()
while not pathlib.Path(go).exists():
    time.sleep(0.005)
result, trials = search_shared(prep, method, int(budget), 1, int(pop), storage=url, heartbeat_timeout=3.0,
                               show_progress=False)
trials.to_csv(out, index=False)
'''


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    env["NUMBA_NUM_THREADS"] = "1"
    return env


def _four_workers_one_killed(study_file, url, tmp_path, method, budget, pop):
    """Start a slow worker, then 3 more once it holds claimed candidates; SIGKILL the slow one
    while it holds them and let the other 3 finish; returns the survivors' trials tables."""
    import sqlalchemy as sa

    go, go_victim = tmp_path / "go", tmp_path / "go-victim"
    procs, outs = [], []
    for i in range(4):
        out = tmp_path / f"w{i}.csv"
        outs.append(out)
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER, str(study_file), url, method, str(budget),
                                       str(pop), str(go_victim if i == 0 else go), str(out), "1" if i == 0 else "0"],
                                      env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    victim = procs[0]
    try:
        deadline = time.time() + 120
        while not all(Path(str(o) + ".ready").exists() for o in outs):
            assert time.time() < deadline, "workers did not start"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs if p.poll() is not None]
            time.sleep(0.05)
        go_victim.touch()
        holding = Path(str(outs[0]) + ".holding")
        while time.time() < deadline and victim.poll() is None and not holding.exists():
            time.sleep(0.005)
        assert holding.exists(), ("the victim never held a claim", victim.poll(), victim.communicate())
        go.touch()
        time.sleep(0.3)  # the others are working too
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        for p in procs[1:]:
            _, err = p.communicate(timeout=240)
            assert p.returncode == 0, err
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with eng.connect() as c:  # the victim's claims were finished by the others
        left = c.execute(sa.text("SELECT count(*) FROM fusiontune_candidates WHERE state <> 2")).scalar()
    eng.dispose()
    assert left == 0
    return [pd.read_csv(o) for o in outs[1:]]


def _stored(url, name):
    import optuna

    study = optuna.load_study(study_name=name, storage=url)
    return study.get_trials(deepcopy=False)


@pytest.mark.parametrize("backend,method", [("sqlite", "cem"), ("postgresql", "cma"), ("postgresql", "tpe")])
def test_four_workers_one_killed(request, study_file, tmp_path, backend, method):
    from optuna.trial import TrialState

    pg = request.getfixturevalue("pg") if backend == "postgresql" else None
    url = _url(backend, pg, tmp_path, f"w_{method}")
    budget, pop = 96, 16
    tables = _four_workers_one_killed(study_file, url, tmp_path, method, budget, pop)
    trials = _stored(url, f"known-{method}-1")
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))  # no duplicate number
    keys = [(t.user_attrs["generation"], t.user_attrs["slot"]) for t in done]
    assert len(keys) == len(set(keys))  # no candidate stored twice
    for table in tables:  # every survivor reports the whole run
        assert len(table) == len(done)
        assert sorted(table["objective"]) == pytest.approx(sorted(t.user_attrs["objective"] for t in done))
    if method in ("tpe", "gp"):
        assert len(done) == budget  # nothing lost; the victim's asked trials are FAIL, never re-counted
        assert all(t.state in (TrialState.COMPLETE, TrialState.FAIL) for t in trials)
        return
    assert len(trials) == len(done)  # population methods leave no failed rows behind
    prep = prepare(load_study(study_file))
    straight, straight_trials = search(prep, method, budget, 1, pop)
    assert len(done) == len(straight_trials)  # the budget, or where the method converged
    ref = straight_trials.round(12)
    for table in tables:  # the same run as one worker with the same seed
        pd.testing.assert_frame_equal(table[ref.columns].round(12), ref, check_dtype=False)


def test_cli_workers_equal_one_worker_and_refuse_a_fresh_run(study_file, tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    args = [sys.executable, "-m", "fusiontune", "search", "--study", str(study_file), "--method", "cem",
            "--budget", "64", "--population", "16", "--seed", "4", "--storage", url, "--quiet"]
    r = subprocess.run([*args, "--workers", "2", "--out", str(tmp_path / "w")], capture_output=True, text=True,
                       env=_env())
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "fusiontune", "search", "--study", str(study_file), "--method", "cem",
                        "--budget", "64", "--population", "16", "--seed", "4", "--quiet", "--out",
                        str(tmp_path / "one")], capture_output=True, text=True, env=_env())
    assert r.returncode == 0, r.stderr
    shared, one = pd.read_csv(tmp_path / "w" / "trials.csv"), pd.read_csv(tmp_path / "one" / "trials.csv")
    pd.testing.assert_frame_equal(shared, one)
    # a fresh run on the stored name is refused with one line; nothing is deleted
    r = subprocess.run([*args, "--out", str(tmp_path / "again")], capture_output=True, text=True, env=_env())
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "--join" in r.stderr and "nothing was deleted" in r.stderr
    assert len(_stored(url, "known-cem-4")) == 64
    # joining the finished run scores nothing and reports it whole
    r = subprocess.run([*args, "--join", "--out", str(tmp_path / "j")], capture_output=True, text=True, env=_env())
    assert r.returncode == 0, r.stderr
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "j" / "trials.csv"), one)
    import json

    assert json.loads((tmp_path / "j" / "result.json").read_text())["storage"]["new_evaluations"] == 0


def test_join_refuses_other_settings_and_single_process_runs(study_file, tmp_path):
    from fusiontune.search.coordination import search_shared

    prep = prepare(load_study(study_file))
    url = f"sqlite:///{tmp_path / 's.db'}"
    search_shared(prep, "random", 32, 0, 16, storage=url)
    with pytest.raises(InputError, match="population"):
        search_shared(prep, "random", 32, 0, 8, storage=url)
    search(prep, "random", 32, 1, 16, storage=url)
    with pytest.raises(InputError, match="single-process"):
        search_shared(prep, "random", 32, 1, 16, storage=url)


def test_missing_driver_names_the_extra():
    from fusiontune.search.storage import open_storage

    with pytest.raises(InputError, match=r"fusiontune\[postgres\]"):
        open_storage("postgresql+pg8000://u@127.0.0.1:1/db")  # pg8000 is not installed


def test_fast_path_writes_what_public_add_trials_writes(study_file, tmp_path, monkeypatch):
    """The batched write uses Optuna's RDB models (not public API): it must store exactly what
    Optuna's public add_trials stores, and is only used on the Optuna majors it was tested on."""
    import optuna

    from fusiontune.search import storage

    supported = storage.fast_path_supported(optuna.__version__)
    assert supported == (int(optuna.__version__.split(".")[0]) in (4, 5))
    assert not storage.fast_path_supported("6.0.0") and not storage.fast_path_supported("dev")
    prep = prepare(load_study(study_file))
    fast_url, slow_url = f"sqlite:///{tmp_path / 'fast.db'}", f"sqlite:///{tmp_path / 'slow.db'}"
    r1, t1 = search(prep, "cem", 48, 2, 16, storage=fast_url)
    monkeypatch.setattr(storage, "fast_path_supported", lambda version=None: False)
    r2, t2 = search(prep, "cem", 48, 2, 16, storage=slow_url)
    pd.testing.assert_frame_equal(t1, t2)
    a, b = _stored(fast_url, "known-cem-2"), _stored(slow_url, "known-cem-2")
    assert [(t.number, t.state, t.value, t.params, t.distributions, t.user_attrs, t.system_attrs) for t in a] == \
        [(t.number, t.state, t.value, t.params, t.distributions, t.user_attrs, t.system_attrs) for t in b]
    if not supported:
        pytest.skip(f"Optuna {optuna.__version__}: the fast path is off (public add_trials is used)")


def test_shared_tpe_constraints_are_public_optuna_constraints(study_file, tmp_path):
    """tpe/gp workers share the study the Optuna way; guardrails are Optuna constraints."""
    from fusiontune.search.coordination import search_shared

    text = study_file.read_text().replace('metric = "auc"\n', 'metric = "auc"\nmax_drop = 0.0\n')
    path = study_file.parent / "guarded.toml"
    path.write_text(text)
    prep = prepare(load_study(path))
    url = f"sqlite:///{tmp_path / 't.db'}"
    result, trials = search_shared(prep, "tpe", 24, 0, 8, storage=url)
    stored = _stored(url, "known-tpe-0")
    assert len(stored) == len(trials) == 24
    for t in stored:  # feasible <=> Optuna's constraint <= 0
        assert (t.constraints["guardrails"] <= 0) == t.user_attrs["feasible"]
    assert sorted(t.user_attrs["feasible"] for t in stored) == sorted(trials["feasible"])
    assert np.isfinite(result["best"]["objective"])


RACE = r'''
import pathlib, sys, time
from fusiontune.study import load_study
from fusiontune.pipeline import prepare
from fusiontune.search.coordination import SharedStudy
from fusiontune.search.storage import run_config
study, url, go = sys.argv[1:4]
prep = prepare(load_study(study))
config = run_config(prep, "cem", 0, 16, {}, 32, 0, 1e-6)
pathlib.Path(go + "." + str(__import__("os").getpid())).touch()
while not pathlib.Path(go).exists():
    time.sleep(0.002)
SharedStudy(url, "known-cem-0", prep, config).close()
'''


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_four_fresh_workers_create_one_study_without_racing(request, study_file, tmp_path, backend):
    import optuna

    pg = request.getfixturevalue("pg") if backend == "postgresql" else None
    url = _url(backend, pg, tmp_path, "race")
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(study_file), url, str(go)], env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    deadline = time.time() + 120
    while len(list(tmp_path.glob("go.*"))) < 4 and time.time() < deadline:
        time.sleep(0.02)
    go.touch()  # all four open the empty database at once: schema, study and settings
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    summaries = optuna.get_all_study_summaries(url, include_best_trial=False)
    assert [s.study_name for s in summaries] == ["known-cem-0"]


def test_gp_bounded_window_and_cheaper_acquisition(study_file):
    """gp fits each batch's GP on at most `window` trials (the best half and the most recent),
    and its cheaper acquisition settings reach Optuna's GPSampler (attributes Optuna does not
    document: this fails, rather than silently doing nothing, if an Optuna renames them)."""
    import optuna

    from fusiontune.search.base import make_searcher
    from fusiontune.search.gp import ACQ_ATTRS

    s = make_searcher("gp", dim=2, x0=np.full(2, 0.5), seed=0, population=8, options={"window": 6}, budget=40)
    for key, attr in ACQ_ATTRS.items():
        assert getattr(s._sampler, attr) == s.opts[key]
    s.constrained = False
    study = optuna.create_study(direction="maximize")
    values = [5.0, 1.0, 9.0, 2.0, 8.0, 0.0, 3.0, 4.0, 7.0, 6.0]
    for v in values:
        study.add_trial(optuna.trial.create_trial(params={"x0": 0.5, "x1": 0.5}, distributions=s.dists, value=v))
    kept = s._window_trials(study.get_trials())
    # the best three (numbers 2, 4, 8), then the most recent until six (9, 7, 6), in trial order
    assert [t.number for t in kept] == [2, 4, 6, 7, 8, 9]
    prep = prepare(load_study(study_file))
    result, trials = search(prep, "gp", 32, 1, 8, options={"window": 10})
    assert len(trials) == 32  # exact budget with the windowed batches
    assert result["best"]["objective"] > result["baseline"]["objective"] + 0.01
    for _, batch in trials.groupby("generation"):  # a batch spreads out (pending trials)
        assert len(batch[["a_like", "a_finish"]].drop_duplicates()) == len(batch)


def test_claims_are_atomic_and_an_interrupted_worker_hands_them_back(study_file, tmp_path):
    from fusiontune.search.coordination import SharedStudy
    from fusiontune.search.storage import run_config

    prep = prepare(load_study(study_file))
    url = f"sqlite:///{tmp_path / 'c.db'}"
    config = run_config(prep, "cem", 0, 8, {}, 32, 0, 1e-6)
    a, b = SharedStudy(url, "known-cem-0", prep, config), SharedStudy(url, "known-cem-0", prep, config)
    x = np.random.default_rng(0).random((8, prep.space.dim))
    assert a.publish(1, x) and not b.publish(1, x)  # written once; the second worker checks it
    with pytest.raises(InputError, match="other candidates"):
        b.publish(1, x[::-1])
    got_a, got_b = a.claim(1, 5), b.claim(1, 5)
    assert got_a == [0, 1, 2, 3, 4] and got_b == [5, 6, 7]  # each candidate to exactly one worker
    assert b.claim(1, 5) == []  # a's claims are fresh: not claimable
    a.release()  # interrupted
    assert b.claim(1, 8) == [0, 1, 2, 3, 4]
    a.close()
    b.close()
