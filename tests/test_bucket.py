"""Bucketed datasets (`fusiontune bucket`): the rows are exactly the source's, a shard opens only
its buckets' files, the shards' union is the unbucketed load, a study gives the same objectives
on the bucketed and the original log (local engine and Ray with 2 actors), bad input is one line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fusiontune.bucket import write_buckets
from fusiontune.cli import main
from fusiontune.dataset import BUCKET_META, bucketing_of, group_hash_of
from fusiontune.errors import InputError
from fusiontune.log import TaskColumns, load_log
from fusiontune.pipeline import prepare, search
from fusiontune.simulate import simulate_log
from fusiontune.study import parse_study
from search_helpers import sharded_study

TASKS = [TaskColumns("click", "p_click", "click"), TaskColumns("like", "p_like", "like"),
         TaskColumns("finish", "p_finish", "finish"), TaskColumns("convert", "p_convert", "convert")]


def study_dict(log, **over) -> dict:
    return sharded_study(log, 32, **{"name": "buckets", **over})


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    """The source (a Hive-partitioned dataset, part=0..2) and its bucketing into 4 buckets."""
    df = simulate_log(requests=400, candidates=10, seed=3)
    df["w"] = np.random.default_rng(5).uniform(0.5, 2.0, len(df)).round(3)
    df["rid"] = np.arange(len(df))
    df["part"] = df["request_id"] % 3
    root = tmp_path_factory.mktemp("bucket")
    src = root / "log"
    pq.write_to_dataset(pa.Table.from_pandas(df, preserve_index=False), src, partition_cols=["part"])
    out = root / "b4"
    meta = write_buckets(src, "request_id", 4, out, show_progress=False, flush_rows=300)  # several row groups a bucket
    return src, out, meta, df


def _load(path, **kw):
    return load_log(path, TASKS, group="request_id", weight="w", extra=["rid"], **kw)


def _by_rid(log):
    order = np.argsort(log.extra["rid"], kind="stable")
    return log.extra["rid"][order], log.scores[order], log.label_codes[order], log.weights[order], \
        log.group_hash[order]


def _same_rows(a, b):
    for x, y in zip(_by_rid(a), _by_rid(b)):
        assert np.array_equal(x, y)


def test_bucketed_dataset_holds_exactly_the_source_rows(logs):
    src, out, meta, df = logs
    assert meta["rows"] == len(df) and meta["buckets"] == 4 and meta["group"] == "request_id"
    assert json.loads((out / BUCKET_META).read_text()) == meta
    got = pq.read_table(out).to_pandas()  # every column kept; ft_bucket is the Hive key
    assert set(df.columns) <= set(got.columns) and "ft_bucket" in got.columns
    got = got.sort_values("rid").reset_index(drop=True)
    want = df.sort_values("rid").reset_index(drop=True)
    for c in df.columns:
        assert np.array_equal(got[c].to_numpy().astype(float), want[c].to_numpy().astype(float), equal_nan=True), c
    h = group_hash_of(got["request_id"].to_numpy())
    assert np.array_equal(h % np.uint64(4), got["ft_bucket"].to_numpy().astype(np.uint64))
    files = list((out / "ft_bucket=0").glob("*.parquet"))
    assert len(files) == 1 and pq.ParquetFile(files[0]).num_row_groups > 1  # flushed as several row groups
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp dir left


def test_each_shard_opens_only_its_buckets_files(logs):
    _, out, _, _ = logs
    b = bucketing_of(out, "request_id")
    assert b is not None and b.buckets == 4
    cols = ["p_click", "click", "request_id"]
    for i in range(2):
        src = b.open(cols, (i, 2))
        rows = sum(batch.num_rows for _, _, batch in src.batches(cols))
        assert rows > 0
        assert src.opened and {src.bucket_of[p] % 2 for p in src.opened} == {i}
        assert {f"ft_bucket={src.bucket_of[p]}" for p in src.opened} == \
            {f"ft_bucket={k}" for k in range(4) if k % 2 == i}
        assert all(f"ft_bucket={src.bucket_of[p]}/" in p for p in src.opened)
    assert bucketing_of(out, "user_id") is None  # another group column: a plain dataset


def test_shards_union_is_the_unbucketed_load_and_other_files_are_never_opened(logs, tmp_path):
    src, out, _, _ = logs
    full = _load(src)
    _same_rows(_load(out), full)
    parts = [_load(out, shard=(i, 3)) for i in range(3)]
    assert sum(p.n for p in parts) == full.n
    rid = np.concatenate([p.extra["rid"] for p in parts])
    assert np.array_equal(np.sort(rid), np.sort(full.extra["rid"]))
    for i, p in enumerate(parts):  # whole buckets, so whole groups: shard i holds the buckets b % 3 == i
        assert set((np.unique(p.group_hash) % np.uint64(4) % np.uint64(3)).tolist()) == {i}
    # 4 buckets over 2 shards: bucket % 2 == hash % 2, the same rows as the unbucketed shard
    for i in range(2):
        _same_rows(_load(out, shard=(i, 2)), _load(src, shard=(i, 2)))
    # the sample (high bits of the hash) keeps working
    samp = [_load(out, shard=(i, 2), sample=0.5) for i in range(2)]
    want = _load(src, sample=0.5)
    assert np.array_equal(np.sort(np.concatenate([s.extra["rid"] for s in samp])), np.sort(want.extra["rid"]))
    # garbage in the odd buckets' files: shard 0 never opens them, shard 1 fails naming one
    copy = tmp_path / "b4"
    shutil.copytree(out, copy)
    for f in copy.glob("ft_bucket=[13]/*.parquet"):  # one file a bucket
        f.write_bytes(b"not parquet at all")
    _same_rows(_load(copy, shard=(0, 2)), _load(out, shard=(0, 2)))
    with pytest.raises(InputError, match=r"ft_bucket=[13]/part-\d+\.parquet"):
        _load(copy, shard=(1, 2))


def test_a_glob_into_the_bucketed_directory_reads_by_bucket(logs, tmp_path):
    """A glob whose files all lie in the buckets is read as the bucketed dataset: a shard opens only
    its buckets' matched files, and a glob that picks buckets reads just those."""
    src, out, _, _ = logs
    every = f"{out}/ft_bucket=*/*.parquet"
    b = bucketing_of(every, "request_id")
    assert b is not None and sorted(b.dirs) == [0, 1, 2, 3]
    _same_rows(_load(every), _load(out))
    for i in range(2):
        _same_rows(_load(every, shard=(i, 2)), _load(src, shard=(i, 2)))
    some = f"{out}/ft_bucket=[13]/*.parquet"  # buckets 1 and 3: all of shard 1 of 2, nothing of shard 0
    assert sorted(bucketing_of(some, "request_id").dirs) == [1, 3]
    _same_rows(_load(some, shard=(1, 2)), _load(src, shard=(1, 2)))
    with pytest.raises(InputError, match="no rows left after shard"):
        _load(some, shard=(0, 2))
    assert bucketing_of(f"{src}/*/*.parquet", "request_id") is None  # not a bucketed directory
    assert bucketing_of(every, "user_id") is None


