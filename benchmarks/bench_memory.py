"""Whole-process peak memory of a search against the compact in-memory log (issues #10 item 4, #14 item 2).

    python benchmarks/bench_memory.py [--rows 5000000 20000000] [--splits time none] [--budget 64]

For each size a demo-like log (4 tasks: click and finish GAUC, like and convert AUC; 20
candidates per request; multiplicative fusion) is written ONCE as a Hive-partitioned Parquet
dataset by ``fusiontune simulate --partition-by day`` (cached under ``--data``).  Then, for each
split, a FRESH process runs the real command

    fusiontune search --study S --budget B --out DIR --quiet

(load, prepare, the search with its Optuna storage, the holdout evaluation and writing
result.json / trials.csv) and reports, from ``/proc/self/status``:

* the peak of each phase: load + prepare (imports included), the search (holdout scoring
  included), writing the results (``VmHWM``, reset through ``/proc/self/clear_refs`` between
  phases) and the process's peak, the largest of the three (not ``ru_maxrss``, which Linux
  carries over from the parent process into a child);
* the compact log the search holds: ``PredictionLog.nbytes`` summed over the parts (float32
  scores, one uint8 label code per task, int32 group codes: 24 bytes a row for 4 tasks; the
  time column and group hash are read only when the split needs them and dropped after it).

The FIXED cost is the process peak of the same command on a 2,000-row log of the same shape
(interpreter, numpy / pandas / pyarrow / numba imports, numba's compiled kernels, Optuna's
storage): it does not grow with the log.  Target: process peak - fixed <= 2.5x the compact
log, for every size and split.  With two sizes it also prints the slope (peak bytes per
added row against the log's bytes per row), which no fixed cost enters.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model, loadavg  # noqa: E402  (benchmarks/machine.py)

SPLITS = {
    "time": '[split]\nby = "time"\nholdout = 0.3\n',  # the demo study's: the last 30% of the time range
    "group": '[split]\nby = "group"\nholdout = 0.3\n',
    "none": "",
}

MEASURE = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
def reset_peak():  # Linux >= 4.0: VmHWM starts again from the current RSS
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
import fusiontune.pipeline as P
from fusiontune.cli import main
out = {"imports": status("VmRSS")}
real_prepare, real_search = P.prepare, P.search
def prepare(*a, **k):
    t0 = time.perf_counter()
    prep = real_prepare(*a, **k)
    out.update(t_prepare=time.perf_counter() - t0, peak_prepare=status("VmHWM"), held=status("VmRSS"),
               rows=getattr(prep, "n_rows", None) or prep.log.n, compact=sum(p.nbytes for p in (prep.search_log, prep.select_log, prep.holdout_log)
                                             if p is not None))
    reset_peak()
    return prep
def search(*a, **k):
    t0 = time.perf_counter()
    res = real_search(*a, **k)
    out.update(t_search=time.perf_counter() - t0, peak_search=status("VmHWM"))
    reset_peak()
    return res
P.prepare, P.search = prepare, search
rc = main(sys.argv[2:])
out.update(rc=rc, peak_write=status("VmHWM"))
out["peak"] = max(out.get("peak_prepare", 0), out.get("peak_search", 0), out["peak_write"])
print(json.dumps(out))
"""


