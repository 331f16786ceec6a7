"""Honest selection: arms picked on the select rows, judged on holdout rows nothing chose on;
dropped candidates with reasons; report flags (max_drop, guardrails, baseline, stability)."""

import json

import numpy as np
import pandas as pd
import pytest

from conftest import STUDY
from fusiontune.cli import main
from fusiontune.pipeline import metric_columns, prepare, summarise_params
from fusiontune.results import write_run
from fusiontune.select import load_run, select_arms
from fusiontune.simulate import DEMO_BASELINE, simulate_known_optimum, simulate_log, write_table
from fusiontune.study import load_study

SPLIT3 = '[split]\nby = "group"\nholdout = 0.25\nselect = 0.25\nseed = 2\n'


def _study(tmp_path, log, split=SPLIT3, max_drop="max_drop = 0.02\n", name="study.toml"):
    baseline = "\n".join(f"{k} = {v}" for k, v in DEMO_BASELINE.items())
    text = STUDY.format(log=log.as_posix(), formula="multiplicative", baseline=baseline)
    text = text.replace('[split]\nby = "time"\nholdout = 0.3\n', split)
    text = text.replace("max_drop = 0.02\n", max_drop)
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def run3(tmp_path_factory, small_log):
    tmp = tmp_path_factory.mktemp("honest")
    out = tmp / "run"
    assert main(["search", "--study", str(_study(tmp, small_log)), "--budget", "96", "--quiet", "--out",
                 str(out)]) == 0
    return out


