"""The Python API: ``import fusiontune as ft``.

A :class:`Study` (from a TOML file or built in code, the log as a path, a pandas DataFrame
or a pyarrow Table) is searched with :func:`optimize` (or :meth:`Study.optimize`), which
returns a :class:`SearchResult`; :func:`select_arms`, :func:`build_report` and
:func:`export_weights` take that object (names chosen not to collide with the ``select``,
``report`` and ``export`` modules).  Run directories are one way to persist a result (:meth:`SearchResult.save` /
:meth:`SearchResult.load`), not the only way in.  The ``fusiontune`` command is a shell over
these functions.  No call here changes process-wide state (backends, loggers, threads).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from .errors import RunError, StudyError

__all__ = ["Study", "SearchResult", "optimize", "select_arms", "build_report", "export_weights", "evaluate",
           "fit_ltr", "train", "search_settings"]


class Study:
    """A fusion study: the log, the tasks, the formula, the split and the search settings.

    Build it in code with the same keys as a study file (``docs/study.md``), or read one with
    :meth:`from_toml`.  Every key is checked by :mod:`fusiontune.schema` (one line naming the
    key on error).

    Parameters
    ----------
    log : str, Path, dict, pandas.DataFrame or pyarrow.Table
        The prediction log: a CSV/Parquet file, a directory of Parquet files or a glob, or an
        in-memory table; a dict ``{"path": ..., "filter": ..., "sample": ...}`` is the study's
        ``[log]`` table (docs/logs.md).
    tasks : list of dict
        One dict per task: ``name``, ``score``, ``label`` and optionally ``weight``,
        ``metric``, ``max_drop``, ``score_scale``, ``sign``.
    name : str, default "study"
    group, time, weight : str, optional
        Group (request), time and row-weight columns.
    fusion, objective, split, search, select, report, ltr : dict, optional
        The study's tables (``search`` may hold per-method tables, e.g. ``{"cma": {...}}``).

    Examples
    --------
    >>> import fusiontune as ft
    >>> from fusiontune.simulate import simulate_log, DEMO_BASELINE
    >>> df = simulate_log(requests=300, candidates=8, seed=1)
    >>> study = ft.Study(log=df, name="nb", group="request_id", time="ts",
    ...                  tasks=[{"name": "click", "score": "p_click", "label": "click", "metric": "gauc"},
    ...                         {"name": "like", "score": "p_like", "label": "like", "weight": 0.6}],
    ...                  fusion={"formula": "multiplicative", "reference": "click",
    ...                          "baseline": {"a_click": 1.0, "a_like": 0.2}},
    ...                  split={"by": "time", "holdout": 0.3}, search={"budget": 32, "population": 8})
    >>> study.search["budget"], study.task_names
    (32, ['click', 'like'])
    """

    def __init__(self, *, log, tasks: list[dict], name: str = "study", group: str | None = None,
                 time: str | None = None, weight: str | None = None, fusion: dict | None = None,
                 objective: dict | None = None, split: dict | None = None, search: dict | None = None,
                 select: dict | None = None, report: dict | None = None, ltr: dict | None = None,
                 segments: dict | None = None, _base: Path | None = None):
        from .log import in_memory_name
        from .study import parse_study

        data: dict[str, Any] = {"name": name, "tasks": [dict(t) for t in tasks]}
        for key, value in (("group", group), ("time", time), ("weight", weight), ("fusion", fusion),
                           ("objective", objective), ("split", split), ("search", search),
                           ("select", select), ("report", report), ("ltr", ltr), ("segments", segments)):
            if value is not None:
                data[key] = value
        memory = in_memory_name(log)
        data["log"] = memory or (dict(log) if isinstance(log, dict) else str(log))
        self.config = parse_study(data, _base)
        if memory:
            self.config.log_data = log

    @classmethod
    def from_toml(cls, path: str | Path, *, log=None) -> "Study":
        """A study from a TOML file; ``log`` (a path or an in-memory table) replaces its log.

        Examples
        --------
        >>> import fusiontune as ft
        >>> ft.Study.from_toml("studies/demo.toml").search["method"]  # doctest: +SKIP
        'cem'
        """
        from .study import load_study

        return cls._wrap(load_study(path), log)

    @classmethod
    def _wrap(cls, config, log=None) -> "Study":
        from dataclasses import replace

        from .log import in_memory_name

        self = cls.__new__(cls)
        if log is not None:
            if in_memory_name(log):
                config = replace(config, log_data=log)
            else:
                config = replace(config, log=Path(log), log_data=None)
        self.config = config
        return self

    # the resolved settings, read-only views
    @property
    def name(self) -> str:
        """The study's name."""
        return self.config.name

    @property
    def task_names(self) -> list[str]:
        """Task names, in study order."""
        return self.config.task_names

    @property
    def search(self) -> dict:
        """The ``[search]`` settings with their defaults."""
        return dict(self.config.search)

    def to_dict(self) -> dict:
        """The resolved study as a study-file dict (what a run directory stores as study.json)."""
        return self.config.to_dict()

    def optimize(self, **kwargs) -> "SearchResult":
        """:func:`optimize` on this study (same keyword options)."""
        return optimize(self, **kwargs)

    def __repr__(self) -> str:
        return f"Study(name={self.name!r}, tasks={self.task_names}, search={self.search})"


