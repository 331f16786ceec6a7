"""The Ray engine on a real local Ray instance (one per module): the same trials and objectives
as the local engine (AUC and GAUC tasks, row weights, time and group splits), an actor killed
mid-search, a shard that cannot be read."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray", reason="the Ray engine's tests need ray (pip install 'fusiontune[ray]')")

from fusiontune.cli import main  # noqa: E402
from fusiontune.errors import InputError, StudyError  # noqa: E402
from fusiontune.pipeline import prepare, search  # noqa: E402
from fusiontune.simulate import simulate_log  # noqa: E402
from fusiontune.study import parse_study  # noqa: E402
from search_helpers import sharded_study  # noqa: E402


def study_dict(log, **over) -> dict:
    return sharded_study(log, 48, **{"name": "shards", **over})


@pytest.fixture(scope="module")
def ray_local():
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="error", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def log_file(tmp_path_factory):
    df = simulate_log(requests=400, candidates=10, seed=3)
    df["w"] = np.random.default_rng(5).uniform(0.5, 2.0, len(df)).round(3)
    df["part"] = df["request_id"] % 3  # a Hive-partitioned dataset: part=0/, part=1/, part=2/
    path = tmp_path_factory.mktemp("ray") / "log"
    pq.write_to_dataset(pa.Table.from_pandas(df, preserve_index=False), path, partition_cols=["part"])
    return path


def _run(study, engine, budget=48, on_batch=None):
    prep = prepare(study, engine=engine)
    try:
        result, trials = search(prep, "cem", budget, 0, 8, show_progress=False, on_batch=on_batch)
        return prep, result, trials
    finally:
        prep.close()


def _same(a, b, tol=1e-9):
    num = a.select_dtypes("number").columns
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    assert np.abs(a[num].to_numpy(float) - b[num].to_numpy(float)).max() <= tol
    assert (a["feasible"].to_numpy() == b["feasible"].to_numpy()).all()


@pytest.mark.parametrize("split", [{"by": "group", "holdout": 0.3, "select": 0.15, "seed": 1},
                                   {"by": "time", "holdout": 0.25, "select": 0.1}])
def test_same_trials_as_local(ray_local, log_file, split):
    study = parse_study(study_dict(log_file, split=split))
    _, res_l, tr_l = _run(study, "local")
    prep, res_r, tr_r = _run(study, {"name": "ray", "actors": 2})
    _same(tr_l, tr_r)
    assert res_r["split"] == res_l["split"]  # rows, groups and shares of each part, summed over shards
    assert res_r["rows"] == res_l["rows"]
    for key in ("best", "baseline"):
        a, b = res_l[key], res_r[key]
        assert a["params"] == b["params"]
        assert abs(a["objective"] - b["objective"]) <= 1e-9
    for key in ("best", "baseline"):  # the holdout, scored on the actors too
        assert abs(res_l["holdout"][key]["objective"] - res_r["holdout"][key]["objective"]) <= 1e-9
    assert res_r["engine"]["name"] == "ray" and res_r["engine"]["actors"] == 2
    # the select role's objective (what `fusiontune select` ranks on) agrees as well
    assert prep.engine.recoveries == 0


def test_select_objective_and_unweighted_auc_on_three_actors(ray_local, log_file):
    study = parse_study(study_dict(log_file, weight=None, split={"by": "group", "holdout": 0.3, "select": 0.2}))
    loc = prepare(study)
    prep = prepare(study, engine={"name": "ray", "actors": 3})
    try:
        theta = np.random.default_rng(0).uniform(0, 3, (5, 4))
        for role in ("objective", "select_objective", "holdout_objective"):
            a, b = getattr(loc, role).metrics(theta), getattr(prep, role).metrics(theta)
            assert np.abs(a - b).max() <= 1e-12, role
    finally:
        prep.close()


def test_actor_killed_mid_search(ray_local, log_file):
    """ray.kill after generation 2 and SIGKILL of an actor's process after generation 4: both
    are restarted, re-read their shard, and the trials are exactly the local engine's."""
    study = parse_study(study_dict(log_file))
    _, _, tr_l = _run(study, "local", budget=56)
    prep = prepare(study, engine={"name": "ray", "actors": 2})
    killed = []

    def on_batch(gen, x, theta, ev):
        if gen == 2:
            ray.kill(prep.engine.actors[0], no_restart=False)
            killed.append("ray.kill")
        if gen == 4:
            os.kill(prep.engine.pids()[1], signal.SIGKILL)
            killed.append("SIGKILL")
    try:
        _, tr_r = search(prep, "cem", 56, 0, 8, show_progress=False, on_batch=on_batch)
        assert killed == ["ray.kill", "SIGKILL"]
        assert prep.engine.recoveries >= 2
        _same(tr_l, tr_r)
        assert tr_r["trial"].tolist() == list(range(56))
    finally:
        prep.close()


def _toml(d: dict) -> str:
    """A study dict as a study file (the tables this module uses)."""
    def body(t: dict) -> list[str]:
        return [f"{k} = {json.dumps(v)}" for k, v in t.items() if not isinstance(v, dict) and v is not None]

    lines = body({k: v for k, v in d.items() if k != "tasks"})
    for t in d["tasks"]:
        lines += ["[[tasks]]", *body(t)]
    for name, table in d.items():
        if isinstance(table, dict):
            lines += [f"[{name}]", *body(table)]
            lines += [x for sub, v in table.items() if isinstance(v, dict) for x in (f"[{name}.{sub}]", *body(v))]
    return "\n".join(lines) + "\n"


def test_unreadable_shard_fails_with_one_line(ray_local, log_file, tmp_path, capsys):
    data = tmp_path / "log"  # a dataset directory: one good file, one that is not Parquet
    data.mkdir()
    pq.write_table(pq.read_table(next(log_file.glob("part=0/*.parquet"))), data / "a.parquet")
    bad = data / "b.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    study = tmp_path / "s.toml"
    study.write_text(_toml(study_dict(data)))
    out = tmp_path / "run"
    code = main(["search", "--study", str(study), "--engine", "ray", "--actors", "2", "--budget", "8",
                 "--out", str(out)])
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("ray engine:")]
    assert code == 2
    assert len(err) == 1 and str(bad) in err[0] and "cannot read" in err[0], err
    assert not out.exists()


def test_cli_engine_ray_writes_the_local_run(ray_local, log_file, tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(_toml(study_dict(log_file, name="cli", split={"by": "time", "holdout": 0.3},
                                     engine={"name": "ray", "actors": 2})))
    runs = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine
        assert main(["search", "--study", str(path), "--engine", engine, "--budget", "16", "--population", "8",
                     "--quiet", "--out", str(out)]) == 0
        runs[engine] = json.loads((out / "result.json").read_text())
    assert runs["ray"]["engine"]["actors"] == 2 and "engine" not in runs["local"]
    assert abs(runs["ray"]["best"]["objective"] - runs["local"]["best"]["objective"]) <= 1e-9
    assert runs["ray"]["best"]["params"] == runs["local"]["best"]["params"]


def test_what_the_ray_engine_refuses(ray_local, log_file):
    study = parse_study(study_dict(log_file, split={"by": "random", "holdout": 0.3}))
    with pytest.raises(StudyError, match="random"):
        prepare(study, engine="ray")
    study = parse_study(study_dict(log_file))
    prep = prepare(study, engine={"name": "ray", "actors": 1})
    try:
        with pytest.raises(InputError, match="grad surrogate"):
            search(prep, "grad", 8, 0, 8, show_progress=False)
    finally:
        prep.close()