def _hand_run(tmp_path, study_path, theta, name="run", **extra):
    """A run directory whose trials are the given parameter rows, scored exactly."""
    prep = prepare(load_study(study_path))
    ev = prep.objective.evaluate(np.asarray(theta, dtype=float))
    trials = pd.DataFrame(np.asarray(theta, dtype=float), columns=prep.space.all_names)
    trials.insert(0, "generation", np.arange(len(trials)) // 4)
    trials.insert(0, "trial", range(len(trials)))
    trials["objective"] = ev.objective
    for j, c in enumerate(metric_columns(prep.study)):
        trials[c] = ev.per_task[:, j]
    trials["feasible"] = ev.feasible
    trials["penalised"] = ev.penalised
    result = summarise_params(prep, trials, "hand", 0, len(trials), 0.0, "budget")
    result.update(extra)
    run = tmp_path / name
    write_run(run, result, trials)
    return run, prep, ev


def test_select_picks_on_the_select_rows_and_judges_on_the_holdout(run3):
    c = select_arms(run3, k=3, resamples=100, level=0.9)
    result, trials, prep = load_run(run3)
    assert c["picked_on"] == "select" and c["evaluated_on"] == "holdout"
    assert c["pick_rows"] == prep.select_log.n and c["rows"] == prep.holdout_log.n
    assert "nothing chose on" in c["honesty"]
    arms = c["arms"]
    assert arms and arms[0]["pick"]["gain"]["value"] == max(a["pick"]["gain"]["value"] for a in arms)
    # the holdout numbers are the holdout objective's, the pick numbers the select part's
    theta = np.array([[a["params"][n] for n in prep.space.all_names] for a in arms])
    np.testing.assert_allclose([a["objective"] for a in arms], prep.holdout_objective.metrics(theta)
                               @ prep.holdout_objective.w, atol=1e-12)
    np.testing.assert_allclose([a["pick"]["objective"] for a in arms], prep.select_objective.metrics(theta)
                               @ prep.select_objective.w, atol=1e-12)


def test_every_candidate_is_an_arm_or_dropped_with_a_reason(run3):
    c = select_arms(run3, k=2, resamples=100, candidates=20)
    assert c["candidates_considered"] == 20
    assert len(c["arms"]) + len(c["dropped"]) == 20
    trials = [a["trial"] for a in c["arms"]] + [d["trial"] for d in c["dropped"]]
    assert len(set(trials)) == 20
    for d in c["dropped"]:
        assert d["reason"] in ("guardrail", "gain-ci-below-zero", "same-as-baseline", "dominated",
                               "not-diverse", "holdout-gain-below-zero") and d["detail"]
    assert sum(c["dropped_counts"].values()) == len(c["dropped"])
    best = json.loads((run3 / "result.json").read_text())["best_trial"]
    sb = c["search_best"]
    assert sb["trial"] == best
    if sb["status"] == "dropped":
        assert any(d["trial"] == best and d["is_search_best"] for d in c["dropped"])
    else:
        assert any(a["trial"] == best and a["is_search_best"] and a["name"] == sb["status"] for a in c["arms"])


def test_arm_picking_never_reads_the_holdout_rows(run3):
    """Scramble the holdout rows' labels and scores: the arms and every drop stay the same."""
    result, trials, prep = load_run(run3)
    ref = select_arms(loaded=(result, trials, prep), k=3, resamples=100)
    log = prep.log
    role_hold = np.zeros(log.n, bool)
    from fusiontune.log import HOLDOUT, split_roles

    sp = prep.study.split
    role_hold = split_roles(log, sp["by"], sp["holdout"], sp["select"], sp["seed"]).role == HOLDOUT
    rng = np.random.default_rng(0)
    df = pd.read_parquet(prep.study.log)
    idx = np.flatnonzero(role_hold)
    for col in ("p_click", "p_like", "p_finish", "p_convert", "click", "finish"):
        df.loc[idx, col] = df[col].to_numpy()[rng.permutation(idx)]
    scrambled = run3.parent / "scrambled.parquet"
    write_table(df, scrambled)
    study2 = load_study(_study(run3.parent, scrambled, name="scrambled.toml"))
    prep2 = prepare(study2)
    np.testing.assert_array_equal(prep2.select_log.scores, prep.select_log.scores)  # same roles
    assert not np.array_equal(prep2.holdout_log.scores, prep.holdout_log.scores)
    got = select_arms(loaded=(result, trials, prep2), k=3, resamples=100)
    assert [a["params"] for a in got["arms"]] == [a["params"] for a in ref["arms"]]
    assert [a["pick"] for a in got["arms"]] == [a["pick"] for a in ref["arms"]]
    assert [(d["trial"], d["reason"]) for d in got["dropped"]] == [(d["trial"], d["reason"]) for d in ref["dropped"]]
    assert [a["gain"] for a in got["arms"]] != [a["gain"] for a in ref["arms"]]  # the judging did change
    # the test can fail: scrambling the select rows instead does change what is picked on
    df = pd.read_parquet(prep.study.log)
    sel = np.flatnonzero(split_roles(log, sp["by"], sp["holdout"], sp["select"], sp["seed"]).role == 1)
    for col in ("p_click", "p_finish", "click", "finish"):
        df.loc[sel, col] = df[col].to_numpy()[rng.permutation(sel)]
    write_table(df, scrambled)
    prep3 = prepare(study2)
    other = select_arms(loaded=(result, trials, prep3), k=3, resamples=100)
    assert [a["pick"] for a in other["arms"]] != [a["pick"] for a in ref["arms"]]


def test_candidate_with_a_gain_interval_below_zero_is_dropped(tmp_path, small_log):
    study = _study(tmp_path, small_log, max_drop="")  # no guardrail: every trial is feasible
    base = [DEMO_BASELINE[k] for k in ("a_click", "a_like", "a_finish", "a_convert")]
    good = [1.0, 0.2, 0.35, 0.3]
    bad = [1.0, 0.0, 0.0, 0.0]  # click only: a little better on click, clearly worse overall
    run, prep, ev = _hand_run(tmp_path, study, [good, bad, base])
    assert ev.objective[1] < ev.objective[2]
    c = select_arms(run, k=3, resamples=200)
    d = {x["trial"]: x for x in c["dropped"]}
    assert d[1]["reason"] == "gain-ci-below-zero" and d[1]["pick_gain"]["hi"] < 0
    assert "below zero" in d[1]["detail"]
    assert all(a["trial"] != 1 for a in c["arms"]) and c["arms"][0]["trial"] == 0
    assert d[1]["params"]["a_like"] == 0.0 and "dominated" not in d[1]["detail"]
    assert d[2]["reason"] == "same-as-baseline"  # the baseline itself is no arm


def test_arm_whose_holdout_gain_interval_is_below_zero_is_dropped_not_replaced(tmp_path, small_log, capsys):
    """On the holdout rows the finish and convert labels are flipped: the candidate that leans
    on them wins the pick on the select rows and loses clearly on the holdout. It is dropped
    with its reason and a note, and no other candidate takes its place."""
    from fusiontune.log import HOLDOUT, split_roles

    prep = prepare(load_study(_study(tmp_path, small_log, max_drop="")))
    sp = prep.study.split
    hold = np.flatnonzero(split_roles(prep.log, sp["by"], sp["holdout"], sp["select"], sp["seed"]).role == HOLDOUT)
    df = pd.read_parquet(small_log)
    for col in ("finish", "convert"):
        v = df[col].to_numpy(dtype=float)
        df.loc[hold, col] = np.where(np.isnan(v[hold]), np.nan, 1 - v[hold])
    flipped = tmp_path / "flipped.parquet"
    write_table(df, flipped)
    study = _study(tmp_path, flipped, max_drop="", name="flipped.toml")
    base = [DEMO_BASELINE[k] for k in ("a_click", "a_like", "a_finish", "a_convert")]
    run, prep, ev = _hand_run(tmp_path, study, [[1.0, 0.2, 0.6, 0.5], [1.0, 0.5, 0.2, 0.1], base])
    c = select_arms(run, k=3, resamples=200)
    d = {x["trial"]: x for x in c["dropped"]}
    assert d[0]["reason"] == "holdout-gain-below-zero" and d[0]["holdout_gain"]["hi"] < 0
    assert d[0]["pick_gain"]["value"] > 0  # it did win the pick
    assert "below zero" in d[0]["detail"] and "never chooses" in d[0]["detail"]
    assert [a["trial"] for a in c["arms"]] == [1] and c["arms"][0]["name"] == "arm-2"  # not replaced, not renamed
    assert all("holdout-gain-below-zero" not in a["flags"] for a in c["arms"])
    assert c["search_best"] == {"trial": 0, "status": "dropped", "reason": "holdout-gain-below-zero",
                                "detail": d[0]["detail"]}
    assert any(n.startswith("arm-1 dropped") and "do not test it" in n for n in c["notes"])
    assert c["dropped_counts"]["holdout-gain-below-zero"] == 1
    # the same candidates on the unflipped log: nothing is dropped on the holdout
    run2, _, _ = _hand_run(tmp_path, _study(tmp_path, small_log, max_drop="", name="plain.toml"),
                           [[1.0, 0.2, 0.6, 0.5], [1.0, 0.5, 0.2, 0.1], base], name="plain")
    c2 = select_arms(run2, k=3, resamples=200)
    assert all(x["reason"] != "holdout-gain-below-zero" for x in c2["dropped"])
    assert 0 in [a["trial"] for a in c2["arms"]]
    capsys.readouterr()


def test_report_flags_a_best_that_breaks_a_guardrail_on_the_holdout(tmp_path, small_log, capsys):
    """max_drop is set between the best's in-sample and holdout click drop: feasible in-sample,
    broken on the holdout; the report shows max_drop and says so."""
    study = _study(tmp_path, small_log, max_drop="")
    cands = [[1.0, lk, a, c_] for lk in (0.05, 0.2, 0.6) for a in (0.3, 0.5, 0.8, 1.2) for c_ in (0.1, 0.3, 0.6, 1)]
    prep = prepare(load_study(study))
    d_in = prep.objective.metrics(np.array(cands))[:, 0] - prep.objective.baseline_per_task[0]
    h = prep.holdout_objective
    d_ho = h.metrics(np.array(cands))[:, 0] - h.baseline_per_task[0]
    i = int(np.argmax(d_in - d_ho))  # the candidate whose click drop is largest on the holdout vs in-sample
    assert d_ho[i] < d_in[i] < 0
    md = round(float(-(d_in[i] + d_ho[i]) / 2), 6)
    study = _study(tmp_path, small_log, max_drop=f"max_drop = {md:.6f}\n", name="guarded.toml")
    run, prep, ev = _hand_run(tmp_path, study, [cands[i]])
    assert ev.feasible[0]
    js = tmp_path / "r.json"
    assert main(["report", "--run", str(run), "--format", "json", "--out", str(js), "--resamples", "100",
                 "--stability-resamples", "10"]) == 0
    err = capsys.readouterr().err
    rep = json.loads(js.read_text())
    assert rep["guardrails"]["max_drop"]["click"] == pytest.approx(md, abs=1e-6)
    best_ho = [c for c in rep["guardrails"]["checks"] if c["who"] == "best" and c["part"] == "holdout"]
    assert best_ho[0]["status"] == "breaks" and best_ho[0]["task"] == "click"
    assert "best drops click by" in err and "max_drop" in err
    html = tmp_path / "r.html"
    assert main(["report", "--run", str(run), "--out", str(html), "--resamples", "50",
                 "--stability-resamples", "10"]) == 0
    text = html.read_text()
    assert "Guardrails" in text and "max_drop" in text and "BREAKS" in text
    assert f"<td>{md:g}</td>" in text


def test_report_compares_the_best_with_the_baseline_and_names_bounds(tmp_path, small_log, capsys):
    study = _study(tmp_path, small_log, max_drop="")
    worse = [[1.0, 3.0, 0.0, 0.0], [1.0, 2.5, 0.0, 0.1]]  # both below the baseline
    run, prep, ev = _hand_run(tmp_path, study, worse, on_bounds=[{"param": "a_like", "bound": "high",
                                                                   "value": 3.0}])
    assert (ev.objective < prep.objective.baseline_per_task @ prep.objective.w).all()
    js = tmp_path / "b.json"
    assert main(["report", "--run", str(run), "--format", "json", "--out", str(js), "--resamples", "50",
                 "--stability-resamples", "10"]) == 0
    rep = json.loads(js.read_text())
    w = " ".join(rep["warnings"])
    assert "does not beat the always-feasible baseline" in w and "keep the baseline" in w
    assert "on a bound" in w and "a_like = 3 (high)" in w
    md = tmp_path / "b.md"
    assert main(["report", "--run", str(run), "--format", "md", "--out", str(md), "--resamples", "50",
                 "--stability-resamples", "10"]) == 0
    assert "a_like = 3 (high)" in md.read_text()
    capsys.readouterr()


def test_stability_reports_spread_and_warns_when_wide_or_not_converged(tmp_path, capsys):
    """t2 carries no signal: non-negative a_t2 values (no sign flip possible) win resamples at
    random, so the spread is wide; the best trial comes last, so the search had not converged."""
    log = tmp_path / "known.parquet"
    write_table(simulate_known_optimum({"t1": 1.0, "t2": 0.0}, rows=6000, groups=600, formula="additive",
                                       seed=3), log)
    (tmp_path / "s.toml").write_text(f'name = "spread"\nlog = "{log.as_posix()}"\ngroup = "request_id"\n'
                                     '[[tasks]]\nname = "t1"\nscore = "p_t1"\nlabel = "t1"\n'
                                     '[[tasks]]\nname = "t2"\nscore = "p_t2"\nlabel = "t2"\nweight = 0.5\n'
                                     '[fusion]\nformula = "additive"\nreference = "t1"\n'
                                     '[fusion.baseline]\na_t1 = 1.0\na_t2 = 2.0\n'
                                     '[fusion.bounds]\na = [0.0, 2.0]\n')
    theta = [[1.0, v] for v in (1.9, 1.7, 1.5, 1.3, 1.1, 0.9, 0.8, 0.7, 0.05, 0.01)]
    run, prep, ev = _hand_run(tmp_path, tmp_path / "s.toml", theta)
    assert int(np.argmax(ev.objective)) >= 8  # the best comes in the last evaluations
    js = tmp_path / "s.json"
    assert main(["report", "--run", str(run), "--format", "json", "--out", str(js), "--resamples", "50",
                 "--stability-resamples", "200"]) == 0
    err = capsys.readouterr().err
    st = json.loads(js.read_text())["stability"]
    p = st["params"]["a_t2"]
    assert not p["sign_flip"] and p["spread"] == pytest.approx(p["p95"] - p["p5"])
    assert p["wide"] and p["spread_of_median"] > 0.5, p
    assert "a_t2 is not pinned down" in err
    assert not st["convergence"]["converged"] and "had not converged" in err


def test_select_output_lists_dropped_candidates_with_reasons(run3, capsys):
    assert main(["select", "--run", str(run3), "--k", "2", "--resamples", "60", "--candidates", "12"]) == 0
    out = capsys.readouterr().out
    c = json.loads((run3 / "candidates.json").read_text())
    assert f"dropped {len(c['dropped'])} candidate(s)" in out
    first = sorted(c["dropped"], key=lambda d: (not d["is_search_best"], -d["objective_in_sample"]))[0]
    assert f"trial {first['trial']}" in out and first["reason"] in out
    assert "the search's best" in out and "judged on the holdout" in out.replace("\n", " ")


def test_selection_corrected_gain_repeats_the_choice_on_every_resample(tmp_path, small_log):
    """A pool of one: the basic bootstrap interval of the plain paired bootstrap. A pool of many
    similar candidates, the best chosen on the same rows: the interval moves down by the
    optimism of the choice, which is positive."""
    from fusiontune.bootstrap import paired_bootstrap, selection_corrected_gain

    prep = prepare(load_study(_study(tmp_path, small_log, max_drop="")))
    o, base = prep.objective, prep.space.baseline
    one = selection_corrected_gain(o, base[None] * [1, 1.5, 1.5, 1.5], 0, base, resamples=200, level=0.9, seed=3)
    bs = paired_bootstrap(o, base[None] * [1, 1.5, 1.5, 1.5], base, 200, 0.9, seed=3)
    q_lo, q_hi = np.quantile(bs.gain_samples[0] - bs.gain[0], [0.05, 0.95])
    assert one.lo == pytest.approx(bs.gain[0] - q_hi) and one.hi == pytest.approx(bs.gain[0] - q_lo)
    assert (one.naive_lo, one.naive_hi) == (pytest.approx(bs.gain_lo[0]), pytest.approx(bs.gain_hi[0]))
    rng = np.random.default_rng(0)
    pool = np.vstack([base * np.r_[1.0, np.exp(0.15 * rng.standard_normal(3))] for _ in range(40)])
    j = o.metrics(pool) @ o.w
    best = int(np.argmax(j))
    sc = selection_corrected_gain(o, pool, best, base, resamples=200, level=0.9, seed=3)
    assert sc.candidates == 40 and sc.optimism > 0
    assert sc.gain == pytest.approx(j[best] - o.baseline_per_task @ o.w)
    assert (sc.lo + sc.hi) / 2 < (sc.naive_lo + sc.naive_hi) / 2  # moved down by the choice
    # a guardrail nobody can meet on any resample: the chosen candidate stands in every resample
    guarded = prepare(load_study(_study(tmp_path, small_log, max_drop="max_drop = 0.0\n", name="g0.toml")))
    sg = selection_corrected_gain(guarded.objective, pool, best, base, resamples=50, level=0.9, seed=3)
    assert np.isfinite([sg.lo, sg.hi]).all()


def test_report_objective_in_sample_interval_is_selection_corrected(run3, tmp_path, capsys):
    js = tmp_path / "rep.json"
    assert main(["report", "--run", str(run3), "--format", "json", "--out", str(js), "--resamples", "100",
                 "--stability-resamples", "10"]) == 0
    rep = json.loads(js.read_text())
    obj = next(r for r in rep["tasks"] if r["task"] == "objective")["in_sample"]
    assert obj["selection"]["corrected"] and obj["selection"]["candidates"] > 1
    assert obj["delta_naive"]["value"] == pytest.approx(obj["delta"]["value"])
    assert obj["delta"]["lo"] != obj["delta_naive"]["lo"]
    md = tmp_path / "rep.md"
    assert main(["report", "--run", str(run3), "--format", "md", "--out", str(md), "--resamples", "100",
                 "--stability-resamples", "10"]) == 0
    assert "selection-corrected" in md.read_text()
    capsys.readouterr()
