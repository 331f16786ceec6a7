"""``fusiontune report``: a self-contained report of a finished run (HTML, Markdown or JSON)."""

from __future__ import annotations

import sys
from pathlib import Path

from .select import study_defaults

HELP = "write a self-contained report of a run: per-task CIs, convergence, sensitivity, Pareto, arms, stability"


def add_arguments(p) -> None:
    from ..schema import ReportTable, add_options, epilog

    p.add_argument("--run", type=Path, required=True, help="run directory written by `fusiontune search`")
    p.add_argument("--format", choices=("html", "md", "json"), default=None,
                   help="html (default; images embedded), md (PNGs written beside it) or json")
    p.add_argument("--out", type=Path, default=None, help="output file (default: RUN/report.<format>)")
    add_options(p, ReportTable)
    p.epilog = epilog(ReportTable, "report")


def run(args) -> int:
    from ..errors import InputError
    from ..report import collect, write_report

    fmt = args.format
    if fmt is None:
        suffix = args.out.suffix.lower().lstrip(".") if args.out else "html"
        fmt = {"htm": "html", "markdown": "md"}.get(suffix, suffix)
        if fmt not in ("html", "md", "json"):
            raise InputError(f"{args.out}: cannot tell the format from {args.out.suffix!r}; pass --format html|md|json")
    if not args.run.is_dir():
        raise InputError(f"{args.run}: run directory not found (run `fusiontune search --out {args.run}` first)")
    from ..schema import ReportTable

    study_defaults(args, "report", ReportTable)
    out = args.out or args.run / f"report.{fmt}"
    rep = collect(args.run, args.pareto or None, args.resamples, args.level, args.stability_resamples,
                  args.stability_candidates, k=args.k, seed=args.seed)
    for w in rep.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    files = write_report(rep, fmt, out)
    extra = f" and {len(files) - 1} PNG file(s) beside it" if len(files) > 1 else ""
    print(f"wrote {files[0]}{extra}")
    return 0
