"""Trial storage and resume: every run is an Optuna study in an Optuna storage.

Layout.  One Optuna study per run, named ``<study>-<method>-<seed>``, in any Optuna RDB
storage URL (default ``sqlite:///<run dir>/study.db``), so ``optuna-dashboard
sqlite:///runs/demo-cem-0/study.db`` shows it.  Each evaluated candidate is a COMPLETE
trial whose params are the free fusion parameters in their real units (bounds as
``FloatDistribution``), whose value is the objective ``J`` for feasible candidates and
the penalised value (what the methods maximise) for infeasible ones, and whose user
attributes hold the per-task metrics (``gauc_click``...), ``objective``, ``feasible``,
``generation`` and ``slot`` (position in its generation).  The run's settings (method,
seed, population, options, budget, early stopping, formula, space, tasks, split, log)
are user attributes of the Optuna study; a resume with different settings is refused.

Writes.  A generation is written in ONE transaction once it is scored, so a kill leaves
whole generations only, and a generation costs one commit instead of one per trial.

Resume.  Methods that Optuna lacks (cem, cma, neighborhood, random, grid) resume by
*deterministic replay*: the searcher is re-created with the same seed and asked again
generation by generation; each point it proposes must match the stored one (else the run
cannot be continued and we say so), the stored metrics are handed back instead of being
recomputed, and only what is missing is evaluated.  Replay costs no kernel time, keeps
early stopping and restarts exactly as in an uninterrupted run, and makes the resumed
run's trials and best identical to a straight run's.  Optuna's own samplers (tpe, gp)
resume the Optuna way: the stored trials are loaded into the sampler's study as history
and sampling continues from there (no trial lost or repeated; not bit-identical to an
uninterrupted run, since the sampler's random state differs).

Opening.  :func:`open_storage` opens (and on first use creates) the storage's tables under
a lock: a PostgreSQL advisory lock, or an ``flock`` on the SQLite file, so any number of
fresh processes may open one new database at once.  A study name that exists already is
never deleted: a new run on it is refused (:class:`StudyExistsError`); ``resume`` continues
it, and :mod:`fusiontune.search.coordination` lets several workers share it.

Fast path.  A generation's trials are written with batched INSERTs in one transaction
through Optuna's RDB models (Optuna's public ``add_trials`` commits each trial and each
attribute on its own, ~10 ms a trial).  Those models are not public API, so the fast path
is used only on the Optuna major versions it was tested with (:data:`FAST_PATH_MAJORS`,
checked by ``tests/test_workers.py``); on any other version the public ``add_trials`` is
used.
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DependencyError, InputError, RunError
from ..objective import Evaluation, Objective

__all__ = ["TrialStore", "StoredEvaluator", "default_storage_url", "run_config", "open_storage",
           "StudyExistsError", "fast_path_supported"]

FORMAT = 1

#: Optuna major versions whose RDB models the fast write path was tested with
FAST_PATH_MAJORS = (4, 5)


def fast_path_supported(version: str | None = None) -> bool:
    """Whether the batched write through Optuna's (non-public) RDB models may be used."""
    if version is None:
        import optuna

        version = optuna.__version__
    try:
        major = int(str(version).split(".")[0])
    except ValueError:
        return False
    return major in FAST_PATH_MAJORS


class StudyExistsError(RunError):
    """A new run was asked for under a study name the storage already holds."""

    def __init__(self, name: str, url: str):
        self.name, self.url = name, url
        super().__init__(f"storage {url} already holds the study {name!r}; continue it (resume) or "
                         f"share it with other workers (join); nothing was deleted", param="storage")


def _driver_check(url: str) -> None:
    """One line naming the install, when the URL's database driver is missing."""
    import importlib.util

    scheme = url.split(":", 1)[0].lower()
    backend, _, driver = scheme.partition("+")
    if backend in ("postgresql", "postgres"):
        module = {"": "psycopg", "psycopg": "psycopg", "psycopg2": "psycopg2",
                  "pg8000": "pg8000", "asyncpg": "asyncpg"}.get(driver, driver)
        if importlib.util.find_spec(module) is None:
            raise DependencyError(f"storage {url}: PostgreSQL needs the {module} driver: "
                                  f"pip install 'fusiontune[postgres]' (psycopg 3)", param="storage")
    elif backend == "mysql":
        module = {"": "MySQLdb", "pymysql": "pymysql", "mysqldb": "MySQLdb"}.get(driver, driver)
        if importlib.util.find_spec(module) is None:
            raise DependencyError(f"storage {url}: MySQL needs the {module} driver "
                                  f"(pip install {driver or 'mysqlclient'})", param="storage")


