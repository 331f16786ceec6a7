"""MMoE paper (Ma et al., KDD 2018), section 3: on its synthetic data, does MMoE beat OMoE,
and OMoE beat Shared-Bottom, when the two tasks are less related, while all three are
close when the tasks are the same up to the sinusoids (correlation 1.0)?

Each (correlation, seed) draws one table (`fusiontune.mtl.synthetic.mmoe_synthetic`,
d = 100, m = 10 sinusoids) and trains the three models side by side on the same
train / valid / test split with the regression (MSE) loss; the table reports the test MSE
(mean of the two tasks, on targets standardised with the training mean / std, so 1.0 is
"predicts the mean") as mean +- std over seeds, and the ratio to Shared-Bottom.

Capacities follow the paper's spirit (similar parameter counts): Shared-Bottom one
hidden layer of 128 units; OMoE / MMoE 8 experts of 16 units; towers of 8 units.

    python benchmarks/bench_mmoe_synthetic.py            # 45 fits, ~3-4 CPU minutes on 1 thread
    python benchmarks/bench_mmoe_synthetic.py --seeds 3 --epochs 15 --correlations 0.5,1.0
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def run_one(model: str, correlation: float, seed: int, rows: int, epochs: int, expert=(16,),
            bottom=(128,)) -> tuple[float, int]:
    from fusiontune.mtl.data import split_rows
    from fusiontune.mtl.synthetic import mmoe_synthetic
    from fusiontune.mtl.train import Arrays, TrainConfig, evaluate_losses, fit

    df = mmoe_synthetic(rows, correlation, seed=seed)
    x = df[[c for c in df.columns if c.startswith("x")]].to_numpy(np.float32)
    y = df[["y1", "y2"]].to_numpy(np.float32)
    tr, va, te = split_rows(rows, (0.2, 0.2), seed)
    mk = lambda idx: Arrays(x[idx], np.zeros((len(idx), 0), np.int64), y[idx])  # noqa: E731
    cfg = TrainConfig(model=model, task_type="regression", epochs=epochs, batch_size=128, lr=2e-3,
                      seed=seed, patience=0, bottom_hidden=list(bottom), experts=8, expert_hidden=list(expert),
                      tower_hidden=[8], threads=1)
    res = fit(cfg, mk(tr), mk(va), [], show_progress=False)
    test = evaluate_losses(res.model, mk(te), "regression")
    return float(np.mean(test)), sum(p.numel() for p in res.model.parameters())


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--correlations", default="0.5,0.9,1.0")
    ap.add_argument("--models", default="shared_bottom,omoe,mmoe")
    ap.add_argument("--expert", default="16", help="layer sizes of each of the 8 experts")
    ap.add_argument("--bottom", default="128", help="layer sizes of the shared bottom")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    models = args.models.split(",")
    corrs = [float(c) for c in args.correlations.split(",")]
    t0 = time.perf_counter()
    res: dict[tuple[float, str], list[float]] = {}
    params = {}
    for c in corrs:
        for s in range(args.seeds):
            for m in models:
                loss, n_params = run_one(m, c, s, args.rows, args.epochs, _ints(args.expert), _ints(args.bottom))
                res.setdefault((c, m), []).append(loss)
                params[m] = n_params
                print(f"  corr={c:.2f} seed={s} {m:14s} test MSE {loss:.4f}", flush=True)
    print(f"\nMMoE synthetic: {args.rows} rows (60/20/20 split), {args.epochs} epochs, {args.seeds} seeds, "
          f"{time.perf_counter() - t0:.0f}s")
    print("parameters: " + ", ".join(f"{m} {params[m]}" for m in models))
    head = f"{'correlation':>11} | " + " | ".join(f"{m:>17}" for m in models) + " | " + \
        " | ".join(f"{m}/SB" for m in models[1:])
    print(head)
    print("-" * len(head))
    for c in corrs:
        sb = np.mean(res[(c, models[0])])
        cells = [f"{np.mean(res[(c, m)]):.4f} +- {np.std(res[(c, m)]):.4f}" for m in models]
        ratios = [f"{np.mean(res[(c, m)]) / sb:.3f}".rjust(len(m) + 3) for m in models[1:]]
        print(f"{c:>11.2f} | " + " | ".join(f"{x:>17}" for x in cells) + " | " + " | ".join(ratios))
    if "omoe" in models and "mmoe" in models:
        print("\npaired per seed (same table, same split): MMoE test MSE / OMoE test MSE, and seeds where MMoE wins")
        for c in corrs:
            r = np.array(res[(c, "mmoe")]) / np.array(res[(c, "omoe")])
            print(f"  correlation {c:.2f}: {r.mean():.3f} +- {r.std():.3f}   MMoE better in "
                  f"{int((r < 1).sum())}/{len(r)} seeds")


if __name__ == "__main__":
    main()
