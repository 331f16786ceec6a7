"""The objective: business-weighted sum of per-task AUC / GAUC, with guardrails.

``J(theta) = sum_k w_k * M_k(fused(theta))`` where ``M_k`` is the AUC or GAUC of task k's
label against the fused score, on the rows where label k is observed.

A task with ``sign = -1`` (dislike, skip, report: events the feed should rank *low*) is
measured the other way round: ``M_k = 1 - AUC`` (or ``1 - GAUC``), exactly the AUC of ranking
its positives below its negatives (ties count one half either way).  A higher ``M_k`` is
better for every task, so business weights stay >= 0 and guardrails read the same.

Guardrail: a task with ``max_drop`` is violated when ``M_k(theta) - M_k(baseline) <
-max_drop``.  A candidate that violates any guardrail is *infeasible*: it is recorded with
``feasible = false`` and never reported as best.  Search methods rank candidates by the
*penalised* value ``J - PENALTY * sum_k violation_k`` (``PENALTY = 100 * sum_k w_k``), so
any violation costs far more than the objective differences between candidates (AUC gains
are of order 1e-3), and among infeasible candidates the least violating ranks first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .fusion import Formula
from .log import PredictionLog
from .metrics import _ITEMS_PER_THREAD, AucPlan, GaucPlan, _spread, _threads
from .study import Task

__all__ = ["Objective", "Evaluation"]

_MAX_BATCH_BYTES = 16 * 2**20  # fused scores of one kernel call (float32, P x N), past one per thread
# Per-candidate scratch of a kernel call (fused float32 score + sorted uint64 key: 12 bytes a
# row).  While one candidate per thread fits this, a batch runs a candidate per thread;
# past it (large logs) one candidate at a time with the threads inside it (fusion over row
# blocks, GAUC over group blocks), so the scratch exists once instead of once per thread.
_MAX_SCRATCH_BYTES = 64 * 2**20
_MIN_ROWS_PER_THREAD = 1 << 14  # one candidate's fusion is split over the threads past this


@dataclass
class Evaluation:
    """Values for a batch of P candidates."""

    objective: np.ndarray  # (P,) J
    per_task: np.ndarray  # (P, K) M_k
    feasible: np.ndarray  # (P,) bool
    penalised: np.ndarray  # (P,) what search methods maximise


class Objective:
    """Scores full parameter rows on one (part of a) log.  Build once, call many times."""

    def __init__(self, tasks: list[Task], log: PredictionLog, formula: Formula, gauc_weighting: str = "rows"):
        self.tasks = tasks
        self.formula = formula
        self.gauc_weighting = gauc_weighting
        log = log.grouped()  # GAUC wants each group's rows together; fusion is row-wise
        self.log = log
        self.prepared = formula.prepare(log)
        self.w = np.array([t.weight for t in tasks])
        self.max_drop = np.array([np.inf if t.max_drop is None else t.max_drop for t in tasks])
        self.flip = np.array([t.sign < 0 for t in tasks], dtype=bool)
        self.auc_idx = np.array([i for i, t in enumerate(tasks) if t.metric == "auc"], dtype=int)
        self.gauc_idx = np.array([i for i, t in enumerate(tasks) if t.metric == "gauc"], dtype=int)
        codes = log.label_codes
        self._auc_plan = None
        if self.auc_idx.size:
            self._auc_plan = AucPlan(label_codes=np.ascontiguousarray(codes[:, self.auc_idx]), weights=log.weights)
        self._plan = None
        if self.gauc_idx.size:
            self._plan = GaucPlan(label_codes=np.ascontiguousarray(codes[:, self.gauc_idx]), groups=log.groups,
                                  weights=log.weights, weighting=gauc_weighting)
            if self._auc_plan is not None:  # AUC and GAUC run one after the other: one key buffer
                self._plan._scratch = self._auc_plan._scratch
            if not self._plan.valid.all():
                bad = tasks[int(self.gauc_idx[~self._plan.valid][0])].name
                raise InputError(f"{log.source}: task {bad!r} uses GAUC but no group has both a positive "
                                 f"and a negative label (use metric = \"auc\")")
        self.baseline_per_task: np.ndarray | None = None
        self.penalty = 100.0 * float(self.w.sum())
        self.calls = 0
        self.kernel_seconds = 0.0
        self._fused: np.ndarray | None = None  # fused-score buffer reused across a search
        self.parallel: bool | None = None  # None: batches on every numba thread; False: one thread

    @property
    def n_rows(self) -> int:
        return self.log.n

    @property
    def _auc_labels(self) -> np.ndarray:
        """Float labels (N, K_auc) of the AUC tasks, decoded on demand (the bootstrap's input)."""
        return self.log.labels[:, self.auc_idx]

    def batch_size(self) -> int:
        """Candidates per kernel call: one per kernel thread (so a batch keeps every core
        busy), more while their fused scores fit ``_MAX_BATCH_BYTES`` (small logs), and one
        when a candidate's scratch per thread would pass ``_MAX_SCRATCH_BYTES`` (large logs:
        the threads then work inside the candidate)."""
        import numba

        threads = int(numba.get_num_threads())
        n = max(self.n_rows, 1)
        if threads > 1 and 12 * n * threads > _MAX_SCRATCH_BYTES:
            return 1
        return max(threads, _MAX_BATCH_BYTES // (4 * n), 1)

    def metrics(self, theta: np.ndarray) -> np.ndarray:
        """Per-task metrics (P, K) for full parameter rows (P, n_params), in batches."""
        theta = np.atleast_2d(theta)
        out = np.empty((theta.shape[0], len(self.tasks)))
        step = self.batch_size()
        for s in range(0, theta.shape[0], step):
            rows = theta[s:s + step]
            m = rows.shape[0]
            if self._fused is None or self._fused.shape[0] < m:
                self._fused = np.empty((min(step, max(m, theta.shape[0])), self.n_rows), dtype=np.float32)
            fused = self._fuse(rows, self._fused[:m])
            out[s:s + step] = self.score_metrics(fused)
        self.calls += theta.shape[0]
        return out

    def _fuse(self, rows: np.ndarray, fused: np.ndarray) -> np.ndarray:
        """Fused scores of ``rows`` into ``fused`` on the kernel's threads: a candidate per
        thread, or one candidate's rows in one chunk per thread.  The formula's serial
        kernel releases the GIL and runs the same per-row code, so the scores are
        bit-identical to one thread; and no OpenMP team is left spinning on a core the
        metric kernel that follows wants (``metrics._spread``)."""
        m, n = fused.shape
        if type(self.formula).scores is not Formula.scores:  # another kernel (segments): its own threads
            return self.formula.scores(self.prepared, rows, out=fused, parallel=self.parallel)
        threads = _threads() if self.parallel is not False else 1
        if threads == 1 or (m == 1 and n < threads * _MIN_ROWS_PER_THREAD):
            return self.formula.scores(self.prepared, rows, out=fused, parallel=False)
        if m > 1:
            _spread(lambda q: self.formula.scores(self.prepared, rows[q:q + 1], out=fused[q:q + 1], parallel=False),
                    m)
        else:
            chunks = _ITEMS_PER_THREAD * threads
            cuts = np.linspace(0, n, chunks + 1).astype(np.int64)
            _spread(lambda t: self.formula.scores(self.prepared[cuts[t]:cuts[t + 1]], rows,
                                                  out=fused[:, cuts[t]:cuts[t + 1]], parallel=False), chunks)
        return fused

    def release(self) -> None:
        """Drop the buffers reused across calls (fused scores, sort keys)."""
        self._fused = None
        if self._auc_plan is not None:
            self._auc_plan.release()
        if self._plan is not None:
            self._plan.release()

    def score_metrics(self, fused: np.ndarray) -> np.ndarray:
        """Per-task metrics (P, K) of fused scores (P, N) given in the row order of ``self.log``
        (grouped by request), e.g. the output of a learn-to-rank fuser."""
        t0 = time.perf_counter()
        fused = np.atleast_2d(fused)
        out = np.empty((fused.shape[0], len(self.tasks)))
        if self._auc_plan is not None:
            par = self.parallel
            if par is None and fused.shape[0] == 1 and self.batch_size() == 1:
                par = True  # the large-log mode: the one candidate's rows split over the threads
            out[:, self.auc_idx] = self._auc_plan(fused, parallel=par)
        if self._plan is not None:
            out[:, self.gauc_idx] = self._plan(fused, grouped=True, parallel=self.parallel)
        self.kernel_seconds += time.perf_counter() - t0
        return self.orient(out)

    def orient(self, per_task: np.ndarray) -> np.ndarray:
        """Turn raw AUC/GAUC values (..., K) into M_k in place: 1 - value for sign = -1 tasks."""
        if self.flip.any():
            per_task[..., self.flip] = 1.0 - per_task[..., self.flip]
        return per_task

    def set_baseline(self, baseline_row: np.ndarray) -> np.ndarray:
        self.baseline_per_task = self.metrics(baseline_row[None, :])[0]
        return self.baseline_per_task

    def evaluate(self, theta: np.ndarray) -> Evaluation:
        per_task = self.metrics(theta)
        return self.judge(per_task)

    def judge(self, per_task: np.ndarray) -> Evaluation:
        j = per_task @ self.w
        if self.baseline_per_task is None:
            viol = np.zeros(per_task.shape[0])
        else:
            drop = self.baseline_per_task[None, :] - per_task  # > 0 when worse than baseline
            viol = np.clip(drop - self.max_drop[None, :], 0.0, None).sum(axis=1)
        feasible = viol <= 1e-12
        return Evaluation(j, per_task, feasible, j - self.penalty * viol)
