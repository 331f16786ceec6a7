"""Bootstrap CIs, Pareto/diversity selection, report files, export -> eval round trip, bad input."""

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm

from conftest import write_study
from fusiontune.bootstrap import (auc_resampled, gauc_resampled, group_aucs, paired_bootstrap, unit_counts,
                                  units_of_rows)
from fusiontune.cli import main
from fusiontune.metrics import GaucPlan, GroupIndex, auc, gauc
from fusiontune.select import farthest_point, pareto_front, rank_distance, weight_distance


# --------------------------------------------------------------------------- kernels
def _toy(rng, n=3000, n_groups=300):
    groups = np.sort(rng.integers(0, n_groups, n))
    lab = (rng.random((n, 3)) < 0.3).astype(np.float32)
    lab[rng.random(n) < 0.4, 2] = np.nan  # a task observed on part of the rows
    s = (rng.random((3, n)) + 0.4 * lab[:, 0]).astype(np.float32)
    s[:, :400] = np.round(s[:, :400], 1)  # ties
    return groups, lab, s


def test_resampled_auc_and_gauc_equal_the_kernel_with_count_weights():
    rng = np.random.default_rng(3)
    groups, lab, s = _toy(rng)
    w = rng.random(len(groups)) + 0.5
    index = GroupIndex.build(groups)
    unit = units_of_rows(index)
    counts = unit_counts(index.n_groups, 6, rng)
    got = auc_resampled(s, lab, unit, counts, w)
    plan = GaucPlan(lab, groups, w, "rows")
    got_g = gauc_resampled(group_aucs(plan, s), plan.group_w, counts)
    for b in range(counts.shape[0]):
        rw = w * counts[b, unit]  # a resample == integer row weights
        np.testing.assert_allclose(got[:, b], auc(s, lab, rw), rtol=0, atol=1e-12)
        np.testing.assert_allclose(got_g[:, b], gauc(s, lab, groups, rw), rtol=0, atol=1e-12)


def test_unit_counts_draw_u_units_per_resample():
    c = unit_counts(50, 40, np.random.default_rng(0))
    assert c.shape == (40, 50) and (c.sum(axis=1) == 50).all() and (c >= 0).all()
    assert abs(c.mean() - 1.0) < 1e-12 and c.std() > 0.5


# --------------------------------------------------------------------------- coverage
def _experiment(rng, n_groups=200, size=10):
    """Two rankings with a known population GAUC delta that differs by group type."""
    mu = np.array([[0.3, 0.8], [1.2, -0.2]])  # per group type: (signal of x1, signal of x2)
    kind = rng.integers(0, 2, n_groups)
    g = np.repeat(np.arange(n_groups), size)
    y = (rng.random(g.size) < 0.3).astype(np.float32)
    x1 = mu[kind[g], 0] * y + rng.standard_normal(g.size)
    x2 = mu[kind[g], 1] * y + rng.standard_normal(g.size)
    scores = np.vstack([x1 + x2, x1]).astype(np.float32)  # candidate, baseline
    # within a group: AUC(x1) = Phi(mu1 / sqrt 2), AUC(x1 + x2) = Phi((mu1 + mu2) / 2)
    true = np.mean(norm.cdf(mu.sum(axis=1) / 2) - norm.cdf(mu[:, 0] / np.sqrt(2)))
    return g, y[:, None], scores, true


def test_group_bootstrap_ci_covers_the_true_delta_at_the_nominal_rate():
    rng = np.random.default_rng(11)
    level, reps, b = 0.90, 160, 300
    hits = 0
    for _ in range(reps):
        g, y, s, true = _experiment(rng)
        plan = GaucPlan(y, g)
        counts = unit_counts(plan.index.n_groups, b, rng)
        m = gauc_resampled(group_aucs(plan, s), plan.group_w, counts)[:, :, 0]  # (2, B)
        d = m[0] - m[1]  # paired: same resamples
        lo, hi = np.quantile(d, [(1 - level) / 2, (1 + level) / 2])
        hits += lo <= true <= hi
    cover = hits / reps
    assert 0.80 <= cover <= 0.97, cover  # nominal 0.90; binomial sd ~0.024


