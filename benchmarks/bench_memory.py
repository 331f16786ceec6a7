"""Peak memory of a search against the size of the compact in-memory log (issue #10, item 4).

    python benchmarks/bench_memory.py [--rows 1000000 5000000 20000000] [--budget 64]

For each size: a demo-like log (``simulate_log``, 20 candidates per request, 4 tasks, two
of them GAUC) is written to Parquet by one subprocess; a FRESH subprocess then imports
fusiontune, loads the study (CEM, multiplicative fusion, no split: every row searched) and
runs ``--budget`` evaluations.  It reports, from ``resource.getrusage(RUSAGE_SELF).ru_maxrss``:

* the RSS of the interpreter with fusiontune, numpy, numba, pyarrow ... imported (before
  the log is read): a fixed cost that does not grow with the log;
* the peak after loading + preparing (reading Parquet, validation, the Objective);
* the peak after the search;
* ``PredictionLog.nbytes``: the compact log (float32 scores, one uint8 label code per
  task, int32 group codes, the uint64 group hash, the float64 time column), per row too.

Target: the search's peak minus the import baseline within 2.5x the compact log.  Part of
that difference is fixed (numba's LLVM and compiled kernels, pyarrow.parquet, sklearn...
are loaded after the baseline is taken), so with several ``--rows`` it also prints the
slope between sizes: the peak bytes each extra row costs against the log's bytes per row.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from rss import RSS_HELPERS  # noqa: E402

WRITE = r"""
import sys
sys.path.insert(0, sys.argv[3])
from fusiontune.simulate import simulate_log, write_table
rows = int(sys.argv[1])
write_table(simulate_log(rows // 20, 20, seed=7), sys.argv[2])
"""

MEASURE = RSS_HELPERS + r"""
import json, sys, time
sys.path.insert(0, sys.argv[4])
import numpy as np, numba, pyarrow, pandas, optuna  # noqa: F401
from fusiontune.pipeline import prepare, search
from fusiontune.study import load_study
base = rss_now()
t0 = time.perf_counter()
prep = prepare(load_study(sys.argv[1]))
t_prep = time.perf_counter() - t0
after_prepare = peak()
t0 = time.perf_counter()
search(prep, "cem", int(sys.argv[2]), 0, int(sys.argv[3]), options={"restarts": 1000}, show_progress=False)
t_search = time.perf_counter() - t0
print(json.dumps({"rows": prep.search_log.n, "log_bytes": prep.log.nbytes, "base_rss": base,
                  "peak_prepare": after_prepare, "peak_search": peak(), "t_prepare": t_prep,
                  "t_search": t_search, "threads": numba.get_num_threads()}))
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
    for rows in args.rows:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            subprocess.run([sys.executable, "-c", WRITE, str(rows), str(tmp / "log.parquet"), str(ROOT)],
                           check=True)
            (tmp / "s.toml").write_text(study_text(tmp / "log.parquet"))
            out = subprocess.run([sys.executable, "-c", MEASURE, str(tmp / "s.toml"), str(args.budget),
                                  str(args.population), str(ROOT)], check=True, capture_output=True, text=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
        n, log = r["rows"], r["log_bytes"]
        grow = r["peak_search"] - r["base_rss"]
        print(f"\n{n:,} rows, {args.budget} CEM evaluations (population {args.population}, "
              f"{r['threads']} threads; prepare {r['t_prepare']:.1f}s, search {r['t_search']:.1f}s)")
        print(f"  compact log (PredictionLog.nbytes)   {mb(log)}   {log / n:5.1f} bytes/row")
        print(f"  RSS after imports (fixed)            {mb(r['base_rss'])}")
        print(f"  peak RSS after load + prepare        {mb(r['peak_prepare'])}   "
              f"{(r['peak_prepare'] - r['base_rss']) / n:5.1f} bytes/row above imports")
        print(f"  peak RSS after the search            {mb(r['peak_search'])}   "
              f"{(r['peak_search'] - r['base_rss']) / n:5.1f} bytes/row above imports")
        print(f"  (peak - imports) / compact log       {grow / log:5.2f}x   (target <= 2.5x: "
              f"{'PASS' if grow <= 2.5 * log else 'FAIL'});  peak / compact log {r['peak_search'] / log:5.2f}x")
        for m, log0, peak0 in seen:  # slope: what each extra row costs, free of fixed costs
            d_peak, d_log = r["peak_search"] - peak0, log - log0
            print(f"  from {m:,} rows to {n:,}: peak grows {d_peak / (n - m):5.1f} bytes/row, the log "
                  f"{d_log / (n - m):5.1f}: {d_peak / d_log:5.2f}x   (target <= 2.5x: "
                  f"{'PASS' if d_peak <= 2.5 * d_log else 'FAIL'})")
        seen.append((n, log, r["peak_search"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
