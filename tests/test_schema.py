"""One schema for the study: validation, defaults, CLI options and docs from one declaration."""

from __future__ import annotations

import argparse
import doctest

import pytest

import fusiontune.schema as schema
from fusiontune.errors import StudyError
from fusiontune.mtl.config import TrainConfig, TrainData
from fusiontune.study import parse_study

BASE = {"log": "log.parquet", "tasks": [{"name": "click", "score": "p_click", "label": "click"}]}


def test_doctests():
    assert doctest.testmod(schema).failed == 0


def test_defaults_come_from_the_schema():
    st = parse_study(dict(BASE))
    assert st.search == schema.SearchTable().model_dump()
    assert st.sections["select"] == schema.SelectTable().model_dump()
    assert st.sections["report"]["stability_resamples"] == 100


@pytest.mark.parametrize("patch, needle", [
    ({"select": {"levl": 0.9}}, "unknown key 'levl' in [select] (allowed: candidates, diversity, k, level"),
    ({"select": {"level": 1.5}}, "[select] level: input should be less than 1, got 1.5"),
    ({"report": {"k": True}}, "[report] k: input should be a valid integer, got True"),
    ({"search": {"budget": 0}}, "[search] budget: input should be greater than or equal to 1, got 0"),
    ({"search": {"budgt": 5}}, "unknown key 'budgt' in [search]"),
    ({"tasks": [{"name": "a", "score": "s", "label": "l", "metrik": "auc"}]}, "unknown key 'metrik' in [[tasks]] #1"),
    ({"tasks": [{"name": "a", "score": "s", "label": "l", "weight": "1"}]}, "[[tasks]] #1 weight: input should be"),
    ({"fusion": {"bounds": {"a": [3.0, 1.0]}}}, "[fusion.bounds] a needs low < high"),
    ({"objective": {"gauc_weighting": "rowz"}}, "[objective] gauc_weighting: input should be 'rows'"),
    ({"train": {"epochz": 3}}, "unknown key 'epochz' in [train]"),
    ({"colour": 1}, "unknown key 'colour' in the study"),
])
def test_one_line_naming_file_table_and_key(patch, needle):
    with pytest.raises(StudyError) as info:
        parse_study({**BASE, **patch})
    msg = str(info.value)
    assert "\n" not in msg and needle in msg and msg.startswith("<study>: "), msg


def test_cli_options_come_from_the_schema():
    p = argparse.ArgumentParser()
    schema.add_options(p, schema.SelectTable)
    args = p.parse_args(["--level", "0.9", "--diversity", "weights"])
    assert args.level == 0.9 and args.diversity == "weights" and args.k is None
    with pytest.raises(SystemExit):
        p.parse_args(["--diversity", "nope"])


def test_train_config_is_the_one_source(tmp_path):
    """weight_decay and lr_schedule (missing from the old [train] key table) are settable from
    the spec and the command line, and checked by TrainConfig itself."""
    from fusiontune import cli
    from fusiontune.commands.train import build_spec, settings

    spec = tmp_path / "spec.toml"
    spec.write_text('[train]\ndata = "d.parquet"\ntasks = "click,like"\nout = "o.parquet"\n'
                    'weight_decay = 0.001\nlr_schedule = "cosine"\nexpert_hidden = "16,8"\n')
    parser = cli.build_parser()
    args = parser.parse_args(["train", "--spec", str(spec), "--lr", "0.01", "--model", "cgc"])
    train = build_spec(settings(args))
    cfg = train.config
    assert (cfg.weight_decay, cfg.lr_schedule, cfg.lr, cfg.expert_hidden) == (0.001, "cosine", 0.01, [16, 8])
    assert (cfg.model, cfg.levels) == ("ple", 1)
    assert train.data == tmp_path / "d.parquet" and train.tasks == ["click", "like"]
    assert set(schema.keys(TrainConfig)) <= set(vars(args)) and set(schema.keys(TrainData)) <= set(vars(args))
    args = parser.parse_args(["train", "--spec", str(spec), "--weight-decay", "-1"])
    with pytest.raises(StudyError, match=r"\[train\] weight_decay: input should be greater than or equal to 0"):
        settings(args)


def test_markdown_lists_every_key():
    md = schema.markdown(schema.SelectTable, "select")
    assert all(f"`{k}`" in md for k in schema.keys(schema.SelectTable))