def test_row_bootstrap_ci_covers_the_true_auc_delta():
    rng = np.random.default_rng(5)
    level, reps, b, n = 0.90, 160, 300, 1500
    m1, m2 = 0.6, 0.5
    true = norm.cdf((m1 + m2) / 2) - norm.cdf(m1 / np.sqrt(2))
    hits = 0
    for _ in range(reps):
        y = (rng.random(n) < 0.3).astype(np.float32)
        x1 = m1 * y + rng.standard_normal(n)
        x2 = m2 * y + rng.standard_normal(n)
        s = np.vstack([x1 + x2, x1]).astype(np.float32)
        counts = unit_counts(n, b, rng)
        r = auc_resampled(s, y[:, None], np.arange(n), counts)[:, :, 0]
        lo, hi = np.quantile(r[0] - r[1], [(1 - level) / 2, (1 + level) / 2])
        hits += lo <= true <= hi
    assert 0.80 <= hits / reps <= 0.97, hits / reps


# --------------------------------------------------------------------------- selection
def test_pareto_front_on_a_hand_made_set():
    v = np.array([[3, 0], [2, 2], [0, 3], [1, 1], [2, 2], [2, 1.5], [-1, -1]], dtype=float)
    assert pareto_front(v).tolist() == [True, True, True, False, True, False, False]
    assert pareto_front(np.array([[1.0, 1.0, 1.0]])).tolist() == [True]


def test_farthest_point_sampling_spreads_the_picks():
    pts = np.array([[0.0], [0.1], [0.5], [0.9], [1.0]])
    d = weight_distance(pts)
    assert farthest_point(d, 3, start=0) == [0, 4, 2]
    assert farthest_point(d, 2, start=2) == [2, 0]
    assert farthest_point(d, 10, start=1) == [1, 4, 2, 0, 3]  # all of them; ties go to the lower index


def test_rank_distance_is_one_minus_spearman():
    x = np.arange(100, dtype=np.float32)
    d = rank_distance(np.vstack([x, x ** 3, -x]))
    np.testing.assert_allclose(d, [[0, 0, 2], [0, 0, 2], [2, 2, 0]], atol=1e-12)


# --------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, small_log):
    tmp = tmp_path_factory.mktemp("sel")
    study = write_study(tmp, small_log)
    out = tmp / "run"
    assert main(["search", "--study", str(study), "--budget", "96", "--quiet", "--out", str(out)]) == 0
    return out


def test_select_writes_arms_with_holdout_cis(run_dir, capsys):
    assert main(["select", "--run", str(run_dir), "--k", "3", "--resamples", "200", "--level", "0.9"]) == 0
    printed = capsys.readouterr().out
    c = json.loads((run_dir / "candidates.json").read_text())
    assert c["evaluated_on"] == "holdout" and c["units"] == "groups" and c["resamples"] == 200
    assert 1 <= len(c["arms"]) <= 3 and c["arms"][0]["name"] == "arm-1"
    tasks = set(c["baseline"]["per_task"])
    for arm in c["arms"]:
        assert set(arm["delta"]) == tasks
        for d in [*arm["delta"].values(), arm["gain"]]:
            assert d["lo"] <= d["value"] <= d["hi"] or abs(d["hi"] - d["lo"]) < 1e-3
        assert ("gain-ci-includes-zero" in arm["flags"]) == (arm["gain"]["lo"] <= 0 <= arm["gain"]["hi"])
        assert arm["name"] in printed
    # arm-1 is the Pareto arm with the best gain on the rows arms are picked on (here the search
    # rows: the study has only a holdout, which judges but never picks); later arms are farther
    assert c["picked_on"] == "search"
    gains = [a["pick"]["gain"]["value"] for a in c["arms"]]
    assert gains[0] == max(gains)
    assert all(a["distance_to_previous_arms"] > 0 for a in c["arms"][1:])


def test_paired_bootstrap_on_the_holdout_objective(run_dir):
    from fusiontune.select import load_run

    result, trials, prep = load_run(run_dir)
    best = prep.space.from_dict(result["best"]["params"])
    bs = paired_bootstrap(prep.holdout_objective, best[None], prep.space.baseline, 200, 0.95, seed=1)
    assert bs.delta.shape == (1, 4) and bs.samples.shape == (1, 200, 4)
    assert bs.gain[0] == pytest.approx(result["holdout"]["best"]["objective"] - result["holdout"]["baseline"]["objective"],
                                       abs=1e-12)
    assert (bs.delta_lo <= bs.delta_hi).all() and bs.gain_lo[0] < bs.gain_hi[0]
    # the baseline against itself: every resample gives exactly 0
    z = paired_bootstrap(prep.holdout_objective, prep.space.baseline[None], prep.space.baseline, 50)
    assert np.all(z.samples == 0) and z.gain_lo[0] == z.gain_hi[0] == 0


def _imgs(html: str) -> list[bytes]:
    srcs = re.findall(r"<img[^>]*src='([^']*)'", html)
    out = []
    for s in srcs:
        assert s.startswith("data:image/png;base64,"), s[:40]
        out.append(base64.b64decode(s.split(",", 1)[1], validate=True))
    return out


