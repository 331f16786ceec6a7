"""One shard of a log, held in memory by one worker (a Ray actor; plain Python here).

A worker reads only the rows whose stable group hash falls in its shard (so a group never
straddles two workers), splits them into the study's roles (search / select / holdout) by
the same rules as :func:`fusiontune.log.split_roles`, and then scores whole populations of
candidates on its rows, returning per-task partial statistics that the driver adds up
(:mod:`fusiontune.engine.ray_engine`):

* GAUC: ``sum_g w_g AUC_g`` over the worker's groups and ``sum_g w_g`` (exact: groups never
  straddle shards);
* AUC: the Mann-Whitney pair count ``U`` (ties count one half) of every (positive, negative)
  pair whose *majority-class* row lives on this worker.  To count pairs whose other row lives
  elsewhere, each worker receives once, at set-up, the formula inputs of the other workers'
  *minority-class* rows (positives when they are rarer, else negatives) and scores them along
  with its own rows in one kernel call: rows of the same class never form a pair, so the
  count over "own rows + foreign minority rows" is exactly the own pairs plus the cross pairs
  whose majority row is here, and the sum over workers counts every pair once.

Nothing in this module imports Ray; :mod:`fusiontune.engine.ray_engine` wraps the class.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import InputError
from ..log import (LABEL_NEGATIVE, LABEL_POSITIVE, SALT_SCREENING, PredictionLog, _unit_hash, cut_roles,
                   holdout_column, order_keys, random_units, seeded_units, unit_hashes)
from ..metrics import WEIGHTINGS, AucPlan, GaucPlan, _group_stats

__all__ = ["ShardWorker", "NotSetUp", "time_keys", "key_value"]

SEARCH, SELECT, HOLDOUT = 0, 1, 2
ROLES = {"search": SEARCH, "select": SELECT, "holdout": HOLDOUT}
_MAX_BATCH_BYTES = 16 * 2**20  # fused scores held at once per worker (float32, P x rows)


class NotSetUp(RuntimeError):
    """A call reached a worker that lacks the set-up it needs (it was restarted after a
    fault and re-read its shard): the driver sets it up again and retries the call."""


def time_keys(t: np.ndarray) -> np.ndarray:
    """float64 -> uint64 keys in the same order (for an exact distributed quantile)."""
    bits = np.ascontiguousarray(t, dtype=np.float64).view(np.uint64)
    neg = (bits >> np.uint64(63)).astype(bool)
    return np.where(neg, ~bits, bits | np.uint64(1 << 63))


def key_value(key: int) -> float:
    """Inverse of :func:`time_keys` for one key."""
    k = np.uint64(key)
    bits = k & ~np.uint64(1 << 63) if k >> np.uint64(63) else ~k
    return float(np.array([bits], dtype=np.uint64).view(np.float64)[0])


def _load_shard(study, index: int, count: int, need_probabilities: bool) -> PredictionLog:
    """The rows of shard ``index`` of ``count``: :func:`fusiontune.log.load_log` keeps, while
    reading, the groups whose stable hash of the raw id (the row number without a group column)
    is ``index`` modulo ``count``; the log's [log] filter and sample apply as in one process."""
    from ..pipeline import load_study_log

    return load_study_log(study, need_probabilities, shard=(index, count) if count > 1 else None)


