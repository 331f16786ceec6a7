"""Logs as Parquet datasets: directories (Hive partitions), globs, the row filter, the group-hash
sample and shards (fusiontune.dataset + fusiontune.log.load_log)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from fusiontune.dataset import group_hash_of, keep_mask, parse_filter
from fusiontune.errors import FusiontuneError, InputError, StudyError
from fusiontune.log import TaskColumns, load_log
from fusiontune.simulate import simulate_log

TASKS = [TaskColumns(t, f"p_{t}", t) for t in ("click", "like", "finish", "convert")]


def _frame(requests=400, candidates=6, seed=3) -> pd.DataFrame:
    df = simulate_log(requests=requests, candidates=candidates, seed=seed)
    df["day"] = 20261101 + (df["request_id"] % 3).astype(np.int64)
    df["country"] = np.where(df["request_id"] % 4 == 0, "US", np.where(df["request_id"] % 4 == 1, "DE", "FR"))
    return df


@pytest.fixture(scope="module")
def frame():
    return _frame()


@pytest.fixture(scope="module")
def hive(tmp_path_factory, frame):
    """day=.../part-*.parquet, two files per day (so a day is several fragments)."""
    root = tmp_path_factory.mktemp("hive") / "log"
    for day, part in frame.groupby("day", sort=True):
        d = root / f"day={day}"
        d.mkdir(parents=True)
        half = len(part) // 2
        for i, chunk in enumerate((part.iloc[:half], part.iloc[half:])):
            pq.write_table(pa.Table.from_pandas(chunk.drop(columns=["day"]), preserve_index=False),
                           d / f"part-{i}.parquet")
    return root


def _rows(log) -> pd.DataFrame:
    """The loaded rows as a sortable frame (raw group hash, scores, label codes)."""
    out = pd.DataFrame(log.scores, columns=[f"s{j}" for j in range(log.k)])
    for j in range(log.k):
        out[f"c{j}"] = log.label_codes[:, j]
    if log.group_hash is not None:
        out["gh"] = log.group_hash
    return out.sort_values(list(out.columns)).reset_index(drop=True)


def test_hive_directory_equals_the_frame(hive, frame):
    log = load_log(hive, TASKS, group="request_id", time="ts")
    ref = load_log(frame.sort_values("day", kind="stable"), TASKS, group="request_id", time="ts")
    assert log.n == len(frame)
    pd.testing.assert_frame_equal(_rows(log), _rows(ref))
    assert log.scores.dtype == np.float32 and log.label_codes.dtype == np.uint8
    assert log.groups.dtype == np.int32 and log.group_hash.dtype == np.uint64
    assert log.groups.max() + 1 == frame["request_id"].nunique()
    # codes follow the raw ids: same id -> same code, different ids -> different codes
    assert pd.Series(log.groups).groupby(log.group_hash).nunique().max() == 1
    assert pd.Series(log.group_hash).groupby(log.groups).nunique().max() == 1


def test_partition_column_is_a_column(hive, frame):
    log = load_log(hive, TASKS, group="day")  # the partition key used as the group
    assert log.groups.max() + 1 == 3
    log = load_log(hive, TASKS, extra=["day"])
    assert sorted(np.unique(log.extra["day"]).tolist()) == [20261101, 20261102, 20261103]


def test_glob(hive, frame):
    log = load_log(str(hive / "day=2026110[12]" / "*.parquet"), TASKS, group="request_id", extra=["day"])
    assert set(np.unique(log.extra["day"]).tolist()) == {20261101, 20261102}
    assert log.n == int(frame["day"].isin([20261101, 20261102]).sum())
    with pytest.raises(InputError, match="no file matches"):
        load_log(str(hive / "day=1999*" / "*.parquet"), TASKS)


def test_filter_string_and_expression(hive, frame):
    want = frame[(frame["country"] == "US") & (frame["day"] >= 20261102)]
    log = load_log(hive, TASKS, group="request_id", filter="country == 'US' and day >= 20261102")
    assert log.n == len(want)
    ref = load_log(want, TASKS, group="request_id")
    pd.testing.assert_frame_equal(_rows(log), _rows(ref))
    same = load_log(hive, TASKS, group="request_id",
                    filter=(pc.field("country") == "US") & (pc.field("day") >= 20261102))
    assert same.n == len(want)
    log = load_log(hive, TASKS, filter="country in ['DE', 'FR'] and not (day == 20261101)")
    assert log.n == int((frame["country"].isin(["DE", "FR"]) & (frame["day"] != 20261101)).sum())
    log = load_log(frame, TASKS, filter="20261101 < day <= 20261103 and country is not null")
    assert log.n == int((frame["day"] > 20261101).sum())


@pytest.mark.parametrize("text, problem", [
    ("country = 'US'", "invalid syntax"),
    ("contry == 'US'", "unknown column 'contry'"),
    ("__import__('os').system('true')", "unsupported syntax: a function call"),
    ("country.upper() == 'US'", "unsupported syntax"),
    ("day + 1 > 5", "unsupported syntax: arithmetic"),
    ("day == null", "is null"),
    ("1 < 2", "a column on one side"),
    ("country == 5", "no kernel"),
    ("", "non-empty"),
])
def test_bad_filter_is_one_line(hive, text, problem):
    with pytest.raises(StudyError) as err:
        load_log(hive, TASKS, filter=text)
    msg = str(err.value)
    assert "\n" not in msg and "[log] filter" in msg and problem in msg and err.value.param == "filter"


def test_parse_filter_reads_names_and_never_evaluates():
    expr, names = parse_filter("a > 1 or (b in ['x', 'y'] and c is null) or col('page type') != 'ad'")
    assert names == ["a", "b", "c", "page type"]
    assert isinstance(expr, pc.Expression)
    with pytest.raises(StudyError, match="unsupported syntax"):
        parse_filter("(lambda: 1)() == 1")


def test_sample_keeps_whole_groups_and_is_deterministic(hive, frame):
    full = load_log(hive, TASKS, group="request_id")
    a = load_log(hive, TASKS, group="request_id", sample=0.3)
    b = load_log(hive, TASKS, group="request_id", sample=0.3)
    np.testing.assert_array_equal(a.group_hash, b.group_hash)
    np.testing.assert_array_equal(a.scores, b.scores)
    # whole groups: each kept group has all its rows
    sizes_full = pd.Series(full.group_hash).value_counts()
    sizes = pd.Series(a.group_hash).value_counts()
    assert (sizes_full.loc[sizes.index] == sizes).all()
    share = len(sizes) / len(sizes_full)
    assert 0.2 < share < 0.4
    # nested: a smaller sample is a subset of a larger one
    small = set(load_log(hive, TASKS, group="request_id", sample=0.1).group_hash.tolist())
    assert small and small <= set(a.group_hash.tolist())
    # the same ids keep the same rows from a CSV file or a DataFrame
    c = load_log(frame, TASKS, group="request_id", sample=0.3)
    assert set(c.group_hash.tolist()) == set(sizes.index.tolist())


def test_sample_without_group_uses_row_ids(hive):
    a = load_log(hive, TASKS, sample=0.5)
    b = load_log(hive, TASKS, sample=0.5)
    full = load_log(hive, TASKS)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert 0.4 * full.n < a.n < 0.6 * full.n


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_shard_union_is_the_full_load(hive, count):
    full = load_log(hive, TASKS, group="request_id", time="ts", filter="day != 20261102", sample=0.8)
    shards = [load_log(hive, TASKS, group="request_id", time="ts", filter="day != 20261102", sample=0.8,
                       shard=(i, count)) for i in range(count)]
    assert sum(s.n for s in shards) == full.n
    hashes = [set(s.group_hash.tolist()) for s in shards]
    for i in range(count):
        for j in range(i + 1, count):
            assert not hashes[i] & hashes[j]  # a group never straddles two shards
    union = pd.concat([pd.DataFrame({"gh": s.group_hash, "t": s.time, **{f"s{j}": s.scores[:, j] for j in range(4)},
                                     **{f"c{j}": s.label_codes[:, j] for j in range(4)}}) for s in shards])
    ref = pd.DataFrame({"gh": full.group_hash, "t": full.time, **{f"s{j}": full.scores[:, j] for j in range(4)},
                        **{f"c{j}": full.label_codes[:, j] for j in range(4)}})
    key = list(ref.columns)
    pd.testing.assert_frame_equal(union.sort_values(key).reset_index(drop=True),
                                  ref.sort_values(key).reset_index(drop=True))
    for s in shards:  # group codes are consistent within a shard: 0..G-1, one code per raw id
        assert s.groups.min() == 0 and s.groups.max() + 1 == len(set(s.group_hash.tolist()))
        assert pd.Series(s.group_hash).groupby(s.groups).nunique().max() == 1


def test_shard_without_group_splits_rows(hive):
    full = load_log(hive, TASKS)
    parts = [load_log(hive, TASKS, shard=(i, 2)) for i in range(2)]
    assert sum(p.n for p in parts) == full.n
    both = np.sort(np.concatenate([p.scores[:, 0] for p in parts]))
    np.testing.assert_array_equal(both, np.sort(full.scores[:, 0]))


@pytest.mark.parametrize("kw, match", [
    ({"sample": 0.0}, "sample must be a fraction in \\(0, 1\\]"),
    ({"sample": 1.5}, "sample must be"),
    ({"shard": (2, 2)}, "shard must be \\(index, count\\)"),
    ({"shard": (0,)}, "shard must be"),
])
def test_bad_sample_or_shard(hive, kw, match):
    with pytest.raises(FusiontuneError, match=match):
        load_log(hive, TASKS, **kw)


def _one_file_per_day(root, frame):
    """root/day=D/part-0.parquet for each day of ``frame`` (the day comes from the directory)."""
    for day, part in frame.groupby("day", sort=True):
        (root / f"day={day}").mkdir(parents=True)
        pq.write_table(pa.Table.from_pandas(part.drop(columns=["day"]), preserve_index=False),
                       root / f"day={day}" / "part-0.parquet")
    return root


def test_bad_file_in_a_dataset_is_named(tmp_path, frame):
    root = _one_file_per_day(tmp_path / "log", frame)
    bad = frame[frame["day"] == 20261103].drop(columns=["day"]).copy()
    bad.iloc[4, bad.columns.get_loc("p_like")] = np.inf
    pq.write_table(pa.Table.from_pandas(bad, preserve_index=False), root / "day=20261103" / "part-0.parquet")
    with pytest.raises(InputError) as err:
        load_log(root, TASKS, group="request_id")
    msg = str(err.value)
    assert msg.startswith(str(root / "day=20261103" / "part-0.parquet") + ":")
    assert "column 'p_like'" in msg and "must be finite" in msg and "row 5 has inf" in msg and "\n" not in msg
    # the row is counted within that file, also in a shard that dropped rows before it
    gid = bad["request_id"].iloc[4]
    own = int(group_hash_of(np.array([gid], dtype=np.int64))[0] % 2)
    with pytest.raises(InputError, match="row 5 has inf"):
        load_log(root, TASKS, group="request_id", shard=(own, 2))


def test_unreadable_file_in_a_dataset_is_named(tmp_path, frame):
    root = _one_file_per_day(tmp_path / "log", frame)
    junk = root / "day=20261102" / "part-1.parquet"
    junk.write_bytes(b"not parquet at all")
    with pytest.raises(InputError) as err:
        load_log(root, TASKS)
    assert str(junk) in str(err.value) and "cannot read" in str(err.value) and "\n" not in str(err.value)
    # a filter that prunes that partition never opens the bad file
    log = load_log(root, TASKS, filter="day != 20261102")
    assert log.n == int((frame["day"] != 20261102).sum())


def test_group_hash_is_stable_across_types():
    ids = np.array([0, 7, 123456789012], dtype=np.int64)
    h = group_hash_of(ids)
    np.testing.assert_array_equal(h, group_hash_of(pa.array(ids)))
    np.testing.assert_array_equal(h[:2], group_hash_of(ids[:2].astype(np.int32)))
    s = group_hash_of(np.array(["a", "b"], dtype=object))
    np.testing.assert_array_equal(s, group_hash_of(pa.array(["a", "b"]).dictionary_encode()))
    # fixed values: a change of hash would silently move rows between samples, shards and splits
    assert int(h[0]) == int(pd.util.hash_array(np.array([0], dtype=np.int64))[0])
    m = keep_mask(h, shard=(1, 2))
    assert m.tolist() == (h % 2 == 1).tolist()


def test_empty_after_filter_is_one_line(hive):
    with pytest.raises(InputError, match="no rows left after the filter"):
        load_log(hive, TASKS, filter="day > 30000000")


# --------------------------------------------------------------------------- studies and the CLI
def _ft(*args, cwd=None):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    return subprocess.run([sys.executable, "-m", "fusiontune", *map(str, args)], cwd=cwd or root,
                          capture_output=True, text=True,
                          env={"CI": "1", "PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "PYTHONPATH": str(root)})


def _dataset_study(tmp_path, log_table: str):
    from conftest import write_study

    path = write_study(tmp_path, tmp_path / "unused.parquet")
    text = path.read_text().replace(f'log = "{(tmp_path / "unused.parquet").as_posix()}"\n', "")
    text = text.replace("[[tasks]]", log_table + "\n[[tasks]]", 1)
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim") / "log"
    proc = _ft("simulate", "--out", root, "--partition-by", "day", "--days", 3, "--requests", 1200,
               "--candidates", 10)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in root.iterdir()) == ["day=20261101", "day=20261102", "day=20261103"]
    return root


def test_simulate_writes_a_partitioned_dataset_in_chunks(tmp_path):
    from fusiontune.simulate import simulate_dataset

    out = tmp_path / "ds"
    rows = simulate_dataset(out, 300, 10, seed=4, days=2, chunk_rows=1000)  # 3 chunks of 100 requests
    assert rows == 3000
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet"))
    assert files == ["day=20261101/part-00000.parquet", "day=20261101/part-00001.parquet",
                     "day=20261102/part-00001.parquet", "day=20261102/part-00002.parquet"]
    log = load_log(out, TASKS, group="request_id", time="ts", extra=["day"])
    assert log.n == 3000 and log.groups.max() + 1 == 300
    again = tmp_path / "again"
    simulate_dataset(again, 300, 10, seed=4, days=2, chunk_rows=1000)
    np.testing.assert_array_equal(load_log(again, TASKS).scores, load_log(out, TASKS).scores)
    with pytest.raises(InputError, match="already exists"):
        simulate_dataset(out, 10, 10)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir left


def test_study_log_table_searches_a_dataset(tmp_path, simulated):
    import json

    study = _dataset_study(tmp_path, f'[log]\npath = "{simulated.as_posix()}"\n'
                                      f'filter = "day >= 20261102"\nsample = 0.8\n')
    out = tmp_path / "run"
    proc = _ft("search", "--study", study, "--budget", 32, "--out", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    saved = json.loads((out / "study.json").read_text())
    assert saved["log"]["filter"] == "day >= 20261102" and saved["log"]["sample"] == 0.8
    full = load_log(simulated, TASKS, group="request_id", filter="day >= 20261102", sample=0.8)
    result = json.loads((out / "result.json").read_text())
    assert result["split"]["rows"]["search"] + result["split"]["rows"]["holdout"] == full.n
    proc = _ft("select", "--run", out, "--resamples", 50, "--quiet")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("line, problem", [
    ('filter = "day >> 3"', "unsupported syntax: arithmetic"),
    ('filter = "dya == 20261101"', "unknown column 'dya'"),
    ("sample = 1.5", "sample"),
    ('filtr = "day == 1"', "unknown key 'filtr' in [log]"),
])
def test_bad_log_table_exits_2_with_one_line(tmp_path, simulated, line, problem):
    study = _dataset_study(tmp_path, f'[log]\npath = "{simulated.as_posix()}"\n{line}\n')
    proc = _ft("search", "--study", study, "--budget", 8, "--out", tmp_path / "run", "--quiet")
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert "\n" not in err and problem in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_bad_file_in_a_dataset_exits_2_naming_it(tmp_path, simulated):
    import shutil

    root = tmp_path / "log"
    shutil.copytree(simulated, root)
    victim = sorted(root.rglob("*.parquet"))[1]
    t = pq.read_table(victim)
    col = t.column("click").to_numpy(zero_copy_only=False).copy()
    col[2] = 2.0
    pq.write_table(t.set_column(t.schema.get_field_index("click"), "click", pa.array(col)), victim)
    study = _dataset_study(tmp_path, f'[log]\npath = "{root.as_posix()}"\n')
    proc = _ft("search", "--study", study, "--budget", 8, "--out", tmp_path / "run", "--quiet")
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert "\n" not in err and str(victim) in err and "column 'click'" in err and "row 3 has 2.0" in err


def test_csv_file_with_filter_and_sample(tmp_path, frame):
    path = tmp_path / "log.csv"
    frame.to_csv(path, index=False)
    log = load_log(path, TASKS, group="request_id", filter="country == 'DE'", sample=0.5)
    want = frame[frame["country"] == "DE"]
    keep = keep_mask(group_hash_of(want["request_id"].to_numpy()), sample=0.5)
    assert log.n == int(keep.sum()) and 0 < log.n < len(want)


def test_time_split_on_a_dataset_frees_the_time_column(tmp_path, simulated):
    from fusiontune.pipeline import prepare
    from fusiontune.study import load_study

    study = _dataset_study(tmp_path, f'[log]\npath = "{simulated.as_posix()}"\n')
    prep = prepare(load_study(study))
    assert prep.study.split["by"] == "time"
    full = load_log(simulated, TASKS, group="request_id", time="ts")
    assert prep.search_log.n + prep.holdout_log.n == full.n
    cut = np.quantile(full.time, 0.7)
    assert prep.holdout_log.n == int((full.time >= cut).sum())  # the latest rows are held out
    # the roles are assigned; nothing after the split reads the time column, so it is freed
    assert prep.log.time is None and prep.search_log.time is None and prep.holdout_log.time is None


def test_fingerprint_of_a_dataset_sees_a_changed_or_added_file(tmp_path, frame):
    import os

    from fusiontune.errors import LogError
    from fusiontune.io import check_fingerprint, log_fingerprint

    root = _one_file_per_day(tmp_path / "log", frame)
    for where in (root, root / "day=*" / "*.parquet"):
        fp = log_fingerprint(where, len(frame))
        assert fp["size"] == sum(p.stat().st_size for p in root.rglob("*.parquet"))
        check_fingerprint(fp, "the run")  # unchanged: accepted
    fp_dir, fp_glob = log_fingerprint(root, len(frame)), log_fingerprint(root / "day=*" / "*.parquet", len(frame))
    victim = root / "day=20261102" / "part-0.parquet"
    st = victim.stat()
    os.utime(victim, (st.st_atime, st.st_mtime + 10))
    for fp in (fp_dir, fp_glob):
        with pytest.raises(LogError, match="modification time"):
            check_fingerprint(fp, "the run")
    fp = log_fingerprint(root, len(frame))
    pq.write_table(pa.Table.from_pandas(frame.drop(columns=["day"]).head(5), preserve_index=False),
                   root / "day=20261102" / "part-1.parquet")
    with pytest.raises(LogError, match="size"):
        check_fingerprint(fp, "the run")