def test_report_html_md_json(run_dir, tmp_path, capsys):
    from PIL import Image

    html = tmp_path / "r.html"
    assert main(["report", "--run", str(run_dir), "--out", str(html), "--resamples", "200",
                 "--stability-resamples", "30", "--pareto", "click,convert"]) == 0
    text = html.read_text()
    for title in ("Study summary", "Best vs baseline per task", "Convergence", "Per-parameter sensitivity",
                  "Pareto front: click vs convert", "Selected A/B arms", "Stability of the best weights"):
        assert title in text
    images = _imgs(text)
    assert len(images) >= 5
    for png in images:
        im = Image.open(io.BytesIO(png))
        im.load()
        assert im.size[0] > 200 and im.size[1] > 150
    md = tmp_path / "md" / "report.md"
    assert main(["report", "--run", str(run_dir), "--format", "md", "--out", str(md), "--resamples", "100",
                 "--stability-resamples", "20"]) == 0
    refs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md.read_text())
    assert len(refs) >= 5
    for r in refs:
        Image.open(md.parent / r).load()
    js = tmp_path / "r.json"
    assert main(["report", "--run", str(run_dir), "--format", "json", "--out", str(js), "--resamples", "100",
                 "--stability-resamples", "20"]) == 0
    rep = json.loads(js.read_text())
    assert {"summary", "tasks", "convergence", "sensitivity", "pareto", "arms", "stability"} <= set(rep)
    obj = next(r for r in rep["tasks"] if r["task"] == "objective")
    assert obj["holdout"]["delta"]["lo"] <= obj["holdout"]["delta"]["hi"]
    st = rep["stability"]
    assert set(st["params"]) == {"a_like", "a_finish", "a_convert"}
    assert all(len(p["values"]) == st["resamples_with_a_feasible_winner"] for p in st["params"].values())


def test_report_html_renders_in_chromium(run_dir, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        pytest.skip("chromium not on PATH (Debian: apt-get install -y chromium)")
    from PIL import Image

    html = tmp_path / "r.html"
    assert main(["report", "--run", str(run_dir), "--out", str(html), "--resamples", "100",
                 "--stability-resamples", "20"]) == 0
    png = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}", "--window-size=1280,4000",
                    html.resolve().as_uri()], capture_output=True, timeout=120, check=False)
    im = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)
    assert im.shape[:2] == (4000, 1280)
    # the rendered plots put saturated colour (matplotlib's tab: blue/orange) on the page;
    # a page of missing images would be only text on white
    sat = (im.max(axis=2) - im.min(axis=2)) > 80
    assert sat.mean() > 0.005, sat.mean()


# --------------------------------------------------------------------------- export / eval
@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_export_eval_round_trip(run_dir, tmp_path, suffix, capsys):
    w = tmp_path / f"weights{suffix}"
    assert main(["export", "--run", str(run_dir), "--to", str(w)]) == 0
    result = json.loads((run_dir / "result.json").read_text())
    study = result["study_file"]
    out = tmp_path / "eval.json"
    assert main(["eval", "--study", study, "--params", str(w), "--out", str(out)]) == 0
    ev = json.loads(out.read_text())
    # per-task metrics are bit-identical; the weighted sum may differ in the last bit (BLAS order)
    assert ev["parts"]["search"]["per_task"] == result["best"]["per_task"]
    assert ev["parts"]["holdout"]["per_task"] == result["holdout"]["best"]["per_task"]
    assert ev["parts"]["search"]["objective"] == pytest.approx(result["best"]["objective"], rel=0, abs=1e-12)
    assert ev["parts"]["holdout"]["objective"] == pytest.approx(result["holdout"]["best"]["objective"], rel=0,
                                                                abs=1e-12)
    assert ev["parts"]["search"]["baseline_objective"] == pytest.approx(result["baseline"]["objective"], abs=1e-12)
    assert ev["params"] == result["best"]["params"]
    assert "whole" in ev["parts"]