def sqlite_path(url: str) -> Path | None:
    if url.startswith("sqlite:///"):
        rest = url[len("sqlite:///"):].split("?", 1)[0]
        return Path(rest) if rest and rest != ":memory:" else None
    return None


@contextmanager
def storage_lock(url: str, engine=None):
    """Serialise schema and study creation across processes and machines sharing ``url``:
    a PostgreSQL session advisory lock, an ``flock`` on the SQLite file (SQLite itself
    locks with POSIX record locks, which do not interact with ``flock``), else nothing."""
    path = sqlite_path(url)
    if path is not None:
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+b") as fh:  # an empty file is a valid new SQLite database
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return
    if url.split(":", 1)[0].split("+")[0] in ("postgresql", "postgres"):
        import sqlalchemy as sa

        own = engine is None
        eng = sa.create_engine(url, poolclass=sa.pool.NullPool) if own else engine
        try:
            with eng.connect() as conn:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK_KEY})
                try:
                    yield
                finally:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
        finally:
            if own:
                eng.dispose()
        return
    yield


_LOCK_KEY = 0x66757369  # "fusi": the advisory-lock id fusiontune's storage creation uses


def engine_kwargs(url: str) -> dict:
    if sqlite_path(url) is not None:  # several writers: wait for the lock rather than fail at 5 s
        return {"connect_args": {"timeout": 120}}
    return {"pool_pre_ping": True}


def open_storage(url: str):
    """An Optuna RDBStorage for ``url``, its tables created race-free (see :func:`storage_lock`)."""
    import optuna

    _driver_check(url)
    try:
        with storage_lock(url):
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url))
    except InputError:
        raise
    except Exception as exc:  # bad URL, unreachable server
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise InputError(f"storage {url}: cannot open it as an Optuna storage "
                         f"({type(exc).__name__}: {first[:200]})", param="storage") from None


def default_storage_url(run_dir: Path) -> str:
    return f"sqlite:///{Path(run_dir).resolve() / 'study.db'}"


def run_config(prep, method: str, seed: int, population: int, options: dict, budget: int,
               patience: int, min_delta: float) -> dict:
    """The settings a stored run must share with its resume (budget and log path excepted)."""
    st = prep.study
    return {
        "format": FORMAT, "method": method, "seed": int(seed), "population": int(population),
        "options": {k: options[k] for k in sorted(options)}, "patience": int(patience),
        "min_delta": float(min_delta), "formula": prep.formula.name, "free": list(prep.space.free),
        "low": [float(v) for v in prep.space.low], "high": [float(v) for v in prep.space.high],
        "baseline": [float(v) for v in prep.space.baseline], "pinned": dict(prep.space.pinned),
        "tasks": [[t.name, t.metric, t.weight, t.max_drop, t.score, t.label] for t in st.tasks],
        "split": st.split, "gauc_weighting": st.gauc_weighting, "rows": int(prep.search_log.n),
        "budget": int(budget), "log": str(Path(st.log).resolve()),
    }


_NOT_COMPARED = {"budget", "log"}


@dataclass
class Stored:
    """Stored trials of one generation, by slot."""

    unit: dict[int, np.ndarray]
    per_task: dict[int, np.ndarray]


