"""Many workers on one study: any number of processes, on any number of machines, share one
run through its Optuna storage (SQLite on one machine, PostgreSQL anywhere).

A shared run is an Optuna study like a single-process run (:mod:`fusiontune.search.storage`:
same name, same trial attributes, so ``optuna-dashboard`` shows it), created with
``"shared": true`` in its settings.  Coordination lives in one extra table of the same
database, ``fusiontune_candidates``, keyed by (study, generation, slot):

Population methods (cem, cma, neighborhood, random, grid).  Every worker runs the same
seeded searcher.  Generation g is a pure function of the seed and the results of
generations < g, so every worker can compute it; the first to get there INSERTs all of its
candidates in one transaction, and the table's primary key makes every other insert fail,
so exactly one worker writes them (the others check that the stored candidates are the ones
they computed).  Workers then *claim* waiting candidates a chunk at a time with conditional
UPDATEs (``... WHERE state = waiting``: a claim succeeds for exactly one worker), score the
chunk in one kernel call, and write the Optuna trials and mark the candidates done in ONE
transaction, again conditional on still owning them.  When the last candidate of g is done,
every worker reads the generation's results, tells its searcher, and moves on to g + 1.
Because every worker tells its searcher exactly what one process would have, the stored
trials (and the best) are those of a single-process run with the same seed, whatever the
number of workers, and a run killed with no worker left is continued by ``join`` or
``resume`` the same way.

Optuna methods (tpe, gp).  Optuna's own multi-worker path: each worker's sampler works on
the shared study itself (``study.ask`` / ``study.tell``), so it sees the other workers'
finished and running trials.  The budget is kept exact by *tickets*: rows (generation 0,
slot k) for k < budget, claimed like candidates; ticket 0 is the online baseline.  Each
worker seeds its sampler differently (identical seeds would propose identical points), so a
shared tpe/gp run is not reproducible; its stored trials still equal the budget.

Heartbeat.  A claim records its worker and a heartbeat in database time (so clocks of
different machines do not matter); a thread renews the heartbeat of the worker's running
claims every ``heartbeat_timeout / 5`` seconds.  A claim whose heartbeat is older than
``heartbeat_timeout`` belongs to a dead worker and may be claimed by any other.  A worker
wrongly presumed dead (stalled for longer than the timeout) loses its claim: its conditional
write then matches nothing and is dropped, so a candidate is still stored once.  The timeout
must exceed the time one worker takes to score one claimed chunk.

Trials are written through the fast path of :mod:`~fusiontune.search.storage` (one
transaction with the candidates' state) on the Optuna versions it is tested with; on other
versions the candidates are marked done first and the trials written through Optuna's public
``add_trials`` right after.
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..objective import Evaluation
from ..progress import progress
from .run import Patience, SearchRun
from .storage import (_NOT_COMPARED, StudyExistsError, engine_kwargs, fast_path_supported, insert_trials,
                      open_storage, storage_lock, trial_template)

__all__ = ["SharedStudy", "search_shared", "DEFAULT_HEARTBEAT_TIMEOUT", "CANDIDATES"]

WAITING, RUNNING, DONE = 0, 1, 2

#: seconds without a heartbeat after which a worker's claims go to the others
DEFAULT_HEARTBEAT_TIMEOUT = 30.0

_tables = None


def _schema():
    global _tables
    if _tables is None:
        import sqlalchemy as sa

        md = sa.MetaData()
        cand = sa.Table(
            "fusiontune_candidates", md,
            sa.Column("study_id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("generation", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("slot", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("x", sa.Text, nullable=True),  # unit-cube point, JSON (exact float repr)
            sa.Column("state", sa.SmallInteger, nullable=False),
            sa.Column("worker", sa.String(100), nullable=True),
            sa.Column("heartbeat", sa.Float, nullable=True),  # database time, seconds
            sa.Column("trial_number", sa.Integer, nullable=True),
            sa.Column("result", sa.Text, nullable=True),  # per-task metrics, JSON
        )
        _tables = (md, cand)
    return _tables


def __getattr__(name):  # CANDIDATES without importing SQLAlchemy at module import
    if name == "CANDIDATES":
        return _schema()[1]
    raise AttributeError(name)


def _worker_id() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class _Heartbeat:
    """Renews the heartbeat of this worker's running claims until stopped."""

    def __init__(self, shared: "SharedStudy"):
        self.shared = shared
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="fusiontune-heartbeat", daemon=True)

    def _run(self):
        s = self.shared
        while not self.stop.wait(s.heartbeat_interval):
            try:
                with s.engine.begin() as c:
                    c.execute(s.cand.update()
                              .where(s.cand.c.study_id == s.study_id, s.cand.c.state == RUNNING,
                                     s.cand.c.worker == s.worker)
                              .values(heartbeat=s.now()))
            except Exception:  # a busy database: try again next beat
                pass

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=10)
        if exc[0] is not None:  # interrupted: hand the claims back now rather than at the timeout
            self.shared.release()