def _config(study):
    return study.config if isinstance(study, Study) else study


def search_settings(study, *, method: str | None = None, budget: int | None = None, seed: int | None = None,
                    population: int | None = None, patience: int | None = None) -> tuple[dict, dict]:
    """``(settings, method options)`` of a search: the study's ``[search]`` table, overridden by
    the given values, and the study's ``[search.<method>]`` options.  A given ``population``
    beats a per-method population in the study.  The CLI and :func:`optimize` both use it, so
    both run the same search.

    Examples
    --------
    >>> import fusiontune as ft
    >>> s, opts = ft.search_settings(ft.Study.from_toml("studies/demo.toml"), budget=50)  # doctest: +SKIP
    >>> s["budget"], opts["sigma0"] if s["method"] == "cma" else None  # doctest: +SKIP
    (50, None)
    """
    cfg = _config(study)
    s = dict(cfg.search)
    for key, value in (("method", method), ("budget", budget), ("seed", seed), ("population", population),
                       ("patience", patience)):
        if value is not None:
            s[key] = value
    options = dict(cfg.method_options.get(s["method"], {}))
    if population is not None:
        options.pop("population", None)
    return s, options


class SearchResult:
    """What a search or an LTR fit found: best params, per-task table, holdout, feasibility,
    the trials, and the study it ran on.  ``to_dict()`` is the result.json contract
    (docs/results.md).

    Examples
    --------
    >>> res = study.optimize(seed=0)  # doctest: +SKIP
    >>> res.best_params, res.feasible  # doctest: +SKIP
    >>> res.per_task  # a DataFrame: task, metric, weight, baseline, best, delta (+ holdout columns)  # doctest: +SKIP
    """

    def __init__(self, result: dict, trials: pd.DataFrame, prep, study=None):
        self.result, self.trials, self.prep = result, trials, prep
        self.study = study if study is not None else Study._wrap(prep.study)
        self.run_dir: Path | None = None

    @property
    def best_params(self) -> dict[str, float]:
        """Best feasible parameters (the baseline when nothing was feasible)."""
        return dict(self.result["best"]["params"])

    @property
    def best_value(self) -> float:
        """The best candidate's in-sample objective."""
        return float(self.result["best"]["objective"])

    @property
    def feasible(self) -> bool:
        """Whether the best meets every guardrail on the holdout (in-sample without a holdout)."""
        hold = self.result.get("holdout")
        return bool(hold["best"]["feasible"] if hold else self.result["best"]["feasible"])

    @property
    def holdout(self) -> dict | None:
        """``{"best": {...}, "baseline": {...}}`` on the holdout rows, or ``None``."""
        return self.result.get("holdout")

    @property
    def per_task(self) -> pd.DataFrame:
        """One row per task: metric, weight, baseline, best, delta, and the holdout's."""
        r = self.result
        tasks = {t["name"]: t for t in r["tasks"]}
        rows = []
        for name, b in r["baseline"]["per_task"].items():
            best = r["best"]["per_task"][name]
            row = {"task": name, "metric": tasks[name]["metric"], "weight": tasks[name]["weight"],
                   "baseline": b, "best": best, "delta": best - b}
            if r.get("holdout"):
                hb, hv = r["holdout"]["baseline"]["per_task"][name], r["holdout"]["best"]["per_task"][name]
                row.update({"holdout_baseline": hb, "holdout_best": hv, "holdout_delta": hv - hb})
            rows.append(row)
        return pd.DataFrame(rows)

    def trials_dataframe(self) -> pd.DataFrame:
        """Every evaluated candidate (a copy): params, per-task metrics, objective, feasible."""
        return self.trials.copy()

    def to_dict(self) -> dict:
        """The result.json dict (a copy)."""
        import copy

        return copy.deepcopy(self.result)

    def save(self, run_dir: str | Path) -> Path:
        """Write result.json, trials.csv and study.json into ``run_dir`` (atomically)."""
        from .results import write_run

        write_run(Path(run_dir), self.result, self.trials, study=self.prep.study)
        self.run_dir = Path(run_dir)
        return self.run_dir

    @classmethod
    def load(cls, run_dir: str | Path, *, log=None) -> "SearchResult":
        """A saved result; ``log`` (a path or in-memory table) is needed when the run was made
        from an in-memory log.  A changed log file is refused."""
        from .results import read_run, run_study
        from .select import load_run

        run_dir = Path(run_dir)
        if log is None:
            result, trials, prep = load_run(run_dir)
        else:
            from .pipeline import prepare

            result, trials = read_run(run_dir)
            study = run_study(run_dir, check_log=False)
            if study is None:
                raise RunError(f"{run_dir}: records no study")
            prep = prepare(Study._wrap(study, log).config)
        out = cls(result, trials, prep)
        out.run_dir = run_dir
        return out

    def select(self, **kwargs) -> dict:
        """:func:`select_arms` on this result."""
        return select_arms(self, **kwargs)

    def report(self, **kwargs) -> dict:
        """:func:`build_report` on this result."""
        return build_report(self, **kwargs)

    def export(self, path=None, **kwargs) -> dict:
        """:func:`export_weights` of this result."""
        return export_weights(self, path, **kwargs)

    def __repr__(self) -> str:
        return (f"SearchResult(study={self.result['study']!r}, method={self.result['method']!r}, "
                f"best_value={self.best_value:.6f}, feasible={self.feasible})")


