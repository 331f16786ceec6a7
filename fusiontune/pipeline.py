"""The whole pipeline for one study: log -> split -> objective -> search -> result.

``prepare(study)`` loads and validates everything once; ``search(...)`` runs one method
and returns the ``result.json`` dict (contract in ``design.md``) and the trials table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError
from .fusion import Formula, ParamSpace, make_formula
from .log import PredictionLog, TaskColumns, load_log, split_roles
from .objective import Objective
from .search.run import Screening, SearchRun, build_searcher, run_search
from .study import Study

__all__ = ["Prepared", "prepare", "search", "split_needs", "trials_frame", "metric_columns", "summarise_params", "split_summary"]


@dataclass
class Prepared:
    """A study ready to search: formula, space, the log's parts and the search objective.

    ``log`` is the whole log in its row order.  With a split, the parts hold the rows and the
    whole log is put back together from them only when something asks for it (``role`` says
    which part each row went to), so a search never holds the log twice."""

    study: Study
    formula: Formula
    space: ParamSpace
    _log: PredictionLog | None  # the whole log, or None: joined from the parts on first use
    search_log: PredictionLog
    holdout_log: PredictionLog | None
    objective: Objective
    _holdout_objective: Objective | None = None
    select_log: PredictionLog | None = None  # the rows A/B arms are picked on ([split] select)
    split_info: dict | None = None  # true rows/groups and shares of each part (log.split_info)
    _select_objective: Objective | None = None
    engine: object | None = None  # the Ray engine holding the log's shards (None: this process)
    role: np.ndarray | None = None  # (N,) int8 role of each row (log.SEARCH/SELECT/HOLDOUT) with a split

    @property
    def log(self) -> PredictionLog:
        """The whole log (without the split-only columns), in the row order it was read in."""
        if self._log is None:
            from .log import HOLDOUT, SEARCH, SELECT, join_roles

            self._log = join_roles({SEARCH: self.search_log, SELECT: self.select_log,
                                    HOLDOUT: self.holdout_log}, self.role)
        return self._log

    @property
    def parts(self) -> list[PredictionLog]:
        """The logs the rows live in (the split's parts; without a split, the one log): a check
        over every row reads these instead of :attr:`log`, which would join the whole log."""
        return [p for p in (self.search_log, self.select_log, self.holdout_log) if p is not None]

    @property
    def n_rows(self) -> int:
        """Rows of the whole log (without joining it)."""
        if self._log is not None:
            return self._log.n
        return sum(p.n for p in self.parts)

    def _role_objective(self, role: str, log) -> Objective:
        if self.engine is not None:
            return self.engine.objective(role, log.n)
        for o in (self.objective, self._select_objective, self._holdout_objective):
            if o is not None:  # their reused buffers (fused scores, sort keys) come back on their next call
                o.release()
        return self.objective_on(log)

    def close(self) -> None:
        """Release the engine's actors (nothing to do for the local engine)."""
        if self.engine is not None:
            self.engine.close()

    @property
    def layout(self):
        """The :class:`~fusiontune.segments.SegmentLayout` of a ``[segments]`` study, else None."""
        return getattr(self.formula, "layout", None)

    def objective_on(self, log: PredictionLog) -> Objective:
        """The study's objective on ``log`` (with the per-segment guardrails of a segmented study)."""
        return make_objective(self.study, log, self.formula)

    @property
    def select_objective(self) -> Objective | None:
        """Objective on the select part (None without a ``[split] select`` share)."""
        if self.select_log is None:
            return None
        if self._select_objective is None:
            o = self._role_objective("select", self.select_log)
            o.set_baseline(self.space.baseline)
            self._select_objective = o
        return self._select_objective

    @property
    def holdout_objective(self) -> Objective | None:
        if self.holdout_log is None:
            return None
        if self._holdout_objective is None:
            o = self._role_objective("holdout", self.holdout_log)
            o.set_baseline(self.space.baseline)
            self._holdout_objective = o
        return self._holdout_objective


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS (Arrow's pool, glibc's malloc arenas): a log's
    reading frees hundreds of MB in pieces that otherwise stay resident through a search."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to trim


def make_objective(study: Study, log: PredictionLog, formula: Formula) -> Objective:
    """Objective of ``study`` on ``log``; a segmented study's carries its per-segment guardrails."""
    if getattr(formula, "layout", None) is not None:
        from .segments import SegmentObjective, segment_spec

        return SegmentObjective(study.tasks, log, formula, study.gauc_weighting, segment_spec(study).max_drop)
    return Objective(study.tasks, log, formula, study.gauc_weighting)


def load_study_log(study: Study, need_probabilities: bool = True, extra: list[str] | None = None,
                   shard: tuple[int, int] | None = None) -> PredictionLog:
    """The study's log (its [log] filter and sample applied); ``shard=(index, count)``: only the
    groups of that shard (the Ray engine's actors)."""
    cols = [TaskColumns(t.name, t.score, t.label, t.score_scale) for t in study.tasks]
    seg = (study.sections.get("segments") or {}).get("column") or []
    extra = [*(extra or []), *[c for c in seg if c not in (extra or [])]] if seg else extra
    column = (study.split or {}).get("column")
    if column and column not in (extra or []):
        extra = [*(extra or []), column]  # the explicit holdout column
    need = split_needs(study)
    return load_log(study.log_source, cols, group=study.group, weight=study.weight,
                    time=study.time if need["time"] else None, keep_hash=need["group_hash"],
                    need_probabilities=need_probabilities, extra=extra, filter=study.log_filter,
                    sample=study.log_sample, shard=shard)


def split_needs(study: Study) -> dict:
    """Which split-only columns the study's ``[split]`` reads: ``time`` (a split by time, 8
    bytes a row) and ``group_hash`` (a split by group hashes the raw group ids, 8 bytes a row).
    A column named by the study but not needed here is not read at all."""
    sp = study.split or {}
    by = sp.get("by")
    cut = bool(sp) and (not sp.get("column") or float(sp.get("select") or 0.0) > 0)  # a share is cut by `by`
    return {"time": cut and by == "time", "group_hash": cut and by == "group"}


def prepare(study: Study, log: PredictionLog | None = None, engine: str | dict | None = None) -> Prepared:
    """Load, split and build the search objective.  ``engine`` (``"local"``, ``"ray"`` or the
    dict of :func:`fusiontune.engine.engine_settings`; default local) says where the log lives:
    with ``"ray"`` it stays sharded on Ray actors and the returned objectives are theirs (call
    ``Prepared.close()`` when done)."""
    src = str(study.path or "<study>")
    formula = make_formula(study.formula, study.task_names, study.fusion_options, src)
    space = ParamSpace.build(formula, study.baseline, study.bounds, study.reference, src)
    if engine is not None and log is None:
        from .engine import engine_settings, prepare_sharded

        settings = engine_settings(study, engine)
        if settings["name"] == "ray":
            if study.sections.get("segments"):
                raise InputError(f"{src}: [segments] per-segment weights run on the local engine only; the ray "
                                 f"engine's shards fuse with one weight set (use [engine] name = \"local\")",
                                 param="engine")
            return prepare_sharded(study, settings, formula, space)
    loaded_here = log is None
    if loaded_here:
        log = load_study_log(study, formula.needs_probabilities)
    sp = study.split
    role = None
    if sp:
        if sp.get("column") and sp["column"] not in log.extra:  # a log handed in without the column
            raise InputError(f"{log.source}: [split] column {sp['column']!r} is not in the log")
        # a log read here is consumed: its arrays move into the parts column by column, so the
        # log and its parts are never held together (Prepared.log joins them back on demand);
        # a log handed in by the caller is copied and left as it was
        if not loaded_here:
            log = replace(log, labels=None, extra=dict(log.extra))  # same arrays, new object: the caller's keeps them
        parts = split_roles(log, sp["by"], sp.get("holdout"), sp.get("select", 0.0), sp.get("seed", 0),
                            sp.get("column"), consume=True)
        search_log, select_log, holdout_log, info = parts.search, parts.select, parts.holdout, parts.info
        role, whole = parts.role, None
        del parts, log
    else:
        # past the split nothing reads the time column or the group hash: do not hold them.
        # A new log sharing the other arrays, so a log handed in by the caller is not changed.
        whole = log.without_split_columns()
        search_log, select_log, holdout_log, info = whole, None, None, None
        del log
    release_free_memory()  # the reading's and the cut's freed buffers, before the objective is built
    from .segments import build_layout, segment_spec

    spec = segment_spec(study)
    prep = Prepared(study, formula, space, whole, search_log, holdout_log, None, select_log=select_log,
                    split_info=info, role=role)
    if spec is not None:  # one weight block per segment: the joint space (fusiontune/segments.py)
        from .segments import SegmentFormula

        layout = build_layout(spec, formula, study, search_log, holdout_log, prep.log, src)
        formula, space = SegmentFormula(formula, layout), layout.space
        prep.formula, prep.space = formula, space
        if role is not None:
            prep._log = None  # joined for the layout's checks only: not held through the search
    objective = make_objective(study, search_log, formula)
    objective.set_baseline(space.baseline)
    prep.objective = objective
    release_free_memory()  # the objective's build temporaries: give the pages back before a long search
    return prep


def split_summary(prep: Prepared) -> dict | None:
    """result.json's ``split``: the study's [split] keys plus the true rows, groups and shares of
    each part (``holdout_share``: the share of rows and of groups the report judges on)."""
    if not prep.study.split:
        return None
    info = prep.split_info or {}
    out = dict(prep.study.split)
    out["rows"] = info.get("rows")
    if "groups" in info:
        out["groups"] = info["groups"]
        out["groups_in_two_parts"] = info.get("groups_in_two_parts", 0)
    share = info.get("share", {})
    out["holdout_share"] = {k: round(v["holdout"], 6) for k, v in share.items()}
    if prep.select_log is not None:
        out["select_share"] = {k: round(v["select"], 6) for k, v in share.items()}
    return out


def metric_columns(study: Study) -> list[str]:
    """trials.csv column of each task's metric, e.g. ``gauc_click``."""
    return [f"{t.metric}_{t.name}" for t in study.tasks]


def trials_frame(prep: Prepared, run: SearchRun, start: int = 0) -> pd.DataFrame:
    theta = run.cat("theta").reshape(-1, len(prep.space.all_names))
    per_task = run.cat("per_task").reshape(-1, len(prep.study.tasks))
    df = pd.DataFrame(theta, columns=prep.space.all_names)
    df.insert(0, "generation", run.cat("generation").astype(int))
    df.insert(0, "trial", np.arange(start, start + len(df)))
    df["objective"] = run.cat("objective")
    for j, c in enumerate(metric_columns(prep.study)):
        df[c] = per_task[:, j]
    df["feasible"] = run.cat("feasible").astype(bool)
    df["penalised"] = run.cat("penalised")
    return df


def summarise_params(prep: Prepared, trials: pd.DataFrame, method: str, seed: int, budget: int,
                     seconds: float, stop_reason: str, extra: dict | None = None) -> dict:
    """The result.json dict from a trials table (best feasible trial vs the baseline)."""
    obj = prep.objective
    feas = trials[trials["feasible"]] if len(trials) else trials
    if len(feas):
        best_row = feas.loc[feas["objective"].idxmax()]
        best_theta = best_row[prep.space.all_names].to_numpy(dtype=float)
        best_pt = best_row[metric_columns(prep.study)].to_numpy(dtype=float)
        best_trial, note = int(best_row["trial"]), None
    else:  # nothing feasible: the baseline stays the answer, said plainly
        best_theta, best_pt, best_trial = prep.space.baseline, obj.baseline_per_task, None
        note = "no evaluated candidate met every guardrail; best is the baseline"
    from .results import result_document

    hobj = prep.holdout_objective
    holdout_best = None
    if hobj is not None:
        hb = hobj.metrics(best_theta[None, :])[0]
        holdout_best = (hb, bool(hobj.judge(hb[None, :]).feasible[0]))
    result = result_document(
        prep, method=method, formula=prep.formula.name, seed=seed, budget=budget, evaluations=len(trials),
        seconds=seconds, best_params=prep.space.as_dict(best_theta), best_per_task=best_pt, best_feasible=True,
        holdout_best=holdout_best, best_trial=best_trial, stop_reason=stop_reason,
        normalisation=_normalisation(prep),
        rows={"search": prep.search_log.n, "holdout": prep.holdout_log.n if prep.holdout_log else 0,
              **({"select": prep.select_log.n} if prep.select_log is not None else {})},
        split=split_summary(prep),
        extra={"space": {"free": prep.space.free, "low": prep.space.low.tolist(),
                         "high": prep.space.high.tolist()}})
    if note:
        result["note"] = note
    if extra:
        result.update(extra)
    if prep.layout is not None:
        from .segments import segments_summary

        result["segments"] = segments_summary(prep, best_theta)
    return result


def _normalisation(prep: Prepared) -> str:
    if prep.layout is not None:
        from .segments import normalisation_text

        return normalisation_text(prep.layout)
    return (f"{next(iter(prep.space.pinned))} is pinned at its baseline value "
            f"{next(iter(prep.space.pinned.values()))}; the formula is scale-free in the "
            f"weights, so only their ratios to it matter")


def search(prep: Prepared, method: str, budget: int, seed: int, population: int, patience: int = 0,
           min_delta: float = 1e-6, options: dict | None = None, show_progress: bool | None = None,
           storage: str | None = None, resume: bool = False, run_name: str | None = None,
           on_batch=None, warm_start: str | None = None, screening: list | None = None, on_ready=None):
    """Run one search; returns (result dict, trials DataFrame).

    ``storage`` (an Optuna storage URL, e.g. ``sqlite:///runs/x/study.db``) records every
    scored generation as Optuna trials of the study ``run_name`` (default
    ``<study>-<method>-<seed>``); with ``resume=True`` the stored trials are reused and only
    the missing evaluations are computed (see :mod:`fusiontune.search.storage`).
    ``on_batch(gen, x, theta, evaluation)`` sees every generation (replayed ones too).
    ``warm_start`` and ``screening`` default to the study's ``[search]`` keys (see
    :mod:`fusiontune.search.run`).
    ``on_ready()`` is called once every setting (method options, warm start, screening,
    resume) has been checked and before the storage is opened or anything is evaluated: the
    CLI claims the run directory there, so a bad ``[search.<method>]`` key leaves it untouched.
    """
    from .objective import Evaluation
    from .search.storage import StoredEvaluator, TrialStore, run_config

    t0 = time.perf_counter()
    sdef = prep.study.search
    searcher, population, options = build_searcher(
        method, prep.objective, prep.space, seed=seed, population=population, options=options, budget=budget,
        warm_start=sdef.get("warm_start") if warm_start is None else warm_start,
        grad_options=prep.study.method_options.get("grad", {}))
    fractions = sdef.get("screening") if screening is None else screening
    screen = Screening(prep.objective, fractions, sdef.get("screening_keep", 0.5), seed) if fractions else None
    if resume and not storage:
        raise InputError("resume needs the storage of the interrupted run (its storage URL or run directory)", param="resume")
    if resume and getattr(prep.objective, "guards", None):
        raise InputError("resume: stored trials keep only whole-log metrics, not the per-segment ones that "
                         "[segments.<value>] max_drop guardrails need; start a new run", param="resume")
    name = run_name or f"{prep.study.name}-{method}-{seed}"
    if on_ready is not None:
        on_ready()
    store = None
    if storage:
        cfg_opts = {**options, **({"screening": screen.fractions, "screening_keep": screen.keep} if screen else {})}
        config = run_config(prep, method, seed, population, cfg_opts, budget, patience, min_delta)
        store = TrialStore(storage, name, prep, config, resume)
    stored = store.load() if (store is not None and resume) else {}
    prior, done, gen0, best0 = None, 0, 0, -np.inf
    if stored and not searcher.capabilities.replay:
        # Optuna samplers resume from history: hand them every stored trial, then go on
        prior = SearchRun()
        for g in sorted(stored):
            slots = sorted(stored[g].unit)
            x = np.array([stored[g].unit[s] for s in slots])
            ev = prep.objective.judge(np.array([stored[g].per_task[s] for s in slots]))
            prior.unit.append(x)
            prior.theta.append(prep.space.full(x))
            prior.evals.append(ev)
            prior.generation.append(np.full(len(x), g))
        searcher.load_history(prior.cat("unit").reshape(-1, prep.space.dim),
                              Evaluation(prior.cat("objective"), prior.cat("per_task"),
                                         prior.cat("feasible").astype(bool), prior.cat("penalised")))
        done, gen0, best0 = prior.n, max(stored), float(prior.cat("penalised").max())
        stored = {}
    evaluator = StoredEvaluator(prep.objective, store, stored)
    k0 = prep.objective.kernel_seconds
    run = run_search(searcher, prep.objective, prep.space, budget, patience, min_delta, show_progress,
                     on_batch=on_batch, done=done, evaluate=evaluator, generation=gen0, best=best0,
                     screening=screen)
    if prior is not None:
        for key in ("unit", "theta", "evals", "generation"):
            setattr(run, key, getattr(prior, key) + getattr(run, key))
    trials = trials_frame(prep, run)
    extra = {"population": population, "options": {**searcher.opts, **options},
             "kernel_seconds": round(prep.objective.kernel_seconds - k0, 4)}
    if store is not None:
        extra["storage"] = {"url": storage, "study_name": name, "resumed": bool(resume),
                            "reused_evaluations": evaluator.replayed + (prior.n if prior is not None else 0),
                            "new_evaluations": evaluator.evaluated}
    if prep.engine is not None:
        extra["engine"] = prep.engine.describe()
    if screen is not None:
        extra["screening"] = {"fractions": screen.fractions, "keep": screen.keep, "screened": run.screened,
                              "scored_exactly": run.n, "cost": round(run.cost, 3),
                              "note": "candidates screened out on row subsamples are not in trials.csv; "
                                      "the budget counts full-evaluation equivalents"}
    result = summarise_params(prep, trials, method, seed, budget, time.perf_counter() - t0, run.stop_reason, extra)
    result["on_bounds"] = on_bounds(prep.space, result["best"]["params"])
    if prep.layout is not None and result["segments"] is not None and _compare_global(prep):
        # the same method, budget and seed on ONE weight set: what the segmentation buys
        from .segments import global_block, global_prepared

        gres, _ = search(global_prepared(prep), method, budget, seed, population, patience, min_delta, options,
                         show_progress, warm_start=warm_start, screening=screening)
        result["segments"]["global"] = global_block(prep, gres)
        result["segments"]["versus_global"] = {"in_sample": result["best"]["objective"] - gres["best"]["objective"]}
        if "holdout" in result and gres.get("holdout"):
            result["segments"]["versus_global"]["holdout"] = (result["holdout"]["best"]["objective"]
                                                              - gres["holdout"]["best"]["objective"])
    if store is not None:
        store.finish(result)
    return result, trials


def _compare_global(prep: Prepared) -> bool:
    from .segments import segment_spec

    return segment_spec(prep.study).compare_global


def on_bounds(space, params: dict) -> list[dict]:
    """The free parameters of ``params`` that sit on a bound of the search box (within 1e-6 of
    its width): an optimum there may lie beyond it, so widen ``[fusion.bounds]`` and search again."""
    out = []
    for k, lo, hi in zip(space.free, space.low, space.high):
        v, tol = float(params[k]), 1e-6 * (hi - lo)
        if v <= lo + tol or v >= hi - tol:
            out.append({"param": k, "value": v, "bound": "low" if v <= lo + tol else "high"})
    return out