@dataclass
class WorkerStats:
    evaluated: int = 0  # scored by this worker
    by_others: int = 0  # stored by other workers (or earlier runs)


class SharedStudy:
    """One shared run: opens (or creates, race-free) the study and its coordination table."""

    def __init__(self, url: str, name: str, prep, config: dict, heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT):
        import optuna
        import sqlalchemy as sa
        from optuna.distributions import FloatDistribution

        if not (heartbeat_timeout > 0 and math.isfinite(heartbeat_timeout)):
            raise InputError(f"heartbeat timeout must be a positive number of seconds, got {heartbeat_timeout!r}")
        self.url, self.name, self.prep = url, name, prep
        self.heartbeat_timeout = float(heartbeat_timeout)
        self.heartbeat_interval = self.heartbeat_timeout / 5
        self.worker = _worker_id()
        self.metric_cols = [f"{t.metric}_{t.name}" for t in prep.study.tasks]
        self.dists = {k: FloatDistribution(float(lo), float(hi))
                      for k, lo, hi in zip(prep.space.free, prep.space.low, prep.space.high)}
        self.storage = open_storage(url)
        self.engine = sa.create_engine(url, **engine_kwargs(url))
        md, self.cand = _schema()
        config = json.loads(json.dumps({**config, "shared": True}, default=str))
        with storage_lock(url, self.engine):
            md.create_all(self.engine)  # checkfirst; under the lock, so never two creators
            names = {s.study_name for s in optuna.get_all_study_summaries(self.storage, include_best_trial=False)}
            self.created = name not in names
            if self.created:
                study = optuna.create_study(study_name=name, storage=self.storage, direction="maximize")
                study.set_user_attr("fusiontune", config)
                sid = self.storage.get_study_id_from_name(name)
                with self.engine.begin() as c:  # rows of a deleted study that had the same id
                    c.execute(self.cand.delete().where(self.cand.c.study_id == sid))
        self.study = optuna.load_study(study_name=name, storage=self.storage)
        self.study_id = self.storage.get_study_id_from_name(name)
        stored = self.study.user_attrs.get("fusiontune")
        if not stored:
            raise InputError(f"storage {url}: study {name!r} was not written by fusiontune search; it cannot be joined")
        if not stored.get("shared"):
            raise InputError(f"storage {url}: study {name!r} is a single-process run; it cannot be shared "
                             f"(continue it with resume, or join under another name)")
        for key, value in config.items():
            if key in _NOT_COMPARED - {"budget"}:
                continue
            if json.dumps(stored.get(key), sort_keys=True) != json.dumps(value, sort_keys=True):
                raise InputError(f"storage {url}: the shared run {name!r} was made with {key} = "
                                 f"{json.dumps(stored.get(key))}, this worker has {json.dumps(value)}; "
                                 f"join with the same settings")
        self.config = stored
        self._fast = fast_path_supported() and hasattr(self.storage, "scoped_session")
        self.stats = WorkerStats()
        self._seen = 3  # workers that scored the last generation (first generation: quarters)

    def release(self) -> None:
        """Give this worker's running claims back to the others (an interrupted worker)."""
        try:
            with self.engine.begin() as c:
                c.execute(self.cand.update()
                          .where(self.cand.c.study_id == self.study_id, self.cand.c.state == RUNNING,
                                 self.cand.c.worker == self.worker)
                          .values(state=WAITING))
        except Exception:  # the database is gone too: the heartbeat timeout still frees them
            pass

    # -- database time -------------------------------------------------------------------
    def now(self):
        import sqlalchemy as sa

        dialect = self.engine.dialect.name
        if dialect == "sqlite":
            return sa.literal_column("((julianday('now') - 2440587.5) * 86400.0)")
        if dialect == "postgresql":
            return sa.literal_column("CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)")
        return sa.literal(time.time())

    def _claimable(self, gen: int):
        import sqlalchemy as sa

        c = self.cand.c
        return sa.and_(c.study_id == self.study_id, c.generation == gen,
                       sa.or_(c.state == WAITING,
                              sa.and_(c.state == RUNNING, c.heartbeat < self.now() - self.heartbeat_timeout)))

    # -- candidates ----------------------------------------------------------------------
    def publish(self, gen: int, x: np.ndarray) -> bool:
        """Write generation ``gen``'s candidates unless another worker did; True if we did."""
        import sqlalchemy as sa

        rows = [{"study_id": self.study_id, "generation": gen, "slot": s, "x": json.dumps(x[s].tolist()),
                 "state": WAITING} for s in range(len(x))]
        try:
            with self.engine.begin() as c:
                c.execute(self.cand.insert(), rows)
            return True
        except sa.exc.IntegrityError:
            pass
        with self.engine.connect() as c:
            got = c.execute(sa.select(self.cand.c.slot, self.cand.c.x)
                            .where(self.cand.c.study_id == self.study_id, self.cand.c.generation == gen)
                            .order_by(self.cand.c.slot)).all()
        stored = np.array([json.loads(r.x) for r in got], dtype=np.float64)
        if stored.shape != x.shape or not np.allclose(stored, x, rtol=0, atol=1e-9):
            raise InputError(f"storage {self.url}: generation {gen} of the shared run {self.name!r} holds other "
                             f"candidates than this worker computes; every worker must run the same "
                             f"fusiontune version with the same settings")
        return False

    def claim(self, gen: int, k: int) -> list[int]:
        """Atomically claim up to ``k`` waiting (or abandoned) candidates of ``gen``."""
        import sqlalchemy as sa

        c = self.cand.c
        with self.engine.begin() as conn:
            slots = conn.execute(sa.select(c.slot).where(self._claimable(gen)).order_by(c.slot).limit(k)).scalars().all()
            got = []
            for s in slots:
                r = conn.execute(self.cand.update().where(self._claimable(gen), c.slot == s)
                                 .values(state=RUNNING, worker=self.worker, heartbeat=self.now()))
                if r.rowcount == 1:
                    got.append(int(s))
        return got

    def complete(self, gen: int, slots: list[int], x: np.ndarray, theta: np.ndarray, ev: Evaluation,
                 extra_attrs: list[dict] | None = None) -> list[int]:
        """Store the scored candidates ``slots`` (rows of x/theta/ev) as Optuna trials and mark
        them done, for those this worker still owns; returns the slots written."""
        from sqlalchemy.orm import Session

        c = self.cand.c
        mine, trials = [], []
        with self.engine.begin() as conn:
            for j, s in enumerate(slots):
                r = conn.execute(self.cand.update()
                                 .where(c.study_id == self.study_id, c.generation == gen, c.slot == s,
                                        c.state == RUNNING, c.worker == self.worker)
                                 .values(state=DONE, heartbeat=self.now(),
                                         x=json.dumps(x[j].tolist()), result=json.dumps(ev.per_task[j].tolist())))
                if r.rowcount == 1:
                    mine.append(j)
            if not mine:
                return []
            trials = [trial_template(self.prep.space, self.dists, self.metric_cols,
                                     (extra_attrs[j] if extra_attrs else {"generation": gen, "slot": slots[j]}),
                                     theta[j], ev.objective[j], ev.per_task[j], ev.feasible[j], ev.penalised[j])
                      for j in mine]
            if self._fast:
                with Session(bind=conn, join_transaction_mode="rollback_only") as session:
                    numbers = insert_trials(session, self.study_id, trials)
                for j, n in zip(mine, numbers):
                    conn.execute(self.cand.update().where(c.study_id == self.study_id, c.generation == gen,
                                                          c.slot == slots[j]).values(trial_number=n))
        if not self._fast:
            self.study.add_trials(trials)
        return [slots[j] for j in mine]

    def generation_rows(self, gen: int):
        import sqlalchemy as sa

        c = self.cand.c
        with self.engine.connect() as conn:
            return conn.execute(sa.select(c.slot, c.state, c.x, c.result, c.worker, c.trial_number)
                                .where(c.study_id == self.study_id, c.generation == gen).order_by(c.slot)).all()

    # -- population methods --------------------------------------------------------------
    def run_population(self, searcher, budget: int, patience: int = 0, min_delta: float = 1e-6,
                       show_progress: bool | None = None, chunk: int | None = None,
                       poll: float = 0.01) -> SearchRun:
        prep = self.prep
        space, obj = prep.space, prep.objective
        run = SearchRun()
        t0 = time.perf_counter()
        done, gen, watch = 0, 0, Patience(patience, min_delta)
        with _Heartbeat(self), progress(budget, f"search {searcher.name} (shared)", show_progress) as bar:
            while done < budget:
                x = np.atleast_2d(searcher.ask())[: budget - done]
                theta = space.full(x)
                gen += 1
                self.publish(gen, x)
                # claim size: a share of the generation for each worker seen scoring the last one,
                # plus one share for a worker that may join (each claim and each write is a commit)
                k = chunk or max(1, math.ceil(len(x) / (self._seen + 1)))
                per_task = self._score_generation(gen, x, theta, k, poll)
                ev = obj.judge(per_task)  # the whole generation, as one process judges it
                searcher.tell_evaluation(x, ev)
                run.unit.append(x)
                run.theta.append(theta)
                run.evals.append(ev)
                run.generation.append(np.full(len(x), gen))
                done += len(x)
                best = watch.update(float(ev.penalised.max()))
                bar.update(advance=len(x), info=f"best {best:.5f}")
                reason = watch.stop_reason(searcher)
                if reason:
                    run.stop_reason = reason
                    break
        run.seconds = time.perf_counter() - t0
        return run

    def _score_generation(self, gen: int, x: np.ndarray, theta: np.ndarray, k: int, poll: float) -> np.ndarray:
        obj = self.prep.objective
        wait = poll
        while True:
            slots = self.claim(gen, k)
            if slots:
                idx = np.array(slots)
                pt = obj.metrics(theta[idx])
                written = self.complete(gen, slots, x[idx], theta[idx], obj.judge(pt))
                self.stats.evaluated += len(written)
                wait = poll
                continue
            rows = self.generation_rows(gen)
            if len(rows) == len(x) and all(r.state == DONE for r in rows):
                self.stats.by_others += sum(r.worker != self.worker for r in rows)
                self._seen = max(1, len({r.worker for r in rows}))
                return np.array([json.loads(r.result) for r in rows], dtype=np.float64)
            time.sleep(wait)  # others are scoring the rest
            wait = min(wait * 1.5, 0.2)

    # -- Optuna methods: tickets -----------------------------------------------------------
    def take_tickets(self, k: int, budget: int) -> list[tuple[int, int | None]]:
        """Up to ``k`` tickets (budget slots): abandoned ones first, then new ones.
        Returns (ticket, trial number the dead owner had asked, or None)."""
        import sqlalchemy as sa

        c = self.cand.c
        got: list[tuple[int, int | None]] = []
        with self.engine.begin() as conn:
            stale = conn.execute(sa.select(c.slot, c.trial_number).where(self._claimable(0))
                                 .order_by(c.slot).limit(k)).all()
            for s, n in stale:
                r = conn.execute(self.cand.update().where(self._claimable(0), c.slot == s)
                                 .values(state=RUNNING, worker=self.worker, heartbeat=self.now()))
                if r.rowcount == 1:
                    got.append((int(s), n))
        while len(got) < k:
            with self.engine.connect() as conn:
                top = conn.execute(sa.select(sa.func.max(c.slot)).where(c.study_id == self.study_id,
                                                                      c.generation == 0)).scalar()
            nxt = 0 if top is None else int(top) + 1
            if nxt >= budget:
                break
            try:
                with self.engine.begin() as conn:
                    conn.execute(self.cand.insert().values(study_id=self.study_id, generation=0, slot=nxt,
                                                           state=RUNNING, worker=self.worker, heartbeat=self.now()))
                got.append((nxt, None))
            except sa.exc.IntegrityError:
                continue  # another worker took it: try the next one
        return got

    def _note_trial(self, ticket: int, number: int) -> None:
        c = self.cand.c
        with self.engine.begin() as conn:
            conn.execute(self.cand.update().where(c.study_id == self.study_id, c.generation == 0, c.slot == ticket,
                                                  c.worker == self.worker).values(trial_number=number))

    def run_optuna(self, searcher, budget: int, show_progress: bool | None = None, poll: float = 0.05) -> SearchRun:
        import warnings

        import optuna
        from optuna.trial import TrialState

        from .optuna_base import violation

        prep = self.prep
        space, obj = prep.space, prep.objective
        searcher.seed = int.from_bytes(os.urandom(4), "little")  # same seed everywhere = same points
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study = optuna.load_study(study_name=self.name, storage=self.storage, sampler=searcher.make_sampler())
        batch = max(1, int(searcher.batch))
        t0 = time.perf_counter()
        with _Heartbeat(self), progress(budget, f"search {searcher.name} (shared)", show_progress) as bar:
            while True:
                tickets = self.take_tickets(batch, budget)
                if not tickets:
                    rows = self.generation_rows(0)
                    if len(rows) >= budget and all(r.state == DONE for r in rows):
                        break
                    time.sleep(poll)
                    continue
                todo, asked = [], []
                for t, old in tickets:
                    if old is not None:  # the dead owner had asked a trial: finished, or to be failed
                        tid = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, old)
                        state = self.storage.get_trial(tid).state
                        if state == TrialState.COMPLETE:
                            self._finish_ticket_from_trial(t, self.storage.get_trial(tid))
                            continue
                        if state == TrialState.RUNNING:
                            self.storage.set_trial_state_values(tid, TrialState.FAIL)
                    todo.append(t)
                if not todo:
                    continue
                xs = []
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    for t in todo:
                        if t == 0:  # the online baseline, as in a single-process run
                            asked.append(None)
                            xs.append(space.baseline_unit.copy())
                            continue
                        trial = study.ask(self.dists)
                        self._note_trial(t, trial.number)
                        asked.append(trial)
                        free = np.array([trial.params[k] for k in space.free])
                        xs.append(space.to_unit(free))
                x = np.array(xs)
                theta = space.full(x)
                ev = obj.judge(obj.metrics(theta))
                viol = violation(ev)
                for j, (t, trial) in enumerate(zip(todo, asked)):
                    attrs = {"generation": t // batch + 1, "slot": t}
                    if not self._finish_ticket(t, x[j], ev.per_task[j]):
                        if trial is not None:  # lost the ticket while stalled: its new owner scores it
                            study.tell(trial, state=TrialState.FAIL)
                        continue
                    c = float(viol[j]) if searcher.constrained else None
                    tmpl = trial_template(space, self.dists, self.metric_cols, attrs, theta[j], ev.objective[j],
                                          ev.per_task[j], ev.feasible[j], ev.penalised[j], constraint=c)
                    if trial is None:
                        study.add_trial(tmpl)
                    else:
                        for key, val in tmpl.user_attrs.items():
                            trial.set_user_attr(key, val)
                        if c is not None:
                            trial.set_constraint("guardrails", c)
                        study.tell(trial, tmpl.value)
                    self.stats.evaluated += 1
                bar.update(advance=len(todo))
        run = SearchRun()
        rows = self.generation_rows(0)
        x = np.array([json.loads(r.x) for r in rows], dtype=np.float64).reshape(-1, space.dim)
        per_task = np.array([json.loads(r.result) for r in rows], dtype=np.float64).reshape(-1, len(self.metric_cols))
        self.stats.by_others = sum(r.worker != self.worker for r in rows)
        if len(x):
            run.unit.append(x)
            run.theta.append(space.full(x))
            run.evals.append(obj.judge(per_task))
            run.generation.append(np.array([r.slot // batch + 1 for r in rows]))
        run.seconds = time.perf_counter() - t0
        return run

    def _finish_ticket(self, ticket: int, x: np.ndarray, per_task: np.ndarray) -> bool:
        c = self.cand.c
        with self.engine.begin() as conn:
            r = conn.execute(self.cand.update()
                             .where(c.study_id == self.study_id, c.generation == 0, c.slot == ticket,
                                    c.state == RUNNING, c.worker == self.worker)
                             .values(state=DONE, x=json.dumps(x.tolist()), result=json.dumps(per_task.tolist())))
        return r.rowcount == 1

    def _finish_ticket_from_trial(self, ticket: int, trial) -> None:
        space = self.prep.space
        x = space.to_unit(np.array([trial.params[k] for k in space.free]))
        per_task = np.array([trial.user_attrs[c] for c in self.metric_cols])
        self._finish_ticket(ticket, x, per_task)

    def finish(self, result: dict) -> None:
        self.study.set_user_attr("fusiontune_result", {"stop_reason": result.get("stop_reason"),
                                                       "evaluations": result.get("evaluations"),
                                                       "best_trial": result.get("best_trial")})

    def close(self) -> None:
        self.engine.dispose()


def search_shared(prep, method: str, budget: int, seed: int, population: int, patience: int = 0,
                  min_delta: float = 1e-6, options: dict | None = None, show_progress: bool | None = None,
                  storage: str = "", run_name: str | None = None,
                  heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT, chunk: int | None = None, on_ready=None):
    """One worker of a shared run (created on first use); returns (result dict, trials
    DataFrame) like :func:`fusiontune.pipeline.search`, for the whole run.  ``on_ready()`` is
    called once the settings are checked, before the shared storage is opened (as in
    :func:`fusiontune.pipeline.search`)."""
    from ..errors import StudyError
    from ..pipeline import on_bounds, summarise_params, trials_frame
    from .run import build_searcher
    from .storage import run_config

    if not storage:
        raise InputError("a shared run needs a storage URL that every worker can reach", param="storage")
    if prep.study.search.get("screening"):
        raise StudyError("[search] screening is not supported in shared runs (several workers); "
                         "remove it or run one process", param="screening")
    t0 = time.perf_counter()
    sdef = prep.study.search
    searcher, population, options = build_searcher(
        method, prep.objective, prep.space, seed=seed, population=population, options=options, budget=budget,
        warm_start=sdef.get("warm_start"), grad_options=prep.study.method_options.get("grad", {}))
    name = run_name or f"{prep.study.name}-{method}-{seed}"
    config = run_config(prep, method, seed, population, options, budget, patience, min_delta)
    if on_ready is not None:
        on_ready()
    shared = SharedStudy(storage, name, prep, config, heartbeat_timeout)
    try:
        k0 = prep.objective.kernel_seconds
        if searcher.capabilities.replay:
            run = shared.run_population(searcher, budget, patience, min_delta, show_progress, chunk)
        else:
            run = shared.run_optuna(searcher, budget, show_progress)
        trials = trials_frame(prep, run)
        extra = {"population": population, "options": {**searcher.opts, **options},
                 "kernel_seconds": round(prep.objective.kernel_seconds - k0, 4),
                 "storage": {"url": storage, "study_name": name, "shared": True, "worker": shared.worker,
                             "reused_evaluations": shared.stats.by_others,
                             "new_evaluations": shared.stats.evaluated}}
        result = summarise_params(prep, trials, method, seed, budget, time.perf_counter() - t0, run.stop_reason,
                                  extra)
        result["on_bounds"] = on_bounds(prep.space, result["best"]["params"])
        shared.finish(result)
    finally:
        shared.close()
    return result, trials


def worker_process(study, method: str, budget: int, seed: int, population: int, patience: int, min_delta: float,
                   options: dict, storage: str, run_name: str, heartbeat_timeout: float, threads: int | None) -> None:
    """Entry point of a local worker started by ``workers = N`` (a spawned process)."""
    import sys

    from ..pipeline import prepare

    os.environ["FUSIONTUNE_QUIET"] = "1"
    try:
        if threads:
            import numba

            numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
        prep = prepare(study)
        search_shared(prep, method, budget, seed, population, patience, min_delta, options, False, storage,
                      run_name, heartbeat_timeout)
    except InputError as exc:
        print(f"fusiontune: error: worker {os.getpid()}: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


__all__ += ["worker_process", "StudyExistsError"]