def optimize(study, *, method: str | None = None, budget: int | None = None, seed: int | None = None,
             population: int | None = None, patience: int | None = None, options: dict | None = None,
             storage: str | None = None, resume: bool = False, show_progress: bool = False,
             engine: str | dict | None = None) -> SearchResult:
    """Search the study's fusion weights; every option defaults from the study, as the CLI's.

    Parameters
    ----------
    study : Study
    method : str, optional
        cem, cma, tpe, gp, neighborhood, random, grid, grad (default: the study's ``[search] method``).
    budget, seed, population, patience : int, optional
        Default: the study's ``[search]`` values.
    options : dict, optional
        Per-method options; default: the study's ``[search.<method>]`` table.
    storage : str, optional
        An Optuna storage URL recording every trial (e.g. ``sqlite:///runs/x/study.db``).
    resume : bool, default False
        Continue an interrupted run stored in ``storage``.
    show_progress : bool, default False
    engine : str or dict, optional
        ``"local"`` or ``"ray"``, or ``{"name": "ray", "address": ..., "actors": ...}``; default:
        the study's ``[engine]`` table, else local.  With ``"ray"`` the log stays sharded on Ray
        actors for the search (docs/engine.md); the trials are the local engine's.

    Returns
    -------
    SearchResult

    Examples
    --------
    >>> import fusiontune as ft
    >>> from fusiontune.simulate import simulate_log
    >>> study = ft.Study(log=simulate_log(requests=300, candidates=8, seed=1), group="request_id",
    ...                  tasks=[{"name": "click", "score": "p_click", "label": "click", "metric": "gauc"},
    ...                         {"name": "like", "score": "p_like", "label": "like", "weight": 0.6}],
    ...                  fusion={"reference": "click", "baseline": {"a_click": 1.0, "a_like": 0.2}},
    ...                  search={"budget": 24, "population": 8})
    >>> res = ft.optimize(study, seed=0)
    >>> sorted(res.best_params), res.trials_dataframe().shape[0]
    (['a_click', 'a_like'], 24)
    """
    from .pipeline import prepare, search

    cfg = _config(study)
    s, study_options = search_settings(cfg, method=method, budget=budget, seed=seed, population=population,
                                       patience=patience)
    opts = study_options if options is None else dict(options)
    name = f"{cfg.name}-{s['method']}-{s['seed']}"
    from .engine import engine_settings

    prep = prepare(cfg, engine=engine_settings(cfg, engine))
    try:
        result, trials = search(prep, s["method"], s["budget"], s["seed"], s["population"], s["patience"],
                                s["min_delta"], opts, show_progress=show_progress, storage=storage, resume=resume,
                                run_name=name)
    finally:
        prep.close()
    return SearchResult(result, trials, prep, study if isinstance(study, Study) else None)