class TrialStore:
    """One run's Optuna study: created fresh, or reopened for ``--resume``."""

    def __init__(self, url: str, name: str, prep, config: dict, resume: bool = False):
        import optuna
        from optuna.distributions import FloatDistribution

        self.url, self.name, self.prep = url, name, prep
        self.metric_cols = [f"{t.metric}_{t.name}" for t in prep.study.tasks]
        self.dists = {k: FloatDistribution(float(lo), float(hi))
                      for k, lo, hi in zip(prep.space.free, prep.space.low, prep.space.high)}
        self.storage = open_storage(url)
        names = [s.study_name for s in optuna.get_all_study_summaries(self.storage, include_best_trial=False)]
        if resume:
            if name not in names:
                raise RunError(f"resume: no stored run {name!r} in {url} (nothing to resume; "
                               f"start it without resume)", param="resume")
            self.study = optuna.load_study(study_name=name, storage=self.storage)
            stored = self.study.user_attrs.get("fusiontune")
            if not stored:
                raise RunError(f"resume: {name!r} in {url} was not written by fusiontune search", param="resume")
            for key, value in config.items():
                if key in _NOT_COMPARED:
                    continue
                if json.dumps(stored.get(key), sort_keys=True) != json.dumps(value, sort_keys=True, default=str):
                    raise RunError(f"resume: the stored run {name!r} was made with {key} = "
                                     f"{json.dumps(stored.get(key), default=str)}, now {json.dumps(value, default=str)}; "
                                     f"resume with the same settings or start a new run", param="resume")
            self.config = stored
        else:
            if name in names:  # never delete a stored run
                raise StudyExistsError(name, url)
            with storage_lock(url):  # another process may be creating the same name right now
                try:
                    self.study = optuna.create_study(study_name=name, storage=self.storage, direction="maximize")
                except optuna.exceptions.DuplicatedStudyError:
                    raise StudyExistsError(name, url) from None
                self.study.set_user_attr("fusiontune", json.loads(json.dumps(config, default=str)))
            self.config = config
        self._fast = fast_path_supported() and hasattr(self.storage, "scoped_session")

    # -- reading -------------------------------------------------------------------------
    def load(self) -> dict[int, Stored]:
        """Stored trials grouped by generation."""
        from optuna.trial import TrialState

        out: dict[int, Stored] = {}
        space = self.prep.space
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            ua = t.user_attrs
            if "generation" not in ua:
                continue
            g = out.setdefault(int(ua["generation"]), Stored({}, {}))
            free = np.array([t.params[k] for k in space.free], dtype=np.float64)
            slot = int(ua["slot"])
            g.unit[slot] = space.to_unit(free)
            g.per_task[slot] = np.array([ua[c] for c in self.metric_cols], dtype=np.float64)
        return out

    # -- writing -------------------------------------------------------------------------
    def write(self, gen: int, slots: np.ndarray, x: np.ndarray, theta: np.ndarray, ev: Evaluation) -> None:
        """Write the scored candidates ``slots`` of generation ``gen`` in one transaction."""
        trials = [trial_template(self.prep.space, self.dists, self.metric_cols, {"generation": int(gen), "slot": int(s)},
                                 theta[j], ev.objective[j], ev.per_task[j], ev.feasible[j], ev.penalised[j])
                  for j, s in enumerate(slots)]
        if not trials:
            return
        if self._fast:
            from optuna.storages._rdb.storage import _create_scoped_session

            with _create_scoped_session(self.storage.scoped_session) as session:
                insert_trials(session, self.study._study_id, trials)
        else:  # other storages: one trial at a time (slot numbers keep a partial generation unambiguous)
            self.study.add_trials(trials)

    def finish(self, result: dict) -> None:
        self.study.set_user_attr("fusiontune_result", {"stop_reason": result.get("stop_reason"),
                                                       "evaluations": result.get("evaluations"),
                                                       "best_trial": result.get("best_trial")})


def trial_template(space, dists: dict, metric_cols: list[str], attrs: dict, theta: np.ndarray, objective: float,
                   per_task: np.ndarray, feasible: bool, penalised: float, constraint: float | None = None):
    """The Optuna trial of one scored candidate.  Its value is ``J`` for a feasible
    candidate and the penalised value otherwise; with ``constraint`` (Optuna's samplers on a
    shared study) it is ``J`` and the guardrail violation is an Optuna constraint."""
    from optuna.trial import create_trial

    idx = [space.all_names.index(k) for k in space.free]
    ua = dict(attrs)
    ua.update({"objective": float(objective), "feasible": bool(feasible)})
    ua.update({c: float(v) for c, v in zip(metric_cols, per_task)})
    value = float(objective) if (feasible or constraint is not None) else float(penalised)
    if not math.isfinite(value):
        value = -1e300
    return create_trial(params={k: float(theta[i]) for k, i in zip(space.free, idx)}, distributions=dists,
                        value=value, user_attrs=ua,
                        constraints=None if constraint is None else {"guardrails": float(constraint)})


