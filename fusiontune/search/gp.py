"""Gaussian-process Bayesian optimisation with Optuna's GP sampler (``--method gp``).

``optuna.samplers.GPSampler`` (it imports torch lazily, on its first model fit, so this
module costs nothing until a gp run starts).  The first trial is the online baseline.

A plain GPSampler refits its GP on every trial of the study and, for every trial it
proposes, optimises the acquisition function from 2048 quasi-random starts plus 10 local
searches; the later trials of a batch see the earlier ones as pending, through a Monte-Carlo
qLogEI.  Sampling, not the metric kernel, is then the whole cost of a gp run (~1-1.8 s per
trial against milliseconds of kernel), and it grows with the number of trials.  The options
below bound it (``benchmarks/bench_gp.py`` measures them against the plain GPSampler):

- ``window`` (default 48): each batch's GP is fitted on at most this many trials, the best
  half (feasible ones by objective, then infeasible ones by guardrail violation) and the most
  recent rest: local where it matters, fresh where the search just went, and as cheap at
  trial 500 as at trial 50.  0 = every trial.
- ``batch`` (default 4): trials asked per kernel call; the later ones of a batch see the
  earlier ones as pending (Optuna's Monte-Carlo qLogEI), so a batch spreads out.
  ``constant_liar = true`` instead tells each point of a batch to the model as the worst value
  in the window before the next one is asked: one analytic LogEI per point, cheaper, but on a
  guardrailed test study it explored the infeasible side less (it never crossed a click
  guardrail that the pending-trial batches did cross), so it is off by default.
- ``acq_samples`` (default 512) and ``acq_local_searches`` (default 5): the acquisition
  optimiser's quasi-random starts and local searches (Optuna's 2048 and 10).  These are
  GPSampler attributes that Optuna does not document; an Optuna without them keeps its own
  values (``tests/test_workers.py`` checks they exist on the Optuna we test with).  0 =
  Optuna's value.
- ``torch_threads`` (default 1): torch threads while sampling.  The GP's tensors are tiny,
  and on a busy machine two threads cost more in synchronisation than they save (measured
  0.2-0.4 s per trial with one thread against 0.55-0.9 s with two).  0 = torch's default.

With ``window = 0``, ``constant_liar = false``, ``acq_* = 0`` and ``torch_threads = 0`` the
method is Optuna's GPSampler as it comes.  Options also: ``n_startup_trials`` (random trials
before the GP is fitted), ``deterministic_objective`` (the objective is an exact function of
the weights, so the GP fits no noise term).
"""

from __future__ import annotations

import numpy as np

from .optuna_base import OptunaSearcher

#: GPSampler attributes (not documented by Optuna) that the acq_* options set
ACQ_ATTRS = {"acq_samples": "_n_preliminary_samples", "acq_local_searches": "_n_local_search"}


class GP(OptunaSearcher):
    name = "gp"
    defaults = {"batch": 4, "n_startup_trials": 10, "deterministic_objective": True, "window": 48,
                "acq_samples": 512, "acq_local_searches": 5, "constant_liar": False, "torch_threads": 1}

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
        self.window = int(self._opt("window", 0))
        if 0 < self.window < 4:
            from ..errors import InputError

            raise InputError(f"[search.gp] window must be 0 (every trial) or >= 4, got {self.opts['window']!r}")
        if not isinstance(self.opts["constant_liar"], bool):
            from ..errors import InputError

            raise InputError(f"[search.gp] constant_liar must be true or false, got {self.opts['constant_liar']!r}")
        self.liar = self.opts["constant_liar"]
        self._n_startup = int(self._opt("n_startup_trials", 0))
        sampler = GPSampler(seed=self.seed, n_startup_trials=int(self._opt("n_startup_trials", 0)),
                            deterministic_objective=self.opts["deterministic_objective"])
        for key, attr in ACQ_ATTRS.items():
            v = int(self._opt(key, 0))
            if v > 0 and hasattr(sampler, attr):
                setattr(sampler, attr, v)
        self._sampler = sampler
        return sampler

    # -- bounded window ------------------------------------------------------------------
    def _window_trials(self, trials: list) -> list:
        w = self.window
        if w <= 0 or len(trials) <= w:
            return trials

        def rank(t):
            c = t.constraints.get("guardrails", 0.0) if self.constrained else 0.0
            return (1, c) if c > 0 else (0, -t.value)

        keep = {t.number for t in sorted(trials, key=rank)[: w // 2]}
        for t in reversed(trials):
            if len(keep) >= w:
                break
            keep.add(t.number)
        return [t for t in trials if t.number in keep]

    def propose(self) -> np.ndarray:
        threads = int(self._opt("torch_threads", 0))
        if threads <= 0:
            return self._propose()
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return self._propose()
        finally:
            torch.set_num_threads(before)

    def _propose(self) -> np.ndarray:
        import warnings

        import optuna
        from optuna.trial import TrialState

        if self.window <= 0 and not self.liar:
            return super().propose()  # Optuna's GPSampler as it comes
        full = self.study  # the whole history (built on first use)
        done = full.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(done) < self._n_startup:
            return super().propose()  # random start-up trials: nothing to fit yet
        n = self.batch
        if self.budget is not None:
            n = max(1, min(n, self.budget - self._told))
        window = self._window_trials(done)
        liar = min(t.value for t in window) if window else 0.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ws = optuna.create_study(direction="maximize", sampler=self._sampler)
            ws.add_trials(window)
            if self._enqueue_baseline:
                ws.enqueue_trial({k: float(v) for k, v in zip(self.names, self.baseline)})
                if not np.allclose(self.x0, self.baseline):  # a warm start: its point comes second
                    ws.enqueue_trial({k: float(v) for k, v in zip(self.names, self.x0)})
                self._enqueue_baseline = False
            asked = []
            for i in range(n):
                t = ws.ask(self.dists)
                asked.append(t.params)
                if self.liar and i < n - 1:
                    # constant liar: the point just asked is told as the worst value seen, so the
                    # next ask of the batch goes elsewhere (one analytic LogEI per point instead of
                    # a Monte-Carlo qLogEI over the pending points)
                    if self.constrained:
                        t.set_constraint("guardrails", 0.0)
                    ws.tell(t, liar)
        self._windowed = True  # told into the full history by update()
        self._pending = []
        return np.array([[p[k] for k in self.names] for p in asked], dtype=np.float64)

    def update(self, x: np.ndarray, values: np.ndarray, violation: np.ndarray | None = None) -> None:
        if not getattr(self, "_windowed", False):
            return super().update(x, values, violation)
        import warnings

        from optuna.trial import create_trial

        self._windowed = False
        values = np.asarray(values, dtype=np.float64)
        viol = np.zeros(len(values)) if violation is None else np.asarray(violation, dtype=np.float64)
        trials = [create_trial(params={k: float(v) for k, v in zip(self.names, row)}, distributions=self.dists,
                               value=float(val), constraints={"guardrails": float(c)} if self.constrained else None)
                  for row, val, c in zip(np.atleast_2d(x), values, viol)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.study.add_trials(trials)
        self._told += len(values)