def _loaded(result):
    if isinstance(result, SearchResult):
        if result.prep.engine is not None:  # searched on Ray actors: select and report read the rows here
            from .pipeline import prepare

            result.prep = prepare(result.prep.study)
        return result.result, result.trials, result.prep
    from .select import load_run

    return load_run(Path(result))


def select_arms(result, *, k: int | None = None, resamples: int | None = None, level: float | None = None,
           candidates: int | None = None, diversity: str | None = None, seed: int | None = None) -> dict:
    """Pick ``k`` diverse A/B arms with paired bootstrap CIs (the candidates.json dict).

    ``result`` is a :class:`SearchResult` or a run directory; options default from the
    study's ``[select]`` table.

    Examples
    --------
    >>> arms = ft.select_arms(res, k=2, resamples=100)  # doctest: +SKIP
    >>> [a["name"] for a in arms["arms"]]  # doctest: +SKIP
    ['arm-1', 'arm-2']
    """
    from .schema import SelectTable, validate
    from .select import select_arms as _select

    loaded = _loaded(result)
    given = {k_: v for k_, v in (("k", k), ("resamples", resamples), ("level", level), ("candidates", candidates),
                                 ("diversity", diversity), ("seed", seed)) if v is not None}
    table = {**(loaded[2].study.sections.get("select") or {}), **given}
    opts = validate(SelectTable, table, src="select()", table="select").model_dump()
    run_dir = result.run_dir if isinstance(result, SearchResult) else Path(result)
    return _select(run_dir, show_progress=False, loaded=loaded, **opts)


def build_report(result, *, out: str | Path | None = None, format: str | None = None, arms: dict | None = None,
           **options) -> dict:
    """The report's data (per-task CIs, convergence, sensitivity, Pareto, arms, stability);
    with ``out``, also written as html, md or json (by ``format`` or the suffix).

    Options (``pareto``, ``resamples``, ``level``, ``stability_resamples``,
    ``stability_candidates``, ``k``, ``seed``) default from the study's ``[report]`` table.

    Examples
    --------
    >>> rep = ft.build_report(res, resamples=100, stability_resamples=5)  # doctest: +SKIP
    >>> ft.build_report(res, out="report.html")  # doctest: +SKIP
    """
    from .report import collect, write_report
    from .schema import ReportTable, validate

    loaded = _loaded(result)
    table = {**(loaded[2].study.sections.get("report") or {}), **options}
    opts = validate(ReportTable, table, src="report()", table="report").model_dump()
    run_dir = result.run_dir if isinstance(result, SearchResult) else Path(result)
    opts["pareto"] = opts["pareto"] or None
    rep = collect(run_dir, loaded=loaded, arms=arms, **opts)
    if out is not None:
        out = Path(out)
        fmt = format or {"htm": "html", "markdown": "md"}.get(out.suffix.lower().lstrip("."),
                                                              out.suffix.lower().lstrip("."))
        if fmt not in ("html", "md", "json"):
            raise StudyError(f"{out}: cannot tell the report format from {out.suffix!r} (html, md or json)",
                             param="format")
        write_report(rep, fmt, out)
    return rep


def export_weights(result, path: str | Path | None = None, *, arm: str | None = None) -> dict:
    """The serving weights document of ``arm`` (``best`` by default, ``baseline`` or an A/B
    arm of a selected run); with ``path`` (.json, .yaml) it is also written.

    Examples
    --------
    >>> doc = ft.export_weights(res)  # doctest: +SKIP
    >>> doc["params"]  # doctest: +SKIP
    """
    from .export import resolve_arm, weights_document, write_weights

    r, _, prep = _loaded(result)
    if str(r.get("formula", "")).startswith("ltr-"):
        raise RunError(f"formula {r['formula']!r} is a learned fuser, not a weight set; save it with the LTR API")
    run_dir = result.run_dir if isinstance(result, SearchResult) else Path(result)
    if arm in (None, "best", "baseline"):
        name = arm or "best"
        params, extra = r[name]["params"], {}
    else:
        if run_dir is None:
            raise RunError(f"arm {arm!r} needs a saved run with selected arms (save the result and select first)",
                           param="arm")
        name, params, extra = resolve_arm(run_dir, r, arm)
    source = {"run": str(Path(run_dir).resolve()) if run_dir else None, "study": r.get("study"),
              "study_file": r.get("study_file"), "arm": name, "method": r.get("method"), "seed": r.get("seed"),
              **extra}
    doc = weights_document(prep.formula, prep.space, prep.study, params, source)
    if path is not None:
        write_weights(Path(path), doc)
    return doc