def test_a_row_in_the_wrong_bucket_is_one_line_naming_the_file(logs, tmp_path):
    _, out, _, _ = logs
    copy = tmp_path / "b4"
    shutil.copytree(out, copy)
    shutil.move(copy / "ft_bucket=0" / "part-00000.parquet", copy / "ft_bucket=1" / "part-99999.parquet")
    with pytest.raises(InputError) as e:
        _load(copy, shard=(1, 2))
    msg = str(e.value)
    assert "ft_bucket=1/part-99999.parquet: row 1 belongs to bucket 0, not 1" in msg and "\n" not in msg
    shutil.rmtree(copy / "ft_bucket=1")
    (copy / "ft_bucket=7").mkdir()
    with pytest.raises(InputError, match=r"ft_bucket=7: not a bucket of .*_fusiontune_buckets\.json"):
        _load(copy)


def test_more_shards_than_buckets_is_one_line(logs):
    _, out, _, _ = logs
    with pytest.raises(InputError, match=r"no rows left after shard \(5, 6\).*use at least as many buckets"):
        _load(out, shard=(5, 6))


def _metrics(prep, theta):
    return {role: getattr(prep, role).metrics(theta) for role in ("objective", "select_objective",
                                                                   "holdout_objective")}


def test_same_objectives_on_the_bucketed_and_the_original_log(logs):
    src, out, _, _ = logs
    theta = np.random.default_rng(0).uniform(0, 3, (6, 4))
    for split in ({"by": "group", "holdout": 0.3, "select": 0.15, "seed": 1},
                  {"by": "time", "holdout": 0.25, "select": 0.1}):
        a = _metrics(prepare(parse_study(study_dict(src, split=split))), theta)
        b = _metrics(prepare(parse_study(study_dict(out, split=split))), theta)
        for role in a:
            assert np.abs(a[role] - b[role]).max() <= 1e-9, (split, role)


