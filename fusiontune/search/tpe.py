"""Bayesian optimisation with Optuna's TPE sampler (``--method tpe``).

``optuna.samplers.TPESampler`` with the seed; each generation asks ``population`` trials
(evaluated in one kernel call).  The first trial is the online baseline.  Options
(``[search.tpe]``): ``n_startup_trials`` (random trials before TPE kicks in),
``n_ei_candidates``, ``multivariate`` (model the parameters jointly: the fusion weights
interact, so on by default) and ``constant_liar`` (treat the pending trials of a batch
as bad, so one batch does not pile up on one spot), ``batch`` (trials per kernel call;
0 = the run's population).
"""

from __future__ import annotations

from .optuna_base import OptunaSearcher


class TPE(OptunaSearcher):
    name = "tpe"
    defaults = {"batch": 0, "n_startup_trials": 10, "n_ei_candidates": 24, "multivariate": True, "constant_liar": True}

    def make_sampler(self):
        from optuna.samplers import TPESampler

        for key in ("multivariate", "constant_liar"):
            if not isinstance(self.opts[key], bool):
                from ..errors import InputError

                raise InputError(f"[search.tpe] {key} must be true or false, got {self.opts[key]!r}")
        return TPESampler(seed=self.seed, n_startup_trials=int(self._opt("n_startup_trials", 0)),
                          n_ei_candidates=int(self._opt("n_ei_candidates", 1)),
                          multivariate=self.opts["multivariate"], constant_liar=self.opts["constant_liar"])