def evaluate(study, weights, *, log=None) -> dict:
    """Per-task metrics and objective of a weight set vs the baseline on the search part, the
    holdout and the whole log.  ``weights`` is a weights document (e.g. from :func:`export`),
    a ``{name: value}`` mapping or a weights file; ``log`` replaces the study's log.

    Examples
    --------
    >>> ft.evaluate(study, ft.export_weights(res))["parts"]["whole"]["objective"]  # doctest: +SKIP
    """
    from .export import evaluate_params
    from .io import read_weights

    cfg = _config(study)
    if log is not None:
        cfg = Study._wrap(cfg, log).config
    if isinstance(weights, (str, Path)):
        doc, src = read_weights(weights), str(weights)
    elif "params" in weights:
        doc, src = dict(weights), "weights"
    else:
        doc, src = {"formula": None, "params": dict(weights)}, "weights"
    return evaluate_params(cfg, doc, src)


def fit_ltr(study, *, model: str = "gbdt", target: str | None = None, seed: int | None = None,
            options: dict | None = None, vs=None, start="auto") -> SearchResult:
    """Fit a learn-to-rank fuser (``gbdt`` or ``dnn``) judged by the study's objective; the
    result has the same contract as a search's (``res.fuser`` is the fitted model).

    ``vs``: a formula search run directory of this study to judge the fuser against (the
    result's ``versus`` block). ``start``: where a residual fuser (the DNN, the LightGBM GBDT)
    starts: ``"auto"`` (``vs`` when given, else the baseline), ``"baseline"``, ``"best"``
    (``vs``, required) or a search run directory.

    Examples
    --------
    >>> res = ft.fit_ltr(study, model="gbdt")  # doctest: +SKIP
    >>> scores = res.fuser.predict(res.prep.log)  # doctest: +SKIP
    >>> res = ft.fit_ltr(study, model="dnn", vs="runs/demo-cma-0")  # starts from that run  # doctest: +SKIP
    """
    from .ltr import fit_ltr as _fit
    from .ltr.config import parse_config
    from .ltr.fit import starts_from_formula
    from .ltr.versus import resolve_start
    from .pipeline import prepare

    cfg = _config(study)
    prep = prepare(cfg)
    lcfg = parse_config(cfg.sections.get("ltr"), options, str(cfg.path or "<study>"))
    target = target or lcfg.target
    seed = cfg.search.get("seed", 0) if seed is None else seed
    begin, begin_run = resolve_start(prep, start, vs, starts_from_formula(prep, model, lcfg, target),
                                     where="vs")
    result, trials, fuser = _fit(prep, model, target, seed, options, start=begin, start_run=begin_run, vs=vs)
    res = SearchResult(result, trials, prep, study if isinstance(study, Study) else None)
    res.fuser = fuser
    return res


def train(*, data, tasks, out, **settings) -> dict:
    """Train a multi-task model and write the prediction log of its test part (needs torch).

    Keyword settings are those of :class:`fusiontune.mtl.config.TrainData` and
    :class:`~fusiontune.mtl.config.TrainConfig` (e.g. ``model="mmoe"``, ``epochs=5``,
    ``weight_decay=1e-4``, ``lr_schedule="cosine"``); returns the metrics dict.

    Examples
    --------
    >>> ft.train(data="feed.parquet", tasks=["click", "like"], out="log.parquet",
    ...          features=["age"], model="mmoe", epochs=2)  # doctest: +SKIP
    """
    import dataclasses

    from .errors import missing_dependency
    from .mtl.config import TrainConfig, TrainData, TrainSpec
    from .schema import keys, validate

    merged = {"data": data, "tasks": tasks, "out": out, **settings}
    d = validate(TrainData, {k: v for k, v in merged.items() if k in keys(TrainData)}, src="train()", table="train")
    unknown = [k for k in merged if k not in keys(TrainData) and k not in keys(TrainConfig)]
    if unknown:
        raise StudyError(f"train(): unknown setting {unknown[0]!r}", param=unknown[0])
    c = validate(TrainConfig, {k: v for k, v in merged.items() if k in keys(TrainConfig)}, src="train()",
                 table="train")
    if c.model == "cgc":
        c = dataclasses.replace(c, model="ple", levels=1)
    try:
        import torch  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the install
        raise missing_dependency("torch", "train()", "pip install 'torch==2.13.0'") from None
    from .mtl.train import train_to_log

    spec = TrainSpec(**{f.name: getattr(d, f.name) for f in dataclasses.fields(d)}, config=c)
    return train_to_log(spec, show_progress=False)
