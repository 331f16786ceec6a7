"""Run directories: one directory holds one run, and nothing from another run.

A run directory (``runs/<study>-<method>-<seed>`` by default) belongs to the run that
created it.  Its *owner* is written to ``run.json`` when the run starts::

    {"format": "fusiontune-run", "version": 1, "run_id": "20261127T142233Z-3f9a1c2e",
     "kind": "search", "study": "demo", "method": "cem", "seed": 0,
     "storage": "sqlite:///.../runs/demo-cem-0/study.db", "storage_in_run_dir": true,
     "started": "2026-11-27T14:22:33Z"}

Rules (see ``docs/cli.md``):

* **Checked before any work.**  :func:`plan` looks at the output location first: a path
  under a regular file, a directory that cannot be written, or a directory that holds
  something else is refused with one line before a log is read or a candidate evaluated.
  It writes nothing but a probe directory it removes at once.
* **A fresh run replaces the old one as a whole.**  :meth:`Plan.claim` builds the new,
  empty directory (with its ``run.json``) beside the old one under a hidden temporary name
  and swaps the two in one ``renameat2(RENAME_EXCHANGE)`` where the kernel has it (else
  two renames), then deletes the old tree.  Nothing derived from the older run (arms,
  reports, exports, its study.db) survives into the new one.
* **Only the same run may replace or continue a directory.**  A directory whose owner has
  another study, method, seed or storage is refused ("holds another run"); so is a
  non-empty directory that is not a run directory at all (it is never deleted).  The same
  identity re-running replaces it; resuming (or joining) continues it in place.
* **Every run has a run id**, new for every invocation that writes a ``result.json`` (a
  resume too: its result may differ).  ``result.json`` carries it; every file derived from
  a run (``candidates.json``, reports, exported weights) records the run id it was made
  from (:func:`stamp`), and readers refuse a derived file whose run id differs from the
  run directory's (:func:`check_derived`).

Messages name paths and study keys only, never command-line flags: errors carry ``param``
(``"out"``, ``"run"``) and the CLI names the matching option.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .errors import RunError

__all__ = ["MARKER", "Owner", "Plan", "Claim", "new_run_id", "check_location", "plan", "read_owner",
           "run_id_of", "stamp", "check_derived", "storage_label"]

MARKER = "run.json"
FORMAT = "fusiontune-run"
IDENTITY = ("kind", "study", "method", "seed", "storage")


def _Error(message: str, param: str = "out") -> RunError:
    """Errors about the output location carry ``param="out"``; the CLI names its option."""
    return RunError(message, param=param)


def new_run_id() -> str:
    """UTC start time plus 8 random hex digits: unique, sortable, readable."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def storage_label(url: str | None) -> str | None:
    """A storage URL safe to write down: any password replaced by ``***``."""
    if url is None:
        return None
    return re.sub(r"(://[^/:@]*:)[^@/]*@", r"\1***@", str(url))


def _norm_storage(url: str | None, run_dir: Path) -> tuple[str | None, bool]:
    """(comparable storage, whether it is the run directory's own study.db)."""
    if url is None:
        return None, False
    url = str(url)
    if url.startswith("sqlite:///"):
        p = Path(url[len("sqlite:///"):])
        p = p if p.is_absolute() else Path.cwd() / p
        p = Path(os.path.normpath(p))
        inside = p == Path(os.path.normpath(Path(run_dir).resolve() / "study.db"))
        return f"sqlite:///{p}", inside
    return storage_label(url), False


