"""Gaussian-process Bayesian optimisation with Optuna's GP sampler (``--method gp``).

``optuna.samplers.GPSampler`` (it imports torch lazily, on its first model fit, so this
module costs nothing until a gp run starts).  Each generation asks ``batch`` trials
and scores them in one kernel call; the first trial is the online baseline.  Options
(``[search.gp]``): ``n_startup_trials`` (random trials before the GP is fitted) and
``deterministic_objective`` (the objective is an exact function of the weights, so the
GP fits no noise term by default) and ``batch``: trials asked per kernel call, 4 by
default rather than the population, because Optuna's batch acquisition (qLogEI over the
pending trials) costs more with every pending trial (measured on 2 busy cores, ~100
trials: batch 32 ~1 s of sampling per trial, 8 ~0.6 s, 4 ~0.5 s, 1 ~0.3 s).  Sampling, not
the metric kernel, is GP's cost: ~0.3-1 s per trial against ~0.04 s of kernel per
candidate on a 1M-row log.  GP fitting grows with the number of trials: it suits
budgets of a few hundred.
"""

from __future__ import annotations

from .optuna_base import OptunaSearcher


class GP(OptunaSearcher):
    name = "gp"
    defaults = {"batch": 4, "n_startup_trials": 10, "deterministic_objective": True}

    def make_sampler(self):
        import importlib.util

        from optuna.samplers import GPSampler

        if importlib.util.find_spec("torch") is None:
            from ..errors import missing_dependency

            raise missing_dependency("torch", "method 'gp' (Optuna's GP sampler)",
                                     "pip install 'torch==2.13.0' (or the 'gp' extra of fusiontune)")

        if not isinstance(self.opts["deterministic_objective"], bool):
            from ..errors import InputError

            raise InputError(f"[search.gp] deterministic_objective must be true or false, "
                             f"got {self.opts['deterministic_objective']!r}")
        return GPSampler(seed=self.seed, n_startup_trials=int(self._opt("n_startup_trials", 0)),
                         deterministic_objective=self.opts["deterministic_objective"])
