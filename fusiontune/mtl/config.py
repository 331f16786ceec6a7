"""``fusiontune train``'s settings, declared once: the ``[train]`` table, the command's
options and :func:`fusiontune.mtl.train.fit` all read these two classes.

:class:`TrainConfig` is the model and optimiser (what :func:`~fusiontune.mtl.train.fit`
takes); :class:`TrainData` is the data side (which table, which columns, which split, where
the log goes).  The ``[train]`` table of a spec or study holds the keys of both; every key is
also a command-line option (``weight_decay`` -> ``--weight-decay``).  Adding a setting is one
line here.  This module does not import torch.

Examples
--------
>>> from fusiontune.mtl.config import TrainConfig
>>> TrainConfig(model="ple", epochs=3, weight_decay=1e-4, lr_schedule="cosine").lr_schedule
'cosine'
"""

from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from ..schema import Floats, Names, Sizes

__all__ = ["TrainConfig", "TrainData", "TrainSpec", "MODELS", "BALANCERS"]

MODELS = ("shared_bottom", "omoe", "mmoe", "ple", "cgc", "esmm")
BALANCERS = ("fixed", "uncertainty", "gradnorm", "dwa")

_STRICT = ConfigDict(extra="forbid", strict=True)
_LAX_PATH = Field(strict=False)


@dataclass(config=_STRICT)
class TrainConfig:
    """Model, loss balancing and optimiser of a multi-task training run."""

    model: Literal["shared_bottom", "omoe", "mmoe", "ple", "cgc", "esmm"] = Field(
        "mmoe", description="shared_bottom | omoe | mmoe | ple | cgc (= ple with 1 level) | esmm")
    task_type: Literal["binary", "regression"] = Field("binary", description="binary (BCE, AUC) or regression (MSE)")
    balance: Literal["fixed", "uncertainty", "gradnorm", "dwa"] = Field("fixed", description="loss balancing")
    weights: Floats | None = Field(None, description="fixed task weights, one per task (default 1 each)")
    pcgrad: bool = Field(False, description="project conflicting task gradients (PCGrad)")
    epochs: int = Field(5, ge=1, description="training epochs")
    batch_size: int = Field(512, ge=1, description="mini-batch rows")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    weight_decay: float = Field(0.0, ge=0, description="Adam weight decay of the network (not the balancer)")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="constant, or cosine (per step, from lr down to 0 at the last epoch)")
    seed: int = Field(0, description="seed of the split, the initialisation and the batches")
    patience: int = Field(2, ge=0, description="early-stopping epochs on the validation loss (0: off)")
    emb_dim: int = Field(8, ge=1, description="embedding size of categorical features")
    bottom_hidden: Sizes = Field(default_factory=lambda: [128, 64], description="shared-bottom layer sizes")
    experts: int = Field(4, ge=1, description="experts of OMoE/MMoE")
    expert_hidden: Sizes = Field(default_factory=lambda: [64, 32], description="expert layer sizes")
    tower_hidden: Sizes = Field(default_factory=lambda: [32], description="tower hidden sizes")
    levels: int = Field(1, ge=1, description="PLE extraction levels (1 = CGC)")
    specific_experts: int = Field(1, ge=1, description="PLE experts per task")
    shared_experts: int = Field(2, ge=1, description="PLE shared experts")
    esmm_score: Literal["cvr", "ctcvr"] = Field(
        "cvr", description="ESMM: the conversion task's logged score (cvr = pCTCVR / pCTR)")
    gradnorm_alpha: float = Field(1.5, ge=0, description="GradNorm restoring force")
    dwa_temperature: float = Field(2.0, gt=0, description="DWA softmax temperature")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default 1: small nets, shared cores)")


@dataclass(config=_STRICT)
class TrainData:
    """Which table to train on, which columns, how to split it and where the log goes."""

    data: Path = Field(strict=False, description="training table (.csv or .parquet)")
    tasks: Names = Field(description="label columns, one per task (0/1, empty = not observed)")
    out: Path = Field(strict=False, description="prediction log to write (.parquet or .csv)")
    features: Names = Field(default_factory=list, description="numeric feature columns")
    categorical: Names = Field(default_factory=list, description="categorical feature columns (embedded)")
    group: str | None = Field(None, description="group column (request id): split by group, GAUC in the study")
    time: str | None = Field(None, description="time column: passed through, and the study's time split")
    pass_through: Names = Field(default_factory=list, description="more columns copied to the log")
    valid_fraction: float = Field(0.2, ge=0, lt=1, description="validation share")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="test share (the logged part)")
    study_out: Path | None = Field(None, strict=False, description="also write a ready study TOML for the log")


@dataclass(config=_STRICT)
class TrainSpec(TrainData):
    """A whole training run: :class:`TrainData` plus its :class:`TrainConfig`."""

    config: TrainConfig = field(default_factory=TrainConfig)
