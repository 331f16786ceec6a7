"""Three-way split (search / select / holdout), the explicit holdout column, true shares."""

import json

import numpy as np
import pandas as pd
import pytest

from conftest import STUDY, write_study
from fusiontune.cli import main
from fusiontune.errors import InputError
from fusiontune.log import HOLDOUT, SEARCH, SELECT, TaskColumns, load_log, split_log, split_roles
from fusiontune.simulate import DEMO_BASELINE, simulate_log, write_table

TASKS = [TaskColumns(t, f"p_{t}", t) for t in ("click", "like", "finish", "convert")]


@pytest.fixture(scope="module")
def log():
    return _log_of(simulate_log(requests=800, candidates=10, seed=4))


def _log_of(df, tmp=None):
    import tempfile
    from pathlib import Path

    d = Path(tmp or tempfile.mkdtemp())
    path = d / "log.parquet"
    write_table(df, path)
    return load_log(path, TASKS, group="request_id", time="ts", extra=[c for c in ("is_holdout",) if c in df])


def _groups_by_role(log, role):
    return [set(log.groups[role == r].tolist()) for r in (SEARCH, SELECT, HOLDOUT)]


@pytest.mark.parametrize("by", ["time", "group", "random"])
def test_three_way_split_gives_every_row_one_role(log, by):
    parts = split_roles(log, by, holdout=0.2, select=0.15, seed=3)
    role = parts.role
    assert role.shape == (log.n,) and set(np.unique(role)) == {SEARCH, SELECT, HOLDOUT}
    assert parts.search.n + parts.select.n + parts.holdout.n == log.n
    for r, part in ((SEARCH, parts.search), (SELECT, parts.select), (HOLDOUT, parts.holdout)):
        np.testing.assert_array_equal(part.scores, log.scores[role == r])
    assert parts.info["rows"] == {"search": parts.search.n, "select": parts.select.n, "holdout": parts.holdout.n}
    tol = 0.0 if by == "time" else 0.08  # time: exact quantiles; group/random: hashed/drawn shares
    assert abs(parts.select.n / log.n - 0.15) <= tol + 0.011
    assert abs(parts.holdout.n / log.n - 0.2) <= tol + 0.011
    # the holdout is the same rows with or without a select share: only the search part shrinks
    two = split_roles(log, by, holdout=0.2, select=0.0, seed=3)
    np.testing.assert_array_equal(two.role == HOLDOUT, role == HOLDOUT)
    assert two.select is None and (two.role[role == SELECT] == SEARCH).all()
    np.testing.assert_array_equal(split_log(log, by, 0.2, seed=3)[1].scores, parts.holdout.scores)
    if by == "time":  # search < select < holdout in time
        assert parts.search.time.max() < parts.select.time.min()
        assert parts.select.time.max() < parts.holdout.time.min()
    # a request never straddles two roles (by = "random" draws whole requests, by a seeded hash of the id)
    s, a, h = _groups_by_role(log, role)
    assert not (s & a) and not (s & h) and not (a & h)
    assert parts.info["groups_in_two_parts"] == 0
    assert parts.info["groups"] == {"search": len(s), "select": len(a), "holdout": len(h)}
    if by == "random":  # its own draw, not the group split's with the same seed
        assert (role != split_roles(log, "group", holdout=0.2, select=0.15, seed=3).role).any()


def test_random_split_without_groups_draws_rows_by_their_position(tmp_path):
    """Without a group column each row is its own unit, drawn by its position among the rows read:
    the same rows whatever else the log holds, and requests (not a column here) do split apart."""
    df = simulate_log(requests=300, candidates=8, seed=2)
    path = tmp_path / "log.parquet"
    write_table(df, path)
    log = load_log(path, TASKS, time="ts")
    parts = split_roles(log, "random", holdout=0.25, seed=5)
    assert abs(parts.holdout.n / log.n - 0.25) <= 0.03
    again = split_roles(load_log(path, TASKS), "random", holdout=0.25, seed=5)  # no time column read
    np.testing.assert_array_equal(again.role, parts.role)
    assert (split_roles(log, "random", holdout=0.25, seed=6).role != parts.role).any()
    both = set(df["request_id"][parts.role == HOLDOUT]) & set(df["request_id"][parts.role == SEARCH])
    assert both  # rows, not requests: with no group column nothing keeps a request together


def test_split_shares_are_checked(log):
    with pytest.raises(InputError, match="holdout \\+ select < 1"):
        split_roles(log, "group", holdout=0.5, select=0.5)
    with pytest.raises(InputError, match="exclusive"):
        split_roles(log, "group", holdout=0.3, column="is_holdout")


def _with_column(df, values):
    df = df.copy()
    df.insert(1, "is_holdout", values)
    return df


