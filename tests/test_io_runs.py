"""One I/O layer and self-contained run directories."""

from __future__ import annotations

import json
import os
import shutil

import pandas as pd
import pytest

from conftest import write_study
from fusiontune.cli import main
from fusiontune.errors import LogError
from fusiontune.io import atomic_write, atomic_write_text, log_fingerprint, read_weights


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old\n")

    def boom(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert target.read_text() == "old\n" and sorted(os.listdir(tmp_path)) == ["out.txt"]


def test_one_weights_reader_for_files_flat_mappings_and_runs(tmp_path):
    (tmp_path / "w.yaml").write_text("formula: additive\nparams:\n  a_click: 1.0\n")
    (tmp_path / "flat.json").write_text('{"a_click": 2}')
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "result.json").write_text('{"formula": "additive", "best": {"params": {"a_click": 3}}}')
    assert read_weights(tmp_path / "w.yaml")["params"] == {"a_click": 1.0}
    flat = read_weights(tmp_path / "flat.json")
    assert flat["formula"] is None and flat["params"] == {"a_click": 2}
    assert read_weights(tmp_path / "run")["params"] == {"a_click": 3}


def test_run_dir_survives_a_moved_study_and_refuses_a_changed_log(tmp_path, small_log, capsys):
    log = tmp_path / "log.parquet"
    shutil.copy(small_log, log)
    study = write_study(tmp_path, log)
    run = tmp_path / "run"
    assert main(["search", "--study", str(study), "--budget", "32", "--quiet", "--out", str(run)]) == 0
    result = json.loads((run / "result.json").read_text())
    assert result["version"] == 1 and (run / "study.json").exists()
    fp = result["log_fingerprint"]
    assert fp["path"] == str(log.resolve()) and fp["rows"] > 0 and len(fp["schema_hash"]) == 16
    study.rename(tmp_path / "moved.toml")  # the study file is gone: the run still works
    assert main(["select", "--run", str(run), "--k", "2", "--resamples", "50", "--quiet"]) == 0
    assert main(["export", "--run", str(run), "--to", str(tmp_path / "w.json")]) == 0
    assert main(["report", "--run", str(run), "--format", "json", "--resamples", "50",
                 "--stability-resamples", "5"]) == 0
    capsys.readouterr()
    df = pd.read_parquet(log).iloc[:-10]  # the log changes: fewer rows
    df.to_parquet(log, index=False)
    assert main(["select", "--run", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the log changed since" in err[0] and "size" in err[0], err


def test_fingerprint_of_an_in_memory_log():
    df = pd.DataFrame({"a": [1.0, 2.0], "b": [0, 1]})
    fp = log_fingerprint(df, 2)
    assert fp["path"] is None and fp["rows"] == 2
    assert fp["schema_hash"] != log_fingerprint(df.astype({"b": float}), 2)["schema_hash"]


def test_fingerprint_names_what_changed(tmp_path):
    from fusiontune.io import check_fingerprint

    p = tmp_path / "x.csv"
    p.write_text("a,b\n1,2\n")
    fp = log_fingerprint(p, 1)
    check_fingerprint(fp, "run")
    p.write_text("a,c\n1,2\n")
    with pytest.raises(LogError, match="schema hash"):
        check_fingerprint(fp, "run")
