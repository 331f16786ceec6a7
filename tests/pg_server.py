"""A throwaway PostgreSQL server for the tests: initdb in a temp dir, listening on a free
loopback port (and a unix socket in the same dir), stopped and removed in teardown.

As root the server runs as the ``postgres`` user through ``runuser`` (PostgreSQL refuses to
run as root).  ``start()`` returns None and a reason when it cannot run here."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

BIN_DIRS = ["/usr/local/bin", "/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/bin"]


def _find(name: str) -> str | None:
    for d in BIN_DIRS:
        p = Path(d) / name
        if p.exists():
            return str(p)
    return shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    def __init__(self):
        self.dir: Path | None = None
        self.url: str | None = None
        self._ctl = None
        self._prefix: list[str] = []

    def start(self) -> str | None:
        """Start it; returns None on success, else the reason it cannot run here."""
        initdb, pg_ctl = _find("initdb"), _find("pg_ctl")
        if not initdb or not pg_ctl or not _find("postgres"):
            return "PostgreSQL binaries (initdb, pg_ctl, postgres) not found"
        try:
            import psycopg  # noqa: F401
        except ImportError:
            return "psycopg (the 'postgres' extra) is not installed"
        user = None
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                return "running as root and there is no 'postgres' user to run the server"
            if not shutil.which("runuser"):
                return "running as root without runuser"
            self._prefix = ["runuser", "-u", "postgres", "--"]
        self.dir = Path(tempfile.mkdtemp(prefix="fusiontune-pg-"))
        if user is not None:
            os.chown(self.dir, user.pw_uid, user.pw_gid)
        data = self.dir / "data"
        r = subprocess.run([*self._prefix, initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "-N",
                            "-E", "UTF8", "--no-locale"], capture_output=True, text=True)
        if r.returncode != 0:
            self.stop()
            return f"initdb failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}"
        port = _free_port()
        opts = f"-p {port} -h 127.0.0.1 -k {self.dir} -F -c fsync=off -c max_connections=100"
        r = subprocess.run([*self._prefix, pg_ctl, "-D", str(data), "-o", opts, "-l", str(self.dir / "log"),
                            "-w", "-t", "60", "start"], capture_output=True, text=True)
        if r.returncode != 0:
            self.stop()
            return f"pg_ctl start failed: {r.stderr.strip() or r.stdout.strip()}"
        self._ctl = (pg_ctl, data)
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        return None

    def new_database(self, name: str) -> str:
        """A fresh, empty database on the server; returns its URL."""
        import sqlalchemy as sa

        eng = sa.create_engine(self.url, isolation_level="AUTOCOMMIT")
        with eng.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{name}"'))
        eng.dispose()
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def stop(self) -> None:
        if self._ctl is not None:
            pg_ctl, data = self._ctl
            subprocess.run([*self._prefix, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"],
                           capture_output=True)
            self._ctl = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
