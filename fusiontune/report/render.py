"""Render the report's data as self-contained HTML, Markdown (+ PNGs beside it) or JSON.

Both text formats are built from one list of sections (title, paragraphs, tables, figure),
so they always show the same things.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["sections", "to_html", "to_markdown", "to_json", "write_report"]


@dataclass
class Section:
    title: str
    text: list[str] = field(default_factory=list)
    tables: list[tuple[list[str], list[list[str]]]] = field(default_factory=list)
    figure: str | None = None
    caption: str = ""
    warn: list[str] = field(default_factory=list)


def _f(v, nd=5, sign=False) -> str:
    if v is None:
        return "–"
    try:
        return f"{v:+.{nd}f}" if sign else f"{v:.{nd}f}"
    except (TypeError, ValueError):
        return str(v)


def _ci(d: dict | None) -> str:
    if not d:
        return "–"
    if d.get("lo") is None:
        return _f(d["value"], sign=True)
    return f"{d['value']:+.5f} [{d['lo']:+.5f}, {d['hi']:+.5f}]"


def _params(p: dict | None) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in (p or {}).items()) or "–"


def _split_text(sp: dict | None) -> str:
    if not sp:
        return "none (every number is in-sample)"
    keys = [f"{k} = {sp[k]}" for k in ("by", "holdout", "select", "column", "seed") if sp.get(k) is not None]
    rows = sp.get("rows") or {}
    parts = ", ".join(f"{k} {v}" for k, v in rows.items() if v)
    return "; ".join(keys) + (f" (rows: {parts})" if parts else "")


def _share_text(sp: dict | None, part: str) -> str:
    if not sp or not sp.get(f"{part}_share"):
        return "–"
    share = sp[f"{part}_share"]
    rows = (sp.get("rows") or {}).get(part)
    groups = (sp.get("groups") or {}).get(part)
    out = f"{share['rows']:.1%} of rows" + (f" ({rows})" if rows is not None else "")
    if "groups" in share:
        out += f", {share['groups']:.1%} of groups" + (f" ({groups})" if groups is not None else "")
    return out


def _bound(on_bound) -> str:
    from .data import _bound_text

    return _bound_text(on_bound)


def sections(rep: dict) -> list[Section]:
    out = []
    s = rep["summary"]
    sec = Section("Study summary")
    rows = [["run id", str(s.get("run_id"))], ["study", str(s.get("study"))], ["study file", str(s.get("study_file"))], ["log", str(s.get("log"))],
            ["formula", str(s.get("formula"))], ["method / seed", f"{s.get('method')} / {s.get('seed')}"],
            ["evaluations", f"{s.get('evaluations')} of budget {s.get('budget')} ({s.get('stop_reason')}), "
                            f"{_f(s.get('seconds'), 1)} s"],
            ["rows", ", ".join(f"{k} {v}" for k, v in (s.get("rows") or {}).items())],
            ["split", _split_text(s.get("split"))], ["holdout share", _share_text(s.get("split"), "holdout")],
            ["GAUC weighting", str(s.get("gauc_weighting"))],
            ["normalisation", str(s.get("normalisation"))],
            ["best params", _params(rep["params"]["best"])], ["baseline params", _params(rep["params"]["baseline"])]]
    if (s.get("split") or {}).get("select") is not None:
        rows.insert(7, ["select share", _share_text(s.get("split"), "select")])
    if rep.get("on_bound"):
        rows.append(["on a bound", _bound(rep["on_bound"])])
    sec.tables.append((["item", "value"], rows))
    if s.get("note"):
        sec.warn.append(s["note"])
    g2 = (s.get("split") or {}).get("groups_in_two_parts")
    if g2:
        sec.warn.append(f"{g2} group(s) have rows in two parts of the split: their rows are not independent "
                        f"across the parts")
    out.append(sec)

    pct = int(round(rep["level"] * 100))
    sec = Section("Best vs baseline per task")
    if rep.get("units"):
        sec.text.append(f"Deltas with paired {pct}% percentile bootstrap intervals ({rep['resamples']} resamples "
                        f"of the part's {rep['units'].split(' ')[-1]}; the same resamples score the best weights "
                        f"and the baseline). The holdout intervals are the honest ones: nothing chose on the "
                        f"holdout rows. The per-task in-sample intervals are optimistic: the search chose the "
                        f"best on those rows (winner's curse).")
    obj_ins = next((r.get("in_sample", {}) for r in rep["tasks"] if r["task"] == "objective"), {})
    if obj_ins.get("selection"):
        sel = obj_ins["selection"]
        sec.text.append(f"The objective's in-sample interval is selection-corrected: the pick-the-best step is "
                        f"repeated on every resample over the run's {sel['candidates']} best distinct feasible "
                        f"trials (choosing on these rows added {sel['optimism']:+.5f} on average); the plain "
                        f"interval would be {_ci(obj_ins.get('delta_naive'))}.")
    md = (rep.get("guardrails") or {}).get("max_drop") or {}
    head = ["task", "metric", "weight", "max_drop", "baseline", "best", "Δ in-sample [CI]"]
    has_h = any("holdout" in r for r in rep["tasks"])
    if has_h:
        head += ["holdout baseline", "holdout best", "Δ holdout [CI]"]
    rows = []
    for r in rep["tasks"]:
        ins, ho = r.get("in_sample", {}), r.get("holdout", {})
        row = [r["task"], r["metric"], "" if r["weight"] is None else f"{r['weight']:g}",
               "–" if md.get(r["task"]) is None else f"{md[r['task']]:g}",
               _f(ins.get("baseline")), _f(ins.get("best")), _ci(ins.get("delta"))]
        if has_h:
            row += [_f(ho.get("baseline")), _f(ho.get("best")), _ci(ho.get("delta"))]
        rows.append(row)
    sec.tables.append((head, rows))
    if not has_h:
        sec.warn.append("the study has no holdout split: every number here is in-sample")
    sec.warn += (rep.get("versus_baseline") or {}).get("warnings", [])
    out.append(sec)

    g = rep.get("guardrails")
    if g and any(v is not None for v in g["max_drop"].values()):
        sec = Section("Guardrails")
        sec.text.append("Each guarded task may drop at most max_drop below the baseline. 'breaks': the delta is "
                        "below -max_drop; 'CI crosses': the delta is within it but its interval reaches past it. "
                        "The holdout rows count (nothing chose on them); in-sample rows are shown for context.")
        rows = [[c["who"], c["part"].replace("_", "-"), c["task"], f"{c['max_drop']:g}", _ci(c["delta"]),
                 {"breaks": "BREAKS", "ci-crosses": "CI crosses", "ok": "ok"}[c["status"]]] for c in g["checks"]]
        sec.tables.append((["weights", "rows", "task", "max_drop", "Δ [CI]", "status"], rows))
        sec.warn += g.get("warnings", [])
        out.append(sec)

    if rep.get("convergence"):
        out.append(Section("Convergence", figure="convergence",
                           caption="Objective of every evaluated candidate in order; the line is the best "
                                   "feasible objective so far."))
    if rep.get("sensitivity"):
        out.append(Section("Per-parameter sensitivity", figure="sensitivity",
                           caption="Objective (in-sample) along each free weight over its search bounds, the "
                                   "other weights at the best values. A flat curve means the weight hardly "
                                   "matters; red crosses break a guardrail."))
    if rep.get("pareto"):
        p = rep["pareto"]
        out.append(Section(f"Pareto front: {p['tasks'][0]} vs {p['tasks'][1]}", figure="pareto",
                           caption="In-sample metric deltas of every trial; the orange line is the front of "
                                   "feasible trials on these two tasks (choose them with the pareto setting)."))
    arms = rep.get("arms")
    if arms is not None:
        sec = Section("Selected A/B arms", figure="arms" if arms.get("arms") else None)
        if arms.get("honesty"):
            sec.text.append(f"Roles: {arms['honesty']}.")
        sec.text.append(f"Source: {rep.get('arms_source')}. Picked on the {arms.get('picked_on', 'holdout')} rows "
                        f"({arms.get('pick_rows', arms['rows'])}); judged on the {arms['evaluated_on']} "
                        f"({arms['rows']} rows), {arms.get('resamples')} paired bootstrap resamples of "
                        f"{arms.get('units', 'units')}, {int(round(arms['level'] * 100))}% intervals; "
                        f"{arms.get('candidates_considered')} distinct feasible candidates, Pareto front of "
                        f"{arms.get('pareto_size', 0)}; arms far apart by {arms['diversity']} distance "
                        f"({arms.get('diversity_doc', '')}).")
        tasks = list(arms["baseline"]["per_task"])
        head = ["arm", "params"] + [f"Δ {t} [CI]" for t in tasks] + ["Δ objective [CI]", "flags"]
        rows = [[a["name"], _params(a["params"])] + [_ci(a["delta"][t]) for t in tasks] + [_ci(a["gain"]),
                ", ".join(a["flags"]) or "–"] for a in arms["arms"]]
        rows.append(["baseline", _params(arms["baseline"]["params"])] + ["0"] * len(tasks) +
                    [f"J = {arms['baseline']['objective']:.5f}", "control"])
        sec.tables.append((head, rows))
        for n in arms.get("notes") or ([arms["note"]] if arms.get("note") else []):
            sec.warn.append(n)
        for a in arms["arms"]:
            if "gain-ci-includes-zero" in a["flags"]:
                sec.warn.append(f"{a['name']}: the objective gain's interval includes zero")
        out.append(sec)
        dropped = arms.get("dropped") or []
        if dropped:
            sec = Section("Dropped candidates")
            counts = ", ".join(f"{v} {k}" for k, v in (arms.get("dropped_counts") or {}).items())
            sec.text.append(f"{len(dropped)} of the {arms.get('candidates_considered')} candidates are not arms "
                            f"({counts}). Each is listed with its reason, decided on the "
                            f"{arms.get('picked_on', 'pick')} rows; the search's best is marked *.")
            sb = arms.get("search_best") or {}
            if sb.get("status") == "dropped":
                sec.warn.append(f"the search's best (trial {sb.get('trial')}) was dropped: {sb.get('detail')}")
            rows = [[("*" if d.get("is_search_best") else "") + str(d.get("trial")),
                     _f(d.get("objective_in_sample")), _ci(d.get("pick_gain")), d["reason"], d["detail"]]
                    for d in dropped]
            sec.tables.append((["trial", "objective in-sample", "Δ objective on the pick rows [CI]", "reason",
                                "detail"], rows))
            out.append(sec)
    st = rep.get("stability")
    if st is not None:
        sec = Section("Stability of the best weights", figure="stability" if st.get("params") else None)
        if st.get("params"):
            sec.text.append(f"The best of the run's {st['candidates']} best distinct feasible candidates, re-found "
                            f"on each of {st['resamples']} bootstrap resamples of the search data "
                            f"({st['n_units']} {st['units']}): {st['distinct_winners']} different winners; the "
                            f"run's best wins {st['share_best_wins']:.0%} of the resamples.")
            head = ["param", "best", "median", "5%", "95%", "spread (95%-5%)", "of bound width", "of |median|",
                    "std", "sign flip"]
            rows = [[n, _f(d["best"], 4), _f(d["median"], 4), _f(d["p5"], 4), _f(d["p95"], 4),
                     _f(d.get("spread"), 4),
                     (f"{d['relative_spread']:.0%}" + (" WIDE" if d.get("wide") else ""))
                     if d.get("relative_spread") is not None else "–",
                     f"{d['spread_of_median']:.0%}" if d.get("spread_of_median") is not None else "–",
                     _f(d["std"], 4), "YES" if d["sign_flip"] else "no"] for n, d in st["params"].items()]
            sec.tables.append((head, rows))
            sec.text.append("A wide spread (more than 20% of the bound width, or more than half the median's "
                            "size) means the data do not pin the "
                            "weight down: other values win as often. 'Best wins' counts only the run's own "
                            "candidates, so it says nothing about how close the search came to the optimum.")
        conv = st.get("convergence") or {}
        if conv:
            sec.text.append(f"Convergence: the best improved by {conv['late_improvement']:+.5f} in the last "
                            f"{conv['late_evaluations']} of {conv['evaluations']} evaluations "
                            f"({conv['late_share_of_gain']:.1%} of its gain over the baseline): "
                            + ("converged." if conv["converged"] else "NOT converged."))
        if st.get("note"):
            sec.text.append(st["note"])
        sec.warn += st.get("warnings", [])
        out.append(sec)
    if rep.get("ltr"):
        fi = rep["ltr"].get("feature_importance")
        sec = Section("Learned fuser: feature importances", figure="feature_importance" if fi else None)
        if fi:
            sec.tables.append((["feature", "importance"], [[k, f"{v:.6g}"] for k, v in fi.items()]))
        else:
            sec.text.append(rep["ltr"].get("note", ""))
        out.append(sec)
        from .ltr_section import versus_section

        vs = versus_section(rep)
        if vs is not None:
            out.append(vs)
    if rep.get("segments"):
        from .segments_section import segments_section

        seg = segments_section(rep)
        if seg is not None:
            out.append(seg)
    return out


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1200px;color:#222}
h1{font-size:22px}h2{font-size:17px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right;vertical-align:top}td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}
.warn{background:#fff3cd;border:1px solid #e0c060;padding:6px 10px;margin:6px 0;font-size:13px}
.cap{color:#555;font-size:12px}img{max-width:100%;border:1px solid #eee}
"""


