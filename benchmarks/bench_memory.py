"""Peak memory of a search against the size of the compact in-memory log (issue #10, item 4).

    python benchmarks/bench_memory.py [--rows 1000000 5000000 20000000] [--budget 64]

For each size: a demo-like log (``simulate_log``, 20 candidates per request, 4 tasks, two
of them GAUC) is written to Parquet by one subprocess; a FRESH subprocess then imports
fusiontune, loads the study (CEM, multiplicative fusion, no split: every row searched) and
runs ``--budget`` evaluations.  It reports, from ``/proc/self/status`` (VmRSS, VmHWM):

* the RSS of the interpreter with fusiontune, numpy, numba, pyarrow ... imported (before
  the log is read): a fixed cost that does not grow with the log;
* the peak while loading + preparing (reading Parquet, validation, the Objective): the
  reading of logs is measured here but is not the search's (``docs/logs.md``);
* the RSS held once prepared, then the peak DURING the search alone (``VmHWM`` reset
  through ``/proc/self/clear_refs`` when the search starts);
* ``PredictionLog.nbytes``: the compact log a search holds (float32 scores, one uint8
  label code per task, int32 group codes: 24 bytes a row for 4 tasks; the time column and
  group hash are dropped once the split is made), per row too.

Target: the search's peak minus the fixed baseline within 2.5x the compact log.  The
baseline is the RSS after the imports AND a 2,000-row warm-up search in the same process
(it loads numba's compiled kernels, about 75 MB that do not grow with the log).  With
several ``--rows`` it also prints the slope between sizes: the peak bytes each extra row
costs against the log's bytes per row, free of any fixed cost.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WRITE = r"""
import sys
sys.path.insert(0, sys.argv[3])
from fusiontune.simulate import simulate_log, write_table
rows = int(sys.argv[1])
write_table(simulate_log(rows // 20, 20, seed=7), sys.argv[2])
"""

MEASURE = r"""
import json, sys, time
sys.path.insert(0, sys.argv[4])
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
def reset_peak():  # Linux >= 4.0: VmHWM starts again from the current RSS
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
import numpy as np, numba, pyarrow, pyarrow.dataset, pyarrow.parquet, pandas, optuna  # noqa: F401
from fusiontune.pipeline import prepare, release_free_memory, search
from fusiontune.study import load_study
imports = status("VmRSS")
# warm-up: a 2,000-row search loads numba's compiled kernels (a fixed cost, ~75 MB)
warm = prepare(load_study(sys.argv[5]))
search(warm, "cem", 64, 0, 32, options={"restarts": 1000}, show_progress=False)
del warm
release_free_memory()
base = status("VmRSS")
reset_peak()
t0 = time.perf_counter()
prep = prepare(load_study(sys.argv[1]))
t_prep = time.perf_counter() - t0
peak_prepare, held = status("VmHWM"), status("VmRSS")
reset_peak()
t0 = time.perf_counter()
search(prep, "cem", int(sys.argv[2]), 0, int(sys.argv[3]), options={"restarts": 1000}, show_progress=False)
t_search = time.perf_counter() - t0
print(json.dumps({"rows": prep.search_log.n, "log_bytes": prep.log.nbytes, "base_rss": base, "imports": imports,
                  "peak_prepare": peak_prepare, "held": held, "peak_search": status("VmHWM"),
                  "t_prepare": t_prep, "t_search": t_search, "threads": numba.get_num_threads(),
                  "batch": prep.objective.batch_size()}))
"""


def study_text(log: Path) -> str:
    demo = (ROOT / "studies" / "demo.toml").read_text()
    head, _, _ = demo.partition("[split]")
    head = head.replace('log = "../data/demo_log.parquet"', f'log = "{log}"')
    return head + "\n[search]\nmethod = \"cem\"\n"


def mb(x: float) -> str:
    return f"{x / 2**20:8.0f} MB"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    ap.add_argument("--budget", type=int, default=64)
    ap.add_argument("--population", type=int, default=32)
    args = ap.parse_args()
    try:
        load = " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        load = "?"
    print(f"load average: {load}")
    seen = []
    rows_out = []
    for rows in args.rows:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            for name, n_rows in (("log", rows), ("warm", 2000)):
                subprocess.run([sys.executable, "-c", WRITE, str(n_rows), str(tmp / f"{name}.parquet"), str(ROOT)],
                               check=True)
                (tmp / f"{name}.toml").write_text(study_text(tmp / f"{name}.parquet"))
            out = subprocess.run([sys.executable, "-c", MEASURE, str(tmp / "log.toml"), str(args.budget),
                                  str(args.population), str(ROOT), str(tmp / "warm.toml")], check=True,
                                 capture_output=True, text=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
        n, log, base = r["rows"], r["log_bytes"], r["base_rss"]
        grow = r["peak_search"] - base
        print(f"\n{n:,} rows, {args.budget} CEM evaluations (population {args.population}, {r['threads']} threads, "
              f"{r['batch']} candidate(s) per kernel call; prepare {r['t_prepare']:.1f}s, search {r['t_search']:.1f}s)")
        print(f"  compact log held (PredictionLog.nbytes)     {mb(log)}   {log / n:5.1f} bytes/row")
        print(f"  RSS after imports                           {mb(r['imports'])}")
        print(f"  ... and a 2,000-row warm-up search (fixed)  {mb(base)}   (numba's compiled kernels loaded)")
        print(f"  peak while loading + preparing              {mb(r['peak_prepare'])}   "
              f"{(r['peak_prepare'] - base) / n:5.1f} bytes/row above fixed   (the reading of the log)")
        print(f"  RSS held after prepare (log, Objective)     {mb(r['held'])}   "
              f"{(r['held'] - base) / n:5.1f} bytes/row above fixed")
        print(f"  peak during the search                      {mb(r['peak_search'])}   "
              f"{grow / n:5.1f} bytes/row above fixed")
        print(f"  search peak - fixed, / compact log          {grow / log:5.2f}x   (target <= 2.5x: "
              f"{'PASS' if grow <= 2.5 * log else 'FAIL'})")
        for m, log0, peak0, prep0 in seen:  # slope: what each extra row costs, free of fixed costs
            d_peak, d_log, d_prep = r["peak_search"] - peak0, log - log0, r["peak_prepare"] - prep0
            print(f"  from {m:,} rows to {n:,}: the search peak grows {d_peak / (n - m):5.1f} bytes/row, the log "
                  f"{d_log / (n - m):5.1f}: {d_peak / d_log:5.2f}x   (target <= 2.5x: "
                  f"{'PASS' if d_peak <= 2.5 * d_log else 'FAIL'});  load peak grows {d_prep / (n - m):5.1f} bytes/row "
                  f"({d_prep / d_log:4.2f}x)")
        seen.append((n, log, r["peak_search"], r["peak_prepare"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
