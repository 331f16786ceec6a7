"""What a search holds: the split cuts the log into its parts without keeping the log next
to them (and gives the same objectives as copying the parts), the time column and the group
hash are read only when the split needs them, and the batch-wise Parquet reader gives the
rows the dataset scanner gives (docs/logs.md, "Memory")."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fusiontune import dataset as dataset_mod
from fusiontune.log import HOLDOUT, SEARCH, SELECT, TaskColumns, join_roles, load_log, split_roles
from fusiontune.objective import Objective
from fusiontune.pipeline import load_study_log, prepare, split_needs
from fusiontune.simulate import simulate_log
from fusiontune.study import load_study

from conftest import write_study

TASKS = [TaskColumns(t, f"p_{t}", t) for t in ("click", "like", "finish", "convert")]
SPLITS = {
    "time": '[split]\nby = "time"\nholdout = 0.3\n',
    "time+select": '[split]\nby = "time"\nholdout = 0.25\nselect = 0.2\n',
    "group": '[split]\nby = "group"\nholdout = 0.3\nseed = 4\n',
    "group+select": '[split]\nby = "group"\nholdout = 0.2\nselect = 0.15\nseed = 1\n',
    "random": '[split]\nby = "random"\nholdout = 0.3\nseed = 2\n',
    "none": "",
}


def _study(tmp_path, log, split: str):
    path = write_study(tmp_path, log)
    text = path.read_text()
    head, _, rest = text.partition("[split]")
    _, _, tail = rest.partition("[search]")
    path.write_text(head + SPLITS[split] + "\n[search]" + tail)
    return load_study(path)


def _thetas(prep, n=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.0, (n, prep.space.dim))
    return np.vstack([prep.space.baseline[None, :], prep.space.full(x)])


def _reference_parts(study):
    """The parts as the split made them before: the whole log read with every column, each
    part a copy (log.take) that keeps the time column and group hash."""
    sp = study.split
    cols = [TaskColumns(t.name, t.score, t.label, t.score_scale) for t in study.tasks]
    log = load_log(study.log_source, cols, group=study.group, time=study.time)
    parts = split_roles(log, sp["by"], sp.get("holdout"), sp.get("select", 0.0), sp.get("seed", 0))
    return log, parts


@pytest.mark.parametrize("split", [s for s in SPLITS if s != "none"])
def test_split_gives_the_objectives_of_copied_parts(tmp_path, small_log, split):
    study = _study(tmp_path, small_log, split)
    whole, ref = _reference_parts(study)
    prep = prepare(study)
    theta = _thetas(prep)
    pairs = [(prep.search_log, ref.search, prep.objective), (prep.holdout_log, ref.holdout, prep.holdout_objective),
             (prep.select_log, ref.select, prep.select_objective)]
    for got, want, obj in pairs:
        if want is None:
            assert got is None and obj is None
            continue
        np.testing.assert_array_equal(got.scores, want.scores)
        np.testing.assert_array_equal(got.label_codes, want.label_codes)
        np.testing.assert_array_equal(got.groups, want.groups)
        assert got.time is None and got.group_hash is None  # split-only columns are not held by the parts
        copied = Objective(study.tasks, want, prep.formula, study.gauc_weighting)
        np.testing.assert_array_equal(obj.metrics(theta), copied.metrics(theta))
    np.testing.assert_array_equal(prep.role, ref.role)
    assert prep.split_info == ref.info
    # the whole log, joined back on demand, is the log as read (row order included)
    assert prep._log is None and prep.n_rows == whole.n
    joined = prep.log
    np.testing.assert_array_equal(joined.scores, whole.scores)
    np.testing.assert_array_equal(joined.label_codes, whole.label_codes)
    np.testing.assert_array_equal(joined.groups, whole.groups)


def test_no_split_searches_the_whole_log_without_a_copy(tmp_path, small_log):
    study = _study(tmp_path, small_log, "none")
    prep = prepare(study)
    assert prep.search_log is prep.log and prep.holdout_log is None and prep.role is None
    assert prep.log.time is None and prep.log.group_hash is None
    cols = [TaskColumns(t.name, t.score, t.label, t.score_scale) for t in study.tasks]
    whole = load_log(study.log_source, cols, group=study.group, time=study.time)
    theta = _thetas(prep)
    ref = Objective(study.tasks, whole, prep.formula, study.gauc_weighting)
    np.testing.assert_array_equal(prep.objective.metrics(theta), ref.metrics(theta))


def test_a_log_handed_in_is_left_as_it_was(tmp_path, small_log):
    study = _study(tmp_path, small_log, "group+select")
    cols = [TaskColumns(t.name, t.score, t.label, t.score_scale) for t in study.tasks]
    log = load_log(study.log_source, cols, group=study.group, time=study.time, extra=["item_id"])
    before = {k: getattr(log, k).copy() for k in ("scores", "label_codes", "groups", "time", "group_hash")}
    prep = prepare(study, log=log)
    for k, v in before.items():
        np.testing.assert_array_equal(getattr(log, k), v)
    assert "item_id" in log.extra and prep.search_log.extra["item_id"].shape == (prep.search_log.n,)
    np.testing.assert_array_equal(prep.log.extra["item_id"], log.extra["item_id"])


def test_join_roles_inverts_the_cut(small_log):
    log = load_log(small_log, TASKS, group="request_id", time="ts", extra=["item_id"])
    parts = split_roles(log, "group", 0.3, 0.2, seed=5)
    back = join_roles({SEARCH: parts.search, SELECT: parts.select, HOLDOUT: parts.holdout}, parts.role)
    for k in ("scores", "label_codes", "groups", "time", "group_hash"):
        np.testing.assert_array_equal(getattr(back, k), getattr(log, k))
    np.testing.assert_array_equal(back.extra["item_id"], log.extra["item_id"])


def test_consume_empties_the_log_and_drops_split_columns(small_log):
    log = load_log(small_log, TASKS, group="request_id", time="ts")
    ref = split_roles(log, "time", 0.3)
    parts = split_roles(log, "time", 0.3, consume=True)
    assert log.scores is None and log.label_codes is None and log.time is None and log.group_hash is None
    np.testing.assert_array_equal(parts.search.scores, ref.search.scores)
    assert parts.search.time is None and parts.holdout.group_hash is None


def test_a_bad_split_consumes_nothing(small_log):
    """The checks run on the whole log before anything is cut: an empty part leaves the log whole."""
    from fusiontune.errors import LogError

    log = load_log(small_log, TASKS, group="request_id", time="ts")
    log.label_codes[:, 3] = np.where(log.time[:, None] >= np.quantile(log.time, 0.7), 1, log.label_codes[:, 3:4])[:, 0]
    with pytest.raises(LogError, match="holdout part of the split has no positive"):
        split_roles(log, "time", 0.3, consume=True)
    assert log.scores is not None and log.time is not None


@pytest.mark.parametrize("split, time_read, hash_kept", [
    ("none", False, False), ("time", True, False), ("time+select", True, False),
    ("group", False, True), ("group+select", False, True), ("random", False, False)])
def test_only_the_columns_the_study_needs_are_read(tmp_path, small_log, monkeypatch, split, time_read, hash_kept):
    study = _study(tmp_path, small_log, split)
    assert split_needs(study) == {"time": time_read, "group_hash": hash_kept}
    asked = []
    real = dataset_mod.LogSource.batches

    def spy(self, columns, *a, **k):
        asked.append(list(columns))
        return real(self, columns, *a, **k)

    monkeypatch.setattr(dataset_mod.LogSource, "batches", spy)
    log = load_study_log(study)
    assert asked and ("ts" in asked[0]) == time_read
    assert "item_id" not in asked[0]  # a column of the file that no key names
    assert (log.time is not None) == time_read and (log.group_hash is not None) == hash_kept
    asked.clear()
    prepare(study)
    assert ("ts" in asked[0]) == time_read


def test_explicit_holdout_column_reads_no_time(tmp_path, small_log):
    import pandas as pd

    df = pd.read_parquet(small_log)
    df["is_holdout"] = (df["request_id"] % 4 == 0).astype(int)
    path = tmp_path / "flag.parquet"
    df.to_parquet(path)
    study = _study(tmp_path, path, "none")
    text = study.path.read_text().replace("[search]", '[split]\ncolumn = "is_holdout"\n\n[search]', 1)
    study.path.write_text(text)
    study = load_study(study.path)
    assert split_needs(study) == {"time": False, "group_hash": False}
    prep = prepare(study)
    assert prep.holdout_log.n == int(df["is_holdout"].sum())


# --------------------------------------------------------------------------- the Parquet reader
@pytest.fixture()
def mixed_dataset(tmp_path):
    """Hive partitions, several row groups per file, a file whose request_id is int32 (the
    others int64) and a file without the 'country' column."""
    df = simulate_log(requests=300, candidates=7, seed=9)
    df["country"] = np.where(df["request_id"] % 2 == 0, "US", "DE")
    root = tmp_path / "ds"
    for i, (lo, hi) in enumerate(((0, 100), (100, 200), (200, 300))):
        part = df[(df["request_id"] >= lo) & (df["request_id"] < hi)]
        d = root / f"day=2026110{i + 1}"
        d.mkdir(parents=True)
        t = pa.Table.from_pandas(part, preserve_index=False)
        if i == 1:
            t = t.set_column(t.schema.get_field_index("request_id"), "request_id",
                             t.column("request_id").cast(pa.int32()))
        if i == 2:
            t = t.drop_columns(["country"])
        pq.write_table(t, d / "part-0.parquet", row_group_size=250)
    return root


def test_batchwise_reader_gives_the_scanners_rows(mixed_dataset):
    from fusiontune.dataset import BATCH_ROWS, open_source

    cols = ["p_click", "click", "request_id", "day", "country"]
    src = open_source(mixed_dataset, cols)
    mine = pa.Table.from_batches([b for _, _, b in src.batches(cols, batch_rows=100)])
    scanned = pa.Table.from_batches(
        [b for f in src.dataset.get_fragments() for b in f.to_batches(schema=src.schema, columns=cols)])
    scanned = scanned.sort_by([("day", "ascending")])  # fragments in path order, as open_source reads them
    assert mine.schema == scanned.schema
    assert mine.equals(scanned)
    assert mine.column("country").null_count == 300 // 3 * 7  # the file without the column
    assert BATCH_ROWS >= 100


def test_loaded_log_is_the_same_through_either_reader(mixed_dataset):
    """No filter: the batch-wise reader; a filter that keeps every row: the dataset scanner."""
    a = load_log(mixed_dataset, TASKS, group="request_id", time="ts", extra=["day"])
    b = load_log(mixed_dataset, TASKS, group="request_id", time="ts", extra=["day"], filter="request_id >= 0")
    for k in ("scores", "label_codes", "groups", "time", "group_hash"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    np.testing.assert_array_equal(a.extra["day"], b.extra["day"])
