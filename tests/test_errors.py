"""The error hierarchy, and core messages that name parameters, never CLI flags."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import fusiontune
from fusiontune import cli
from fusiontune.errors import (DependencyError, FusiontuneError, InputError, LogError, RunError,
                               StudyError)

PKG = Path(fusiontune.__file__).parent
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _core_modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        if rel.parts[0] == "commands" or rel.name == "cli.py":
            continue
        yield rel, path


def _message_strings(tree: ast.AST):
    """String constants in a module except docstrings (module, class, function)."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = getattr(node, "body", [])
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def test_no_core_module_names_a_cli_flag():
    found = []
    for rel, path in _core_modules():
        for line, text in _message_strings(ast.parse(path.read_text(encoding="utf-8"))):
            for m in FLAG.finditer(text):
                found.append(f"{rel}:{line}: {m.group(0)} in {text[:70]!r}")
    assert not found, "core modules must name the parameter or study key, not a CLI flag:\n" + "\n".join(found)


def test_the_flag_scanner_finds_flags():
    tree = ast.parse('"""doc --ok"""\nraise ValueError(f"--level must be in (0, 1), got {x}")\n')
    assert [m.group(0) for _, s in _message_strings(tree) for m in FLAG.finditer(s)] == ["--level"]


def test_hierarchy():
    for cls in (LogError, StudyError, RunError, DependencyError):
        assert issubclass(cls, FusiontuneError) and issubclass(cls, ValueError)
    assert issubclass(DependencyError, ImportError)
    assert InputError is FusiontuneError
    with pytest.raises(ValueError, match="level"):
        raise StudyError("level must be in (0, 1)", param="level")


def test_select_names_the_parameter_and_the_cli_names_the_flag(tmp_path, capsys):
    from fusiontune.select import select_arms

    with pytest.raises(FusiontuneError) as info:
        select_arms(tmp_path / "no-run", level=2.0)
    assert info.value.param == "level" and "--" not in str(info.value)
    parser = cli.build_parser()
    sub = parser._subparsers._group_actions[0].choices["select"]
    assert cli.flag_hint(sub, "level") == " (option --level)"
    assert cli.flag_hint(sub, "no_such_param") == ""
