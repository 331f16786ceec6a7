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
    """search on Ray after a random split with a select part, then `select` on that run: the same
    result and the same A/B arms as the local engine's run (select reads the log in one process and
    cuts the same random split)."""
    path = tmp_path / "s.toml"
    path.write_text(_toml(study_dict(log_file, name="cli", split={"by": "random", "holdout": 0.3, "select": 0.15,
                                                                  "seed": 3},
                                     engine={"name": "ray", "actors": 2})))
    runs, arms = {}, {}
    for engine in ("local", "ray"):
        out = tmp_path / engine
        assert main(["search", "--study", str(path), "--engine", engine, "--budget", "16", "--population", "8",
                     "--quiet", "--out", str(out)]) == 0
        runs[engine] = json.loads((out / "result.json").read_text())
        assert main(["select", "--run", str(out), "--resamples", "50", "--quiet"]) == 0
        arms[engine] = json.loads((out / "candidates.json").read_text())["arms"]
    assert runs["ray"]["engine"]["actors"] == 2 and "engine" not in runs["local"]
    assert abs(runs["ray"]["best"]["objective"] - runs["local"]["best"]["objective"]) <= 1e-9
    assert runs["ray"]["best"]["params"] == runs["local"]["best"]["params"]
    assert runs["ray"]["split"] == runs["local"]["split"]
    assert [a["params"] for a in arms["ray"]] == [a["params"] for a in arms["local"]] and arms["local"]
    for a, b in zip(arms["local"], arms["ray"]):
        assert abs(a["objective"] - b["objective"]) <= 1e-9


# small: CI time, with grad's default sharpening and guardrail fan (which amplify any difference
# in the exact metrics grad conditions on: grad rounds them, search/grad.py QUANTUM)
GRAD = {"starts": 1, "maxiter": 15, "calibrate": 1, "margin_steps": 1, "pairs": 4_000}


def _close(a, b, tol=1e-9):
    """The same trials: parameters, objectives and metrics to ``tol`` (the engines' sums differ
    in their last bits; grad conditions on metrics rounded far above that, so it proposes the
    very same points), feasibility equal."""
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    num = a.select_dtypes("number").columns
    assert np.abs(a[num].to_numpy(float) - b[num].to_numpy(float)).max() <= tol
    assert (a["feasible"].to_numpy() == b["feasible"].to_numpy()).all()


class Stop(Exception):
    pass


@pytest.mark.parametrize("method, search_over, grad_over", [
    ("grad", {}, {"sample_rows": 1500}),  # a sample smaller than the search part: whole groups by hash
    ("cma", {"warm_start": "grad"}, {})])  # the whole search part: exactly the local surrogate
def test_grad_surrogate_same_trials_as_local(ray_local, log_file, tmp_path, method, search_over, grad_over):
    d = study_dict(log_file, split={"by": "time", "holdout": 0.3})
    d["search"].update(search_over)
    gopts = {**GRAD, **grad_over}
    d["search"]["grad"] = gopts  # the surrogate options of warm_start = "grad"
    opts = gopts if method == "grad" else None  # the method's own table, as the search command passes it
    study = parse_study(d)
    loc = prepare(study)
    res_l, tr_l = search(loc, method, 48, 0, 8, show_progress=False, options=opts)
    prep = prepare(study, engine={"name": "ray", "actors": 2})
    try:
        res_r, tr_r = search(prep, method, 48, 0, 8, show_progress=False, options=opts)
        _close(tr_l, tr_r)
        assert abs(res_l["best"]["objective"] - res_r["best"]["objective"]) <= 1e-9
        assert abs(res_l["holdout"]["best"]["objective"] - res_r["holdout"]["best"]["objective"]) <= 1e-9
        # only the sample reached the driver, and it is the very sample one process draws
        from fusiontune.surrogate import surrogate_sample

        cap = gopts.get("sample_rows", 300_000)
        a, b = surrogate_sample(loc.objective, cap), surrogate_sample(prep.objective, cap)
        assert (a.fraction < 1.0) == ("sample_rows" in grad_over) and a.n == b.n < loc.objective.n_rows + 1
        np.testing.assert_array_equal(a.prepared, b.prepared)
        np.testing.assert_array_equal(a.label_codes, b.label_codes)
        np.testing.assert_array_equal(a.weights, b.weights)
        np.testing.assert_array_equal(np.unique(a.groups, return_inverse=True)[1], b.groups)
        if method == "grad":  # interrupted after two generations and resumed from the storage, on Ray
            url = f"sqlite:///{tmp_path / 'study.db'}"

            def stop(gen, x, theta, ev):
                if gen >= 2:
                    raise Stop
            with pytest.raises(Stop):
                search(prep, method, 48, 0, 8, show_progress=False, options=opts, storage=url, on_batch=stop)
            res_s, tr_s = search(prep, method, 48, 0, 8, show_progress=False, options=opts, storage=url, resume=True)
            assert res_s["storage"]["reused_evaluations"] == (tr_l["generation"] <= 2).sum()
            _close(tr_l, tr_s)
    finally:
        prep.close()