def test_ray_two_actors_on_the_bucketed_log_match_local(logs):
    ray = pytest.importorskip("ray", reason="the Ray engine needs ray (pip install 'fusiontune[ray]')")
    src, out, _, _ = logs
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="error", log_to_driver=False)
    try:
        local = prepare(parse_study(study_dict(src)))
        res_l, tr_l = search(local, "cem", 32, 0, 8, show_progress=False)
        prep = prepare(parse_study(study_dict(out)), engine={"name": "ray", "actors": 2})
        try:
            res_r, tr_r = search(prep, "cem", 32, 0, 8, show_progress=False)
            # the grad surrogate's sample: shards read different files, so its order comes from the
            # bucket read keys, and equals one process's read of the bucketed log
            from fusiontune.surrogate import surrogate_sample

            one = prepare(parse_study(study_dict(out)))
            a, b = surrogate_sample(one.objective, 1000), surrogate_sample(prep.objective, 1000)
            assert a.fraction < 1.0 and a.n == b.n
            np.testing.assert_array_equal(a.prepared, b.prepared)
            np.testing.assert_array_equal(a.weights, b.weights)
            np.testing.assert_array_equal(np.unique(a.groups, return_inverse=True)[1], b.groups)
        finally:
            prep.close()
    finally:
        ray.shutdown()
    num = tr_l.select_dtypes("number").columns
    assert len(tr_l) == len(tr_r)
    assert np.abs(tr_l[num].to_numpy(float) - tr_r[num].to_numpy(float)).max() <= 1e-9
    assert res_r["rows"] == res_l["rows"]
    assert abs(res_l["best"]["objective"] - res_r["best"]["objective"]) <= 1e-9


def test_cli_writes_the_dataset_and_bad_input_is_one_line(logs, tmp_path, capsys):
    src, _, _, df = logs
    out = tmp_path / "b3"
    assert main(["bucket", "--log", str(src), "--group", "request_id", "--buckets", "3", "--out", str(out),
                 "--quiet"]) == 0
    assert f"{len(df)} rows in 3 of 3 buckets" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [BUCKET_META, "ft_bucket=0", "ft_bucket=1", "ft_bucket=2"]
    cases = [(["--group", "nope", "--buckets", "3", "--out", str(tmp_path / "x")], "missing column 'nope'"),
             (["--group", "request_id", "--buckets", "0", "--out", str(tmp_path / "x")],
              "buckets must be an integer in [1, 4096], got 0 (option --buckets)"),
             (["--group", "request_id", "--buckets", "2", "--out", str(out)],
              "already exists and is not an empty directory")]
    for extra, text in cases:
        assert main(["bucket", "--log", str(src), *extra, "--quiet"]) == 2
        err = capsys.readouterr().err
        assert text in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "x").exists()
    # an empty group id: one line naming the file and row, nothing written
    bad = tmp_path / "bad.parquet"
    t = pa.Table.from_pandas(df.head(50), preserve_index=False)
    ids = t.column("request_id").to_pylist()
    ids[7] = None
    pq.write_table(t.set_column(t.schema.get_field_index("request_id"), "request_id", pa.array(ids)), bad)
    assert main(["bucket", "--log", str(bad), "--group", "request_id", "--buckets", "2", "--out",
                 str(tmp_path / "y"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "bad.parquet: column 'request_id' (group) is empty at row 8" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b3", "bad.parquet"]


def test_bucket_column_is_read_only_when_the_study_names_it(logs):
    _, out, _, _ = logs
    assert "ft_bucket" not in _load(out, shard=(1, 2)).extra
    log = load_log(out, TASKS, group="request_id", extra=["ft_bucket"], shard=(1, 2))
    assert set(np.unique(log.extra["ft_bucket"]).tolist()) == {1, 3}
    only3 = load_log(out, TASKS, group="request_id", extra=["ft_bucket"], filter="ft_bucket == 3", shard=(1, 2))
    assert 0 < only3.n < log.n and set(only3.extra["ft_bucket"].tolist()) == {3}