def test_export_document_is_flat_and_complete(run_dir, tmp_path):
    import yaml

    assert main(["select", "--run", str(run_dir), "--resamples", "50", "--quiet"]) == 0
    w = tmp_path / "arm.yaml"
    assert main(["export", "--run", str(run_dir), "--arm", "arm-1", "--to", str(w)]) == 0
    doc = yaml.safe_load(w.read_text())
    c = json.loads((run_dir / "candidates.json").read_text())
    assert doc["formula"] == "multiplicative" and doc["reference"] == "click"
    assert doc["params"] == c["arms"][0]["params"]
    assert [t["name"] for t in doc["tasks"]] == ["click", "like", "finish", "convert"]
    assert all(t["a"] == doc["params"][f"a_{t['name']}"] for t in doc["tasks"])
    assert doc["tasks"][0]["score_column"] == "p_click" and doc["eps"] > 0 and doc["source"]["arm"] == "arm-1"
    # eval on another log (the same file under another name) reproduces the arm's holdout objective
    other = tmp_path / "copy.parquet"
    shutil.copy(json.loads((run_dir / "result.json").read_text())["log"], other)
    out = tmp_path / "e.json"
    assert main(["eval", "--study", doc["source"]["study_file"], "--params", str(w), "--log", str(other),
                 "--out", str(out)]) == 0
    ev = json.loads(out.read_text())
    assert ev["parts"]["holdout"]["objective"] == pytest.approx(c["arms"][0]["objective"], abs=1e-12)


