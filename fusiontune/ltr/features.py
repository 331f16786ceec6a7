"""The fuser's inputs: the task scores (as probabilities) plus optional numeric context columns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from ..errors import InputError
from ..log import PredictionLog

__all__ = ["FeatureSpec", "context_matrix"]


@dataclass
class FeatureSpec:
    tasks: list[str]
    scores: list[str]  # score column of each task
    scales: list[str]  # "prob" | "logit" (logits are turned into probabilities at load)
    signs: list[int]  # +1 positive task, -1 negative task (monotone decreasing)
    context: list[str] = field(default_factory=list)  # numeric context columns (unconstrained)

    @classmethod
    def from_study(cls, study, context: list[str]) -> "FeatureSpec":
        return cls([t.name for t in study.tasks], [t.score for t in study.tasks],
                   [t.score_scale for t in study.tasks], [int(t.sign) for t in study.tasks], list(context))

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureSpec":
        return cls(list(d["tasks"]), list(d["scores"]), list(d["scales"]), [int(s) for s in d["signs"]],
                   list(d.get("context", [])))

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def names(self) -> list[str]:
        """Feature names (score columns, then context columns), as importances are keyed."""
        return self.scores + self.context

    @property
    def k(self) -> int:
        return len(self.tasks)

    def monotone(self, on: bool) -> list[int]:
        """+1 / -1 per task score, 0 per context column (all 0 when ``on`` is false)."""
        return ([int(s) for s in self.signs] if on else [0] * self.k) + [0] * len(self.context)

    def matrix(self, log: PredictionLog) -> np.ndarray:
        """(N, K + C) float64: task probabilities, then context columns (NaN where missing)."""
        x = np.empty((log.n, self.k + len(self.context)))
        x[:, :self.k] = log.scores
        if self.context:
            x[:, self.k:] = context_matrix(log, self.context)
        return x


def context_matrix(log: PredictionLog, columns: list[str]) -> np.ndarray:
    """Context columns of ``log.extra`` as float64 (N, C); a non-numeric value is an InputError."""
    out = np.empty((log.n, len(columns)))
    for j, c in enumerate(columns):
        if c not in log.extra:
            raise InputError(f"{log.source}: missing column {c!r} ([ltr] features)")
        raw = log.extra[c]
        if raw.dtype.kind in "iufb":
            v = raw.astype(np.float64)
        else:
            ser = pd.Series(raw)
            num = pd.to_numeric(ser, errors="coerce")
            bad = num.isna() & ser.notna()
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                raise InputError(f"{log.source}: column {c!r} ([ltr] features) must be numeric: "
                                 f"row {i + 1} has {ser.iloc[i]!r}")
            v = num.to_numpy(dtype=np.float64)
        if np.isinf(v).any():
            i = int(np.flatnonzero(np.isinf(v))[0])
            raise InputError(f"{log.source}: column {c!r} ([ltr] features) must be finite: row {i + 1} has {v[i]!r}")
        out[:, j] = v
    return out
