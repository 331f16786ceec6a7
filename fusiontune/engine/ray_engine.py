"""The Ray engine: the log sharded by group hash over Ray actors, one objective per role.

The driver never holds the log.  Each actor (:class:`~fusiontune.engine.shard.ShardWorker`)
reads only its shard, keeps it in memory for the whole search and scores a whole population
per call; the driver sends the candidates and adds up the per-task partial statistics:

* GAUC = ``sum_shards sum_g w_g AUC_g / sum_shards sum_g w_g``: exact, a group lives on one shard;
* AUC = ``sum_shards U_s / (W_pos W_neg)`` with ``U_s`` the exact Mann-Whitney count (ties one
  half) of the pairs whose majority-class row is on shard s (see :mod:`.shard`): exact too.

The objectives it builds (:class:`ShardedObjective`) are :class:`~fusiontune.objective.Objective`
subclasses: ``judge``, ``evaluate``, ``set_baseline`` and the guardrails are the local ones,
so methods, storage, resume and result.json do not change with the engine.

Faults: an actor that dies (``ray.kill``, the OS killing its process) is restarted by Ray (or
replaced), re-reads its shard and is set up again; the generation whose partial sums were not
all back is computed again, so no finished trial is lost or repeated.  A shard that cannot be
read fails the search with the reader's one line (file and reason).
"""

from __future__ import annotations

import os
import time

import numpy as np

from ..errors import InputError, LogError, RunError, StudyError
from ..objective import Objective
from .shard import HOLDOUT, ROLES, SEARCH, SELECT, NotSetUp, ShardWorker, key_value

__all__ = ["RayEngine", "ShardedObjective", "ShardedLog"]

ROLE_NAMES = {v: k for k, v in ROLES.items()}
MAX_ATTEMPTS = 5  # tries of one call across actor faults before the search fails
ACTOR_RESTARTS = 4  # Ray's automatic restarts per actor (then the driver replaces it)


class ShardedLog:
    """What the driver knows of a log it does not hold: its size and name."""

    def __init__(self, n: int, source: str, tasks: list[str]):
        self.n, self.source, self.tasks, self.extra = int(n), source, list(tasks), {}

    @property
    def k(self) -> int:
        return len(self.tasks)

    def take(self, rows):
        raise StudyError(f"{self.source}: the rows of this log live on the Ray actors ([engine] name = \"ray\"); "
                         f"this step needs them in one process (use [engine] name = \"local\")")


class ShardedObjective(Objective):
    """An :class:`Objective` whose metrics come from the engine's actors (one role's rows)."""

    sharded = True

    def __init__(self, engine: "RayEngine", role: int, tasks, formula, gauc_weighting: str, n_rows: int):
        # the task-side state of Objective, without a log in this process
        self.engine, self.role = engine, role
        self.tasks, self.formula, self.gauc_weighting = tasks, formula, gauc_weighting
        self.log = ShardedLog(n_rows, engine.source, [t.name for t in tasks])
        self.w = np.array([t.weight for t in tasks])
        self.max_drop = np.array([np.inf if t.max_drop is None else t.max_drop for t in tasks])
        self.flip = np.array([t.sign < 0 for t in tasks], dtype=bool)
        self.auc_idx = np.array([i for i, t in enumerate(tasks) if t.metric == "auc"], dtype=int)
        self.gauc_idx = np.array([i for i, t in enumerate(tasks) if t.metric == "gauc"], dtype=int)
        self.baseline_per_task = None
        self.penalty = 100.0 * float(self.w.sum())
        self.calls, self.kernel_seconds = 0, 0.0
        self.parallel, self._fused, self._auc_plan, self._plan = None, None, None, None

    def batch_size(self) -> int:
        return 1 << 30  # the whole population goes to the actors in one call

    def metrics(self, theta: np.ndarray) -> np.ndarray:
        theta = np.atleast_2d(np.asarray(theta, dtype=np.float64))
        t0 = time.perf_counter()
        out = self.engine.metrics(self.role, theta)
        self.kernel_seconds += time.perf_counter() - t0
        self.calls += theta.shape[0]
        return self.orient(out)

    def score_metrics(self, fused):
        self.log.take(None)  # raises: fused scores of every row would have to be here

    def release(self) -> None:
        pass


