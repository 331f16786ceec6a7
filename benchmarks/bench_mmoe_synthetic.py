"""MMoE paper (Ma et al., KDD 2018), synthetic-data section: with (about) the same number of
parameters, does MMoE beat OMoE, and OMoE beat Shared-Bottom, when the two tasks are less
related, and does the MMoE / OMoE gap close when they are the same up to the sinusoids
(correlation 1.0)?  (The paper also reports both MoE models below Shared-Bottom at every
correlation, and Shared-Bottom's final loss varying much more from run to run.)

Set-up, the same for the three models (only the shared part differs):

* data: ``fusiontune.mtl.synthetic.mmoe_synthetic`` (d = 100, m = 10 sinusoids, noise sd 0.1);
  one table and one 60/20/20 train / valid / test split per (correlation, seed), shared by
  the three models (paired comparison); the init seed is the same seed for every model;
* capacity: OMoE / MMoE 8 single-layer experts of 16 units (the paper's set-up); the
  Shared-Bottom's single bottom layer gets the width whose parameter count is closest to
  the mean of OMoE's and MMoE's (the paper: 113 units); towers of 8 units for all;
  the table prints each count and the script refuses a mismatch above 10%;
* budget: the same number of Adam steps for everyone (batch 512, ``--epochs``), learning
  rate ``--lr`` decayed to 0 by a per-step cosine schedule (so every model ends at a small
  step and the last epochs are a real convergence), no weight decay; the weights of the
  epoch with the lowest validation loss are kept (every model is judged the same way);
* metric: test MSE, mean over the two tasks, on targets standardised with the training
  mean / std (1.0 = predicting the mean).

Why 100k rows: with 20k rows (12k to train) the MoE models overfit (train MSE ~0.009 vs
test ~0.025) while a 128-unit Shared-Bottom was still far from converged after 20 epochs,
so the old table measured sample size and training length, not task relatedness.

    python benchmarks/bench_mmoe_synthetic.py                  # 36 fits, 316 s wall on the shared 2-core box
    python benchmarks/bench_mmoe_synthetic.py --seeds 2 --correlations 0.5   # quick look
"""

from __future__ import annotations

import argparse
import time

import numpy as np

D, EXPERTS, EXPERT, TOWER, TASKS = 100, 8, [16], [8], 2


def n_params(model: str, bottom: int = 128) -> int:
    from fusiontune.mtl.models import build_model

    m = build_model(model, D, [], TASKS, bottom=[bottom], experts=EXPERTS, expert=EXPERT, tower=TOWER)
    return sum(p.numel() for p in m.parameters())


def matched_bottom() -> int:
    """Shared-Bottom width whose parameter count is closest to the mean of OMoE's and MMoE's."""
    target = (n_params("omoe") + n_params("mmoe")) / 2
    return min(range(16, 257), key=lambda h: abs(n_params("shared_bottom", h) - target))


def run_one(model: str, table, split, seed: int, args, bottom: int) -> dict:
    from fusiontune.mtl.train import Arrays, TrainConfig, evaluate_losses, fit

    x, y = table
    mk = lambda idx: Arrays(x[idx], np.zeros((len(idx), 0), np.int64), y[idx])  # noqa: E731
    tr, va, te = (mk(i) for i in split)
    cfg = TrainConfig(model=model, task_type="regression", epochs=args.epochs, batch_size=args.batch_size,
                      lr=args.lr, lr_schedule="cosine", seed=seed, patience=0, bottom_hidden=[bottom],
                      experts=EXPERTS, expert_hidden=list(EXPERT), tower_hidden=list(TOWER), threads=1)
    res = fit(cfg, tr, va, [], show_progress=False)
    return {"test": float(np.mean(evaluate_losses(res.model, te, "regression"))),
            "train": float(np.mean(evaluate_losses(res.model, tr, "regression"))),
            "dead": dead_tower_units(res.model, te.x_num),
            "best_epoch": res.best_epoch, "seconds": res.seconds}


def dead_tower_units(model, x: np.ndarray) -> int:
    """Tower hidden ReLUs (of 2 x 8) that are never active on ``x``: a dead unit is lost capacity."""
    import torch

    seen = []
    hook = model.towers.layers[0].register_forward_hook(lambda mod, inp, out: seen.append(out))
    with torch.no_grad():
        model(torch.from_numpy(x), torch.zeros((len(x), 0), dtype=torch.long))
    hook.remove()
    return int((seen[0].amax(0) <= 0).sum())  # (B, tasks, units) -> never positive