@dataclass(frozen=True)
class Owner:
    """Who a run directory belongs to (``run.json``; or ``result.json`` for older runs)."""

    kind: str
    study: str | None
    method: str | None = None
    seed: int | None = None
    storage: str | None = None
    storage_in_run_dir: bool = False
    run_id: str | None = None

    def same_run(self, other: "Owner") -> bool:
        """Same study, method, seed and storage (the run id may differ)."""
        if (self.kind, self.study, self.method, self.seed) != (other.kind, other.study, other.method, other.seed):
            return False
        if self.storage_in_run_dir or other.storage_in_run_dir:  # its own study.db moves with the directory
            return self.storage_in_run_dir == other.storage_in_run_dir
        return self.storage == other.storage

    def describe(self) -> str:
        parts = [f"study {self.study!r}"]
        if self.method is not None:
            parts.append(f"method {self.method}")
        if self.seed is not None:
            parts.append(f"seed {self.seed}")
        if self.storage_in_run_dir:
            parts.append("storage: its own study.db")
        elif self.storage:
            parts.append(f"storage {self.storage}")
        return ", ".join(parts)


def _owner_for(kind: str, study: str, method: str | None, seed: int | None, storage: str | None,
               run_dir: Path, run_id: str | None = None) -> Owner:
    norm, inside = _norm_storage(storage, run_dir)
    return Owner(kind, study, method, None if seed is None else int(seed), None if inside else norm, inside, run_id)


