"""Multi-task models that produce prediction logs (``fusiontune train``).

The loop this package closes::

    features + labels  ->  Shared-Bottom / OMoE / MMoE / PLE / ESMM  ->  prediction log
                       ->  ``fusiontune search`` (the core)

Modules
-------
``synthetic``  numpy-only generators: the MMoE paper's two-task data with controlled task
               correlation, and a small feed table with numeric and categorical features.
``data``       table -> arrays: numeric columns standardised, categorical ones indexed with
               an out-of-vocabulary bucket, labels with NaN = not observed; splits.
``models``     the PyTorch models (experts, gates and towers as batched tensor ops).
``balance``    loss balancers (fixed, uncertainty, GradNorm, DWA) and PCGrad.
``train``      the training loop, prediction, the log / metrics / study writers.

Only ``synthetic`` and ``data`` are importable without torch; ``models``, ``balance`` and
``train`` import torch at module level and are imported lazily by the ``train`` command,
so ``fusiontune --help`` and ``fusiontune search`` never pay torch's import time.
"""