class _RoleView:
    """One role's rows on this worker, ready to score: the formula inputs of the own rows
    (grouped by request) followed by the foreign minority rows, the AUC plan over both and the
    GAUC plan over the own rows."""

    def __init__(self, part: PredictionLog, tasks, formula, weighting: str):
        self.part = part.grouped()
        self.formula = formula
        self.n = self.part.n
        self.auc_idx = [i for i, t in enumerate(tasks) if t.metric == "auc"]
        self.gauc_idx = [i for i, t in enumerate(tasks) if t.metric == "gauc"]
        self.weighting = weighting
        self.prepared = formula.prepare(self.part)
        self.auc_plan = None
        self.pair_w = None
        self.gauc_plan = None
        self.gauc_total = np.zeros(len(self.gauc_idx))
        if self.gauc_idx:
            codes = np.ascontiguousarray(self.part.label_codes[:, self.gauc_idx])
            plan = GaucPlan(label_codes=codes, groups=self.part.groups, weights=self.part.weights,
                            weighting=weighting)
            gw = np.zeros((plan.index.n_groups, plan.k))
            _group_stats(plan.index.offsets, plan.codes, plan._w, plan.weighted, plan.k,
                         WEIGHTINGS.index(weighting), gw)
            self.gauc_plan, self.gauc_total = plan, gw.sum(axis=0)

    def minority_block(self, minority_pos: list[bool]) -> dict:
        """Formula inputs, codes (the minority code of each AUC task, 0 where the row is not in
        that task's minority) and weights of the rows in some AUC task's minority class."""
        codes = self.part.label_codes[:, self.auc_idx]
        want = np.array([LABEL_POSITIVE if m else LABEL_NEGATIVE for m in minority_pos], dtype=np.uint8)
        member = codes == want[None, :]
        rows = np.flatnonzero(member.any(axis=1))
        block_codes = np.where(member[rows], want[None, :], np.uint8(0)).astype(np.uint8)
        return {"prepared": self.prepared[rows], "codes": block_codes,
                "weights": None if self.part.weights is None else self.part.weights[rows]}

    def attach(self, foreign: list[dict]) -> None:
        """Append the other workers' minority rows and build the AUC plan over all rows."""
        if not self.auc_idx:
            return
        own_codes = np.ascontiguousarray(self.part.label_codes[:, self.auc_idx])
        prepared = np.concatenate([self.prepared] + [b["prepared"] for b in foreign], axis=0)
        codes = np.concatenate([own_codes] + [b["codes"] for b in foreign], axis=0)
        weights = None
        if self.part.weights is not None:
            weights = np.concatenate([self.part.weights] + [b["weights"] for b in foreign])
        self.prepared = np.ascontiguousarray(prepared)
        self.auc_plan = AucPlan(label_codes=codes, weights=weights)
        w = np.ones(codes.shape[0]) if weights is None else weights
        wp = ((codes == LABEL_POSITIVE) * w[:, None]).sum(axis=0)
        wn = ((codes == LABEL_NEGATIVE) * w[:, None]).sum(axis=0)
        self.pair_w = wp * wn  # U = AUC * Wp * Wn over the rows of this plan

    def partials(self, theta: np.ndarray) -> dict:
        """``{"pairs": (P, K_auc), "gauc": (P, K_gauc)}``: this worker's pair counts and
        weighted sums of group AUCs."""
        p = theta.shape[0]
        rows = self.prepared.shape[0]
        pairs = np.zeros((p, len(self.auc_idx)))
        gsum = np.zeros((p, len(self.gauc_idx)))
        import numba

        step = max(int(numba.get_num_threads()), _MAX_BATCH_BYTES // (4 * max(rows, 1)), 1)
        buf = np.empty((min(step, p), rows), dtype=np.float32)
        for s in range(0, p, step):
            m = min(step, p - s)
            fused = self.formula.scores(self.prepared, theta[s:s + m], out=buf[:m])
            if self.auc_plan is not None:
                auc = np.atleast_2d(self.auc_plan(fused))
                pairs[s:s + m] = np.where(self.pair_w > 0, np.nan_to_num(auc) * self.pair_w, 0.0)
            if self.gauc_plan is not None:
                own = np.ascontiguousarray(fused[:, :self.n])
                g = np.atleast_2d(self.gauc_plan(own, grouped=True))
                gsum[s:s + m] = np.where(self.gauc_total > 0, np.nan_to_num(g) * self.gauc_total, 0.0)
        return {"pairs": pairs, "gauc": gsum}


class ShardWorker:
    """Holds shard ``index`` of ``count`` of a study's log and scores candidates on it.

    A failure to read the shard is kept and raised by every call (so the driver reports the
    file and the reason in one line, whichever call reaches the worker first)."""

    def __init__(self, study, index: int, count: int, need_probabilities: bool = True, threads: int = 0):
        if threads:
            import numba

            numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
        self.study, self.index, self.count = study, index, count
        self.formula = None
        self.error: str | None = None
        self.log: PredictionLog | None = None
        self.split_key = None
        self.parts: dict[int, PredictionLog] = {}
        self.views: dict[int, _RoleView] = {}
        self.attached: dict[int, object] = {}
        self.levels: dict[int, tuple] = {}  # screening role -> (base role, seed, fraction)
        self._tkeys: dict = {}
        try:
            self.log = _load_shard(study, index, count, need_probabilities)
        except InputError as exc:
            self.error = str(exc)

    def _check(self) -> None:
        if self.error is not None:
            raise InputError(self.error)

    # ------------------------------------------------------------------ loading and splitting
    def ready(self) -> dict:
        """What the driver needs to check and split the log: rows, groups, pid."""
        self._check()
        log = self.log if self.log is not None else None
        out = {"pid": os.getpid(), "index": self.index, "loaded": log is not None}
        if log is not None:
            out["rows"] = log.n
            out["groups"] = int(np.unique(log.groups).size) if log.groups is not None else 0
        return out

    def count_rows(self, spec: dict | None) -> int:
        """Rows in the remaining part (``spec``: which rows are held out), or all rows."""
        self._check()
        return int(self._rest(spec).sum()) if spec else self.log.n

    def _rest(self, spec: dict) -> np.ndarray:
        """Rows that are not in the holdout of ``spec`` (``{"cut": t}`` or ``{"column": c}``)."""
        if "column" in spec:
            return ~holdout_column(self.log, spec["column"])
        return self.log.time < spec["cut"]

    def time_count(self, key: int, spec: dict | None) -> int:
        """Rows (of the remaining part when ``spec`` is given) whose time key is <= ``key``."""
        self._check()
        name = repr(sorted(spec.items())) if spec else None
        if name not in self._tkeys:
            t = self.log.time if not spec else self.log.time[self._rest(spec)]
            self._tkeys[name] = np.sort(time_keys(t))
        return int(np.searchsorted(self._tkeys[name], np.uint64(key), side="right"))

    def time_range(self, spec: dict | None) -> tuple[int, int] | None:
        self._check()
        t = self.log.time if not spec else self.log.time[self._rest(spec)]
        if t.size == 0:
            return None
        k = time_keys(np.array([t.min(), t.max()]))
        return int(k[0]), int(k[1])

    def split(self, spec: dict | None, formula, weighting: str) -> dict:
        """Cut the shard into its roles (``spec`` is the driver's resolved split, ``None``: every
        row is a search row).  Idempotent; returns the per-role counts the driver adds up."""
        self._check()
        key = repr(sorted(spec.items())) if spec else "none"
        if self.split_key != key:
            self.formula, self.weighting = formula, weighting
            log = self.log
            role = np.zeros(log.n, dtype=np.int8)
            if spec:
                role = self._roles(log, spec)
            self.summary = self._summary(log, role)
            # the shard's arrays move into the parts column by column (time and group hash, which
            # only assign the roles, are dropped), as in one process: never the shard twice
            self.log = None  # the parts hold every row now
            self.parts = cut_roles(log, role, consume=True)
            del log
            self.views, self.attached = {}, {}
            self.split_key = key
            self._tkeys = {}
        return self.summary

    def _roles(self, log: PredictionLog, spec: dict) -> np.ndarray:
        role = np.zeros(log.n, dtype=np.int8)
        by, select = spec["by"], spec.get("select", 0.0)
        u = None
        if spec.get("column"):
            hold = holdout_column(log, spec["column"])
        elif by == "time":
            hold = log.time >= spec["hold_cut"]
        else:  # group, or random: a seeded draw per unit (the same function as in one process)
            u = _unit_hash(log, spec["seed"]) if by == "group" else random_units(log, spec["seed"])
            hold = u < spec["holdout"]
        role[hold] = HOLDOUT
        if select > 0:
            rest = ~hold
            if by == "time":
                sel = rest & (log.time >= spec["select_cut"])
            elif not spec.get("column"):
                sel = rest & (u < spec["holdout"] + select)
            else:
                v = _unit_hash(log, spec["seed"]) if by == "group" else random_units(log, spec["seed"])
                sel = rest & (v < spec["frac"])
            role[sel] = SELECT
        return role

    def _summary(self, log: PredictionLog, role: np.ndarray) -> dict:
        out = {"rows": {}, "groups": {}, "pos": {}, "neg": {}, "in_two": 0}
        seen = []
        for name, r in ROLES.items():
            mask = role == r
            out["rows"][name] = int(mask.sum())
            codes = log.label_codes[mask]
            out["pos"][name] = (codes == LABEL_POSITIVE).sum(axis=0).tolist()
            out["neg"][name] = (codes == LABEL_NEGATIVE).sum(axis=0).tolist()
            if log.groups is not None:
                g = np.unique(log.groups[mask])
                out["groups"][name] = int(g.size)
                seen.append(g)
        if log.groups is not None:
            allg = np.concatenate(seen)
            _, c = np.unique(allg, return_counts=True)
            out["in_two"] = int((c > 1).sum())
            out["groups_total"] = int(np.unique(log.groups).size)
        return out

    # ------------------------------------------------------------------ scoring
    def _view(self, role: int) -> _RoleView:
        if role not in self.views:
            if role in self.levels:  # a screening level: the units of the base role below its share
                base, seed, fraction = self.levels[role]
                bpart = self._view(base).part
                part = bpart.take(np.flatnonzero(seeded_units(unit_hashes(bpart), seed, SALT_SCREENING) < fraction))
            else:
                part = self.parts.get(role)
            if part is None:  # this shard has no row of the role: an empty view
                part = next(iter(self.parts.values())).take(np.zeros(0, dtype=np.int64))
            self.views[role] = _RoleView(part, self.study.tasks, self.formula, self.weighting)
        return self.views[role]

    def set_levels(self, levels: dict) -> bool:
        """Screening levels (role -> (base role, seed, fraction)); :meth:`_view` cuts them on use."""
        self._check()
        for role, spec in levels.items():
            if self.levels.get(role) != tuple(spec):
                self.levels[role] = tuple(spec)
                self.views.pop(role, None)
                self.attached.pop(role, None)
        return True

    def totals(self, role: int) -> dict:
        """Per task: weight of positives and of negatives (AUC), total GAUC weight; rows."""
        self._check()
        v = self._view(role)
        codes = v.part.label_codes
        w = np.ones(v.n) if v.part.weights is None else v.part.weights
        return {"wpos": ((codes == LABEL_POSITIVE) * w[:, None]).sum(axis=0).tolist(),
                "wneg": ((codes == LABEL_NEGATIVE) * w[:, None]).sum(axis=0).tolist(),
                "gauc_total": v.gauc_total.tolist(), "rows": int(v.n)}

    def surrogate_rows(self, role: int, fraction: float) -> dict:
        """This shard's part of the surrogate sample of ``role``
        (:func:`fusiontune.surrogate.sample_mask`): formula inputs, label codes, weights and the
        order key of each row (:func:`fusiontune.log.order_keys`), in this shard's grouped order.
        Only what the surrogate needs; the driver sorts all shards' rows by the keys."""
        from ..surrogate import sample_mask

        self._check()
        v = self._view(role)
        part = v.part
        prepared = v.prepared[:v.n]  # own rows (foreign minority rows follow them after attach)
        keys = order_keys(part)
        mask = sample_mask(part, fraction)
        if mask is not None:
            rows = np.flatnonzero(mask)
            return {"prepared": prepared[rows], "codes": part.label_codes[rows], "keys": keys[rows],
                    "weights": None if part.weights is None else part.weights[rows]}
        return {"prepared": prepared, "codes": part.label_codes, "keys": keys, "weights": part.weights}

    def minority(self, role: int, minority_pos: list[bool]) -> dict:
        """This worker's minority rows of ``role`` (published once, read by the others)."""
        self._check()
        return self._view(role).minority_block(minority_pos)

    def attach(self, role: int, blocks: list, token) -> bool:
        """Take the other workers' minority rows (``blocks``: object refs or dicts)."""
        self._check()
        if self.attached.get(role) == token:
            return True
        if blocks and not isinstance(blocks[0], dict):
            import ray

            blocks = ray.get(list(blocks))
        v = self._view(role)
        if self.attached.get(role) is not None:  # a second attach: start from the own rows again
            self.views.pop(role)
            v = self._view(role)
        v.attach(blocks)
        self.attached[role] = token
        return True

    def partials(self, role: int, theta: np.ndarray, token) -> dict:
        """Partial statistics of a population on this worker's rows of ``role``."""
        self._check()
        if self.attached.get(role) != token:
            raise NotSetUp(f"shard {self.index}: role {role} is not set up (token {token!r})")
        return self._view(role).partials(np.ascontiguousarray(theta, dtype=np.float64))

    def pid(self) -> int:
        return os.getpid()

    def where(self) -> dict:
        """Process id, Ray node id and peak resident memory (bytes) of this worker."""
        import resource

        import ray

        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(),
                "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
