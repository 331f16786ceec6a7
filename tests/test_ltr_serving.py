"""Residual DNN (starts at the formula, never below it on validation), ONNX / LightGBM-text export
with parity against the Python fuser, safe loading (pickles refused without --trust-pickle),
and the fuser judged against the best formula run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fusiontune.cli import main
from fusiontune.ltr import fit_ltr, load_fuser
from fusiontune.ltr.fit import fused_metrics
from fusiontune.pipeline import prepare
from fusiontune.simulate import simulate_known_optimum
from fusiontune.study import load_study

from test_ltr import A_STAR, write_study

pytest.importorskip("onnxruntime")
FAST = {"dnn": {"epochs": 30, "hidden": [16, 8], "batch_size": 1024, "lr": 0.01}}


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serving")
    df = simulate_known_optimum(A_STAR, rows=12_000, groups=600, seed=4)
    df["hour"] = np.random.default_rng(1).integers(0, 24, len(df)).astype(float)
    path = write_study(folder, df, ltr='[ltr]\nfeatures = ["hour"]\ncontext_check = false\n')
    return path, prepare(load_study(path))


def one_error_line(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("fusiontune: error: "), (code, err)
    return err[0]


# --------------------------------------------------------------------------- residual DNN
@pytest.mark.parametrize("formula", ["multiplicative", "power", "additive"])
def test_residual_dnn_at_init_is_the_baseline_formula(tmp_path, formula):
    """Zero correction: the network's score is the formula's score, so it ranks alike."""
    import torch

    from fusiontune.ltr.dnn import build_net, make_config, predict_dnn, project, DnnState
    from fusiontune.ltr.features import FeatureSpec
    from fusiontune.ltr.fit import _base_formula, _part

    df = simulate_known_optimum(A_STAR, rows=6_000, groups=300, seed=5)
    path = write_study(tmp_path, df)
    text = path.read_text().replace('formula = "multiplicative"', f'formula = "{formula}"')
    if formula == "power":
        text = text.replace("a_finish = 1.0\n", "a_finish = 1.0\nb_click = 0.05\nb_like = 0.0\nb_finish = 0.2\n")
    text = text.replace("a_like = 1.0", "a_like = 0.4")
    path.write_text(text)
    prep = prepare(load_study(path))
    spec = FeatureSpec.from_study(prep.study, [])
    obj = prep.objective
    part = _part(obj.log, spec, np.ones(3))
    torch.manual_seed(0)
    cfg = make_config(part, spec, {"hidden": [8, 4], "threads": 1}, True, _base_formula(prep))
    net = build_net(cfg)
    project(net, True)
    fused = predict_dnn(DnnState(net, cfg), part.x)
    formula_scores = prep.formula.scores(prep.formula.prepare(obj.log), prep.space.baseline[None, :])[0]
    assert np.allclose(fused, formula_scores, rtol=1e-5, atol=1e-5)
    assert np.allclose(fused_metrics(obj, fused), obj.baseline_per_task, atol=1e-6)


def test_residual_dnn_never_below_the_baseline_on_validation(known):
    """A learning rate that wrecks every epoch (no warm-up): the fit keeps the zero correction (the
    formula), says so and recommends keeping the formula."""
    _, prep = known
    r, _, fuser = fit_ltr(prep, "dnn", "combined", 0, {"guardrail_rounds": 0,
                                                       "dnn": {"epochs": 3, "lr": 5.0, "patience": 2, "warmup": 0}})
    ltr = r["ltr"]
    assert ltr["kept_formula"] and "keep the formula" in ltr["recommendation"]
    assert ltr["validation_objective"] == pytest.approx(ltr["validation_baseline"], abs=1e-6)
    assert r["best"]["objective"] == pytest.approx(r["baseline"]["objective"], abs=1e-6)
    # a sane fit: strictly above the baseline on validation, every recorded epoch considered
    good, _, _ = fit_ltr(prep, "dnn", "combined", 0, FAST)
    g = good["ltr"]
    assert not g["kept_formula"] and g["validation_objective"] > g["validation_baseline"]
    assert g["validation_objective"] >= max(h["validation"] for h in g["history"]) - 1e-9


def test_residual_dnn_surrogate_finetune_runs_and_is_judged(known):
    _, prep = known
    r, _, _ = fit_ltr(prep, "dnn", "combined", 0, {"dnn": {**FAST["dnn"], "epochs": 2, "finetune": 5}})
    phases = [h["phase"] for h in r["ltr"]["history"]]
    assert "finetune" in phases and r["ltr"]["finetune_epochs"] == 5
    assert r["ltr"]["validation_objective"] >= r["ltr"]["validation_baseline"] - 1e-9


def test_dnn_refuses_the_rank_formula(tmp_path, capsys):
    df = simulate_known_optimum(A_STAR, rows=3_000, groups=150, seed=6)
    path = write_study(tmp_path, df)
    path.write_text(path.read_text().replace('formula = "multiplicative"', 'formula = "rank"'))
    msg = one_error_line(capsys, ["ltr", "--study", str(path), "--model", "dnn", "--quiet",
                                  "--out", str(tmp_path / "x")])
    assert "rank" in msg and not (tmp_path / "x").exists()


# --------------------------------------------------------------------------- ONNX parity
CASES = [("gbdt", "combined", "sklearn", ".onnx"), ("gbdt", "combined", "lightgbm", ".onnx"),
         ("gbdt", "lambdarank", "lightgbm", ".onnx"), ("gbdt", "combined", "lightgbm", ".txt"),
         ("dnn", "combined", "torch", ".onnx")]


@pytest.mark.parametrize("model,target,backend,suffix", CASES)
def test_export_parity_with_the_python_fuser(known, tmp_path, model, target, backend, suffix):
    """ltr -> export -> score with the exported file: equal to the Python fuser to 1e-5, hence
    the same metrics."""
    path, prep = known
    study = path.read_text()
    if backend == "lightgbm":
        pytest.importorskip("lightgbm")
        study = study.replace("[ltr]\n", '[ltr]\nbackend = "lightgbm"\n')
    if model == "dnn":
        study += "[ltr.dnn]\nepochs = 5\nhidden = [16, 8]\nbatch_size = 1024\n"
    spath = path.parent / f"study-{model}-{target}-{backend}.toml"
    spath.write_text(study)
    run = tmp_path / "run"
    assert main(["ltr", "--study", str(spath), "--model", model, "--target", target, "--out", str(run),
                 "--quiet"]) == 0
    fuser = load_fuser(run, trust_pickle=True)  # the very estimator that was fitted
    to = tmp_path / f"model{suffix}"
    assert main(["export", "--run", str(run), "--to", str(to), "--trust-pickle"]) == 0
    side = json.loads(to.with_suffix(".json").read_text())
    assert side["schema"] == "fusiontune.serving/1" and side["model_file"] == to.name
    assert [f["column"] for f in side["features"]] == ["p_click", "p_like", "p_finish", "hour"]
    assert side["parity"]["max_abs_diff"] <= 1e-5 and side["parity"]["rows"] > 1000
    log = path.parent / "log.parquet"
    out = tmp_path / "scored.parquet"
    assert main(["score", "--log", str(log), "--out", str(out), "--model", str(to)]) == 0
    src = pd.read_parquet(log)
    x = src[["p_click", "p_like", "p_finish", "hour"]].to_numpy(np.float64)
    ref = fuser.predict_matrix(x)
    got = pd.read_parquet(out)["fused_score"].to_numpy()
    assert np.max(np.abs(got - ref)) <= 1e-5
    if suffix == ".onnx":  # the graph itself, through onnxruntime, on the raw float32 inputs
        import onnxruntime as ort

        sess = ort.InferenceSession(str(to), providers=["CPUExecutionProvider"])
        direct = sess.run(["score"], {"features": x.astype(np.float32)})[0]
        assert direct.shape == (len(x),) and np.max(np.abs(direct - ref)) <= 1e-5
    # hence the same metrics: eval on the exported file and on the run agree
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["eval", "--study", str(spath), "--model", str(to), "--out", str(a)]) == 0
    assert main(["eval", "--study", str(spath), "--model", str(run), "--trust-pickle", "--out", str(b)]) == 0
    ea, eb = json.loads(a.read_text()), json.loads(b.read_text())
    for part in ("search", "holdout"):
        for t in A_STAR:
            assert ea["parts"][part]["per_task"][t] == pytest.approx(eb["parts"][part]["per_task"][t], abs=1e-6)


def test_txt_export_needs_lightgbm(known, tmp_path, capsys):
    path, _ = known
    run = tmp_path / "run"
    assert main(["ltr", "--study", str(path), "--model", "gbdt", "--out", str(run), "--quiet"]) == 0
    msg = one_error_line(capsys, ["export", "--run", str(run), "--to", str(tmp_path / "m.txt")])
    assert "LightGBM" in msg and not (tmp_path / "m.txt").exists()


# --------------------------------------------------------------------------- safe loading
def test_pickle_refused_without_trust_flag(known, tmp_path, capsys):
    path, _ = known
    run = tmp_path / "run"
    assert main(["ltr", "--study", str(path), "--model", "gbdt", "--out", str(run), "--quiet"]) == 0
    log = str(path.parent / "log.parquet")
    # the default loads the ONNX twin written at fit time
    assert (run / "model.onnx").exists()
    assert main(["score", "--log", log, "--out", str(tmp_path / "a.csv"), "--model", str(run)]) == 0
    capsys.readouterr()
    # a run dir that only has the pickle (no onnx extra at fit time, or from elsewhere)
    (run / "model.onnx").unlink()
    for argv in (["score", "--log", log, "--out", str(tmp_path / "b.csv"), "--model", str(run)],
                 ["eval", "--study", str(path), "--model", str(run)],
                 ["export", "--run", str(run), "--to", str(tmp_path / "m.onnx")]):
        msg = one_error_line(capsys, argv)
        assert "pickle" in msg and "arbitrary code" in msg and "--trust-pickle" in msg
    assert not (tmp_path / "b.csv").exists() and not (tmp_path / "m.onnx").exists()
    assert main(["score", "--log", log, "--out", str(tmp_path / "b.csv"), "--model", str(run),
                 "--trust-pickle"]) == 0
    a, b = pd.read_csv(tmp_path / "a.csv")["fused_score"], pd.read_csv(tmp_path / "b.csv")["fused_score"]
    assert np.max(np.abs(a.to_numpy() - b.to_numpy())) <= 1e-5


def test_dnn_and_lightgbm_runs_hold_no_pickle(known, tmp_path):
    pytest.importorskip("lightgbm")
    _, prep = known
    from fusiontune.ltr import save_fuser

    _, _, dnn = fit_ltr(prep, "dnn", "combined", 0, {"dnn": {"epochs": 2, "hidden": [8]}})
    _, _, lgb = fit_ltr(prep, "gbdt", "combined", 0, {"backend": "lightgbm"})
    assert set(save_fuser(dnn, tmp_path / "d")) == {"model.npz", "fuser.json"}
    assert set(save_fuser(lgb, tmp_path / "l")) == {"model.txt", "fuser.json"}
    from fusiontune.ltr.fit import ensure_features

    x = dnn.spec.matrix(ensure_features(prep, ["hour"]).holdout_log)
    assert np.array_equal(load_fuser(tmp_path / "d").predict_matrix(x), dnn.predict_matrix(x))
    assert np.array_equal(load_fuser(tmp_path / "l").predict_matrix(x), lgb.predict_matrix(x))


# --------------------------------------------------------------------------- vs the best formula
def test_fuser_is_judged_against_the_best_formula(known, tmp_path, capsys):
    path, prep = known
    runs = tmp_path / "runs"
    # two formula runs: the one with the better in-sample objective is "the best formula"
    assert main(["search", "--study", str(path), "--budget", "8", "--population", "8", "--seed", "0",
                 "--out", str(runs / "weak"), "--quiet"]) == 0
    assert main(["search", "--study", str(path), "--budget", "160", "--population", "16", "--seed", "1",
                 "--out", str(runs / "strong"), "--quiet"]) == 0
    jw = json.loads((runs / "weak" / "result.json").read_text())["best"]["objective"]
    js = json.loads((runs / "strong" / "result.json").read_text())["best"]["objective"]
    best_name = "strong" if js >= jw else "weak"
    capsys.readouterr()
    # a fuser that is the baseline formula itself (wrecked fit, started from the baseline): loses to
    # the best formula, flagged
    wreck = path.parent / "wreck.toml"
    wreck.write_text(path.read_text() + "guardrail_rounds = 0\n[ltr.dnn]\nepochs = 2\nlr = 5.0\npatience = 1\n")
    assert main(["ltr", "--study", str(wreck), "--model", "dnn", "--out", str(runs / "dnn"), "--vs",
                 str(runs / best_name), "--start", "baseline"]) == 0
    out = capsys.readouterr().out
    r = json.loads((runs / "dnn" / "result.json").read_text())
    v = r["versus"]
    assert v["best_formula"]["run"] == str(runs / best_name)
    assert v["best_formula"]["holdout_delta"] < 0 and any("best formula" in f for f in v["flags"])
    assert v["verdict"].startswith("keep the formula") and "WARNING: keep the formula" in out
    # the holdout of the formula run is re-scored on this study's split with the exact kernel
    theta = prep.space.from_dict(v["best_formula"]["params"])
    h = prep.holdout_objective
    assert v["best_formula"]["holdout"] == pytest.approx(float(h.metrics(theta[None, :])[0] @ h.w), abs=1e-12)
    # the report says it too, in its learned-fuser section
    rep = tmp_path / "report.md"
    assert main(["report", "--run", str(runs / "dnn"), "--format", "md", "--out", str(rep), "--resamples", "50",
                 "--stability-resamples", "10"]) == 0
    text = rep.read_text()
    assert "vs the formulas it would replace" in text and "loses to the best formula" in text
    # without --vs the runs folder is searched: same choice
    assert main(["ltr", "--study", str(path), "--model", "gbdt", "--out", str(runs / "gbdt"), "--quiet"]) == 0
    g = json.loads((runs / "gbdt" / "result.json").read_text())["versus"]
    assert g["best_formula"]["run"] == str(runs / best_name)
    assert g["baseline"]["holdout_delta"] > 0
    # an LTR run is not a formula to compare with
    capsys.readouterr()  # (the short searches above may have warned on stderr)
    msg = one_error_line(capsys, ["ltr", "--study", str(path), "--model", "gbdt", "--out", str(tmp_path / "x"),
                                  "--vs", str(runs / "gbdt"), "--quiet"])
    assert "LTR run" in msg and not (tmp_path / "x").exists()


def test_vs_flags_in_compare(known, tmp_path):
    path, _ = known
    out = tmp_path / "cmp"
    assert main(["compare", "--study", str(path), "--methods", "cem,ltr-gbdt", "--seeds", "1", "--budget", "32",
                 "--population", "8", "--out", str(out), "--quiet"]) == 0
    table = pd.read_csv(out / "compare.csv")
    row = table[table["method"] == "ltr-gbdt"].iloc[0]
    cem = table[table["method"] == "cem"].iloc[0]
    assert row["vs_best_formula"] == pytest.approx(row["holdout_mean"] - cem["holdout_mean"], abs=1e-8)  # CSV: 10 digits
    assert row["best_formula"] == "cem seed 0"  # the search run the fuser started from
    assert bool(row["loses"]) == bool(row["vs_best_formula"] <= 0 or row["holdout_lift_mean"] <= 0)
    md = (out / "compare.md").read_text()
    assert "vs best formula" in md


def test_compare_ltr_fusers_start_from_the_best_search_run(known, tmp_path):
    """compare's LTR rows are the line-up fusers (as bench_ltr), started from the search run with
    the best in-sample objective and judged against that run's holdout objective."""
    pytest.importorskip("lightgbm")
    from fusiontune.compare import compare
    from fusiontune.ltr.lineup import LINEUP, fit_lineup
    from fusiontune.pipeline import search

    _, prep = known
    res = compare(prep, ["ltr-gbdt", "cem", "random"], budget=32, seeds=2, population=8)
    runs = res.runs
    assert list(runs["method"]) == ["cem", "cem", "random", "random", "ltr-gbdt", "ltr-gbdt"]  # searches first
    search_runs = runs[runs["method"] != "ltr-gbdt"]
    top = search_runs.loc[search_runs["best_in_sample"].idxmax()]
    bf = res.best_formula
    assert (bf["method"], bf["seed"]) == (top["method"], top["seed"]) and bf["holdout"] == top["holdout"]
    assert set(runs.loc[runs["method"] == "ltr-gbdt", "start"]) == {f"{top['method']} seed {top['seed']}"}
    # the same fit as the line-up fuser started from that run's weights
    params = search(prep, top["method"], 32, int(top["seed"]), 8)[0]["best"]["params"]
    again = fit_lineup(prep, "ltr-gbdt", 0, start=params)[0]
    row0 = runs[(runs["method"] == "ltr-gbdt") & (runs["seed"] == 0)].iloc[0]
    assert row0["holdout"] == pytest.approx(again["holdout"]["best"]["objective"], abs=1e-12)
    assert again["versus"]["baseline"]["holdout_delta"] == pytest.approx(row0["holdout_lift"], abs=1e-12)
    t = res.table.set_index("method").loc["ltr-gbdt"]
    assert t["vs_best_formula"] == pytest.approx(t["holdout_mean"] - bf["holdout"], abs=1e-12)
    assert LINEUP["ltr-gbdt"].options["backend"] == "lightgbm" and again["ltr"]["backend"] == "lightgbm"