def _read_json(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def read_owner(run_dir: Path) -> Owner | None:
    """The owner of ``run_dir`` from its ``run.json`` (or, for a run written before run ids,
    from ``result.json``); None when neither is there or readable."""
    run_dir = Path(run_dir)
    doc = _read_json(run_dir / MARKER)
    if doc is not None and doc.get("format") == FORMAT:
        return Owner(doc.get("kind", "search"), doc.get("study"), doc.get("method"), doc.get("seed"),
                     doc.get("storage"), bool(doc.get("storage_in_run_dir")), doc.get("run_id"))
    res = _read_json(run_dir / "result.json")
    if res is not None and "study" in res:
        url = (res.get("storage") or {}).get("url") if isinstance(res.get("storage"), dict) else None
        kind = "ltr" if str(res.get("formula", "")).startswith("ltr-") else "search"
        return _owner_for(kind, res.get("study"), res.get("method"), res.get("seed"), url, run_dir,
                          res.get("run_id"))
    return None


def check_location(out: Path) -> None:
    """Refuse, with one line, an output directory that cannot be created or written.

    Checked before any work starts: a component of the path that is a regular file, an
    existing ``out`` that is not a directory, or a (nearest existing) folder where nothing can
    be created.  The only write is a probe directory, removed at once.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise _Error(f"{out}: exists and is not a directory")
    anc = out if out.exists() else out.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise _Error(f"{out}: cannot create it, {anc} is a file, not a directory")
    probe_in = anc
    try:
        probe = tempfile.mkdtemp(prefix=".fusiontune-probe-", dir=probe_in)
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise _Error(f"{out}: cannot write in {probe_in} ({why})") from None
    os.rmdir(probe)
    if out.exists():  # a fresh run also renames out; that needs write access to its parent
        parent = out.resolve().parent
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".fusiontune-probe-", dir=parent))
        except OSError as exc:
            raise _Error(f"{out}: cannot replace it, {parent} is not writable ({exc.strerror})") from None


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False when unsupported."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange) == 0


@dataclass
class Claim:
    """A run directory that now belongs to this run."""

    path: Path
    run_id: str
    owner: Owner
    replaced: str | None = None  # run id (or "unknown") of the run it replaced, if any

    def write_result(self, result: dict, trials, study=None) -> None:
        """result.json (with this run id), trials.csv and study.json (the resolved ``study``,
        when given), written atomically, result last."""
        from .results import write_run

        result["run_id"] = self.run_id
        write_run(self.path, result, trials, study=study)


@dataclass
class Plan:
    """What :meth:`claim` will do; made by :func:`plan`, which did every check already."""

    out: Path
    owner: Owner
    mode: str  # "fresh" | "continue"
    marker: dict = field(default_factory=dict)
    existing: Owner | None = None

    def claim(self, build=None) -> Claim:
        """Make ``out`` this run's directory.  ``build(path)``, if given, writes the finished
        files into the new directory before the swap (a run whose output is ready at once,
        like a comparison); a search claims first and fills the directory as it goes."""
        from .results import atomic_write_text  # the one atomic writer

        run_id = self.owner.run_id
        text = json.dumps(self.marker, indent=2) + "\n"
        out = self.out
        if self.mode == "continue" and out.is_dir():
            atomic_write_text(out / MARKER, text)
            if build is not None:
                build(out)
            return Claim(out, run_id, self.owner)
        out.parent.mkdir(parents=True, exist_ok=True)
        for stale in out.parent.glob(f".{out.name}.*.old"):  # left by a crash mid-swap
            shutil.rmtree(stale, ignore_errors=True)
        new = out.parent / f".{out.name}.{run_id}.new"
        old = out.parent / f".{out.name}.{run_id}.old"
        new.mkdir()
        replaced = None
        try:
            atomic_write_text(new / MARKER, text)
            if build is not None:
                build(new)
            if out.exists():
                replaced = (self.existing.run_id if self.existing else None) or "unknown"
                if _exchange(new, out):  # out is the new tree now; `new` holds the old one
                    new.rename(old)
                else:
                    os.rename(out, old)
                    os.rename(new, out)
            else:
                os.rename(new, out)
        except BaseException:
            if old.exists() and not out.exists():  # interrupted between the two renames
                os.rename(old, out)
            shutil.rmtree(new, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return Claim(out, run_id, self.owner, replaced)


def plan(out: Path, *, kind: str, study: str, method: str | None = None, seed: int | None = None,
         storage: str | None = None, mode: str = "fresh") -> Plan:
    """Check ``out`` for a run with this identity and say what claiming it will do.

    ``mode``: ``"fresh"`` (a new run: an existing directory of the same run is replaced as a
    whole), ``"resume"`` or ``"join"`` (continue in place; the directory may not exist yet).
    Raises a one-line error when ``out`` cannot be used; writes nothing (but a probe).
    """
    if mode not in ("fresh", "resume", "join"):
        raise ValueError(f"mode must be fresh, resume or join, got {mode!r}")
    out = Path(out)
    check_location(out)
    run_id = new_run_id()
    owner = _owner_for(kind, study, method, seed, storage, out, run_id)
    existing = None
    if out.is_dir() and any(out.iterdir()):
        existing = read_owner(out)
        if existing is None:
            raise _Error(f"{out}: exists and is not a fusiontune run directory (no {MARKER}); nothing in it "
                         f"is replaced: choose a new output directory")
        if not existing.same_run(owner):
            raise _Error(f"{out}: holds another run ({existing.describe()}), not this one "
                         f"({owner.describe()}); choose another output directory, or delete {out} to reuse it")
    marker = {"format": FORMAT, "version": 1, "run_id": run_id, "kind": kind, "study": study,
              "method": method, "seed": None if seed is None else int(seed),
              "storage": storage_label(storage),
              "storage_in_run_dir": owner.storage_in_run_dir,
              "started": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "mode": mode}
    return Plan(out, owner, "fresh" if mode == "fresh" else "continue", marker, existing)


def run_id_of(run_dir: Path) -> str | None:
    """The run id in ``run_dir/result.json`` (None for a run written before run ids)."""
    res = _read_json(Path(run_dir) / "result.json")
    return None if res is None else res.get("run_id")


def stamp(doc: dict, run_dir: Path) -> dict:
    """Record in a derived document (arms, report, export) the run id it was made from."""
    doc["run_id"] = run_id_of(run_dir)
    return doc


def check_derived(path: Path, doc: dict, run_dir: Path, what: str, redo: str) -> None:
    """Refuse ``doc`` (read from ``path``) when it was derived from another run than the one
    ``run_dir`` holds now.  ``what`` names the document ("arms"), ``redo`` how to rebuild it."""
    current = run_id_of(run_dir)
    made_from = doc.get("run_id")
    if current is None and made_from is None:
        return  # both from before run ids: nothing to compare
    if made_from != current:
        src = f"run {made_from}" if made_from else "an older run (it records no run id)"
        raise _Error(f"{path}: {what} made from {src}, but {run_dir} now holds run {current}; {redo}", param="run")
