"""Output for every terminal: progress lines when not a TTY, 80-column tables that never cut a
number, --quiet's one line, compare's holdout guardrail column, and plain messages."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from conftest import write_study
from fusiontune.cli import main
from fusiontune.progress import _Lines, format_line, progress_mode

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^search cem: (\d+)/(\d+) evaluations \(\d+%\)(, best -?\d+\.\d{5})?, \d+s elapsed"
                  r"(, [\d.e+]+ evaluations/s)?$")


def console80() -> Console:
    return Console(width=80, file=io.StringIO(), record=True, highlight=False, color_system=None)


def numbers(text: str) -> list[str]:
    return re.findall(r"[+-]?\d+\.\d{4,}", text)


def assert_fits_80(text: str) -> None:
    """No cut cell anywhere, and every table line within 80 columns (a long file path on a
    line of its own may run over; it is not cut either)."""
    assert "…" not in text and "..." not in text, text
    table_lines = [ln for ln in text.splitlines() if set(ln) & set("│┃┏┗└┌━─")]
    assert table_lines and max(len(ln.rstrip()) for ln in table_lines) <= 80, text


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, small_log):
    d = tmp_path_factory.mktemp("run")
    study = write_study(d, small_log)
    out = d / "run"
    assert main(["search", "--study", str(study), "--budget", "48", "--quiet", "--out", str(out)]) == 0
    assert main(["select", "--run", str(out), "--resamples", "30", "--quiet"]) == 0
    return study, out


def test_progress_lines_when_stderr_is_not_a_tty(tmp_path, small_study):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FUSIONTUNE_PROGRESS_INTERVAL": "0.2"}
    env.pop("CI", None)
    proc = subprocess.run([sys.executable, "-m", "fusiontune", "search", "--study", str(small_study),
                           "--budget", "400", "--population", "16", "--patience", "0", "--out",
                           str(tmp_path / "run")], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("search ")]
    assert len(lines) >= 2, proc.stderr
    for ln in lines:
        assert LINE.match(ln), ln
    assert LINE.match(lines[-1]).group(3) and LINE.match(lines[-1]).group(4)  # best and rate once evaluating
    done = [int(LINE.match(ln).group(1)) for ln in lines]
    assert done == sorted(done) and LINE.match(lines[-1]).group(2) == "400"
    evaluations = json.loads((tmp_path / "run" / "result.json").read_text())["evaluations"]
    assert done[-1] == evaluations  # the last line is the final count
    assert "evaluations/s" not in proc.stdout  # progress never mixes into the result on stdout
    assert "\x1b[" not in proc.stderr  # no terminal control codes in a log


def test_progress_line_thread_and_modes(monkeypatch):
    buf = io.StringIO()
    bar = _Lines(100, "search cem", "evaluations", 0.05, stream=buf).start()
    bar.update(advance=40, resumed=True)  # done before this process: counts, but not in the rate
    time.sleep(0.3)  # no update for a while: the timer still reports
    bar.update(advance=20, info="best 2.50000")
    time.sleep(0.2)
    bar.close(finished=True)
    lines = buf.getvalue().splitlines()
    assert len(lines) >= 3
    assert lines[0].startswith("search cem: 40/100 evaluations (40%), 0s elapsed") and "/s" not in lines[0]
    assert lines[-1].startswith("search cem: 60/100 evaluations (60%), best 2.50000, ")
    assert format_line("x", 5, 10, "runs", "", 75.0, 0.0667) == "x: 5/10 runs (50%), 1m15s elapsed, 0.0667 runs/s"
    monkeypatch.setenv("FUSIONTUNE_QUIET", "1")
    assert progress_mode(None) == "off"
    monkeypatch.delenv("FUSIONTUNE_QUIET")
    assert progress_mode(False) == "off"
    assert progress_mode(None) == "lines"  # pytest captures stderr: not a TTY


def test_quiet_prints_exactly_one_line(tmp_path, small_study, capsys):
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(["search", "--study", str(small_study), "--budget", "32", "--quiet", "--out", str(out)]) == 0
    o, e = capsys.readouterr()
    assert e == "" and len(o.splitlines()) == 1
    assert o.startswith(f"wrote {out / 'result.json'} and trials.csv")
    assert main(["select", "--run", str(out), "--resamples", "20", "--quiet"]) == 0
    o, e = capsys.readouterr()
    assert o.splitlines() == [f"wrote {out / 'candidates.json'}"] and e == ""


def test_summary_fits_80_columns_without_cutting_numbers(finished_run):
    from fusiontune.results import print_summary

    _, out = finished_run
    result = json.loads((out / "result.json").read_text())
    c = console80()
    print_summary(result, out, console=c)
    text = c.export_text()
    assert_fits_80(text)
    for block in (result["best"], result["baseline"], result["holdout"]["best"], result["holdout"]["baseline"]):
        for v in [*block["per_task"].values(), block["objective"]]:
            assert f"{v:.5f}" in text
    assert "holdout" in text
    wide = Console(width=200, file=io.StringIO(), record=True, color_system=None)
    print_summary(result, out, console=wide)
    assert "holdout delta" in wide.export_text()  # one table side by side when there is room


def test_search_summary_in_an_80_column_terminal(tmp_path, small_study):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "80", "CI": "1"}
    proc = subprocess.run([sys.executable, "-m", "fusiontune", "search", "--study", str(small_study),
                           "--budget", "32", "--out", str(tmp_path / "run")], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert_fits_80(proc.stdout)
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert f"{result['holdout']['best']['objective']:.5f}" in proc.stdout


def test_select_table_fits_80_columns(finished_run):
    from fusiontune.select import arms_table

    _, out = finished_run
    cands = json.loads((out / "candidates.json").read_text())
    c = console80()
    arms_table(cands, console=c)
    text = c.export_text()
    assert_fits_80(text)
    for arm in cands["arms"]:
        assert arm["name"] in text
        for d in [*arm["delta"].values(), arm["gain"]]:
            assert f"[{d['lo']:+.4f}, {d['hi']:+.4f}]" in text
        for k, v in arm["params"].items():
            assert f"{k}={v:.4g}" in text  # parameters whole, not a_clic…
        for f in arm["flags"]:
            assert f in text


def test_eval_table_fits_80_columns_and_names_the_broken_guardrail(finished_run, tmp_path, capsys):
    study, out = finished_run
    w = tmp_path / "w.json"
    assert main(["export", "--run", str(out), "--to", str(w)]) == 0
    doc = json.loads(w.read_text())
    doc["params"].update(a_finish=3.0, a_convert=3.0)  # far from the baseline: click drops a lot
    w.write_text(json.dumps(doc))
    from fusiontune.commands.eval import print_eval
    from fusiontune.export import evaluate_params
    from fusiontune.study import load_study

    res = evaluate_params(load_study(study), doc, str(w))
    c = console80()
    print_eval(res, console=c)
    text = c.export_text()
    assert_fits_80(text)
    assert "warning: breaks the 'click' guardrail on the holdout part" in " ".join(text.split())
    assert res["parts"]["holdout"]["guardrails_broken"]["click"]["max_drop"] == 0.02


def test_all_empty_label_column_says_no_observed_label(tmp_path, small_log, capsys):
    df = pd.read_parquet(small_log)
    df["convert"] = np.nan
    df.to_csv(tmp_path / "nolabel.csv", index=False)
    study = write_study(tmp_path, tmp_path / "nolabel.csv")
    capsys.readouterr()
    assert main(["search", "--study", str(study), "--budget", "16", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("column 'convert' (label of task 'convert') is empty on every row: it has no observed label")
    assert "None" not in err


def test_score_message_prints_plain_numbers(finished_run, tmp_path, capsys):
    _, out = finished_run
    w = tmp_path / "w.json"
    assert main(["export", "--run", str(out), "--to", str(w)]) == 0
    df = pd.read_parquet(json.loads((out / "result.json").read_text())["log"]).head(200)
    df.loc[4, "p_click"] = 3.0
    df.to_csv(tmp_path / "bad.csv", index=False)
    capsys.readouterr()
    assert main(["score", "--params", str(w), "--log", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "s.csv")]) == 2
    err = capsys.readouterr().err
    assert "row 5 has 3.0" in err and "np.float64" not in err


def test_compare_counts_a_holdout_guardrail_break_as_a_loss(tmp_path):
    from fusiontune.compare import CompareResult, _broken_guardrails, compare, markdown_table
    from fusiontune.pipeline import prepare
    from fusiontune.study import load_study
    from search_helpers import known_study

    study = known_study(tmp_path, rows=8_000, split=True)
    text = study.read_text()
    study.write_text(text.replace('metric = "auc"\n', 'metric = "auc"\nmax_drop = 0.0005\n', 1))
    prep = prepare(load_study(study))
    first = prep.study.tasks[0].name
    hold = {"best": {"per_task": {t.name: 0.7 for t in prep.study.tasks}},
            "baseline": {"per_task": {t.name: 0.7 for t in prep.study.tasks}}}
    assert _broken_guardrails(prep, hold) == []
    hold["best"]["per_task"][first] = 0.7 - 0.0006
    assert _broken_guardrails(prep, hold) == [first]
    res = compare(prep, ["cem", "random"], budget=48, seeds=3, population=16)
    for m, g in res.runs.groupby("method"):
        row = res.table.set_index("method").loc[m]
        assert row["holdout_win_share"] == ((g["holdout_lift"] > 0) & g["holdout_feasible"]).mean()
        assert row["holdout_guardrail_breaks"] == (~g["holdout_feasible"]).sum()
    # the table shows breaks and does not call a breaking winner a win
    runs = pd.DataFrame([{"method": "cem", "holdout_lift": 0.03, "holdout_feasible": False, "holdout_broken": "click"}])
    table = pd.DataFrame([{"method": "cem", "runs": 1, "best_mean": 2.19, "best_std": 0.0, "holdout_mean": 2.17,
                           "holdout_std": 0.0, "holdout_lift_mean": 0.03, "holdout_win_share": 0.0,
                           "holdout_guardrail_breaks": 1, "holdout_broken_tasks": "click",
                           "evals_to_99_mean": 100.0, "reached_99": 1, "seconds_mean": 1.0}])
    md = markdown_table(CompareResult(runs, table, 0.03), 300, 1, 2.14)
    assert "| cem | 2.19000 ± 0.00000 | 2.17000 ± 0.00000 | +0.03000 | 0% | 1/1 (click) |" in md