def write_dataset(path: Path, rows: int) -> None:
    if path.exists():
        return
    tmp = path.with_name(path.name + ".tmp")
    subprocess.run([sys.executable, "-m", "fusiontune", "simulate", "--out", str(tmp), "--requests",
                    str(rows // 20), "--candidates", "20", "--partition-by", "day", "--seed", "7"],
                   check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL)
    tmp.rename(path)


def study_text(log: Path, split: str) -> str:
    demo = (ROOT / "studies" / "demo.toml").read_text()
    head, _, rest = demo.partition("[split]")
    _, _, search = rest.partition("[search]")
    head = head.replace('log = "../data/demo_log.parquet"', f'log = "{log}"')
    return head + SPLITS[split] + "\n[search]" + search


def measure(log: Path, split: str, budget: int, population: int, tmp: Path) -> dict:
    study = tmp / f"{log.name}-{split}.toml"
    study.write_text(study_text(log, split))
    out = tmp / f"run-{log.name}-{split}"
    res = subprocess.run([sys.executable, "-c", MEASURE, str(ROOT), "search", "--study", str(study), "--budget",
                          str(budget), "--population", str(population), "--out", str(out), "--quiet"],
                         capture_output=True, text=True, cwd=tmp)
    if res.returncode != 0:
        raise SystemExit(f"search on {log.name} ({split}) failed:\n{res.stderr[-3000:]}")
    r = json.loads(res.stdout.strip().splitlines()[-1])
    if r["rc"] != 0:
        raise SystemExit(f"search on {log.name} ({split}) exited {r['rc']}:\n{res.stderr[-3000:]}")
    return r


def mb(x: float) -> str:
    return f"{x / 2**20:7.0f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[5_000_000, 20_000_000])
    ap.add_argument("--splits", nargs="+", default=["time", "none"], choices=sorted(SPLITS))
    ap.add_argument("--budget", type=int, default=64)
    ap.add_argument("--population", type=int, default=32)
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "fusiontune-memory",
                    help="where the datasets are written once and reused")
    args = ap.parse_args()
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; load average {loadavg()} (memory does not "
          f"depend on load, seconds do)")
    args.data.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        small = args.data / "memory_2000"
        write_dataset(small, 2000)
        runs = {s: measure(small, s, args.budget, args.population, tmp) for s in args.splits}
        fixed = {s: r["peak"] for s, r in runs.items()}
        r0 = runs[args.splits[0]]
        print("fixed cost: the same command on 2,000 rows peaks at "
              + ", ".join(f"{mb(v).strip()} MB ({s})" for s, v in fixed.items())
              + f" (RSS {mb(r0['imports']).strip()} MB once fusiontune.cli is imported, {mb(r0['held']).strip()} MB "
                f"once prepared: numba's compiled kernels; Optuna's storage is imported by the search)")
        head = (f"{'rows':>5} {'split':>5} {'compact MB':>10} {'B/row':>5} {'load+prep':>9} {'search':>7} "
                f"{'write':>6} {'peak MB':>7} {'-fixed':>7} {'/compact':>8}  target <= 2.5x")
        print(head)
        print("-" * len(head))
        seen: dict = {}
        for rows in args.rows:
            log = args.data / f"memory_{rows}"
            write_dataset(log, rows)
            for split in args.splits:
                r = measure(log, split, args.budget, args.population, tmp)
                n, c = r["rows"], r["compact"]
                above = r["peak"] - fixed[split]
                ratio = above / c
                print(f"{n / 1e6:>4.0f}M {split:>5} {mb(c):>10} {c / n:>5.1f} {mb(r['peak_prepare']):>9} "
                      f"{mb(r['peak_search']):>7} {mb(r['peak_write']):>6} {mb(r['peak']):>7} {mb(above):>7} "
                      f"{ratio:>7.2f}x  {'PASS' if ratio <= 2.5 else 'FAIL'}   (prepare {r['t_prepare']:.1f}s, "
                      f"search {r['t_search']:.1f}s)", flush=True)
                seen.setdefault(split, []).append((n, c, r["peak"]))
        for split, pts in seen.items():
            for (n0, c0, p0), (n1, c1, p1) in zip(pts, pts[1:]):
                print(f"slope {split}: from {n0 / 1e6:.0f}M to {n1 / 1e6:.0f}M rows the process peak grows "
                      f"{(p1 - p0) / (n1 - n0):.1f} bytes/row, the compact log {(c1 - c0) / (n1 - n0):.1f}: "
                      f"{(p1 - p0) / (c1 - c0):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