def insert_trials(session, study_id: int, trials: list) -> list[int]:
    """The fast path: COMPLETE ``trials`` (from :func:`trial_template`) with batched INSERTs
    in the caller's transaction; returns their trial numbers.  Uses Optuna's RDB models,
    which are not public API: call it only when :func:`fast_path_supported`."""
    from datetime import datetime

    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models
    from optuna.trial import TrialState

    models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)  # serialises writers
    n0 = session.query(models.TrialModel).filter(models.TrialModel.study_id == study_id).count()
    now = datetime.now()
    rows = [models.TrialModel(study_id=study_id, number=n0 + i, state=TrialState.COMPLETE,
                              datetime_start=now, datetime_complete=now) for i in range(len(trials))]
    session.add_all(rows)
    session.flush()  # assigns trial ids
    children, dist_json = [], {}
    for row, tr in zip(rows, trials):
        v, vt = models.TrialValueModel.value_to_stored_repr(tr.value)
        children.append(models.TrialValueModel(trial_id=row.trial_id, objective=0, value=v, value_type=vt))
        for k, val in tr.params.items():
            d = tr.distributions[k]
            if k not in dist_json:
                dist_json[k] = distribution_to_json(d)
            children.append(models.TrialParamModel(trial_id=row.trial_id, param_name=k,
                                                   param_value=d.to_internal_repr(val),
                                                   distribution_json=dist_json[k]))
        for k, val in tr.user_attrs.items():
            children.append(models.TrialUserAttributeModel(trial_id=row.trial_id, key=k, value_json=json.dumps(val)))
        for k, val in tr.system_attrs.items():
            children.append(models.TrialSystemAttributeModel(trial_id=row.trial_id, key=k,
                                                             value_json=json.dumps(val)))
    session.add_all(children)
    session.flush()
    return [n0 + i for i in range(len(trials))]


class StoredEvaluator:
    """The runner's ``evaluate`` hook: stored evaluations first, the kernel for the rest,
    each newly scored generation written to the store."""

    def __init__(self, objective: Objective, store: TrialStore | None, stored: dict[int, Stored] | None = None,
                 check: bool = True):
        self.objective, self.store = objective, store
        self.stored = stored or {}
        self.check = check
        self.replayed = 0
        self.evaluated = 0

    def __call__(self, gen: int, x: np.ndarray, theta: np.ndarray) -> Evaluation:
        n = len(x)
        got = self.stored.pop(gen, None)
        per_task = np.empty((n, len(self.objective.tasks)))
        have = np.zeros(n, dtype=bool)
        if got is not None:
            for s, u in got.unit.items():
                if s >= n:
                    continue
                if self.check and not np.allclose(u, x[s], rtol=0, atol=1e-9):
                    raise RunError(f"resume: generation {gen} does not replay (candidate {s} was "
                                     f"{np.round(u, 6).tolist()}, now {np.round(x[s], 6).tolist()}); "
                                     f"the stored run was made with another version of the method; "
                                     f"start a new run", param="resume")
                per_task[s] = got.per_task[s]
                have[s] = True
        missing = np.flatnonzero(~have)
        if missing.size:
            per_task[missing] = self.objective.metrics(theta[missing])
        ev = self.objective.judge(per_task)  # same call shape as an uninterrupted run
        self.replayed += int(have.sum())
        self.evaluated += int(missing.size)
        if self.store is not None and missing.size:
            sub = Evaluation(ev.objective[missing], ev.per_task[missing], ev.feasible[missing], ev.penalised[missing])
            self.store.write(gen, missing, x[missing], theta[missing], sub)
        return ev

    @property
    def pending(self) -> int:
        """Stored trials not reached by the replay (left over when settings changed)."""
        return sum(len(g.unit) for g in self.stored.values())


def stored_config(url: str, name: str) -> dict | None:
    """The settings stored with run ``name`` in ``url`` (None when there is no such run)."""
    import optuna

    path = sqlite_path(url)
    if path is not None and (not path.exists() or path.stat().st_size == 0):
        return None
    storage = open_storage(url)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None
    finally:
        storage.engine.dispose()
    return study.user_attrs.get("fusiontune")
