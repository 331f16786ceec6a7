"""Load time and load-time peak memory of a partitioned Parquet log (issue #14, items 1-2).

    python benchmarks/bench_load.py [--rows 1000000 20000000] [--data DIR]

For each size a demo log (4 tasks, 20 candidates per request) is written once as a Hive
dataset ``day=YYYYMMDD/part-*.parquet`` over 7 days by ``fusiontune.simulate.simulate_dataset``
(chunked; kept under ``--data`` to be reused).  Then, each in a FRESH subprocess (so one
measurement's allocations do not lower the next one's peak):

* ``fusiontune``: ``load_log(dataset, 4 tasks, group="request_id", time="ts")`` - the study's
  10 columns scanned in record batches straight into the compact arrays;
* ``fusiontune shard 0/2``: the same with ``shard=(0, 2)`` (what one of two Ray actors loads);
* ``pyarrow``: ``pyarrow.dataset.dataset(dir, partitioning="hive").to_table(columns=same 10)``,
  the Arrow table alone, before any conversion to numpy.

Each subprocess reports the RSS after its imports (``/proc/self/status`` VmRSS), the peak
RSS after the load (VmHWM) and the wall time of the load.  The table shows
the peak minus the import RSS, in bytes per kept row, against the compact log's bytes per row
(``PredictionLog.nbytes``: float32 scores, uint8 label codes, int32 group codes, uint64 group
hash, float64 time), and pyarrow side by side; with two sizes, also the slope (peak bytes
per added row), which leaves out the fixed cost of the readers' libraries and thread pools.  Issue #14 wants a 20M-row search within 2.5x
the compact log; the load must stay well below that.
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
from rss import RSS_HELPERS  # noqa: E402
from machine import cpu_model as cpu_name  # noqa: E402  (benchmarks/machine.py)

WRITE = r"""
import sys
sys.path.insert(0, sys.argv[3])
from fusiontune.simulate import simulate_dataset
rows = int(sys.argv[1])
simulate_dataset(sys.argv[2], rows // 20, 20, seed=7, partition_by="day", days=7)
"""

MEASURE = RSS_HELPERS + r"""
import json, sys, time
sys.path.insert(0, sys.argv[3])
import numpy as np, pandas as pd, pyarrow as pa, pyarrow.dataset as ds, pyarrow.parquet  # noqa: F401
from fusiontune.log import TaskColumns, load_log
tasks = [TaskColumns(t, "p_" + t, t) for t in ("click", "like", "finish", "convert")]
cols = [c for t in tasks for c in (t.score, t.label)] + ["request_id", "ts"]
what, path = sys.argv[1], sys.argv[2]
base = rss_now()
t0 = time.perf_counter()
if what == "pyarrow":
    table = ds.dataset(path, format="parquet", partitioning="hive").to_table(columns=cols)
    out = {"rows": table.num_rows, "bytes": table.nbytes}
else:
    shard = (0, 2) if what == "shard" else None
    log = load_log(path, tasks, group="request_id", time="ts", shard=shard)
    out = {"rows": log.n, "bytes": log.nbytes}
out.update(seconds=time.perf_counter() - t0, base=base, peak=peak())
print(json.dumps(out))
"""


def measure(what: str, path: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", MEASURE, what, str(path), str(ROOT)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{what} on {path} failed: {proc.stderr.strip().splitlines()[-1]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 20_000_000])
    ap.add_argument("--data", type=Path, default=None, help="where the datasets are written / reused")
    ap.add_argument("--json", type=Path, default=None, help="also write the measurements here")
    args = ap.parse_args()
    data = args.data or Path(tempfile.gettempdir()) / "fusiontune-bench-load"
    data.mkdir(parents=True, exist_ok=True)
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} "
          f"(the machine may be shared: compare the side-by-side ratios)")
    results = []
    for rows in args.rows:
        path = data / f"demo-{rows}"
        if not path.exists():
            print(f"writing {rows:,} rows to {path} ...", flush=True)
            subprocess.run([sys.executable, "-c", WRITE, str(rows), str(path), str(ROOT)], check=True)
        files = sum(1 for _ in path.rglob("*.parquet"))
        size = sum(p.stat().st_size for p in path.rglob("*.parquet"))
        print(f"\n{rows:,} rows: {files} Parquet files, {size / 2**20:.0f} MB on disk", flush=True)
        row = {"rows": rows}
        for what in ("fusiontune", "shard", "pyarrow"):
            m = measure(what, path)
            row[what] = m
        compact = row["fusiontune"]["bytes"] / rows
        print(f"{'reader':<22}{'rows kept':>12}{'load s':>9}{'peak-import MB':>16}{'peak B/kept row':>17}"
              f"{'x compact':>11}{'held B/row':>12}")
        for what, label in (("fusiontune", "fusiontune load_log"), ("shard", "fusiontune shard 0/2"),
                            ("pyarrow", "pyarrow to_table")):
            m = row[what]
            delta = m["peak"] - m["base"]
            per = delta / max(m["rows"], 1)
            print(f"{label:<22}{m['rows']:>12,}{m['seconds']:>9.2f}{delta / 2**20:>16.0f}{per:>17.1f}"
                  f"{per / compact:>11.2f}{m['bytes'] / max(m['rows'], 1):>12.1f}")
        f, p = row["fusiontune"], row["pyarrow"]
        print(f"compact log: {compact:.1f} B/row; fusiontune's load peak is "
              f"{(f['peak'] - f['base']) / (p['peak'] - p['base']):.2f}x pyarrow's to_table peak, its time "
              f"{f['seconds'] / p['seconds']:.2f}x (pyarrow's table is not converted or validated)")
        results.append(row)
    if len(results) > 1:  # what each added row costs, without the fixed cost of the readers' libraries
        lo, hi = results[0], results[-1]
        d_rows = hi["rows"] - lo["rows"]
        compact = hi["fusiontune"]["bytes"] / hi["rows"]
        print(f"\nslope {lo['rows']:,} -> {hi['rows']:,} rows (peak bytes per added row; compact log "
              f"{compact:.1f} B/row):")
        for what, label in (("fusiontune", "fusiontune load_log"), ("pyarrow", "pyarrow to_table")):
            slope = ((hi[what]["peak"] - hi[what]["base"]) - (lo[what]["peak"] - lo[what]["base"])) / d_rows
            t = (hi[what]["seconds"] - lo[what]["seconds"]) / d_rows * 1e9
            print(f"  {label:<22}{slope:6.1f} B/row = {slope / compact:.2f}x compact, {t:6.0f} ns/row")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
