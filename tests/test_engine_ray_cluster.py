"""The Ray engine on a 2-node ``ray.cluster_utils.Cluster`` on this machine: one actor per node,
joined by address, the same trials as the local engine, and an actor's process killed mid-search."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the Ray engine's tests need ray (pip install 'fusiontune[ray]')")

from fusiontune.pipeline import prepare, search  # noqa: E402
from fusiontune.simulate import simulate_log, write_table  # noqa: E402
from fusiontune.study import parse_study  # noqa: E402

from test_engine_ray import _same, study_dict  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    yield c
    if ray.is_initialized():
        ray.shutdown()
    c.shutdown()


def test_two_nodes_same_trials_and_a_killed_actor(cluster, tmp_path):
    df = simulate_log(requests=300, candidates=10, seed=11)
    df["w"] = np.random.default_rng(2).uniform(0.5, 2.0, len(df)).round(3)
    write_table(df, tmp_path / "log.parquet")
    study = parse_study(study_dict(tmp_path / "log.parquet", split={"by": "time", "holdout": 0.3}))
    loc = prepare(study)
    res_l, tr_l = search(loc, "cem", 40, 0, 8, show_progress=False)
    prep = prepare(study, engine={"name": "ray", "address": cluster.address, "actors": 2})
    killed = []

    def on_batch(gen, x, theta, ev):
        if gen == 2:
            os.kill(prep.engine.pids()[0], signal.SIGKILL)
            killed.append(gen)
    try:
        nodes = {w["node"] for w in prep.engine.workers()}
        assert len(nodes) == 2  # one shard per node
        res_r, tr_r = search(prep, "cem", 40, 0, 8, show_progress=False, on_batch=on_batch)
        assert killed == [2] and prep.engine.recoveries >= 1
        _same(tr_l, tr_r)
        assert abs(res_l["holdout"]["best"]["objective"] - res_r["holdout"]["best"]["objective"]) <= 1e-9
    finally:
        prep.close()
    assert not ray.is_initialized()  # the engine joined by address and let go of it


def test_two_nodes_grad_and_screening_after_a_random_split(cluster, tmp_path):
    """grad (its surrogate from a sample of whole groups gathered from both nodes) and cem with
    screening levels cut on each node, after a random split: the local engine's trials."""
    from test_engine_ray import GRAD, _close

    df = simulate_log(requests=300, candidates=10, seed=12)
    df["w"] = np.random.default_rng(3).uniform(0.5, 2.0, len(df)).round(3)
    write_table(df, tmp_path / "log.parquet")
    d = study_dict(tmp_path / "log.parquet", split={"by": "random", "holdout": 0.3, "seed": 7})
    d["search"]["screening"] = [0.4]
    study = parse_study(d)
    opts = {**GRAD, "sample_rows": 1200}
    loc = prepare(study)
    runs_l = [search(loc, "grad", 40, 0, 8, show_progress=False, options=opts, screening=[]),
              search(loc, "cem", 24, 0, 8, show_progress=False)]
    prep = prepare(study, engine={"name": "ray", "address": cluster.address, "actors": 2})
    try:
        assert len({w["node"] for w in prep.engine.workers()}) == 2
        runs_r = [search(prep, "grad", 40, 0, 8, show_progress=False, options=opts, screening=[]),
                  search(prep, "cem", 24, 0, 8, show_progress=False)]
    finally:
        prep.close()
    for (res_l, tr_l), (res_r, tr_r) in zip(runs_l, runs_r):
        _close(tr_l, tr_r)
        assert res_r["split"] == res_l["split"]
    assert runs_r[1][0]["screening"] == runs_l[1][0]["screening"]
