"""[engine] settings (no Ray needed): the study table, the overrides, the refusals."""

import pytest

from fusiontune.engine import engine_settings
from fusiontune.errors import StudyError
from fusiontune.study import parse_study

BASE = {"name": "e", "log": "x.parquet", "tasks": [{"name": "click", "score": "p", "label": "y"}]}


def test_engine_table_and_overrides():
    st = parse_study(dict(BASE))
    assert engine_settings(st) == {"name": "local", "address": None, "actors": None}
    st = parse_study({**BASE, "engine": {"name": "ray", "actors": 3}})
    assert engine_settings(st)["actors"] == 3 and engine_settings(st)["name"] == "ray"
    assert engine_settings(st, "local")["name"] == "local"
    assert engine_settings(st, actors=2)["actors"] == 2
    # an address names a Ray cluster: it implies the ray engine unless one is named
    assert engine_settings(parse_study(dict(BASE)), address="10.0.0.1:6379")["name"] == "ray"
    assert parse_study({**BASE, "engine": {"name": "ray"}}).to_dict()["engine"]["name"] == "ray"


def test_engine_refusals_name_the_key():
    with pytest.raises(StudyError, match=r"\[engine\].*name"):
        parse_study({**BASE, "engine": {"name": "spark"}})
    with pytest.raises(StudyError, match="actors"):
        parse_study({**BASE, "engine": {"actors": 0}})
    with pytest.raises(StudyError, match="address") as e:
        engine_settings(parse_study(dict(BASE)), "local", address="10.0.0.1:6379")
    assert e.value.param == "address"