@pytest.mark.parametrize("kind", ["int", "bool", "float"])
def test_explicit_holdout_column(tmp_path, kind):
    df = simulate_log(requests=600, candidates=10, seed=5)
    flag = (df["request_id"] % 4 == 1).to_numpy()  # a quarter of the requests, by the team's own rule
    values = {"int": flag.astype(np.int64), "bool": flag, "float": flag.astype(np.float64)}[kind]
    log = _log_of(_with_column(df, values), tmp_path)
    parts = split_roles(log, "group", holdout=None, column="is_holdout")
    np.testing.assert_array_equal(parts.role == HOLDOUT, flag)
    assert parts.select is None and parts.info["rows"]["holdout"] == int(flag.sum())
    assert parts.info["share"]["groups"]["holdout"] == pytest.approx(150 / 600)
    # with a select share, it is carved out of the column's 0 rows (here by group hash)
    parts = split_roles(log, "group", holdout=None, select=0.2, column="is_holdout", seed=1)
    np.testing.assert_array_equal(parts.role == HOLDOUT, flag)
    assert abs(parts.select.n / log.n - 0.2) < 0.05 and not (parts.role[flag] == SELECT).any()
    s, a, h = _groups_by_role(log, parts.role)
    assert not (s & a) and not (s & h) and not (a & h)


def _column_study(tmp_path, df, split):
    logp = tmp_path / "col.csv"
    write_table(df, logp)
    baseline = "\n".join(f"{k} = {v}" for k, v in DEMO_BASELINE.items())
    text = STUDY.format(log=logp.as_posix(), formula="multiplicative", baseline=baseline)
    text = text.replace('[split]\nby = "time"\nholdout = 0.3\n', split)
    study = tmp_path / "col.toml"
    study.write_text(text)
    return study


@pytest.mark.parametrize("bad, shown", [(2, "row 8 has 2"), ("yes", "row 8 has 'yes'"), (None, "row 8 has an empty"),
                                        (0.5, "row 8 has 0.5")])
def test_bad_split_column_is_one_line_exit_2_nothing_written(tmp_path, capsys, bad, shown):
    df = simulate_log(requests=300, candidates=10, seed=6)
    flag = (df["request_id"] % 3 == 0).astype(int).astype(object)
    flag.iloc[7] = bad
    study = _column_study(tmp_path, _with_column(df, flag), '[split]\ncolumn = "is_holdout"\n')
    out = tmp_path / "run"
    assert main(["search", "--study", str(study), "--budget", "16", "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "col.csv" in err[0] and "'is_holdout'" in err[0] and shown in err[0], err
    assert not out.exists()


def test_split_column_run_states_the_true_holdout_share(tmp_path, capsys):
    df = simulate_log(requests=600, candidates=10, seed=7)
    flag = (df["request_id"] % 5 == 0).astype(int)
    study = _column_study(tmp_path, _with_column(df, flag),
                          '[split]\ncolumn = "is_holdout"\nby = "group"\nselect = 0.2\n')
    out = tmp_path / "run"
    assert main(["search", "--study", str(study), "--budget", "32", "--quiet", "--out", str(out)]) == 0
    r = json.loads((out / "result.json").read_text())
    sp = r["split"]
    assert sp["column"] == "is_holdout" and sp["holdout"] is None and sp["select"] == 0.2
    assert sp["rows"]["holdout"] == int(flag.sum()) == r["rows"]["holdout"]
    assert sp["holdout_share"]["rows"] == pytest.approx(flag.mean())
    assert sp["holdout_share"]["groups"] == pytest.approx(120 / 600)
    assert r["rows"]["search"] + r["rows"]["select"] + r["rows"]["holdout"] == len(df)
    assert sp["groups_in_two_parts"] == 0


@pytest.mark.parametrize("split, needle", [
    ('[split]\nholdout = 0.6\nselect = 0.4\n', "holdout + select < 1"),
    ('[split]\ncolumn = "is_holdout"\nholdout = 0.3\n', "exclusive"),
    ('[split]\nholdout = 0.3\nselect = "x"\n', "[split] select"),
    ('[split]\ncolumn = "nope"\n', "'nope'"),
])
def test_bad_split_keys_are_one_line(tmp_path, capsys, split, needle):
    df = simulate_log(requests=300, candidates=10, seed=6)
    study = _column_study(tmp_path, _with_column(df, (df["request_id"] % 3 == 0).astype(int)), split)
    assert main(["search", "--study", str(study), "--budget", "16", "--quiet", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "r").exists()


def test_demo_style_study_keeps_its_split(tmp_path, small_log):
    """A study with only a holdout: same holdout as before, result.json says the true share."""
    out = tmp_path / "run"
    assert main(["search", "--study", str(write_study(tmp_path, small_log)), "--budget", "16", "--quiet",
                 "--out", str(out)]) == 0
    r = json.loads((out / "result.json").read_text())
    assert r["split"]["by"] == "time" and r["split"]["holdout"] == 0.3 and "select" not in r["split"]
    assert r["split"]["holdout_share"]["rows"] == pytest.approx(r["rows"]["holdout"] / 15000)
    assert 0.29 < r["split"]["holdout_share"]["groups"] < 0.31
    assert "select" not in r["rows"]
    df = pd.read_parquet(small_log)
    assert r["rows"]["search"] + r["rows"]["holdout"] == len(df)
