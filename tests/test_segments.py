"""Per-segment weights searched jointly ([segments], fusiontune/segments.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fusiontune as ft
from fusiontune.pipeline import prepare
from fusiontune.segments import DEFAULT, SegmentFormula, block_scores
from fusiontune.simulate import DEMO_BASELINE, simulate_segments

ROOT = Path(__file__).resolve().parents[1]
TASKS = [{"name": "click", "score": "p_click", "label": "click", "metric": "gauc", "max_drop": 0.02},
         {"name": "like", "score": "p_like", "label": "like", "weight": 0.6},
         {"name": "finish", "score": "p_finish", "label": "finish", "metric": "gauc"},
         {"name": "convert", "score": "p_convert", "label": "convert", "weight": 0.8}]


def _study(df, formula="multiplicative", segments=None, budget=96, method="cem", baseline=None, tasks=TASKS,
           split=None):
    base = dict(baseline or DEMO_BASELINE)
    if formula == "power":
        base.update({f"b_{t['name']}": 0.01 for t in tasks})
    return ft.Study(log=df, name="seg", group="request_id", time="ts", tasks=tasks,
                    fusion={"formula": formula, "reference": "click", "baseline": base},
                    split=split or {"by": "time", "holdout": 0.3},
                    search={"method": method, "budget": budget, "population": 16, "seed": 0},
                    segments=segments if segments is not None else {"column": "user_segment", "compare_global": False})


@pytest.fixture(scope="module")
def seg_df():
    return simulate_segments(requests=1500, candidates=10, seed=3, segments=3)


@pytest.mark.parametrize("formula", ["multiplicative", "power", "additive"])
def test_each_row_is_fused_with_its_segments_weights(seg_df, formula):
    prep = prepare(_study(seg_df, formula).config)
    assert isinstance(prep.formula, SegmentFormula)
    layout = prep.layout
    rng = np.random.default_rng(0)
    theta = prep.space.full(rng.random((3, prep.space.dim)))
    got = prep.formula.scores(prep.objective.prepared, theta)
    log = prep.objective.log
    base = prep.formula.base
    x = base.prepare(log)
    blk = layout.block_of(layout.keys_of(log))
    for p in range(3):
        per_block = layout.blocks_of_row(theta[p])[0]
        want = np.empty(log.n, dtype=np.float32)
        for b in range(len(layout.blocks)):
            rows = blk == b
            want[rows] = base.scores(np.ascontiguousarray(x[rows]), per_block[b][None, :])[0]
        np.testing.assert_array_equal(got[p], want)  # bit-identical to the one-weight-set kernel
        # alone or in a batch: the same scores
        np.testing.assert_array_equal(prep.formula.scores(prep.objective.prepared, theta[p:p + 1])[0], got[p])
        # the serving path (weights per segment, row by row) agrees too
        served = block_scores(base, layout, log, layout.block_params(theta[p]))
        np.testing.assert_array_equal(served, want)


@pytest.mark.parametrize("formula", ["multiplicative", "power"])
def test_torch_twin_matches_the_kernel(seg_df, formula):
    torch = pytest.importorskip("torch")
    prep = prepare(_study(seg_df, formula).config)
    theta = prep.space.full(np.random.default_rng(1).random((2, prep.space.dim)))
    x = torch.as_tensor(prep.objective.prepared, dtype=torch.float64)
    got = prep.formula.torch_scores(x, torch.as_tensor(theta)).numpy()
    want = prep.formula.scores(prep.objective.prepared, theta)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    # and a gradient reaches every block's parameters
    t = torch.as_tensor(theta[0]).requires_grad_(True)
    prep.formula.torch_scores(x, t).sum().backward()
    free = [prep.space.all_names.index(k) for k in prep.space.free if not k.endswith(f"@{DEFAULT}")]
    assert np.all(t.grad.numpy()[free] != 0)


def test_joint_space_and_normalisation(seg_df):
    prep = prepare(_study(seg_df).config)
    names = prep.space.all_names
    assert [n for n in names if n.startswith("a_like@")] == ["a_like@s0", "a_like@s1", "a_like@s2", "a_like@default"]
    # AUC tasks compare rows of different segments: only the largest segment's reference is pinned
    biggest = seg_df.user_segment.iloc[:int(0.7 * len(seg_df))].value_counts().idxmax()
    assert list(prep.space.pinned)[0] == f"a_click@{biggest}"
    assert f"a_click@{[s for s in ('s0', 's1', 's2') if s != biggest][0]}" in prep.space.free
    # no segment falls back: the default block is not searched (it stays today's weights)
    assert not any(k.endswith(f"@{DEFAULT}") for k in prep.space.free)
    # shared parameters are one coordinate
    prep2 = prepare(_study(seg_df, segments={"column": "user_segment", "share": ["a_click"],
                                             "compare_global": False}).config)
    assert "a_click" in prep2.space.pinned and not any(n.startswith("a_click@") for n in prep2.space.all_names)


def test_per_segment_pinning_only_where_scale_invariance_holds(seg_df):
    gauc_only = [dict(t, metric="gauc") for t in TASKS]
    prep = prepare(_study(seg_df, tasks=gauc_only).config)
    # every task a GAUC and every request inside one segment: each block's reference is pinned
    assert {f"a_click@{s}" for s in ("s0", "s1", "s2")} <= set(prep.space.pinned)
    assert prep.layout.per_segment_scale
    # a request split over two segments breaks the invariance: back to one pinned reference
    df = seg_df.copy()
    first = df.request_id == df.request_id.iloc[0]
    df.loc[first[first].index[:3], "user_segment"] = "s1" if df.user_segment.iloc[0] != "s1" else "s2"
    prep = prepare(_study(df, tasks=gauc_only).config)
    assert not prep.layout.per_segment_scale
    assert sum(k.startswith("a_click@") and not k.endswith(f"@{DEFAULT}") for k in prep.space.pinned) == 1


def test_min_rows_sends_small_segments_to_the_default_weights(seg_df):
    counts = seg_df.user_segment.iloc[:int(0.7 * len(seg_df))].value_counts()
    cut = int(counts.sort_values().iloc[0]) + 1  # the smallest segment falls below
    prep = prepare(_study(seg_df, segments={"column": "user_segment", "min_rows": cut,
                                            "compare_global": False}).config)
    small = counts.idxmin()
    assert small not in prep.layout.segments and prep.layout.default_used
    assert any(k.endswith(f"@{DEFAULT}") for k in prep.space.free)


@pytest.mark.parametrize("method", ["cem", "cma", "tpe", "neighborhood", "random", "grad"])
def test_every_method_searches_the_joint_space(seg_df, method):
    if method == "grad":
        pytest.importorskip("torch")
    res = _study(seg_df, method=method, budget=48).optimize()
    r = res.result
    seg = r["segments"]
    assert set(seg["params"]) == {"s0", "s1", "s2", DEFAULT}
    assert r["best"]["objective"] >= r["baseline"]["objective"] - 1e-12
    # the reported per-segment weights are the best joint row, block by block
    for s, params in seg["params"].items():
        for k, v in params.items():
            joint = k if k in r["best"]["params"] else f"{k}@{s}"
            assert r["best"]["params"][joint] == pytest.approx(v)
    assert set(seg["per_segment"]["s0"]) == {"in_sample", "holdout"}


def test_per_segment_guardrail_binds(seg_df):
    """Guard the (segment, task) the unguarded search gives up most: the guarded best keeps it
    within max_drop (the unguarded run shows the guardrail has something to stop)."""
    free = _study(seg_df, budget=160).optimize().result["segments"]["per_segment"]
    drops = {(s, t): v["in_sample"]["baseline"][t] - v["in_sample"]["best"][t]
             for s, v in free.items() if "best" in v["in_sample"] for t in v["in_sample"]["best"]}
    (seg, task), drop = max(drops.items(), key=lambda kv: kv[1])
    assert drop > 0.004, drops
    limit = drop / 4
    guarded = _study(seg_df, budget=160, segments={"column": "user_segment", "compare_global": False,
                                                   seg: {"max_drop": {task: limit}}}).optimize().result
    ps = guarded["segments"]["per_segment"][seg]["in_sample"]
    assert ps["baseline"][task] - ps["best"][task] <= limit + 1e-9
    assert guarded["segments"]["guardrails"] == {seg: {task: limit}}
    assert guarded["best"]["objective"] > guarded["baseline"]["objective"]


# --------------------------------------------------------------------------- bad input (CLI)
def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "fusiontune", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, env={"CI": "1", "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})


def _write(tmp_path, df, extra_toml="", compare=False):
    log = tmp_path / "log.parquet"
    df.to_parquet(log, index=False)
    (tmp_path / "s.toml").write_text(f'''name = "seg"
log = "log.parquet"
group = "request_id"
time = "ts"
[[tasks]]
name = "click"
score = "p_click"
label = "click"
metric = "gauc"
[[tasks]]
name = "convert"
score = "p_convert"
label = "convert"
[fusion]
formula = "multiplicative"
[fusion.baseline]
a_click = 1.0
a_convert = 0.2
[split]
by = "time"
holdout = 0.3
[search]
budget = 16
population = 8
[segments]
column = "user_segment"
compare_global = {str(compare).lower()}
{extra_toml}''')
    return tmp_path / "s.toml"


def _bad(tmp_path, df, extra, *needles):
    study = _write(tmp_path, df, extra)
    out = tmp_path / "run"
    proc = _cli("search", "--study", study, "--out", out)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    assert not out.exists()
    return lines[0]


def test_bad_input_nan_segment(tmp_path, seg_df):
    df = seg_df.copy()
    df.loc[17, "user_segment"] = None
    _bad(tmp_path, df, "", "'user_segment'", "row 18", "empty")


def test_bad_input_segment_absent_from_holdout(tmp_path, seg_df):
    df = seg_df.copy()
    late = df.ts >= df.ts.quantile(0.7)
    df.loc[late & (df.user_segment == "s2"), "user_segment"] = "s1"
    _bad(tmp_path, df, "", "segment 's2'", "none in the holdout", "min_rows")


def test_bad_input_segment_with_one_class(tmp_path, seg_df):
    df = seg_df.copy()
    df.loc[df.user_segment == "s0", "convert"] = np.where(df.loc[df.user_segment == "s0", "convert"].isna(),
                                                          np.nan, 0.0)
    _bad(tmp_path, df, "", "segment 's0'", "no positive", "'convert'")


def test_bad_input_baseline_of_unknown_segment(tmp_path, seg_df):
    _bad(tmp_path, seg_df, '[segments.vip]\nbaseline = {a_convert = 0.5}\n', "[segments.vip]", "'vip'",
         "not a value")


def test_bad_input_study_keys(tmp_path, seg_df):
    _bad(tmp_path, seg_df, 'share = ["a_like"]\n', "[segments] share", "'a_like'")
    _bad(tmp_path, seg_df, 'colum = "x"\n', "colum")


# --------------------------------------------------------------------------- simulator: does segmentation pay?
def _holdout_gain_over_global(identical: bool):
    from fusiontune.bootstrap import paired_bootstrap
    from fusiontune.segments import joint_of_global

    df = simulate_segments(requests=3000, candidates=10, seed=1, segments=3, identical=identical)
    res = _study(df, budget=300, split={"by": "time", "holdout": 0.4},
                 segments={"column": "user_segment"}).optimize()
    prep, r = res.prep, res.result
    best = prep.space.from_dict(r["best"]["params"])
    glob = joint_of_global(prep.layout, r["segments"]["global"]["params"])
    bs = paired_bootstrap(prep.holdout_objective, best[None, :], glob, 300, 0.95, 0, show_progress=False)
    assert bs.gain[0] == pytest.approx(r["segments"]["versus_global"]["holdout"], abs=1e-9)
    return bs.gain[0], bs.gain_lo[0], bs.gain_hi[0]


def test_segment_weights_beat_global_weights_when_segments_differ():
    gain, lo, hi = _holdout_gain_over_global(identical=False)
    assert lo > 0, (gain, lo, hi)  # the 95% interval of the holdout gain lies above zero


def test_segment_weights_do_not_beat_global_weights_on_identical_segments():
    gain, lo, hi = _holdout_gain_over_global(identical=True)
    assert lo < 0 and gain < 0.005, (gain, lo, hi)  # no significant gain: one weight set does as well


# --------------------------------------------------------------------------- outputs (CLI)
def test_export_eval_score_apply_segment_weights_row_by_row(tmp_path):
    df = simulate_segments(requests=800, candidates=10, seed=2, segments=3)
    study = _write(tmp_path, df, "min_rows = 1500\n", compare=True)
    run = tmp_path / "run"
    proc = _cli("search", "--study", study, "--out", run, "--budget", 32)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((run / "result.json").read_text())
    seg = result["segments"]
    assert "per-segment weights" in proc.stdout
    assert _cli("export", "--run", run, "--to", tmp_path / "w.json").returncode == 0
    doc = json.loads((tmp_path / "w.json").read_text())
    weights = doc["segments"]["weights"]
    assert doc["segments"]["columns"] == ["user_segment"] and set(weights) == set(seg["params"])
    for s, w in seg["params"].items():
        assert weights[s] == pytest.approx(w)
    # eval re-scores the exported weights: the same holdout objective as the search reported
    proc = _cli("eval", "--study", study, "--params", tmp_path / "w.json", "--out", tmp_path / "e.json")
    assert proc.returncode == 0, proc.stderr
    ev = json.loads((tmp_path / "e.json").read_text())
    assert ev["parts"]["holdout"]["objective"] == pytest.approx(result["holdout"]["best"]["objective"], abs=1e-9)
    assert set(ev["segments"]["per_segment"]) <= set(weights)
    # score: every row with its segment's weights (the default weights for a segment never seen)
    df2 = df.copy()
    df2.loc[:9, "user_segment"] = "unseen"
    df2.to_parquet(tmp_path / "new.parquet", index=False)
    proc = _cli("score", "--params", tmp_path / "w.json", "--log", tmp_path / "new.parquet", "--study", study,
                "--out", tmp_path / "scored.parquet")
    assert proc.returncode == 0, proc.stderr
    got = pd.read_parquet(tmp_path / "scored.parquet")["fused_score"].to_numpy()
    eps = 1e-6
    for s in ("s0", "s1", "s2", "unseen"):
        rows = (df2.user_segment == s).to_numpy()
        w = weights.get(s, weights[DEFAULT])
        want = sum(w[f"a_{t}"] * np.log(np.clip(df2.loc[rows, f"p_{t}"].to_numpy(np.float64), eps, 1.0))
                   for t in ("click", "convert"))
        np.testing.assert_allclose(got[rows], want, rtol=1e-5, atol=1e-5)
    # the report has the per-segment section with intervals and the comparison with global weights
    proc = _cli("report", "--run", run, "--resamples", 50, "--stability-resamples", 3, "--out", tmp_path / "r.md")
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "r.md").read_text()
    assert "## Per-segment weights" in text and "what segmentation buys" in text


def test_simulate_cli_writes_segments(tmp_path):
    out = tmp_path / "s.parquet"
    proc = _cli("simulate", "--segments", 3, "--requests", 200, "--candidates", 5, "--out", out)
    assert proc.returncode == 0, proc.stderr
    df = pd.read_parquet(out)
    assert sorted(df.user_segment.unique()) == ["s0", "s1", "s2"]
    assert (df.groupby("request_id").user_segment.nunique() == 1).all()  # a request lies in one segment
    proc = _cli("simulate", "--identical-segments", "--out", tmp_path / "x.parquet")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.parquet").exists()


def test_identical_segments_share_the_models():
    a = simulate_segments(requests=300, candidates=5, seed=4, segments=3, identical=True)
    d = simulate_segments(requests=300, candidates=5, seed=4, segments=3)
    from fusiontune.simulate import simulate_log

    plain = simulate_log(300, 5, 4)
    # identical segments: the very demo log plus a segment label; differing ones change the scores
    pd.testing.assert_frame_equal(a.drop(columns="user_segment"), plain)
    assert not np.allclose(d.p_like.to_numpy(), plain.p_like.to_numpy())


def test_resume_is_refused_with_per_segment_guardrails(seg_df, tmp_path):
    from fusiontune.errors import InputError
    from fusiontune.pipeline import search

    prep = prepare(_study(seg_df, segments={"column": "user_segment", "compare_global": False,
                                            "s0": {"max_drop": {"click": 0.01}}}).config)
    with pytest.raises(InputError, match="per-segment"):
        search(prep, "cem", 16, 0, 8, storage=f"sqlite:///{tmp_path / 'x.db'}", resume=True)


def test_a_learned_fuser_refuses_a_segmented_study(tmp_path, seg_df):
    study = _write(tmp_path, seg_df)
    proc = _cli("ltr", "--model", "gbdt", "--study", study, "--out", tmp_path / "ltr")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "[segments]" in proc.stderr and not (tmp_path / "ltr").exists()


def test_each_segment_starts_from_its_own_baseline(seg_df):
    from fusiontune.errors import FusiontuneError

    prep = prepare(_study(seg_df, segments={"column": "user_segment", "compare_global": False,
                                            "s0": {"baseline": {"a_like": 0.5}}}).config)
    base = prep.layout.block_params(prep.space.baseline)
    assert base["s0"]["a_like"] == 0.5 and base["s1"]["a_like"] == base[DEFAULT]["a_like"] == 0.2
    plain = prepare(_study(seg_df).config)
    # "today" is each segment at its own online weights: the baseline metrics differ
    assert not np.allclose(prep.objective.baseline_per_task, plain.objective.baseline_per_task)
    with pytest.raises(FusiontuneError, match="shared by every segment"):
        _study(seg_df, segments={"column": "user_segment", "share": ["a_like"], "s0": {"baseline": {"a_like": 0.5}}})
    counts = seg_df.user_segment.iloc[:int(0.7 * len(seg_df))].value_counts()
    with pytest.raises(FusiontuneError, match="min_rows"):
        prepare(_study(seg_df, segments={"column": "user_segment", "min_rows": int(counts.min()) + 1,
                                         counts.idxmin(): {"baseline": {"a_like": 0.5}}}).config)


def test_several_segment_columns_join_their_values(seg_df):
    df = seg_df.assign(surface=np.where(seg_df.request_id % 2 == 0, "feed", "search"))
    prep = prepare(_study(df, segments={"column": ["user_segment", "surface"], "compare_global": False}).config)
    assert prep.layout.segments == sorted(f"{s}|{f}" for s in ("s0", "s1", "s2") for f in ("feed", "search"))
    assert "a_like@s0|feed" in prep.space.free


def test_the_ray_engine_refuses_a_segmented_study(seg_df):
    from fusiontune.errors import FusiontuneError

    with pytest.raises(FusiontuneError, match=r"\[segments\].*local engine"):
        prepare(_study(seg_df).config, engine="ray")
