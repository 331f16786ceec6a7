"""Learn-to-rank fusers: GBDT and DNN over the task scores, judged by the study objective.

Public surface::

    run_ltr(prep, model, target="combined", seed=0, options=None) -> result.json dict
    fit_ltr(prep, model, target, seed, options) -> (result, trials, Fuser)
    save_fuser(fuser, folder) / load_fuser(folder) -> Fuser;  Fuser.predict(log) -> (N,)

Nothing here imports torch or LightGBM at import time.
"""

from .fit import Fuser, fit_ltr, fused_metrics, run_ltr
from .io import load_fuser, save_fuser

__all__ = ["run_ltr", "fit_ltr", "Fuser", "save_fuser", "load_fuser", "fused_metrics"]
