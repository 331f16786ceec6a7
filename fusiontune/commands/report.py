"""``fusiontune report``: a self-contained report of a finished run (HTML, Markdown or JSON)."""

from __future__ import annotations

import sys
from pathlib import Path

from .common import positive_int
from .select import level_type, study_defaults

HELP = "write a self-contained report of a run: per-task CIs, convergence, sensitivity, Pareto, arms, stability"


DEFAULTS = {"pareto": "", "resamples": 1000, "level": 0.95, "stability_resamples": 100,
            "stability_candidates": 50, "k": 3, "seed": 0}


def add_arguments(p) -> None:
    p.add_argument("--run", type=Path, required=True, help="run directory written by `fusiontune search`")
    p.add_argument("--format", choices=("html", "md", "json"), default=None,
                   help="html (default; images embedded), md (PNGs written beside it) or json")
    p.add_argument("--out", type=Path, default=None, help="output file (default: RUN/report.<format>)")
    p.add_argument("--pareto", default=None, help="two tasks for the Pareto plot, e.g. click,finish "
                                                  "(default: the two with the highest business weight)")
    p.add_argument("--resamples", type=positive_int, default=None, help="bootstrap resamples for the CIs")
    p.add_argument("--level", type=level_type, default=None, help="confidence level (default 0.95)")
    p.add_argument("--stability-resamples", type=positive_int, default=None,
                   help="bootstrap resamples of the search data for the stability section (default 100)")
    p.add_argument("--stability-candidates", type=positive_int, default=None,
                   help="best distinct feasible trials among which each resample's best is re-found")
    p.add_argument("--k", type=positive_int, default=None, help="arms to select when candidates.json is absent")
    p.add_argument("--seed", type=int, default=None, help="bootstrap seed")
    p.epilog = "Defaults can also be set in the study's [report] table (keys: " + ", ".join(DEFAULTS) + ")."


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
    study_defaults(args, "report", DEFAULTS)
    out = args.out or args.run / f"report.{fmt}"
    rep = collect(args.run, args.pareto or None, args.resamples, args.level, args.stability_resamples,
                  args.stability_candidates, k=args.k, seed=args.seed)
    for w in rep.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    files = write_report(rep, fmt, out)
    extra = f" and {len(files) - 1} PNG file(s) beside it" if len(files) > 1 else ""
    print(f"wrote {files[0]}{extra}")
    return 0
