"""Learn-to-rank fusers: recovery of a known optimum, monotonicity, save/load, the score
command and bad input.  Small simulated logs keep this file fast."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fusiontune.cli import main
from fusiontune.ltr import fit_ltr, load_fuser, run_ltr, save_fuser
from fusiontune.ltr.features import FeatureSpec
from fusiontune.ltr.io import PickleRefused
from fusiontune.ltr.targets import combined_target, relevance_grades, task_balance
from fusiontune.pipeline import prepare
from fusiontune.simulate import simulate_known_optimum, write_table
from fusiontune.study import load_study

A_STAR = {"click": 1.0, "like": 0.5, "finish": 2.0}
FAST_DNN = {"dnn": {"epochs": 60, "hidden": [16, 8], "batch_size": 1024, "lr": 0.01}}


def write_study(folder: Path, df: pd.DataFrame, *, group: bool = True, signs: dict | None = None,
                ltr: str = "", metrics=("gauc", "auc", "gauc"), max_drop: float | None = None,
                baseline: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_table(df, folder / "log.parquet")
    text = 'name = "known"\nlog = "log.parquet"\n' + ('group = "request_id"\n' if group else "")
    for (t, m) in zip(A_STAR, metrics):
        text += f'[[tasks]]\nname = "{t}"\nscore = "p_{t}"\nlabel = "{t}"\nmetric = "{m if group else "auc"}"\n'
        if signs and t in signs:
            text += f"sign = {signs[t]}\n"
        if max_drop is not None and t == "click":
            text += f"max_drop = {max_drop}\n"
    base = {"a_click": 1.0, "a_like": 1.0, "a_finish": 1.0, **(baseline or {})}
    text += '[fusion]\nformula = "multiplicative"\n[fusion.baseline]\n'
    text += "".join(f"{k} = {v}\n" for k, v in base.items())
    text += f'[split]\nby = "{"group" if group else "random"}"\nholdout = 0.3\n'
    text += ltr
    (folder / "study.toml").write_text(text)
    return folder / "study.toml"


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    folder = tmp_path_factory.mktemp("known")
    df = simulate_known_optimum(A_STAR, rows=20_000, groups=1_000, seed=1)
    path = write_study(folder, df)
    return path, prepare(load_study(path))


def true_holdout_objective(prep) -> tuple[float, float]:
    h = prep.holdout_objective
    theta = np.array([[A_STAR[t] for t in prep.study.task_names]])
    return float(h.metrics(theta)[0] @ h.w), float(h.baseline_per_task @ h.w)


# --------------------------------------------------------------------------- targets
def test_soft_label_is_the_expanded_weighted_logloss():
    rng = np.random.default_rng(0)
    n, k = 200, 3
    labels = (rng.random((n, k)) < 0.3).astype(np.float64)
    labels[rng.random((n, k)) < 0.3] = np.nan
    w, signs = np.array([1.0, 0.6, 2.0]), np.array([1, -1, 1])
    f = rng.standard_normal(n)
    p = 1 / (1 + np.exp(-f))
    ll = lambda y: -(y * np.log(p) + (1 - y) * np.log(1 - p))  # noqa: E731
    expanded = sum(np.nansum(w[j] * ll(np.where(signs[j] < 0, 1 - labels[:, j], labels[:, j])))
                   for j in range(k))
    ybar, sw = combined_target(labels, w, signs)
    assert np.isclose((sw * ll(ybar)).sum(), expanded)
    assert np.all(sw[np.isnan(labels).all(axis=1)] == 0)


def test_relevance_grades_and_task_balance():
    rel = np.array([0.0, 1.0, 0.6, 1.6, 0.0])
    grades, gains = relevance_grades(rel)
    assert grades.tolist() == [0, 2, 1, 3, 0] and np.allclose(gains, [0.0, 0.6, 1.0, 1.6])
    labels = np.array([[1, 0], [0, np.nan], [0, np.nan], [0, 1.0]])
    b = task_balance(labels, np.array([1.0, 1.0]), "observed")
    assert b[1] / b[0] == pytest.approx(2.0)  # task 2 is observed on half the rows


# --------------------------------------------------------------------------- known optimum
@pytest.mark.parametrize("model,target", [("gbdt", "combined"), ("dnn", "combined"),
                                          ("gbdt", "lambdarank"), ("dnn", "lambdarank")])
def test_fuser_recovers_known_optimum_on_holdout(known, model, target):
    _, prep = known
    j_true, j_base = true_holdout_objective(prep)
    r = run_ltr(prep, model, target, seed=0, options=FAST_DNN)
    got = r["holdout"]["best"]["objective"]
    assert j_true - j_base > 0.05  # the test is meaningful: the baseline is clearly off
    assert got >= j_true - 0.012, (got, j_true)
    assert got > j_base + 0.8 * (j_true - j_base)
    # the result.json contract
    assert r["formula"] == f"ltr-{model}" and r["best"]["feasible"] in (True, False)
    assert all(isinstance(v, float) for v in r["best"]["params"].values())
    assert set(r["best"]["per_task"]) == set(A_STAR) and set(r["feature_importance"]) == {"p_click", "p_like",
                                                                                        "p_finish"}
    assert r["baseline"]["params"] == {"a_click": 1.0, "a_like": 1.0, "a_finish": 1.0}
    # the importances say finish (a* = 2) matters most, like (a* = 0.5) least
    imp = r["feature_importance"]
    assert imp["p_finish"] > imp["p_like"]


def test_same_seed_same_result(known):
    _, prep = known
    a = run_ltr(prep, "dnn", seed=3, options=FAST_DNN)
    b = run_ltr(prep, "dnn", seed=3, options=FAST_DNN)
    assert a["best"]["per_task"] == b["best"]["per_task"]
    assert a["holdout"] == b["holdout"]


# --------------------------------------------------------------------------- monotonicity
@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    """like is a negative task (sign = -1); a context column 'hour' enters unconstrained."""
    folder = tmp_path_factory.mktemp("signed")
    df = simulate_known_optimum(A_STAR, rows=8_000, groups=400, seed=2)
    # like becomes a "dislike"-style task: score and label flipped, so a higher score and a
    # positive label now mean a *worse* row
    df["p_like"] = (1.0 - df["p_like"]).astype(np.float32)
    df["like"] = 1.0 - df["like"]
    df["hour"] = np.random.default_rng(0).integers(0, 24, len(df)).astype(float)
    # the baseline ignores the negative task (a formula weight >= 0 on it would rank dislikes up): the
    # residual DNN starts from that formula and is monotone only if the formula it starts from is
    path = write_study(folder, df, signs={"like": -1}, ltr='[ltr]\nfeatures = ["hour"]\ncontext_check = false\n', baseline={"a_like": 0.0})
    return path, prepare(load_study(path))


@pytest.mark.parametrize("model", ["gbdt", "dnn"])
def test_monotone_in_every_task_score(signed, model):
    _, prep = signed
    _, _, fuser = fit_ltr(prep, model, "combined", 0, FAST_DNN)
    rng = np.random.default_rng(7)
    n = 3_000
    x = np.column_stack([rng.random((n, 3)), rng.integers(0, 24, n)])
    base = fuser.predict_matrix(x)
    for j, sign in enumerate(fuser.spec.signs):
        up = x.copy()
        up[:, j] = np.minimum(1.0, up[:, j] + rng.random(n) * 0.5)
        diff = (fuser.predict_matrix(up) - base) * sign
        assert diff.min() >= -1e-6, (model, fuser.spec.tasks[j], diff.min())
        assert diff.max() > 0  # and it does react to the task
    # the context column is unconstrained: it may move the score either way without error
    assert fuser.spec.monotone(True) == [1, -1, 1, 0]


@pytest.mark.parametrize("model", ["gbdt", "dnn"])
def test_context_check_keeps_the_context_only_if_it_wins_on_validation(signed, model):
    """[ltr] context_check (default on): the fuser is fitted with and without the context columns and
    the one with the better penalised validation objective is kept; result.json records both."""
    _, prep = signed
    opts = {**FAST_DNN, "backend": "lightgbm", "context_check": True}
    r, _, fuser = fit_ltr(prep, model, "combined", 0, opts)
    cc = r["ltr"]["context_check"]
    assert cc["context"] == ["hour"] and cc["kept_context"] == (cc["validation_with_context"]
                                                                > cc["validation_without_context"])
    assert fuser.spec.context == (["hour"] if cc["kept_context"] else [])
    assert r["ltr"]["features"] == fuser.spec.names
    best = max(cc["validation_with_context"], cc["validation_without_context"])
    # the kept fuser is the better one on validation (no guardrail in this study: penalised = raw)
    assert r["ltr"]["validation_objective"] == pytest.approx(best, abs=1e-9)
    for with_ctx in (True, False):  # each side alone is the fuser fitted with / without the context
        one, _, f1 = fit_ltr(prep, model, "combined", 0, {**opts, "context_check": False,
                                                           **({} if with_ctx else {"features": []})})
        assert "context_check" not in one["ltr"] and f1.spec.context == (["hour"] if with_ctx else [])
        side = cc["validation_with_context" if with_ctx else "validation_without_context"]
        assert one["ltr"]["validation_objective"] == pytest.approx(side, abs=1e-9)


# --------------------------------------------------------------------------- save / load / score
@pytest.mark.parametrize("model", ["gbdt", "dnn"])
def test_saved_fuser_reloads_and_scores_identically(known, tmp_path, model):
    _, prep = known
    _, _, fuser = fit_ltr(prep, model, "combined", 0, FAST_DNN)
    files = save_fuser(fuser, tmp_path / "run")
    assert set(files) <= {p.name for p in (tmp_path / "run").iterdir()}
    again = load_fuser(tmp_path / "run")  # the safe default: model.npz (DNN) or model.onnx (sklearn GBDT)
    log = prep.holdout_log
    if model == "dnn":
        assert np.array_equal(fuser.predict(log), again.predict(log))
    else:  # ONNX scores in float32: equal to 1e-5, and the pickle (trusted) is the very estimator
        assert np.allclose(fuser.predict(log), again.predict(log), rtol=0, atol=1e-5)
        (tmp_path / "run" / "model.onnx").unlink()
        with pytest.raises(PickleRefused):
            load_fuser(tmp_path / "run")
        trusted = load_fuser(tmp_path / "run", trust_pickle=True)
        assert np.array_equal(fuser.predict(log), trusted.predict(log))
    assert again.spec == fuser.spec and again.model == model


def test_score_command_round_trip(known, tmp_path, capsys):
    path, prep = known
    run = tmp_path / "run"
    assert main(["ltr", "--study", str(path), "--model", "gbdt", "--out", str(run), "--quiet"]) == 0
    result = json.loads((run / "result.json").read_text())
    assert result["formula"] == "ltr-gbdt" and "feature_importance" in result
    assert (run / "trials.csv").exists() and (run / "model.joblib").exists()
    log = path.parent / "log.parquet"
    out = tmp_path / "scored.csv"
    assert main(["score", "--log", str(log), "--out", str(out), "--model", str(run)]) == 0
    scored = pd.read_csv(out)
    src = pd.read_parquet(log)
    assert list(scored.columns) == list(src.columns) + ["fused_score"] and len(scored) == len(src)
    fuser = load_fuser(run)
    x = src[fuser.spec.scores].to_numpy(dtype=np.float64)
    assert np.allclose(scored["fused_score"].to_numpy(), fuser.predict_matrix(x), rtol=1e-12, atol=0)

    # a weight set: the file's own task columns, and a search-style result.json via the study
    weights = tmp_path / "weights.json"
    weights.write_text(json.dumps({"formula": "multiplicative", "params": {f"a_{k}": v for k, v in A_STAR.items()},
                                   "tasks": [{"name": t, "score": f"p_{t}"} for t in A_STAR]}))
    out2 = tmp_path / "scored.parquet"
    assert main(["score", "--log", str(log), "--out", str(out2), "--params", str(weights),
                 "--column", "s"]) == 0
    s = pd.read_parquet(out2)["s"].to_numpy()
    expect = sum(a * np.log(np.clip(src[f"p_{t}"].to_numpy(np.float64), 1e-6, 1)) for t, a in A_STAR.items())
    assert np.allclose(s, expect, atol=1e-5)
    res = tmp_path / "search"
    res.mkdir()
    (res / "result.json").write_text(json.dumps({"formula": "multiplicative",
                                                  "best": {"params": {f"a_{k}": v for k, v in A_STAR.items()}}}))
    out3 = tmp_path / "scored3.parquet"
    assert main(["score", "--log", str(log), "--out", str(out3), "--params", str(res), "--study", str(path)]) == 0
    assert np.array_equal(pd.read_parquet(out3)["fused_score"].to_numpy(), s)


def test_score_reads_an_exported_weights_file(known, tmp_path):
    """`fusiontune search` -> `fusiontune export` -> `fusiontune score`: the column it writes
    ranks the log exactly as the exported weights do."""
    path, _ = known
    run = tmp_path / "search"
    assert main(["search", "--study", str(path), "--budget", "16", "--population", "8", "--out", str(run),
                 "--quiet"]) == 0
    weights = tmp_path / "w.yaml"
    assert main(["export", "--run", str(run), "--to", str(weights)]) == 0
    log = path.parent / "log.parquet"
    out = tmp_path / "scored.parquet"
    assert main(["score", "--log", str(log), "--out", str(out), "--params", str(weights)]) == 0
    best = json.loads((run / "result.json").read_text())["best"]["params"]
    src = pd.read_parquet(log)
    expect = sum(best[f"a_{t}"] * np.log(np.clip(src[f"p_{t}"].to_numpy(np.float64), 1e-6, 1)) for t in A_STAR)
    assert np.allclose(pd.read_parquet(out)["fused_score"].to_numpy(), expect, atol=1e-5)


# --------------------------------------------------------------------------- backends
def test_lightgbm_backend_is_monotone(signed):
    pytest.importorskip("lightgbm")
    _, prep = signed
    r, _, fuser = fit_ltr(prep, "gbdt", "combined", 0, {"backend": "lightgbm"})
    assert fuser.backend == "lightgbm" and r["ltr"]["backend"] == "lightgbm"
    rng = np.random.default_rng(1)
    x = np.column_stack([rng.random((2_000, 3)), rng.integers(0, 24, 2_000)])
    up = x.copy()
    up[:, 1] = np.minimum(1.0, up[:, 1] + 0.3)  # like: a negative task
    assert (fuser.predict_matrix(up) - fuser.predict_matrix(x)).max() <= 1e-9


# --------------------------------------------------------------------------- bad input
def one_error_line(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("fusiontune: error: "), (code, err)
    return err[0]


def test_bad_input_is_one_line_exit_2(known, tmp_path, capsys):
    path, prep = known
    _, _, fuser = fit_ltr(prep, "gbdt", "combined", 0)
    save_fuser(fuser, tmp_path / "run")
    df = pd.read_parquet(path.parent / "log.parquet").drop(columns=["p_like"])
    write_table(df, tmp_path / "nolike.csv")
    msg = one_error_line(capsys, ["score", "--log", str(tmp_path / "nolike.csv"), "--out", str(tmp_path / "o.csv"),
                                  "--model", str(tmp_path / "run")])
    assert "'p_like'" in msg and not (tmp_path / "o.csv").exists()
    # lambdarank needs groups
    flat = simulate_known_optimum(A_STAR, rows=4_000, groups=200, seed=3)
    nog = write_study(tmp_path / "nogroup", flat, group=False)
    msg = one_error_line(capsys, ["ltr", "--study", str(nog), "--model", "gbdt", "--target", "lambdarank",
                                  "--out", str(tmp_path / "x")])
    assert "group" in msg and not (tmp_path / "x").exists()
    # a context feature that is not in the log; an unknown [ltr] key
    bad = write_study(tmp_path / "badfeat", flat, ltr='[ltr]\nfeatures = ["nope"]\n')
    assert "'nope'" in one_error_line(capsys, ["ltr", "--study", str(bad), "--model", "dnn", "--quiet"])
    typo = write_study(tmp_path / "typo", flat, ltr='[ltr]\nmonotonic = true\n')
    assert "'monotonic'" in one_error_line(capsys, ["ltr", "--study", str(typo), "--model", "gbdt", "--quiet"])
    # a weights file without params; a search run dir given as --model
    (tmp_path / "w.json").write_text('{"formula": "multiplicative"}')
    assert "params" in one_error_line(capsys, ["score", "--log", str(path.parent / "log.parquet"), "--out",
                                               str(tmp_path / "o.csv"), "--params", str(tmp_path / "w.json")])
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "result.json").write_text("{}")
    assert "--params" in one_error_line(capsys, ["score", "--log", str(path.parent / "log.parquet"), "--out",
                                                 str(tmp_path / "o.csv"), "--model", str(tmp_path / "search")])


def test_guardrail_refits_keep_a_guarded_task(tmp_path):
    """Demo-like log where click and finish conflict and the baseline is all click: fitted
    freely the fuser trades click GAUC for finish; with guardrail refits it keeps click."""
    from fusiontune.simulate import DEMO_BASELINE, DEMO_TASKS, simulate_log

    folder = tmp_path / "g"
    folder.mkdir()
    write_table(simulate_log(requests=1_000, candidates=20, seed=5), folder / "log.parquet")
    text = 'name = "g"\nlog = "log.parquet"\ngroup = "request_id"\n'
    for t, m in zip(DEMO_TASKS, ("gauc", "auc", "gauc", "auc")):
        text += f'[[tasks]]\nname = "{t}"\nscore = "p_{t}"\nlabel = "{t}"\nmetric = "{m}"\n'
        text += "max_drop = 0.01\n" if t == "click" else ""
    text += '[fusion]\nformula = "multiplicative"\n[fusion.baseline]\n'
    text += "".join(f"{k} = {v}\n" for k, v in DEMO_BASELINE.items())
    text += '[split]\nby = "group"\nholdout = 0.3\n'
    (folder / "study.toml").write_text(text)
    prep = prepare(load_study(folder / "study.toml"))
    base_click = prep.objective.baseline_per_task[0]
    off = run_ltr(prep, "gbdt", options={"guardrail_rounds": 0})
    assert base_click - off["best"]["per_task"]["click"] > 0.01 and not off["best"]["feasible"]
    on = run_ltr(prep, "gbdt", options={"guardrail_rounds": 5})
    g = on["ltr"]["guardrails"]
    assert g["feasible_on_validation"] and g["multipliers"]["click"] > 1.0
    assert g["multipliers"]["finish"] == 1.0 and g["fits"] > 1
    assert on["best"]["per_task"]["click"] > off["best"]["per_task"]["click"] + 0.01
    assert base_click - on["best"]["per_task"]["click"] < 0.015  # validation margin carries over, roughly
    assert on["best"]["objective"] > on["baseline"]["objective"]


def test_torch_and_lightgbm_are_not_imported_by_the_package():
    code = ("import sys, fusiontune.ltr, fusiontune.commands.ltr, fusiontune.commands.score, fusiontune.cli;"
            "fusiontune.cli.build_parser();"
            "assert 'torch' not in sys.modules and 'lightgbm' not in sys.modules, 'heavy import'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_feature_spec_round_trip():
    spec = FeatureSpec(["a", "b"], ["p_a", "p_b"], ["prob", "logit"], [1, -1], ["hour"])
    assert FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert spec.names == ["p_a", "p_b", "hour"] and spec.monotone(False) == [0, 0, 0]