def test_fit_ltr_result_carries_versus_from_the_one_builder(known):
    """The LTR result.json comes from results.result_document in one call, versus block included (also
    from the Python API, with a formula held in memory)."""
    from fusiontune.ltr.versus import formula_block
    from fusiontune.results import RESULT_VERSION

    _, prep = known
    f = formula_block(prep, prep.space.as_dict(prep.space.baseline), method="baseline-as-formula")
    r = fit_ltr(prep, "gbdt", "combined", 0, None, vs=f)[0]
    assert r["version"] == RESULT_VERSION and r["method"] == "ltr-gbdt" and "log_fingerprint" in r
    v = r["versus"]
    assert v["best_formula"]["method"] == "baseline-as-formula"
    assert v["best_formula"]["holdout_delta"] == pytest.approx(v["baseline"]["holdout_delta"], abs=1e-12)
    assert v["baseline"]["holdout_delta"] == pytest.approx(r["lift"]["holdout"], abs=1e-12)
    assert fit_ltr(prep, "gbdt", "combined", 0, None)[0]["versus"]["best_formula"] is None


# --------------------------------------------------------------------------- residual LightGBM, start
def test_residual_lightgbm_starts_at_the_formula_and_never_below_it(known):
    pytest.importorskip("lightgbm")
    from fusiontune.ltr.residual import ResidualTrees

    _, prep = known
    r, _, fuser = fit_ltr(prep, "gbdt", "combined", 0, {"backend": "lightgbm"})
    est = fuser.estimator
    assert isinstance(est, ResidualTrees) and r["ltr"]["residual"]["formula"] == "multiplicative"
    from fusiontune.ltr.fit import ensure_features

    obj = ensure_features(prep, ["hour"]).objective
    x = fuser.spec.matrix(obj.log)
    # zero trees: the scaled formula, which ranks exactly as the baseline does
    assert np.allclose(fused_metrics(obj, est.start(x)), obj.baseline_per_task, atol=1e-6)
    # trees chosen by the validation objective, the formula (0 trees) among the candidates
    trace = r["ltr"]["tree_trace"]
    assert trace[0]["trees"] == 0 and r["ltr"]["validation_objective"] >= trace[0]["validation"] - 1e-9
    assert not r["ltr"]["kept_formula"] and r["holdout"]["best"]["objective"] > r["holdout"]["baseline"]["objective"]


