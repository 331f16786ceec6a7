"""The Python API: README example end to end from a DataFrame, equal to the CLI; docstrings."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pandas as pd
import pytest

import fusiontune as ft
from fusiontune.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_every_public_name_has_a_docstring():
    assert "Study" in ft.__all__ and "optimize" in ft.__all__
    for name in ft.__all__:
        obj = getattr(ft, name)
        if name == "__version__":
            continue
        assert inspect.getdoc(obj), f"fusiontune.{name} has no docstring"
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if not attr.startswith("_") and (inspect.isfunction(member) or isinstance(member, (property,
                                                                                                    classmethod))):
                    fn = member.__func__ if isinstance(member, classmethod) else member
                    assert inspect.getdoc(fn), f"fusiontune.{name}.{attr} has no docstring"


def test_api_names_do_not_collide_with_subpackages():
    import fusiontune.export  # noqa: F401
    import fusiontune.report  # noqa: F401
    import fusiontune.search  # noqa: F401
    import fusiontune.select  # noqa: F401

    assert callable(ft.optimize) and callable(ft.select_arms) and callable(ft.build_report)


def test_readme_example_runs_and_equals_the_cli(tmp_path, capsys):
    ns: dict = {}
    exec(compile(_readme_example(), "README.md", "exec"), ns)  # noqa: S102 - the README's own code
    res, study, df = ns["res"], ns["study"], ns["df"]
    assert isinstance(res, ft.SearchResult) and ns["arms"]["arms"] and "params" in ns["weights"]
    assert set(ns["rep"]) >= {"tasks", "convergence"} or ns["rep"]
    assert len(ns["trials"]) == 96 and list(res.per_task["task"]) == study.task_names
    # the same study through the CLI: a file log and a TOML study, same seed
    log = tmp_path / "log.parquet"
    df.to_parquet(log, index=False)
    toml = tmp_path / "study.toml"
    d = study.to_dict()
    d["log"] = str(log)
    toml.write_text(_toml(d))
    out = tmp_path / "run"
    assert main(["search", "--study", str(toml), "--quiet", "--out", str(out)]) == 0
    cli = json.loads((out / "result.json").read_text())
    assert cli["best"]["params"] == res.result["best"]["params"]
    assert cli["best"]["objective"] == res.best_value and cli["holdout"] == res.holdout
    pd.testing.assert_frame_equal(pd.read_csv(out / "trials.csv")[list(res.trials.columns)],
                                  res.trials.reset_index(drop=True), check_dtype=False, rtol=1e-9)
    # select / export from the CLI run equal the in-memory ones
    assert main(["select", "--run", str(out), "--k", "2", "--resamples", "200", "--quiet"]) == 0
    cand = json.loads((out / "candidates.json").read_text())
    mem = ns["arms"]["arms"]  # trials.csv keeps 10 significant digits: equal to that precision
    assert [a["name"] for a in cand["arms"]] == [a["name"] for a in mem]
    for a, b in zip(cand["arms"], mem):
        assert a["params"] == pytest.approx(b["params"], rel=1e-9)
    assert main(["export", "--run", str(out), "--to", str(tmp_path / "w.json")]) == 0
    assert json.loads((tmp_path / "w.json").read_text())["params"] == ns["weights"]["params"]
    # a saved in-memory result loads back (the log given again: it was a DataFrame)
    res.save(tmp_path / "mem")
    back = ft.SearchResult.load(tmp_path / "mem", log=df)
    assert back.best_params == res.best_params and back.to_dict() == json.loads(
        (tmp_path / "mem" / "result.json").read_text())


def _toml(d: dict) -> str:
    def val(v):
        return json.dumps(v)

    lines, tables = [], []
    for k, v in d.items():
        if isinstance(v, dict):
            tables.append((k, v))
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            continue
        else:
            lines.append(f"{k} = {val(v)}")
    for t in d["tasks"]:
        lines.append("[[tasks]]")
        lines += [f"{k} = {val(v)}" for k, v in t.items()]
    for name, table in tables:
        flat = {k: v for k, v in table.items() if not isinstance(v, dict)}
        lines.append(f"[{name}]")
        lines += [f"{k} = {val(v)}" for k, v in flat.items()]
        for sub, st in table.items():
            if isinstance(st, dict):
                lines.append(f"[{name}.{sub}]")
                lines += [f"{k} = {val(v)}" for k, v in st.items()]
    return "\n".join(lines) + "\n"


def test_optimize_defaults_method_options_from_the_study(small_study):
    """cma's sigma0 from [search.cma] reaches the searcher from Python as from the CLI."""
    study = ft.Study.from_toml(small_study)
    study.config.method_options["cma"] = {"sigma0": 0.05}
    s, opts = ft.search_settings(study, method="cma")
    assert opts == {"sigma0": 0.05} and s["budget"] == 96
    res = ft.optimize(study, method="cma", budget=16)
    assert res.result["options"]["sigma0"] == 0.05


def test_bad_keyword_names_the_parameter():
    with pytest.raises(ft.StudyError) as info:
        ft.Study(log="x.parquet", tasks=[{"name": "a", "score": "s", "label": "l"}], select={"level": 2})
    assert info.value.param == "level" and "--" not in str(info.value)


def test_library_calls_leave_process_state_alone(tmp_path, small_study):
    """No backend switch from a report, no Optuna log level from a search (the CLI sets it)."""
    import logging

    import matplotlib
    import optuna

    backend = matplotlib.get_backend()
    optuna.logging.set_verbosity(optuna.logging.DEBUG)
    try:
        res = ft.optimize(ft.Study.from_toml(small_study), method="tpe", budget=12)
        ft.build_report(res, resamples=20, stability_resamples=2, out=tmp_path / "r.md")
        assert optuna.logging.get_verbosity() == logging.DEBUG
        assert matplotlib.get_backend() == backend
    finally:
        optuna.logging.set_verbosity(optuna.logging.INFO)