def to_html(rep: dict, plots: dict[str, bytes]) -> str:
    e = html.escape
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>fusiontune report: "
             f"{e(str(rep['summary'].get('study')))}</title><style>{_CSS}</style></head><body>",
             f"<h1>fusiontune report — {e(str(rep['summary'].get('study')))} "
             f"({e(str(rep['summary'].get('method')))}, {e(str(rep['summary'].get('formula')))})</h1>",
             f"<p class='cap'>run: {e(rep['run'])}</p>"]
    for w in rep.get("warnings", []):
        parts.append(f"<div class='warn'>warning: {e(w)}</div>")
    for sec in sections(rep):
        parts.append(f"<h2>{e(sec.title)}</h2>")
        for t in sec.text:
            parts.append(f"<p>{e(t)}</p>")
        for w in sec.warn:
            parts.append(f"<div class='warn'>{e(w)}</div>")
        for head, rows in sec.tables:
            parts.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>")
            for r in rows:
                parts.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>")
            parts.append("</table>")
        if sec.figure and sec.figure in plots:
            b64 = base64.b64encode(plots[sec.figure]).decode("ascii")
            parts.append(f"<p><img alt='{e(sec.figure)}' src='data:image/png;base64,{b64}'></p>")
        if sec.caption:
            parts.append(f"<p class='cap'>{e(sec.caption)}</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _md_cell(c: str) -> str:
    return str(c).replace("|", "\\|").replace("\n", " ")


def to_markdown(rep: dict, image_names: dict[str, str]) -> str:
    s = rep["summary"]
    lines = [f"# fusiontune report — {s.get('study')} ({s.get('method')}, {s.get('formula')})", "",
             f"run: `{rep['run']}`", ""]
    for w in rep.get("warnings", []):
        lines += [f"> **warning:** {w}", ""]
    for sec in sections(rep):
        lines += [f"## {sec.title}", ""]
        for t in sec.text:
            lines += [t, ""]
        for w in sec.warn:
            lines += [f"> **{w}**", ""]
        for head, rows in sec.tables:
            lines.append("| " + " | ".join(_md_cell(h) or " " for h in head) + " |")
            lines.append("|" + "|".join("---" for _ in head) + "|")
            lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
            lines.append("")
        if sec.figure and sec.figure in image_names:
            lines += [f"![{sec.figure}]({image_names[sec.figure]})", ""]
        if sec.caption:
            lines += [f"*{sec.caption}*", ""]
    return "\n".join(lines)


def to_json(rep: dict) -> str:
    from ..results import _jsonable

    return json.dumps(rep, indent=2, default=_jsonable, allow_nan=True) + "\n"


def write_report(rep: dict, fmt: str, out: Path) -> list[Path]:
    """Write the report; returns every file written (the Markdown's PNGs too)."""
    from ..io import atomic_write_bytes, atomic_write_text

    out = Path(out)
    if fmt == "json":
        atomic_write_text(out, to_json(rep))
        return [out]
    from .plots import make_plots

    plots = make_plots(rep)
    if fmt == "html":
        atomic_write_text(out, to_html(rep, plots))
        return [out]
    written, names = [], {}
    out.parent.mkdir(parents=True, exist_ok=True)
    for name, png in plots.items():
        p = out.parent / f"{out.stem}-{name}.png"
        atomic_write_bytes(p, png)
        names[name] = p.name
        written.append(p)
    atomic_write_text(out, to_markdown(rep, names))
    return [out, *written]
