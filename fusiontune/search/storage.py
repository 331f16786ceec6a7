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
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, RunError
from ..objective import Evaluation, Objective

__all__ = ["TrialStore", "StoredEvaluator", "default_storage_url", "run_config"]

FORMAT = 1


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
        if url.startswith("sqlite:///"):
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.storage = optuna.storages.RDBStorage(url)
        except Exception as exc:  # bad URL, missing driver, unreachable server
            raise InputError(f"storage {url}: cannot open it as an Optuna storage "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
                             param="storage") from None
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
            if name in names:  # a new run of the same study/method/seed replaces the old one
                optuna.delete_study(study_name=name, storage=self.storage)
            self.study = optuna.create_study(study_name=name, storage=self.storage, direction="maximize")
            self.study.set_user_attr("fusiontune", json.loads(json.dumps(config, default=str)))
            self.config = config
        from optuna.distributions import distribution_to_json

        self._dist_json = {k: distribution_to_json(d) for k, d in self.dists.items()}
        self._fast = hasattr(self.storage, "scoped_session")

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
        from optuna.trial import create_trial

        space = self.prep.space
        idx = [space.all_names.index(k) for k in space.free]
        trials = []
        for j, s in enumerate(slots):
            pen = float(ev.penalised[j])
            attrs = {"generation": int(gen), "slot": int(s), "objective": float(ev.objective[j]),
                     "feasible": bool(ev.feasible[j])}
            attrs.update({c: float(v) for c, v in zip(self.metric_cols, ev.per_task[j])})
            value = float(ev.objective[j]) if ev.feasible[j] else pen
            if not math.isfinite(value):
                value = -1e300
            trials.append(create_trial(params={k: float(theta[j, i]) for k, i in zip(space.free, idx)},
                                       distributions=self.dists, value=value, user_attrs=attrs))
        if not trials:
            return
        if self._fast:
            self._bulk_insert(trials)
        else:  # other storages: one trial at a time (slot numbers keep a partial generation unambiguous)
            self.study.add_trials(trials)

    def _bulk_insert(self, trials) -> None:
        """All trials of a generation in one transaction, with batched INSERTs (Optuna's own
        ``add_trials`` commits each trial and each attribute separately: ~10 ms a trial)."""
        from datetime import datetime

        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
        from optuna.trial import TrialState

        sid = self.study._study_id
        now = datetime.now()
        with _create_scoped_session(self.storage.scoped_session) as session:
            models.StudyModel.find_or_raise_by_id(sid, session, for_update=True)  # serialises writers
            n0 = session.query(models.TrialModel).filter(models.TrialModel.study_id == sid).count()
            rows = [models.TrialModel(study_id=sid, number=n0 + i, state=TrialState.COMPLETE,
                                      datetime_start=now, datetime_complete=now) for i in range(len(trials))]
            session.add_all(rows)
            session.flush()  # assigns trial ids
            children = []
            for row, tr in zip(rows, trials):
                v, vt = models.TrialValueModel.value_to_stored_repr(tr.value)
                children.append(models.TrialValueModel(trial_id=row.trial_id, objective=0, value=v, value_type=vt))
                for k, val in tr.params.items():
                    d = tr.distributions[k]
                    children.append(models.TrialParamModel(
                        trial_id=row.trial_id, param_name=k, param_value=d.to_internal_repr(val),
                        distribution_json=self._dist_json[k]))
                for k, val in tr.user_attrs.items():
                    children.append(models.TrialUserAttributeModel(trial_id=row.trial_id, key=k,
                                                                   value_json=json.dumps(val)))
            session.add_all(children)

    def finish(self, result: dict) -> None:
        self.study.set_user_attr("fusiontune_result", {"stop_reason": result.get("stop_reason"),
                                                       "evaluations": result.get("evaluations"),
                                                       "best_trial": result.get("best_trial")})


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

    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        return None
    try:
        study = optuna.load_study(study_name=name, storage=url)
    except KeyError:
        return None
    except Exception as exc:
        raise InputError(f"storage {url}: cannot open it as an Optuna storage ({type(exc).__name__})", param="storage") from None
    return study.user_attrs.get("fusiontune")
