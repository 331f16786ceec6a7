"""Speed-up of 2 workers over 1 on one shared run (SQLite storage, this machine).

    python benchmarks/bench_workers.py [--study studies/demo.toml] [--method cem] [--budget 600] [--repeats 3]

Times whole CLI runs, process start included and measured side by side in alternating order:
- ``plain``: one process, the ordinary run (its own run-directory storage);
- ``shared x1``: ``--join`` with one worker, the coordination overhead alone;
- ``shared x2``: ``--workers 2``, two processes on one shared SQLite run.
It checks that all three store the same trials (cem/cma/... are identical whatever the number of
workers) and prints median wall times and the ratios.

Last measured (``--repeats 2``; AMD EPYC, 2 cores, shared with five other engineers' jobs, load
average 11.5; process start included):

    plain      median   62.3 s   (80.2, 44.3)
    shared x1  median   74.3 s   (99.6, 48.9)
    shared x2  median   67.8 s   (85.3, 50.4)
    speed-up 2 workers over 1 shared worker: 1.09x; over the plain run: 0.92x

On 2 cores the kernel already uses both, so a second local worker buys little; see
docs/parallel.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str]) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "fusiontune", "search", *args], capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{r.stderr}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default=str(ROOT / "studies" / "demo.toml"))
    ap.add_argument("--method", default="cem")
    ap.add_argument("--budget", type=int, default=600)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    base = ["--study", a.study, "--method", a.method, "--budget", str(a.budget), "--quiet"]
    times: dict[str, list[float]] = {"plain": [], "shared x1": [], "shared x2": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for r in range(a.repeats):
            order = list(times) if r % 2 == 0 else list(reversed(list(times)))
            for kind in order:
                tag = kind.replace(" ", "")
                out = tmp / f"{tag}-{r}"
                if kind == "plain":
                    args = [*base, "--out", str(out)]
                else:
                    url = f"sqlite:///{tmp / (tag + f'-{r}.db')}"
                    args = [*base, "--out", str(out), "--storage", url, "--join"]
                    if kind == "shared x2":
                        args += ["--workers", "2"]
                times[kind].append(run(args))
                print(f"  repeat {r} {kind:10s} {times[kind][-1]:6.1f} s", flush=True)
        ref = pd.read_csv(tmp / "plain-0" / "trials.csv")
        for kind in ("sharedx1", "sharedx2"):
            for r in range(a.repeats):
                pd.testing.assert_frame_equal(pd.read_csv(tmp / f"{kind}-{r}" / "trials.csv"), ref)
    cpu = next((line.split(":", 1)[1].strip() for line in
                subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
                if line.startswith("Model name")), "?")
    print(f"\n{a.method}, budget {a.budget}, {Path(a.study).name}; CPU {cpu}, {os.cpu_count()} cores; "
          f"load average {os.getloadavg()[0]:.1f} (the machine is shared)")
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"  {k:10s} median {v:6.1f} s   ({', '.join(f'{t:.1f}' for t in times[k])})")
    print(f"  speed-up 2 workers over 1 shared worker: {med['shared x1'] / med['shared x2']:.2f}x; "
          f"over the plain run: {med['plain'] / med['shared x2']:.2f}x")
    print("  all runs stored identical trials")


if __name__ == "__main__":
    main()
