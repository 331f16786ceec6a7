"""Run directories never mix runs: ownership, whole replacement, run ids on derived files,
the output location checked before any work, and SIGTERM handled like Ctrl-C."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import write_study
from fusiontune import rundir
from fusiontune.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def ft(*args, cwd=None, preexec_fn=None, env=None):
    e = {**os.environ, "CI": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "fusiontune", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=e, preexec_fn=preexec_fn)


class Done:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture()
def run(capsys):
    """``run(*args)``: the CLI in this process (much faster than a subprocess per call)."""
    from fusiontune.cli import main

    def call(*args):
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return Done(code, out, err)

    return call


def one_error(proc, *needles) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fusiontune: error: "), proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def bad_log_study(tmp_path, small_log) -> Path:
    """A study whose log is broken: a command that complains about the output location
    instead has checked it before reading the log."""
    df = pd.read_parquet(small_log)
    df.loc[3, "p_like"] = 7.0
    df.to_csv(tmp_path / "bad.csv", index=False)
    d = tmp_path / "badstudy"
    d.mkdir()
    return write_study(d, tmp_path / "bad.csv")


def test_rerun_replaces_the_directory_as_a_whole(run, tmp_path, small_study):
    out = tmp_path / "run"
    assert run("search", "--study", small_study, "--budget", 32, "--quiet", "--out", out).returncode == 0
    first = json.loads((out / "result.json").read_text())["run_id"]
    assert run("select", "--run", out, "--resamples", 20, "--quiet").returncode == 0
    (out / "notes.txt").write_text("derived from the first run")
    assert json.loads((out / "candidates.json").read_text())["run_id"] == first
    proc = run("search", "--study", small_study, "--budget", 48, "--quiet", "--out", out)
    assert proc.returncode == 0, proc.stderr
    second = json.loads((out / "result.json").read_text())["run_id"]
    assert second != first
    assert sorted(p.name for p in out.iterdir()) == ["result.json", "run.json", "study.db", "study.json", "trials.csv"]
    assert json.loads((out / "run.json").read_text())["run_id"] == second
    assert len(pd.read_csv(out / "trials.csv")) == 48
    assert sqlite3.connect(out / "study.db").execute("select count(*) from trials").fetchone()[0] == 48
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run.")]  # no temp dirs left


def test_arms_from_before_a_resume_are_refused(run, tmp_path, small_study):
    out = tmp_path / "run"
    assert run("search", "--study", small_study, "--budget", 32, "--quiet", "--out", out).returncode == 0
    assert run("select", "--run", out, "--resamples", 20, "--quiet").returncode == 0
    assert run("export", "--run", out, "--arm", "arm-1", "--to", tmp_path / "w.json").returncode == 0
    first = json.loads((out / "result.json").read_text())["run_id"]
    assert json.loads((tmp_path / "w.json").read_text())["source"]["run_id"] == first
    proc = run("search", "--study", small_study, "--budget", 64, "--quiet", "--out", out, "--resume")
    assert proc.returncode == 0, proc.stderr
    second = json.loads((out / "result.json").read_text())["run_id"]
    line = one_error(run("export", "--run", out, "--arm", "arm-1", "--to", tmp_path / "w2.json"),
                     "candidates.json", first, second)
    assert "--" not in line.split("error: ", 1)[1].split(";")[0]
    assert not (tmp_path / "w2.json").exists()
    one_error(run("report", "--run", out, "--format", "json", "--resamples", 20, "--stability-resamples", 2),
              "candidates.json", first, second)
    assert not (out / "report.json").exists()
    assert run("select", "--run", out, "--resamples", 20, "--quiet").returncode == 0  # select again: fine
    assert run("export", "--run", out, "--arm", "arm-1", "--to", tmp_path / "w2.json").returncode == 0
    proc = run("report", "--run", out, "--format", "json", "--resamples", 20, "--stability-resamples", 2)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "report.json").read_text())["run_id"] == second


def test_candidates_without_run_id_are_refused(run, tmp_path, small_study):
    """A candidates.json written before run ids (the stale file of the issue) is refused."""
    out = tmp_path / "run"
    assert run("search", "--study", small_study, "--budget", 32, "--quiet", "--out", out).returncode == 0
    (out / "candidates.json").write_text(json.dumps({"arms": [{"name": "arm-1", "params": {"a_click": 1.0}}]}))
    one_error(run("export", "--run", out, "--arm", "arm-1", "--to", tmp_path / "w.json"), "older run")


def test_other_storage_does_not_rewrite_another_runs_directory(run, tmp_path, small_study):
    out = tmp_path / "run"
    assert run("search", "--study", small_study, "--budget", 32, "--quiet", "--out", out).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    proc = run("search", "--study", small_study, "--budget", 32, "--quiet", "--out", out,
              "--storage", f"sqlite:///{tmp_path / 'x.db'}")
    one_error(proc, "--out", "holds another run", "x.db")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not (tmp_path / "x.db").exists()  # refused before the search started


def test_a_directory_that_is_not_a_run_is_never_replaced(run, tmp_path, small_study):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    one_error(run("search", "--study", small_study, "--budget", 32, "--out", mine), "not a fusiontune run directory")
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]


def test_out_under_a_regular_file_is_checked_before_the_log(run, tmp_path, small_log):
    study = bad_log_study(tmp_path, small_log)
    (tmp_path / "afile").write_text("x")
    one_error(run("search", "--study", study, "--out", tmp_path / "afile" / "run"), "--out", "afile", "is a file")
    one_error(run("search", "--study", study, "--out", tmp_path / "afile"), "not a directory")
    one_error(run("compare", "--study", study, "--methods", "cem", "--out", tmp_path / "afile" / "c"), "is a file")
    # with a usable location the same study fails on its log: the order is location first
    one_error(run("search", "--study", study, "--out", tmp_path / "ok"), "bad.csv", "p_like")


def _drop_write_override():
    """preexec: root without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH obeys file modes."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_read_only_out_is_refused_before_the_search(tmp_path, small_log):
    study = bad_log_study(tmp_path, small_log)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    pre = None
    if os.geteuid() == 0:
        probe = subprocess.run([sys.executable, "-c", f"open({str(ro / 'x')!r}, 'w')"],
                               preexec_fn=_drop_write_override, capture_output=True)
        if probe.returncode == 0:
            pytest.skip("running as root with capabilities that cannot be dropped: modes are not enforced")
        pre = _drop_write_override
    try:
        one_error(ft("search", "--study", study, "--out", ro, preexec_fn=pre), "--out", "cannot write")
        one_error(ft("search", "--study", study, "--out", ro / "run", preexec_fn=pre), "cannot write")
    finally:
        ro.chmod(0o755)
    assert list(ro.iterdir()) == []


