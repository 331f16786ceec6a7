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


def _closed_port() -> int:
    import socket

    with socket.socket() as s:  # bind, read the port, close: nothing listens there afterwards
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_address_reachability_check_fails_fast_with_one_line():
    import socket

    from fusiontune.engine.ray_engine import _check_reachable
    from fusiontune.errors import RunError

    with socket.socket() as server:  # something answers: the check passes
        server.bind(("127.0.0.1", 0))
        server.listen()
        _check_reachable(f"127.0.0.1:{server.getsockname()[1]}")
        _check_reachable(f"ray://127.0.0.1:{server.getsockname()[1]}")
    _check_reachable("auto")  # left to Ray
    port = _closed_port()
    with pytest.raises(RunError, match=rf"cannot join the Ray cluster at 127.0.0.1:{port}: nothing answers") as e:
        _check_reachable(f"127.0.0.1:{port}")
    assert e.value.param == "address"
    with pytest.raises(RunError, match="not host:port"):
        _check_reachable("no-port-here")


def test_cli_unreachable_address_is_one_line_and_exit_2(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("ray")
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "fusiontune", "search", "--study", str(root / "studies/demo.toml"),
                           "--budget", "8", "--engine", "ray", "--address", f"127.0.0.1:{_closed_port()}",
                           "--out", str(out)], capture_output=True, text=True, timeout=120, cwd=root)
    # the one progress line the engine prints before it starts is not part of the error
    err = [line for line in proc.stderr.strip().splitlines() if line.strip() and not line.startswith("ray engine:")]
    assert proc.returncode == 2, proc.stderr
    assert len(err) == 1 and "cannot join the Ray cluster" in err[0], err
    assert not out.exists()
