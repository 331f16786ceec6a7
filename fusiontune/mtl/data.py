"""Training tables -> arrays (numpy only; torch tensors are made in ``train``).

* numeric features: float, standardised with the mean / std of the *training* rows;
  missing values (NaN) become 0 after standardisation (the training mean);
* categorical features: each value seen in the training rows gets an index 1..V, index 0
  is the shared bucket for missing values and values never seen in training (OOV), so the
  validation / test rows and a later scoring table never fail on a new value;
* labels: one column per task, float32 with NaN = not observed (masked out of that task's
  loss).  Binary tasks must be 0, 1 or empty; regression tasks any finite number or empty.

All validation raises :class:`~fusiontune.errors.InputError` naming the file, the column
and an offending value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError

__all__ = ["Encoder", "TrainTable", "load_table", "split_rows"]


@dataclass
class Encoder:
    """Fitted feature transform: ``transform(df) -> (x_num (N, F) float32, x_cat (N, C) int64)``."""

    numeric: list[str]
    categorical: list[str]
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    std: np.ndarray = field(default_factory=lambda: np.ones(0))
    vocab: list[dict] = field(default_factory=list)

    @classmethod
    def fit(cls, df: pd.DataFrame, numeric: list[str], categorical: list[str]) -> "Encoder":
        enc = cls(list(numeric), list(categorical))
        if numeric:
            x = df[numeric].to_numpy(np.float64)
            enc.mean = np.nan_to_num(np.nanmean(x, axis=0)) if len(x) else np.zeros(len(numeric))
            std = np.nanstd(x, axis=0) if len(x) else np.ones(len(numeric))
            enc.std = np.where(np.isfinite(std) & (std > 1e-12), std, 1.0)
        else:
            enc.mean, enc.std = np.zeros(0), np.ones(0)
        for c in categorical:
            values = pd.unique(_cat_values(df[c]).dropna())
            enc.vocab.append({v: i + 1 for i, v in enumerate(sorted(values, key=str))})
        return enc

    @property
    def cardinalities(self) -> list[int]:
        """Embedding table sizes: vocabulary + the OOV / missing bucket 0."""
        return [len(v) + 1 for v in self.vocab]

    def transform(self, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        n = len(df)
        if self.numeric:
            x = (df[self.numeric].to_numpy(np.float64) - self.mean) / self.std
            x_num = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
        else:
            x_num = np.zeros((n, 0), np.float32)
        x_cat = np.zeros((n, len(self.categorical)), np.int64)
        for j, (c, voc) in enumerate(zip(self.categorical, self.vocab)):
            x_cat[:, j] = _cat_values(df[c]).map(voc).fillna(0).to_numpy(np.int64)
        return x_num, x_cat


def _cat_values(s: pd.Series) -> pd.Series:
    """Categorical values as comparable keys (numbers stay numbers, 3.0 == 3)."""
    if pd.api.types.is_float_dtype(s):
        r = s.round()
        if ((r == s) | s.isna()).all():
            return r.astype("Int64").astype(object).where(s.notna(), None)
    return s.astype(object).where(s.notna(), None)


@dataclass
class TrainTable:
    """A validated training table: raw frame plus the label matrix."""

    path: Path
    frame: pd.DataFrame
    tasks: list[str]
    labels: np.ndarray  # (N, K) float32, NaN = not observed
    group: str | None = None

    @property
    def n(self) -> int:
        return len(self.frame)


def load_table(path, features: list[str], categorical: list[str], tasks: list[str], *,
               task_type: str = "binary", group: str | None = None,
               pass_through: list[str] | None = None) -> TrainTable:
    """Read a CSV / Parquet training table and validate its columns."""
    from ..log import read_table

    path = Path(path)
    if not tasks:
        raise InputError(f"{path}: no tasks given (tasks, e.g. ['click', 'like'])", param="tasks")
    if not features and not categorical:
        raise InputError(f"{path}: no feature columns given (features, e.g. ['age', 'price'], categorical, e.g. ['city'])", param="features")
    seen: dict[str, str] = {}
    for role, cols in (("feature", features), ("categorical feature", categorical), ("task label", tasks)):
        for c in cols:
            if c in seen:
                raise InputError(f"{path}: column {c!r} is given both as {seen[c]} and as {role}")
            seen[c] = role
    cols = list(dict.fromkeys([*features, *categorical, *tasks, *([group] if group else []),
                               *(pass_through or [])]))
    df = read_table(path, cols).to_pandas()
    for c in features:
        if not pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c]):
            num = pd.to_numeric(df[c], errors="coerce") if not pd.api.types.is_bool_dtype(df[c]) else None
            if num is None:
                df[c] = df[c].astype(np.float64)
                continue
            bad = num.isna() & df[c].notna()
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                raise InputError(f"{path}: numeric feature column {c!r} is not numeric: row {i + 1} has "
                                 f"{df[c].iloc[i]!r} (list it under categorical instead)", param="categorical")
            df[c] = num
    labels = np.empty((len(df), len(tasks)), np.float32)
    for j, t in enumerate(tasks):
        lab = pd.to_numeric(df[t], errors="coerce").to_numpy(np.float64)
        bad = np.isnan(lab) & df[t].notna().to_numpy()
        if task_type == "binary":
            bad |= ~np.isnan(lab) & (lab != 0) & (lab != 1)
        else:
            bad |= np.isinf(lab)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            want = "0, 1 or empty" if task_type == "binary" else "a finite number or empty"
            raise InputError(f"{path}: label column {t!r} must be {want}: row {i + 1} has {df[t].iloc[i]!r}")
        if np.isnan(lab).all():
            raise InputError(f"{path}: label column {t!r} has no observed value")
        if task_type == "binary" and not ((lab == 1).any() and (lab == 0).any()):
            raise InputError(f"{path}: label column {t!r} needs both 0 and 1 rows "
                             f"(has only {'0' if (lab == 0).any() else '1'})")
        labels[:, j] = lab
    if group and df[group].isna().any():
        i = int(np.flatnonzero(df[group].isna().to_numpy())[0])
        raise InputError(f"{path}: group column {group!r} is empty at row {i + 1}")
    return TrainTable(path, df, list(tasks), labels, group)


def split_rows(n: int, fractions: tuple[float, float], seed: int = 0,
               groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices ``(train, valid, test)``.  ``fractions = (valid, test)``.

    With ``groups`` (raw group ids) whole groups go to one part, chosen by a seeded hash of
    the id, so a request never straddles train and test; otherwise rows are shuffled.
    """
    valid, test = fractions
    if not (0 <= valid < 1 and 0 < test < 1 and valid + test < 1):
        raise InputError(f"split: need 0 <= valid < 1, 0 < test < 1 and valid + test < 1, "
                         f"got valid={valid!r}, test={test!r}")
    if groups is not None:
        raw = groups if groups.dtype != object else groups.astype(str)
        h = pd.util.hash_array(np.asarray(raw))
        h = pd.util.hash_array(h ^ np.uint64((seed * 0x9E3779B97F4A7C15 + 7) % 2**64))
        u = (h >> np.uint64(11)).astype(np.float64) / float(2 ** 53)
    else:
        u = np.random.default_rng(seed).random(n)
    is_test = u < test
    is_valid = ~is_test & (u < test + valid)
    is_train = ~is_test & ~is_valid
    parts = tuple(np.flatnonzero(m) for m in (is_train, is_valid, is_test))
    for name, idx in zip(("train", "valid", "test"), parts):
        if name == "valid" and valid == 0:
            continue
        if idx.size == 0:
            raise InputError(f"split: the {name} part is empty ({n} rows"
                             f"{', too few groups' if groups is not None else ''}); use more rows")
    return parts