def test_start_from_the_best_formula(known, tmp_path):
    path, prep = known
    runs = tmp_path / "runs"
    assert main(["search", "--study", str(path), "--budget", "96", "--population", "16", "--out",
                 str(runs / "cem"), "--quiet"]) == 0
    assert main(["ltr", "--study", str(path), "--model", "dnn", "--start", "best", "--out", str(runs / "dnn"),
                 "--quiet"]) == 0
    r = json.loads((runs / "dnn" / "result.json").read_text())
    best = json.loads((runs / "cem" / "result.json").read_text())["best"]["params"]
    assert r["ltr"]["start_run"] == str(runs / "cem")
    assert r["ltr"]["residual"]["a"] == pytest.approx([best[f"a_{t}"] for t in A_STAR], rel=1e-12)
    # guardrails and deltas stay against the baseline; never below the start formula on validation
    assert r["baseline"]["params"] == {"a_click": 1.0, "a_like": 1.0, "a_finish": 1.0}
    assert r["ltr"]["validation_objective"] >= r["ltr"]["validation_baseline"] - 1e-9


def test_start_auto_is_the_best_formula_run_when_there_is_one(known, tmp_path, capsys):
    """The default start: a residual fuser starts from the best formula run in the run folder,
    the baseline without one; scikit-learn's GBDT (no init score) says it fits from scratch."""
    import fusiontune as ft

    path, _ = known
    runs = tmp_path / "runs"
    assert main(["ltr", "--study", str(path), "--model", "dnn", "--out", str(runs / "dnn0"), "--quiet"]) == 0
    r0 = json.loads((runs / "dnn0" / "result.json").read_text())
    assert "start_run" not in r0["ltr"] and r0["ltr"]["residual"]["a"] == pytest.approx([1.0, 1.0, 1.0])
    assert main(["search", "--study", str(path), "--budget", "96", "--population", "16", "--out",
                 str(runs / "cem"), "--quiet"]) == 0
    best = json.loads((runs / "cem" / "result.json").read_text())["best"]["params"]
    capsys.readouterr()
    assert main(["ltr", "--study", str(path), "--model", "dnn", "--out", str(runs / "dnn")]) == 0
    assert f"started from the formula run {runs / 'cem'} (--start auto)" in capsys.readouterr().out
    r = json.loads((runs / "dnn" / "result.json").read_text())
    assert r["ltr"]["start_run"] == str(runs / "cem")
    assert r["ltr"]["residual"]["a"] == pytest.approx([best[f"a_{t}"] for t in A_STAR], rel=1e-12)
    # --start baseline keeps today's weights as the start
    assert main(["ltr", "--study", str(path), "--model", "dnn", "--start", "baseline", "--out",
                 str(runs / "dnnb"), "--quiet"]) == 0
    rb = json.loads((runs / "dnnb" / "result.json").read_text())
    assert "start_run" not in rb["ltr"] and rb["ltr"]["residual"]["a"] == pytest.approx([1.0, 1.0, 1.0])
    # the scikit-learn GBDT cannot start from a formula
    capsys.readouterr()
    assert main(["ltr", "--study", str(path), "--model", "gbdt", "--out", str(runs / "gbdt")]) == 0
    assert "fitted from scratch" in capsys.readouterr().out
    assert "start_run" not in json.loads((runs / "gbdt" / "result.json").read_text())["ltr"]
    # the Python API: start="auto" starts from vs; without vs from the baseline
    res = ft.fit_ltr(ft.Study.from_toml(path), model="dnn", vs=runs / "cem")
    assert res.result["ltr"]["start_run"] == str(runs / "cem")
    assert res.result["versus"]["best_formula"]["run"] == str(runs / "cem")
    with pytest.raises(ft.RunError, match="no formula search run"):
        ft.fit_ltr(ft.Study.from_toml(path), model="dnn", start="best")


def test_start_names_a_missing_run_in_one_line(known, tmp_path, capsys):
    path, _ = known
    assert main(["ltr", "--study", str(path), "--model", "dnn", "--start", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope/result.json: not found" in err[0] and not (tmp_path / "r").exists()