def _ms(v) -> str:
    return f"{np.mean(v):.4f} +- {np.std(v):.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1e-2, help="peak Adam learning rate (cosine decay to 0)")
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--correlations", default="0.5,1.0")
    args = ap.parse_args()
    import torch

    from fusiontune.mtl.data import split_rows
    from fusiontune.mtl.synthetic import mmoe_synthetic

    torch.set_num_threads(1)
    models = ["shared_bottom", "omoe", "mmoe"]
    names = {"shared_bottom": "Shared-Bottom", "omoe": "OMoE", "mmoe": "MMoE"}
    bottom = matched_bottom()
    params = {m: n_params(m, bottom) for m in models}
    spread = max(params.values()) / min(params.values()) - 1
    if spread > 0.10:
        raise SystemExit(f"parameter counts differ by {spread:.0%} (> 10%): {params}")
    corrs = [float(c) for c in args.correlations.split(",")]
    t0 = time.perf_counter()
    res: dict[tuple[float, str], list[dict]] = {}
    for c in corrs:
        for s in range(args.seeds):
            df = mmoe_synthetic(args.rows, c, seed=s)
            table = (df[[k for k in df.columns if k.startswith("x")]].to_numpy(np.float32),
                     df[["y1", "y2"]].to_numpy(np.float32))
            split = split_rows(args.rows, (0.2, 0.2), s)
            for m in models:
                r = run_one(m, table, split, s, args, bottom)
                res.setdefault((c, m), []).append(r)
                print(f"  corr={c:.2f} seed={s} {names[m]:13s} test MSE {r['test']:.4f}  train {r['train']:.4f}  "
                      f"dead tower units {r['dead']:>2}/16  best epoch {r['best_epoch']:>2}/{args.epochs}  {r['seconds']:.0f}s",
                      flush=True)
    wall = time.perf_counter() - t0
    test = {k: np.array([r["test"] for r in v]) for k, v in res.items()}
    train = {k: np.array([r["train"] for r in v]) for k, v in res.items()}
    dead = {k: np.array([r["dead"] for r in v]) for k, v in res.items()}

    print(f"\nMMoE synthetic: {args.rows} rows (60/20/20), {args.epochs} epochs x batch {args.batch_size}, "
          f"Adam lr {args.lr:g} cosine->0, {args.seeds} seeds, {len(corrs) * args.seeds * len(models)} fits, "
          f"{wall:.0f}s wall")
    print("parameters: " + ", ".join(f"{names[m]} {params[m]}" for m in models) +
          f"  (Shared-Bottom bottom width {bottom}; 8 experts x 16; towers 8)")
    print("\ntest MSE (standardised targets), mean +- std over seeds [median]")
    head = f"{'corr':>5} | " + " | ".join(f"{names[m]:>28}" for m in models)
    print(head)
    print("-" * len(head))
    for c in corrs:
        print(f"{c:>5.2f} | " + " | ".join(f"{_ms(test[(c, m)]) + f' [{np.median(test[(c, m)]):.4f}]':>28}"
                                           for m in models))
    print("\ntrain MSE (same models), mean +- std: a large train/test gap is overfitting, a high train MSE "
          "under-fitting")
    for c in corrs:
        print(f"{c:>5.2f} | " + " | ".join(f"{_ms(train[(c, m)]):>28}" for m in models))
    print("\ndead tower ReLUs (never active on the test rows, of 2 x 8), mean over seeds [max]")
    for c in corrs:
        print(f"{c:>5.2f} | " + " | ".join(f"{f'{dead[(c, m)].mean():.1f} [{dead[(c, m)].max()}]':>28}"
                                           for m in models))

    print("\npaired ratios per seed (same table, split and init seed): mean +- std of the per-seed ratio "
          "[median], and seeds where the numerator is lower")
    pairs = [("omoe", "shared_bottom"), ("mmoe", "shared_bottom"), ("mmoe", "omoe")]
    head = f"{'corr':>5} | " + " | ".join(f"{names[a] + ' / ' + names[b]:>34}" for a, b in pairs)
    print(head)
    print("-" * len(head))
    for c in corrs:
        cells = []
        for a, b in pairs:
            r = test[(c, a)] / test[(c, b)]
            cells.append(f"{r.mean():.3f} +- {r.std():.3f} [{np.median(r):.3f}] {int((r < 1).sum())}/{len(r)}")
        print(f"{c:>5.2f} | " + " | ".join(f"{x:>34}" for x in cells))


if __name__ == "__main__":
    main()
