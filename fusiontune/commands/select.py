"""``fusiontune select``: pick k diverse A/B arms from a finished run, with bootstrap CIs."""

from __future__ import annotations

import json
from pathlib import Path

HELP = ("pick k diverse A/B arms from a finished run (picked on the select rows, judged on the holdout "
        "with paired bootstrap CIs)")


def study_defaults(args, table: str, model) -> None:
    """Fill the options the user did not give from the study's ``[<table>]`` table (declared
    in :mod:`fusiontune.schema`, defaults included); the study is the one the run recorded.
    Given options are checked by the same schema, so a bad flag and a bad key read alike."""
    from ..schema import keys, validate

    given = {k: getattr(args, k) for k in keys(model) if getattr(args, k, None) is not None}
    validate(model, given, src="command line", table=table)
    section = run_section(Path(args.run), table, model)
    for key, value in {**section, **given}.items():
        setattr(args, key, value)


def run_section(run_dir: Path, table: str, model) -> dict:
    """The ``[<table>]`` settings for a run: from the study file named in result.json while it
    exists (these tables set up later steps, so an edit after the search counts), else from the
    study the run stored (study.json), else the table's defaults."""
    import json

    from ..results import run_study
    from ..study import load_study

    study = None
    try:
        sf = json.loads((run_dir / "result.json").read_text(encoding="utf-8")).get("study_file")
    except (OSError, json.JSONDecodeError):
        sf = None
    if sf and Path(sf).exists():
        study = load_study(sf)
    else:
        study = run_study(run_dir, check_log=False)
    if study is None:
        return model().model_dump()
    return dict(study.sections.get(table) or model().model_dump())


def add_arguments(p) -> None:
    from ..schema import SelectTable, add_options, epilog

    p.add_argument("--run", type=Path, required=True, help="run directory written by `fusiontune search`")
    add_options(p, SelectTable)
    p.add_argument("--out", type=Path, default=None, help="output file (default: RUN/candidates.json)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    p.epilog = epilog(SelectTable, "select")


def run(args) -> int:
    from ..results import _jsonable, atomic_write_text
    from ..select import arms_table, select_arms

    from ..schema import SelectTable

    study_defaults(args, "select", SelectTable)
    cands = select_arms(args.run, args.k, args.resamples, args.level, args.candidates, args.diversity,
                        args.seed, show_progress=False if args.quiet else None)
    out = args.out or Path(args.run) / "candidates.json"
    atomic_write_text(out, json.dumps(cands, indent=2, default=_jsonable) + "\n")
    if args.quiet:
        print(f"wrote {out}")
    else:
        arms_table(cands)
        print(f"wrote {out} ({len(cands['arms'])} arm(s) from {cands['candidates_considered']} candidates "
              f"in {cands['seconds']:.1f}s)")
    return 0