# --------------------------------------------------------------------------- bad input
def _one_line_error(capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fusiontune: error:") and needle in err[0], err


def test_bad_input_exits_2_with_one_line(run_dir, tmp_path, capsys):
    missing = tmp_path / "no-such-run"
    for cmd in (["select", "--run", str(missing)], ["report", "--run", str(missing)],
                ["export", "--run", str(missing), "--to", str(tmp_path / "w.json")]):
        _one_line_error(capsys, cmd, "no-such-run")
    study = json.loads((run_dir / "result.json").read_text())["study_file"]
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    _one_line_error(capsys, ["eval", "--study", study, "--params", str(bad)], "invalid JSON")
    bad.write_text(json.dumps({"formula": "multiplicative", "params": {"a_click": 1.0, "a_like": 0.3}}))
    _one_line_error(capsys, ["eval", "--study", study, "--params", str(bad)], "a_finish")
    bad.write_text(json.dumps({"formula": "additive", "params": {"a_click": 1.0}}))
    _one_line_error(capsys, ["eval", "--study", study, "--params", str(bad)], "additive")
    bad.write_text(json.dumps({"params": {"a_click": 1, "a_like": "x", "a_finish": 0, "a_convert": 0}}))
    _one_line_error(capsys, ["eval", "--study", study, "--params", str(bad)], "a_like")
    ybad = tmp_path / "bad.yaml"
    ybad.write_text("params: [1, 2\n")
    _one_line_error(capsys, ["eval", "--study", study, "--params", str(ybad)], "invalid YAML")
    _one_line_error(capsys, ["eval", "--study", study, "--params", str(tmp_path / "none.json")], "not found")
    _one_line_error(capsys, ["export", "--run", str(run_dir), "--arm", "arm-9", "--to", str(tmp_path / "w.json")],
                    "arm-9")
    _one_line_error(capsys, ["export", "--run", str(run_dir), "--to", str(tmp_path / "w.txt")], ".txt")
    _one_line_error(capsys, ["report", "--run", str(run_dir), "--pareto", "click,nope"], "--pareto")
    assert not (tmp_path / "w.json").exists() and not (tmp_path / "w.txt").exists()


def test_report_of_a_learned_fuser_shows_feature_importances(tmp_path, small_log, capsys):
    from fusiontune.ltr.fit import fit_ltr
    from fusiontune.pipeline import prepare
    from fusiontune.results import write_run
    from fusiontune.study import load_study

    prep = prepare(load_study(write_study(tmp_path, small_log)))
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # a tiny fit: OpenMP threads only contend with the busy machine
        result, trials, _ = fit_ltr(prep, "gbdt", options={"guardrail_rounds": 0, "gbdt": {"max_iter": 10}})
    run = tmp_path / "ltr"
    write_run(run, result, trials)
    js = tmp_path / "ltr.json"
    assert main(["report", "--run", str(run), "--format", "json", "--out", str(js), "--resamples", "50"]) == 0
    rep = json.loads(js.read_text())
    assert set(rep["ltr"]["feature_importance"]) == set(result["feature_importance"])
    assert "arms" not in rep and "sensitivity" not in rep  # no weights to move or select
    html = tmp_path / "ltr.html"
    assert main(["report", "--run", str(run), "--out", str(html), "--resamples", "50"]) == 0
    assert "feature importances" in html.read_text() and len(_imgs(html.read_text())) == 1
    # absent importances: the section says so instead of failing
    result.pop("feature_importance")
    write_run(run, result, trials)
    assert main(["report", "--run", str(run), "--format", "json", "--out", str(js)]) == 0
    assert "no feature_importance" in json.loads(js.read_text())["ltr"]["note"]
    capsys.readouterr()


def test_report_warns_when_a_weight_flips_sign_across_resamples(tmp_path, capsys):
    """t2 carries no signal (a*_t2 = 0): candidates with +-small a_t2 win resamples at random."""
    import pandas as pd

    from fusiontune.pipeline import metric_columns, prepare, summarise_params
    from fusiontune.results import write_run
    from fusiontune.simulate import simulate_known_optimum, write_table
    from fusiontune.study import load_study

    log = tmp_path / "known.parquet"
    write_table(simulate_known_optimum({"t1": 1.0, "t2": 0.0}, rows=6000, groups=600, formula="additive",
                                       seed=3), log)
    (tmp_path / "flip.toml").write_text(f'name = "flip"\nlog = "{log.as_posix()}"\ngroup = "request_id"\n'
                                        '[[tasks]]\nname = "t1"\nscore = "p_t1"\nlabel = "t1"\n'
                                        '[[tasks]]\nname = "t2"\nscore = "p_t2"\nlabel = "t2"\nweight = 0.5\n'
                                        '[fusion]\nformula = "additive"\nreference = "t1"\n'
                                        '[fusion.baseline]\na_t1 = 1.0\na_t2 = 0.5\n'
                                        '[fusion.bounds]\na = [-1.0, 1.0]\n')
    study = load_study(tmp_path / "flip.toml")
    prep = prepare(study)
    theta = np.array([[1.0, v] for v in (-0.02, -0.01, 0.01, 0.02)])
    ev = prep.objective.evaluate(theta)
    trials = pd.DataFrame(theta, columns=prep.space.all_names)
    trials.insert(0, "generation", 1)
    trials.insert(0, "trial", range(len(trials)))
    trials["objective"] = ev.objective
    for j, c in enumerate(metric_columns(study)):
        trials[c] = ev.per_task[:, j]
    trials["feasible"] = ev.feasible
    trials["penalised"] = ev.penalised
    result = summarise_params(prep, trials, "hand", 0, 4, 0.0, "budget")
    run = tmp_path / "run"
    write_run(run, result, trials)
    js = tmp_path / "r.json"
    assert main(["report", "--run", str(run), "--format", "json", "--out", str(js), "--resamples", "100",
                 "--stability-resamples", "200"]) == 0
    st = json.loads(js.read_text())["stability"]["params"]["a_t2"]
    assert st["sign_flip"] and 0.2 < st["positive_share"] < 0.8, st  # seed 3: about half and half
    assert "a_t2 flips sign" in capsys.readouterr().err


def test_select_defaults_come_from_the_study_select_table(run_dir, tmp_path, capsys):
    result = json.loads((run_dir / "result.json").read_text())
    study = tmp_path / "with_select.toml"
    study.write_text(Path(result["study_file"]).read_text() + '\n[select]\nk = 2\nresamples = 60\n'
                     'diversity = "weights"\n')
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "candidates.json").unlink(missing_ok=True)
    (run / "result.json").write_text(json.dumps({**result, "study_file": str(study)}))
    assert main(["select", "--run", str(run), "--quiet", "--level", "0.8"]) == 0
    c = json.loads((run / "candidates.json").read_text())
    assert c["resamples"] == 60 and c["diversity"] == "weights" and c["level"] == 0.8 and len(c["arms"]) <= 2
    study.write_text(study.read_text() + "typo = 1\n")
    _one_line_error(capsys, ["select", "--run", str(run)], "typo")


def test_resample_fused_equals_resample_metrics_on_formula_scores():
    """Any fuser's scores (here a formula's, computed outside) get the same resampled metrics as the
    formula's parameter rows, on the same resamples (so differences are paired)."""
    from fusiontune.bootstrap import resample_fused, resample_metrics
    from fusiontune.pipeline import prepare
    from fusiontune.study import load_study
    from pathlib import Path as _P

    prep = prepare(load_study(_P(__file__).resolve().parents[1] / "studies" / "demo.toml"))
    h = prep.holdout_objective
    theta = np.vstack([prep.space.baseline, prep.space.baseline * 0.5 + 0.1])
    fused = h.formula.scores(h.prepared, theta)
    a, kind, n = resample_metrics(h, theta, 40, seed=3)
    b, kind2, n2 = resample_fused(h, fused, 40, seed=3)
    assert (kind, n) == (kind2, n2) and np.array_equal(a, b, equal_nan=True)
    with pytest.raises(ValueError, match="columns"):
        resample_fused(h, fused[:, :-1], 4)