def test_plan_and_claim_unit(tmp_path):
    out = tmp_path / "r"
    p = rundir.plan(out, kind="search", study="s", method="cem", seed=1, storage=None)
    assert not out.exists()  # planning writes nothing
    c = p.claim()
    assert (out / "run.json").exists() and c.replaced is None
    (out / "old.txt").write_text("old")
    c2 = rundir.plan(out, kind="search", study="s", method="cem", seed=1, storage=None).claim()
    assert c2.replaced == c.run_id and not (out / "old.txt").exists()
    with pytest.raises(InputError, match="holds another run"):
        rundir.plan(out, kind="search", study="s", method="cem", seed=2, storage=None)
    # resume continues in place, with a new run id
    (out / "keep.txt").write_text("stored trials")
    c3 = rundir.plan(out, kind="search", study="s", method="cem", seed=1, storage=None, mode="resume").claim()
    assert (out / "keep.txt").exists() and c3.run_id != c2.run_id
    assert rundir.storage_label("postgresql://u:secret@host/db") == "postgresql://u:***@host/db"


def test_legacy_run_directory_owned_through_result_json(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    url = f"sqlite:///{out.resolve() / 'study.db'}"
    (out / "result.json").write_text(json.dumps({"study": "s", "method": "cem", "seed": 0,
                                                 "storage": {"url": url}}))
    (out / "candidates.json").write_text("{}")
    rundir.plan(out, kind="search", study="s", method="cem", seed=0, storage=url).claim()
    assert not (out / "candidates.json").exists()
    with pytest.raises(InputError, match="holds another run"):  # an LTR fit cannot land on a search run
        rundir.plan(out, kind="ltr", study="s", method="ltr-gbdt", seed=0)
    ltr = tmp_path / "l"
    ltr.mkdir()
    (ltr / "result.json").write_text(json.dumps({"study": "s", "method": "ltr-gbdt", "seed": 0,
                                                 "formula": "ltr-gbdt"}))
    rundir.plan(ltr, kind="ltr", study="s", method="ltr-gbdt", seed=0).claim()  # the same fit again


def test_sigterm_stores_finished_work_and_exits_143(tmp_path, small_study):
    """A real `fusiontune search` gets SIGTERM mid-run: message with the resume hint, exit 143,
    whole generations stored; --resume then finishes the same budget."""
    out = tmp_path / "run"
    args = ["search", "--study", str(small_study), "--budget", "2000", "--population", "16", "--quiet",
            "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "fusiontune", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    db = out / "study.db"
    deadline, stored = time.time() + 90, 0
    while time.time() < deadline and proc.poll() is None and stored < 48:
        if db.exists():
            try:
                stored = sqlite3.connect(db).execute("select count(*) from trials").fetchone()[0]
            except sqlite3.OperationalError:
                stored = 0
        time.sleep(0.05)
    if proc.poll() is not None:
        pytest.skip("the run ended before it could be stopped")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "SIGTERM" in err and "--resume" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    stored = sqlite3.connect(db).execute("select count(*) from trials").fetchone()[0]
    assert stored >= 48 and stored % 16 == 0  # whole generations
    assert not (out / "result.json").exists()
    r = ft(*args, "--resume")
    assert r.returncode == 0, r.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["storage"]["reused_evaluations"] == stored
    assert len(pd.read_csv(out / "trials.csv")) == result["evaluations"] > stored


def test_a_bad_method_option_leaves_the_run_directory_alone(run, tmp_path, small_study):
    """[search.<method>] options are checked before the run directory is claimed: the old run
    stays whole, and a fresh location gets nothing (not even run.json)."""
    out = tmp_path / "run"
    assert run("search", "--study", small_study, "--budget", 32, "--quiet", "--out", out).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    bad = tmp_path / "bad.toml"
    bad.write_text(small_study.read_text() + "\n[search.cem]\nelite_frac = 7.0\n")
    proc = run("search", "--study", bad, "--budget", 32, "--quiet", "--out", out)
    one_error(proc, "elite_frac")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    fresh = tmp_path / "fresh"
    one_error(run("search", "--study", bad, "--budget", 32, "--quiet", "--out", fresh), "elite_frac")
    assert not fresh.exists() or not any(fresh.iterdir())
    # a shared run (--workers): no directory claimed, no worker started, the storage untouched
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    one_error(run("search", "--study", bad, "--budget", 32, "--quiet", "--out", fresh, "--workers", 2,
                  "--storage", url), "elite_frac")
    assert not fresh.exists() or not any(fresh.iterdir())
    assert not (tmp_path / "shared.db").exists()
