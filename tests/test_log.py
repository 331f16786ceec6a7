"""Loading and validating prediction logs: every bad input is one clear InputError."""

import numpy as np
import pandas as pd
import pytest

from fusiontune.errors import InputError
from fusiontune.log import TaskColumns, load_log, split_log

TASKS = [TaskColumns("click", "p_click", "click"), TaskColumns("like", "p_like", "like")]


def frame(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"req": np.repeat(np.arange(n // 4), 4), "ts": np.arange(n),
                         "p_click": rng.random(n), "p_like": rng.random(n),
                         "click": (np.arange(n) % 2).astype(float), "like": (np.arange(n) % 3 == 0).astype(float)})


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_loads_csv_and_parquet_with_nan_labels(tmp_path, suffix):
    df = frame()
    df.loc[3, "like"] = np.nan
    path = tmp_path / f"log{suffix}"
    df.to_csv(path, index=False) if suffix == ".csv" else df.to_parquet(path)
    log = load_log(path, TASKS, group="req", time="ts")
    assert log.scores.shape == (40, 2) and log.scores.dtype == np.float32
    assert np.isnan(log.labels[3, 1]) and log.groups.max() == 9
    np.testing.assert_allclose(log.scores[:, 0], df["p_click"].astype(np.float32))


def write_csv(tmp_path, df, name="bad.csv"):
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("mutate, pattern", [
    (lambda d: d.drop(columns=["p_like"]), r"bad\.csv: missing column 'p_like'"),
    (lambda d: d.assign(p_click=d.p_click.astype(object).where(d.index != 5, "high")),
     r"column 'p_click' .*not numeric: row 6 has 'high'"),
    (lambda d: d.assign(p_like=d.p_like.where(d.index != 7, 1.5)),
     r"column 'p_like' .*probability in \[0, 1\].*row 8 has 1.5"),
    (lambda d: d.assign(click=d.click.where(d.index != 2, 2.0)), r"column 'click' .*0, 1 or empty: row 3 has 2.0"),
    (lambda d: d.assign(like=0.0), r"column 'like' .*has no positive"),
    (lambda d: d.assign(click=1.0), r"column 'click' .*has no negative"),
    (lambda d: d.iloc[:0], r"empty file"),
])
def test_bad_input_names_file_column_and_value(tmp_path, mutate, pattern):
    path = write_csv(tmp_path, mutate(frame()))
    with pytest.raises(InputError, match=pattern):
        load_log(path, TASKS, group="req", time="ts")


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(InputError, match="empty.csv: empty file"):
        load_log(empty, TASKS)
    with pytest.raises(InputError, match="nope.parquet: file not found"):
        load_log(tmp_path / "nope.parquet", TASKS)


def test_logit_scores_are_allowed_when_declared(tmp_path):
    df = frame().assign(p_click=lambda d: d.p_click * 8 - 4)
    path = write_csv(tmp_path, df)
    tasks = [TaskColumns("click", "p_click", "click", "logit"), TASKS[1]]
    log = load_log(path, tasks)
    assert 0 < log.scores[:, 0].min() and log.scores[:, 0].max() < 1
    # an additive formula does not need probabilities either
    load_log(path, TASKS, need_probabilities=False)


def test_time_split_holds_out_the_latest_rows_and_group_split_keeps_groups_whole(tmp_path):
    path = write_csv(tmp_path, frame(400))
    log = load_log(path, TASKS, group="req", time="ts")
    search, hold = split_log(log, "time", 0.25)
    assert search.time.max() < hold.time.min() and hold.n == 100
    search, hold = split_log(log, "group", 0.3, seed=1)
    assert not set(search.groups) & set(hold.groups)
    assert 0.15 < hold.n / log.n < 0.45
    again = split_log(log, "group", 0.3, seed=1)[1]
    np.testing.assert_array_equal(again.groups, hold.groups)