def _unwrap(exc):
    """The exception raised inside an actor method (Ray wraps it in a RayTaskError)."""
    return getattr(exc, "cause", None) or exc


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, with one line, when nothing answers at ``address``.

    Ray's own client retries an unreachable GCS for minutes and then logs a C++ line. A plain TCP connect
    to the same host and port answers the common mistakes (wrong host, wrong port, cluster down) at once.
    ``auto`` (Ray finds the cluster itself) is left to Ray."""
    import socket

    target = address.split("://", 1)[1] if "://" in address else address
    if target == "auto":
        return
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise RunError(f"[engine] address {address!r} is not host:port (or ray://host:port, or auto)", param="address")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        if isinstance(exc, socket.timeout):
            why = f"no answer within {timeout:g} s"
        raise RunError(f"[engine] cannot join the Ray cluster at {address}: nothing answers at {host}:{port} ({why})",
                       param="address") from None


class RayEngine:
    """Actors holding the shards of one study's log; :meth:`metrics` for each role."""

    def __init__(self, study, settings: dict, need_probabilities: bool, formula, progress=None):
        try:
            import ray
        except ImportError:
            from ..errors import DependencyError

            raise DependencyError("[engine] name = \"ray\" needs Ray: pip install 'fusiontune[ray]' "
                                  "(ray==2.60.0)") from None
        self.ray = ray
        self.study, self.formula = study, formula
        self.source = str(study.log)
        self.started = False
        address = self.address = settings.get("address")
        if not ray.is_initialized():
            kw = {"include_dashboard": False, "logging_level": "warning", "log_to_driver": False}
            try:
                if address:
                    _check_reachable(address)
                    ray.init(address=address, **kw)
                else:
                    # "local": always a new instance, never one found on the machine (RAY_ADDRESS, `ray start`)
                    ray.init(address="local", num_cpus=os.cpu_count() or 1, **kw)
            except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError...
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                where = f"join the Ray cluster at {address}" if address else "start a local Ray instance"
                raise RunError(f"[engine] cannot {where}: {first}", param="address" if address else "engine") from None
            self.started = True
        cpus = float(ray.cluster_resources().get("CPU", 1))
        self.count = int(settings.get("actors") or max(1, int(cpus)))
        self.cpus_each = min(1.0, cpus / self.count)  # more actors than CPUs share them (never wait)
        local = not address
        self.threads = max(1, (os.cpu_count() or 1) // self.count) if local else 0
        self.need_probabilities = need_probabilities
        self.worker_cls = ray.remote(ShardWorker)
        self.actors = [self._new_actor(i) for i in range(self.count)]
        self.recoveries = 0
        self.split_spec = None
        self.setups: dict[int, dict] = {}  # role -> totals and minority choice
        self.levels: dict[int, tuple] = {}  # screening role -> (base role, seed, fraction)
        self.token = 0
        t0 = time.perf_counter()
        self.info = self._all("ready")
        self.load_seconds = time.perf_counter() - t0

    def _new_actor(self, i: int):
        return self.worker_cls.options(num_cpus=self.cpus_each, max_restarts=ACTOR_RESTARTS, max_task_retries=0,
                                       scheduling_strategy="SPREAD").remote(
            self.study, i, self.count, self.need_probabilities, self.threads)

    # ------------------------------------------------------------------ calls
    def _get(self, refs):
        ray = self.ray
        try:
            return ray.get(refs)
        except ray.exceptions.RayTaskError as exc:
            cause = _unwrap(exc)
            if isinstance(cause, InputError):
                raise type(cause)(str(cause)) from None
            if isinstance(cause, NotSetUp):
                raise _Fault(str(cause)) from None
            raise RunError(f"a Ray actor failed: {str(cause).strip().splitlines()[-1]}") from None
        except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as exc:
            raise _Fault(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__) from None

    def _all(self, method: str, *args):
        return self._get([getattr(a, method).remote(*args) for a in self.actors])

    def _retrying(self, fn):
        """``fn()``, set up again and retried after an actor fault (at most MAX_ATTEMPTS)."""
        last = None
        for attempt in range(MAX_ATTEMPTS):
            try:
                if attempt:
                    self._recover()
                return fn()
            except _Fault as exc:
                last = exc
                self.recoveries += 1
        raise RunError(f"the Ray actors kept failing ({MAX_ATTEMPTS} attempts): {last}")

    def _recover(self) -> None:
        """Wait for restarted actors (replace the ones Ray gave up on), then split and set up
        every role again (a restarted actor re-read its shard in its constructor)."""
        ray = self.ray
        for i, a in enumerate(self.actors):
            for attempt in range(3):
                try:
                    self._get([a.ready.remote()])
                    break
                except _Fault:
                    if attempt == 0:
                        time.sleep(0.5)
                        continue
                    try:
                        ray.kill(a, no_restart=True)
                    except Exception:  # noqa: BLE001 - it is dead already
                        pass
                    a = self.actors[i] = self._new_actor(i)
        if self.split_spec is not None:
            self._all("split", self.split_spec[0], self.formula, self.study.gauc_weighting)
        if self.levels:
            self._all("set_levels", self.levels)
        for role in list(self.setups):
            self._setup(role)

    # ------------------------------------------------------------------ split
    def prepare_split(self, split: dict | None):
        """Resolve the study's [split] over the shards (exact cut times) and cut every shard.
        Returns (rows per role, split_info as :func:`fusiontune.log.split_info` gives it)."""
        return self._retrying(lambda: self._split(split))

    def _split(self, split: dict | None):
        src = self.source
        n = sum(i["rows"] for i in self.info)
        spec = None
        if split:
            by, holdout, select, seed, column = (split["by"], split.get("holdout"), float(split.get("select") or 0.0),
                                                 split.get("seed", 0), split.get("column"))
            spec = {"by": by, "holdout": holdout, "select": select, "seed": seed}
            if column:
                spec["column"] = column
            elif by == "time":
                spec["hold_cut"] = self._quantile(1.0 - holdout, None, n)
            if select > 0:
                rest_spec = {"column": column} if column else ({"cut": spec["hold_cut"]} if by == "time" else None)
                n_rest = sum(self._all("count_rows", rest_spec)) if rest_spec else None
                if n_rest is not None:
                    frac = select * n / max(n_rest, 1)
                    if frac >= 1.0:
                        raise StudyError(f"{src}: [split] select = {select} is more than the rows left after "
                                         f"the holdout ({n_rest} of {n})")
                    spec["frac"] = frac
                    if by == "time":
                        spec["select_cut"] = self._quantile(1.0 - frac, rest_spec, n_rest)
        self.split_spec = (spec,)
        sums = self._all("split", spec, self.formula, self.study.gauc_weighting)
        return self._split_info(sums, n, split)

    def _quantile(self, q: float, rest_spec, n: int) -> float:
        """``np.quantile(time, q)`` (linear) over every shard's rows, exactly: the two order
        statistics around ``q (n - 1)`` by bisection on the order-preserving time keys."""
        ranges = [r for r in self._all("time_range", rest_spec) if r is not None]
        lo0, hi0 = min(r[0] for r in ranges), max(r[1] for r in ranges)

        def kth(k: int, lo: int) -> int:  # smallest key with at least k + 1 rows <= it
            lo, hi = lo, hi0
            while lo < hi:
                mid = (lo + hi) // 2
                if sum(self._all("time_count", mid, rest_spec)) >= k + 1:
                    hi = mid
                else:
                    lo = mid + 1
            return lo

        v = q * (n - 1)
        k0 = int(np.floor(v))
        a = kth(k0, lo0)
        b = a if k0 + 1 > n - 1 or sum(self._all("time_count", a, rest_spec)) >= k0 + 2 else kth(k0 + 1, a)
        gamma = v - k0
        return float(np.quantile(np.array([key_value(a), key_value(b)]), gamma))

    def _split_info(self, sums: list[dict], n: int, split: dict | None):
        src = self.source
        names = ("search", "select", "holdout")
        rows = {r: sum(s["rows"][r] for s in sums) for r in names}
        tasks = self.study.tasks
        for j, t in enumerate(tasks):  # what load_log checks on a whole log (a shard may lack a class)
            for cls, word, v in (("pos", "positive", 1), ("neg", "negative", 0)):
                if not sum(s[cls][r][j] for s in sums for r in names):
                    raise LogError(f"{src}: column {t.label!r} (label of task {t.name!r}) has no {word} ({v}) row")
        if split:
            need = ["search"] + (["holdout"] if not split.get("column") else [])
            for r in need:
                if rows[r] == 0:
                    raise LogError(f"{src}: the {r} part of the split is empty")
            if float(split.get("select") or 0.0) > 0 and rows["select"] == 0:
                raise LogError(f"{src}: the select part of the split is empty (select = {split['select']})")
            for r in names:
                if rows[r] == 0:
                    continue
                for j, t in enumerate(tasks):
                    pos = sum(s["pos"][r][j] for s in sums)
                    neg = sum(s["neg"][r][j] for s in sums)
                    if not (pos and neg):
                        raise LogError(f"{src}: the {r} part of the split has no "
                                       f"{'positive' if not pos else 'negative'} for task {t.name!r}")
        info = {"rows": rows, "share": {"rows": {k: v / max(n, 1) for k, v in rows.items()}}}
        if self.study.group:
            n_g = sum(s.get("groups_total", 0) for s in sums)
            groups = {r: sum(s["groups"][r] for s in sums) for r in names}
            info["groups"] = groups
            info["share"]["groups"] = {k: v / max(n_g, 1) for k, v in groups.items()}
            info["groups_in_two_parts"] = sum(s["in_two"] for s in sums)
        if split:
            info.update({"by": split["by"], "holdout": split.get("holdout"), "select": float(split.get("select") or 0.0),
                         "seed": int(split.get("seed", 0)), "column": split.get("column")})
        return rows, info, n

    # ------------------------------------------------------------------ roles
    def _setup(self, role: int) -> dict:
        """Totals of ``role`` over the shards, then the minority-row exchange (once per role)."""
        totals = self._all("totals", role)
        wpos = np.sum([t["wpos"] for t in totals], axis=0)
        wneg = np.sum([t["wneg"] for t in totals], axis=0)
        gtot = np.sum([t["gauc_total"] for t in totals], axis=0) if totals[0]["gauc_total"] else np.zeros(0)
        auc_idx = [i for i, t in enumerate(self.study.tasks) if t.metric == "auc"]
        minority_pos = [bool(wpos[i] <= wneg[i]) for i in auc_idx]
        self.token += 1
        token = self.token
        if auc_idx:
            blocks = [a.minority.remote(role, minority_pos) for a in self.actors]
            self._get([a.attach.remote(role, [b for j, b in enumerate(blocks) if j != i], token)
                       for i, a in enumerate(self.actors)])
        else:
            self._get([a.attach.remote(role, [], token) for a in self.actors])
        setup = {"wpos": wpos, "wneg": wneg, "gauc_total": gtot, "token": token, "auc_idx": auc_idx,
                 "rows": int(sum(t["rows"] for t in totals))}
        self.setups[role] = setup
        return setup

    def objective(self, role_name: str, n_rows: int) -> ShardedObjective:
        role = ROLES[role_name]
        if role not in self.setups:
            setup = self._retrying(lambda: self._setup(role))
            gidx = [i for i, t in enumerate(self.study.tasks) if t.metric == "gauc"]
            for j, i in enumerate(gidx):
                if not setup["gauc_total"][j] > 0:
                    raise InputError(f"{self.source}: task {self.study.tasks[i].name!r} uses GAUC but no group has "
                                     f"both a positive and a negative label (use metric = \"auc\")")
        return ShardedObjective(self, role, self.study.tasks, self.formula, self.study.gauc_weighting, n_rows)

    def level_objective(self, base: int, seed: int, fraction: float) -> ShardedObjective:
        """The objective of a screening level (:class:`fusiontune.search.run.Screening`): on every
        actor the units of role ``base`` whose seeded hash lies below ``fraction``, the same rows
        one process takes; its rows are summed over the actors."""
        spec = (int(base), int(seed), float(fraction))
        role = next((r for r, v in self.levels.items() if v == spec), None)
        if role is None:
            role = 16 + len(self.levels)  # above the split's roles
            self.levels[role] = spec
        levels = dict(self.levels)
        setup = self._retrying(lambda: (self._all("set_levels", levels), self._setup(role))[1])
        return ShardedObjective(self, role, self.study.tasks, self.formula, self.study.gauc_weighting, setup["rows"])

    def surrogate_sample(self, role: int, fraction: float):
        """The surrogate's rows of ``role`` (:func:`fusiontune.surrogate.surrogate_sample`): each
        actor's part of the sample, put in the order one process holds the rows in (stable sort
        by :func:`fusiontune.log.order_keys`: groups by their first row in the log, a group's
        rows in log order), with dense group codes in that order.  Only these rows come to the
        driver (at most about ``sample_rows``)."""
        from ..surrogate import SurrogateSample

        def once():
            if role not in self.setups:
                self._setup(role)
            return self._all("surrogate_rows", role, fraction)
        parts = self._retrying(once)
        keys = np.concatenate([p["keys"] for p in parts])
        order = np.argsort(keys, kind="stable")
        prepared = np.concatenate([p["prepared"] for p in parts], axis=0)[order]
        codes = np.concatenate([p["codes"] for p in parts], axis=0)[order]
        weights = None
        if parts[0]["weights"] is not None:
            weights = np.concatenate([p["weights"] for p in parts])[order]
        groups = None
        if self.study.group:  # keys are the groups' first rows: equal keys, one group
            groups = np.unique(keys[order], return_inverse=True)[1].astype(np.int32)
        n_rows = self.setups[role]["rows"]
        return SurrogateSample(np.ascontiguousarray(prepared), np.ascontiguousarray(codes), groups, weights,
                               n_rows, fraction)

    def metrics(self, role: int, theta: np.ndarray) -> np.ndarray:
        """Raw per-task AUC / GAUC (P, K) of ``theta`` on ``role``: all actors' partial sums."""
        def once():
            setup = self.setups[role]
            parts = self._all("partials", role, theta, setup["token"])
            return setup, parts
        setup, parts = self._retrying(once)
        k = len(self.study.tasks)
        out = np.empty((theta.shape[0], k))
        auc_idx = setup["auc_idx"]
        gauc_idx = [i for i in range(k) if i not in auc_idx]
        if auc_idx:
            pairs = np.sum([p["pairs"] for p in parts], axis=0)
            out[:, auc_idx] = pairs / (setup["wpos"][auc_idx] * setup["wneg"][auc_idx])[None, :]
        if gauc_idx:
            gs = np.sum([p["gauc"] for p in parts], axis=0)
            out[:, gauc_idx] = gs / setup["gauc_total"][None, :]
        return out

    def describe(self) -> dict:
        """result.json's ``engine``: where the trials were scored."""
        return {"name": "ray", "address": self.address, "actors": self.count,
                "load_seconds": round(self.load_seconds, 3), "recoveries": self.recoveries,
                "auc": "exact (pair counts summed over shards)", "gauc": "exact (groups never straddle shards)"}

    def pids(self) -> list[int]:
        """Per actor: its process id (waits for, or replaces, an actor that is restarting)."""
        return self._retrying(lambda: self._all("pid"))

    def workers(self) -> list[dict]:
        """Per actor: pid, Ray node id, peak RSS in bytes (retried like :meth:`pids`)."""
        return self._retrying(lambda: self._all("where"))

    def close(self) -> None:
        """Stop the actors (and the local Ray instance this engine started)."""
        ray = self.ray
        for a in getattr(self, "actors", []):
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.actors = []
        if self.started and ray.is_initialized():
            ray.shutdown()
            self.started = False


class _Fault(Exception):
    """An actor died or lost its set-up: recover and retry."""
