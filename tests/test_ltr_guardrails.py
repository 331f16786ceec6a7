"""A fuser started from a formula may not pay for its objective with a guardrail (issue 16): the
validation bars, the shrinkage of the residual correction, the per-guardrail holdout deltas of
the fuser beside the best formula's in result.json / summary / compare / report, and `score`
reading a log given as a directory, Hive dataset or glob."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fusiontune.cli import main
from fusiontune.errors import InputError
from fusiontune.ltr import fit_ltr
from fusiontune.ltr.config import parse_config
from fusiontune.ltr.fit import _base_formula, _try_objective, _validation_mask, fused_metrics, guardrail_bars
from fusiontune.ltr.features import FeatureSpec
from fusiontune.ltr.versus import formula_block, summary_lines, versus_block
from fusiontune.pipeline import prepare, search
from fusiontune.simulate import simulate_known_optimum
from fusiontune.study import load_study

from test_ltr import A_STAR, write_study

FAST = {"dnn": {"epochs": 12, "hidden": [8], "batch_size": 1024, "lr": 0.01}}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """A study with a click guardrail and the best formula a short search finds on it."""
    folder = tmp_path_factory.mktemp("guarded")
    df = simulate_known_optimum(A_STAR, rows=12_000, groups=600, seed=7)
    path = write_study(folder, df, max_drop=0.004)
    prep = prepare(load_study(path))
    best = search(prep, "cem", 96, 0, 16)[0]
    return path, prep, best["best"]["params"]


def _validation(prep, cfg):
    search_log = prep.objective.log
    vmask = _validation_mask(search_log, cfg.validation, 0)
    val_log = search_log.take(vmask)
    vo = _try_objective(prep.study, val_log, prep.formula)
    vo.set_baseline(prep.space.baseline)
    return vo, FeatureSpec.from_study(prep.study, []).matrix(val_log)


def test_bars_are_the_start_formula_or_the_limit(guarded):
    _, prep, params = guarded
    cfg = parse_config(None)
    vo, x = _validation(prep, cfg)
    start = _base_formula(prep, params)
    bars = guardrail_bars(vo, cfg, start, x)
    click = prep.study.task_names.index("click")
    theta = prep.space.from_dict(params)
    assert bars[click] == pytest.approx(vo.metrics(theta[None, :])[0][click], abs=1e-5)  # float32 formula
    assert np.isinf(np.delete(bars, click)).all()  # unguarded tasks have no bar
    limit = guardrail_bars(vo, parse_config({"guardrail_bar": "limit"}), start, x)
    assert limit[click] == pytest.approx(vo.baseline_per_task[click] - 0.004 * 0.8)
    # from the baseline the bar is always the limit
    assert guardrail_bars(vo, cfg, None, x)[click] == pytest.approx(limit[click])
    with pytest.raises(InputError, match=r"guardrail_bar must be"):
        parse_config({"guardrail_bar": "formula"})


@pytest.mark.parametrize("model", ["gbdt", "dnn"])
def test_fuser_from_a_formula_keeps_its_guardrail_bar_on_validation(guarded, model):
    """Started from the best formula, the chosen fuser's guarded metric on the validation part is
    at least the formula's (the Pareto bar), and its objective there at least the formula's."""
    pytest.importorskip("lightgbm")
    _, prep, params = guarded
    opts = {"backend": "lightgbm", **FAST}
    r, _, fuser = fit_ltr(prep, model, "combined", 0, opts, start=params)
    g = r["ltr"]["guardrails"]
    assert g["bar"] == "start formula" and set(g["validation_bars"]) == {"click"}
    cfg = parse_config(None, opts)
    vo, x = _validation(prep, cfg)
    pt = fused_metrics(vo, fuser.predict(vo.log))
    click = prep.study.task_names.index("click")
    assert pt[click] >= g["validation_bars"]["click"] - 1e-6
    from fusiontune.ltr.residual import base_score

    j_start = float(fused_metrics(vo, base_score(x, _base_formula(prep, params))) @ vo.w)
    assert float(pt @ vo.w) >= j_start - 1e-6
    assert r["ltr"]["shrink"] is None or 0 < r["ltr"]["shrink"] <= 1


def test_tree_shrinkage_is_folded_into_the_formula_term(guarded):
    """score = start + alpha * trees ranks like the folded estimator (scale / alpha, offset / alpha)."""
    pytest.importorskip("lightgbm")
    from fusiontune.ltr.residual import select_trees

    _, prep, params = guarded
    r, _, fuser = fit_ltr(prep, "gbdt", "combined", 0, {"backend": "lightgbm", "guardrail_rounds": 0})
    est = fuser.estimator
    x = fuser.spec.matrix(prep.objective.log)
    n = int(est.trees.n_estimators_ if hasattr(est.trees, "n_estimators_") else est.trees.booster_.num_trees())
    target = est.start(x) + 0.35 * est.tree_sum(x, n)
    info = select_trees(est, x, lambda f: float(np.corrcoef(f, target)[0, 1]), n, shrinks=(1.0, 0.35, 0.1))
    assert info["iterations"] == n and info["shrink"] == 0.35
    assert np.allclose(0.35 * est.predict(x), target, rtol=1e-6, atol=1e-6)


def test_versus_puts_each_guardrail_beside_the_best_formula(guarded):
    _, prep, params = guarded
    f = formula_block(prep, params, method="cem", run="runs/x")
    base = {t: float(v) for t, v in zip(prep.study.task_names, prep.holdout_objective.baseline_per_task)}
    fpt = f["holdout_per_task"]
    better = {**fpt, "finish": fpt["finish"] + 0.01}  # more objective, the same click: no payment
    v = versus_block(prep, 1.0, 0.0, f["holdout"] + 0.01, 0.0, f, better, base)
    g = v["guardrails"]["click"]
    assert g["fuser_delta"] == pytest.approx(fpt["click"] - base["click"])
    assert g["best_formula_delta"] == pytest.approx(g["fuser_delta"]) and g["vs_best_formula"] == 0
    assert not any("pays" in s for s in v["flags"])
    paid = {**better, "click": fpt["click"] - 0.002}  # the same objective gain bought with click
    v = versus_block(prep, 1.0, 0.0, f["holdout"] + 0.01, 0.0, f, paid, base)
    assert v["guardrails"]["click"]["vs_best_formula"] == pytest.approx(-0.002)
    assert any(s.startswith("pays in the click guardrail") for s in v["flags"])
    assert v["verdict"].startswith("keep the formula")
    assert any("PAYS IN GUARDRAIL" in line for line in summary_lines(v))
    crossed = {**better, "click": base["click"] - 0.01}
    v = versus_block(prep, 1.0, 0.0, f["holdout"] + 0.01, 0.0, None, crossed, base)
    assert any(s.startswith("crosses the click guardrail") for s in v["flags"])
    assert v["guardrails"]["click"]["fuser_kept"] is False and "best_formula_delta" not in v["guardrails"]["click"]


def test_result_compare_and_report_show_the_guardrails(guarded, tmp_path):
    pytest.importorskip("lightgbm")
    path, prep, _ = guarded
    out = tmp_path / "cmp"
    assert main(["compare", "--study", str(path), "--methods", "cem,ltr-gbdt", "--seeds", "1", "--budget", "32",
                 "--population", "8", "--out", str(out), "--quiet"]) == 0
    table = pd.read_csv(out / "compare.csv")
    runs = pd.read_csv(out / "runs.csv")
    row = table[table["method"] == "ltr-gbdt"].iloc[0]
    cem = runs[runs["method"] == "cem"].iloc[0]
    lt = runs[runs["method"] == "ltr-gbdt"].iloc[0]
    assert "holdout_delta_click" in runs and "holdout_delta_like" not in runs  # guarded tasks only
    assert bool(row["pays_in_guardrails"]) == bool(lt["holdout_delta_click"] < cem["holdout_delta_click"] - 1e-6)
    assert f"click {lt['holdout_delta_click']:+.4f} vs {cem['holdout_delta_click']:+.4f}" in \
        row["guardrails_vs_best_formula"]
    assert "guardrails click" in (out / "compare.md").read_text()
    # result.json of an ltr run judged against a formula run, and its report
    runs_dir = tmp_path / "runs"
    assert main(["search", "--study", str(path), "--budget", "48", "--population", "8", "--out",
                 str(runs_dir / "f"), "--quiet"]) == 0
    assert main(["ltr", "--study", str(path), "--model", "gbdt", "--out", str(runs_dir / "g"), "--vs",
                 str(runs_dir / "f"), "--quiet"]) == 0
    r = json.loads((runs_dir / "g" / "result.json").read_text())
    g = r["versus"]["guardrails"]["click"]
    h = r["holdout"]
    assert g["fuser_delta"] == pytest.approx(h["best"]["per_task"]["click"] - h["baseline"]["per_task"]["click"])
    assert {"best_formula_delta", "vs_best_formula", "max_drop"} <= set(g)
    rep = tmp_path / "report.md"
    assert main(["report", "--run", str(runs_dir / "g"), "--format", "md", "--out", str(rep), "--resamples", "30",
                 "--stability-resamples", "5"]) == 0
    assert "best formula Δ vs baseline (holdout)" in rep.read_text()


# --------------------------------------------------------------------------- score --log <dataset>
@pytest.fixture(scope="module")
def scored_run(guarded, tmp_path_factory):
    pytest.importorskip("lightgbm")
    path, _, _ = guarded
    run = tmp_path_factory.mktemp("scorerun") / "g"
    assert main(["ltr", "--study", str(path), "--model", "gbdt", "--out", str(run), "--quiet"]) == 0
    return path, run


def _log(study_path):
    return load_study(study_path).log


@pytest.mark.parametrize("layout", ["hive", "glob"])
def test_score_reads_a_dataset_like_load_log(scored_run, tmp_path, layout):
    study_path, run = scored_run
    df = pd.read_parquet(_log(study_path))
    one = tmp_path / "one.parquet"
    assert main(["score", "--log", str(_log(study_path)), "--out", str(one), "--model", str(run)]) == 0
    half = len(df) // 2
    if layout == "hive":
        for i, part in enumerate((df.iloc[:half], df.iloc[half:])):
            d = tmp_path / "ds" / f"day={i}"
            d.mkdir(parents=True)
            part.to_parquet(d / "part.parquet", index=False)
        src = str(tmp_path / "ds")
    else:
        for i, part in enumerate((df.iloc[:half], df.iloc[half:])):
            part.to_parquet(tmp_path / f"log-{i}.parquet", index=False)
        src = str(tmp_path / "log-*.parquet")
    out = tmp_path / "many.csv"
    assert main(["score", "--log", src, "--out", str(out), "--model", str(run)]) == 0
    a, b = pd.read_parquet(one), pd.read_csv(out)
    assert len(b) == len(df)
    np.testing.assert_allclose(b["fused_score"].to_numpy(), a["fused_score"].to_numpy(), rtol=1e-9)
    if layout == "hive":
        assert sorted(b["day"].unique()) == [0, 1]  # the partition column is written back


def test_score_dataset_bad_value_names_the_file_and_row(scored_run, tmp_path, capsys):
    study_path, run = scored_run
    df = pd.read_parquet(_log(study_path))
    half = len(df) // 2
    second = df.iloc[half:].copy()
    second.iloc[3, second.columns.get_loc("p_like")] = np.inf  # a GBDT takes any finite score
    (tmp_path / "ds").mkdir()
    df.iloc[:half].to_parquet(tmp_path / "ds" / "a.parquet", index=False)
    second.to_parquet(tmp_path / "ds" / "b.parquet", index=False)
    out = tmp_path / "x.parquet"
    capsys.readouterr()
    code = main(["score", "--log", str(tmp_path / "ds"), "--out", str(out), "--model", str(run)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "b.parquet" in err[0] and "'p_like'" in err[0] and "row 4 " in err[0] and "finite" in err[0]
    assert not out.exists()
    code = main(["score", "--log", str(tmp_path / "nothing-*.parquet"), "--out", str(out), "--model", str(run)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no file matches" in err[0]


def test_refits_bisect_the_multiplier_when_every_fit_keeps_the_formula(guarded):
    """The guardrail refits bisect between the last blocked multiplier and the first unblocked
    one, also when every fit ties (each kept its start formula): the bracket is (3, 9), not the
    first fit's 1.  fit_once is scripted here (the fuser is the start formula itself, blocked by
    the click guardrail below a multiplier of 5); the refit search is what is tested."""
    from fusiontune.ltr.fit import _fit_with_guardrails
    from fusiontune.ltr.residual import base_score

    path, prep, best = guarded
    cfg = parse_config({}, None, "t")
    vo, vx = _validation(prep, cfg)
    start = _base_formula(prep, best)
    bars = guardrail_bars(vo, cfg, start, vx)

    class Formula:  # the fuser a fit that keeps its start formula returns
        def predict_matrix(self, x):
            return base_score(x, start)

    class Val:
        x = vx

    calls = []

    def fit_once(w):
        mult = float(w[0] / w0[0])
        calls.append(mult)
        return Formula(), {"blocked_by": [mult < 5.0] + [False] * (len(w) - 1)}, None, Val()

    w0 = np.ones(len(prep.study.tasks))
    *_, guard = _fit_with_guardrails(fit_once, w0, vo, 5, bars)
    assert calls[:3] == pytest.approx([1.0, 3.0, 9.0])
    assert calls[3] == pytest.approx(np.sqrt(27.0))          # between 3 (blocked) and 9 (free)
    assert calls[4] == pytest.approx(np.sqrt(3.0 * np.sqrt(27.0)))  # 5.2 was free: (3, 5.2)
    assert guard["feasible_on_validation"] and len(guard["trace"]) == 5