def test_screening_and_random_split_same_as_local(ray_local, log_file):
    """cem with screening on nested group subsamples, after a random split: each actor cuts the
    levels from its own groups, and the trials, shares and costs are the local engine's, also
    when an actor is killed mid-search (restarted, it gets its split and levels again)."""
    d = study_dict(log_file, split={"by": "random", "holdout": 0.3, "select": 0.1, "seed": 4})
    d["search"].update({"screening": [0.25, 0.5], "screening_keep": 0.5})
    study = parse_study(d)
    loc = prepare(study)
    res_l, tr_l = search(loc, "cem", 40, 0, 8, show_progress=False)
    prep = prepare(study, engine={"name": "ray", "actors": 3})

    def kill(gen, x, theta, ev):
        if gen == 2:
            ray.kill(prep.engine.actors[1], no_restart=False)
    try:
        res_r, tr_r = search(prep, "cem", 40, 0, 8, show_progress=False, on_batch=kill)
        assert prep.engine.recoveries >= 1
        _same(tr_l, tr_r)
        assert res_r["screening"] == res_l["screening"] and res_l["screening"]["screened"] > 0
        assert res_r["split"] == res_l["split"] and res_l["split"]["groups_in_two_parts"] == 0
        assert abs(res_l["holdout"]["best"]["objective"] - res_r["holdout"]["best"]["objective"]) <= 1e-9
    finally:
        prep.close()


def test_without_groups_random_split_screening_and_grad(ray_local, tmp_path):
    """A log without a group column: each row is its own unit (its position among the rows read),
    for the random split, the screening levels and the surrogate's sample alike."""
    df = simulate_log(requests=300, candidates=8, seed=9)
    path = tmp_path / "log"
    pq.write_to_dataset(pa.Table.from_pandas(df.assign(part=df["request_id"] % 2), preserve_index=False), path,
                        partition_cols=["part"])
    d = study_dict(path, group=None, weight=None, split={"by": "random", "holdout": 0.3, "seed": 2})
    for t in d["tasks"]:
        t["metric"] = "auc"
    d["tasks"][0]["max_drop"] = 0.01
    d["search"].update({"screening": [0.3]})
    study = parse_study(d)
    loc = prepare(study)
    res_l, tr_l = search(loc, "cem", 24, 1, 8, show_progress=False)
    prep = prepare(study, engine={"name": "ray", "actors": 2})
    try:
        res_r, tr_r = search(prep, "cem", 24, 1, 8, show_progress=False)
        _same(tr_l, tr_r)
        assert res_r["split"] == res_l["split"] and res_r["screening"] == res_l["screening"]
        from fusiontune.surrogate import surrogate_sample

        a, b = surrogate_sample(loc.objective, 600), surrogate_sample(prep.objective, 600)  # rows by position
        assert a.fraction < 1.0 and a.groups is None and b.groups is None and a.n == b.n
        np.testing.assert_array_equal(a.prepared, b.prepared)
        np.testing.assert_array_equal(a.label_codes, b.label_codes)
    finally:
        prep.close()


def test_what_the_ray_engine_refuses(ray_local, log_file):
    study = parse_study(study_dict(log_file, fusion={**study_dict(log_file)["fusion"],
                                                                   "formula": "rank", "rank_scope": "global"}))
    with pytest.raises(StudyError, match="rank_scope"):
        prepare(study, engine="ray")
