"""Where a search's candidates are scored: ``local`` (this process) or ``ray`` (Ray actors
that each hold one shard of the log; see :mod:`fusiontune.engine.ray_engine`).

The study's ``[engine]`` table (``name``, ``address``, ``actors``) picks it; the search command's
engine options and :func:`fusiontune.optimize`'s ``engine`` override it.  Everything after
the objective (methods, guardrails, holdout, result.json, resume, select, report) is the same
for both engines.  Ray is imported only when the ``ray`` engine is used.
"""

from __future__ import annotations

from ..errors import StudyError

__all__ = ["ENGINES", "engine_settings", "prepare_sharded"]

ENGINES = ("local", "ray")


def engine_settings(study, engine: str | dict | None = None, address: str | None = None,
                    actors: int | None = None) -> dict:
    """``{"name", "address", "actors"}``: the study's ``[engine]`` overridden by the given values.
    An ``address`` without a name means the ``ray`` engine (it names a Ray cluster)."""
    cfg = {"name": "local", "address": None, "actors": None, **(study.sections.get("engine") or {})}
    if isinstance(engine, dict):
        cfg.update({k: v for k, v in engine.items() if v is not None})
    elif engine is not None:
        cfg["name"] = engine
    if address is not None:
        cfg["address"] = address
        if engine is None:
            cfg["name"] = "ray"
    if actors is not None:
        cfg["actors"] = actors
    src = str(study.path or "<study>")
    if cfg["name"] not in ENGINES:
        raise StudyError(f"{src}: [engine] name must be one of {', '.join(ENGINES)}, got {cfg['name']!r}",
                         param="engine")
    if cfg["actors"] is not None and (not isinstance(cfg["actors"], int) or cfg["actors"] < 1):
        raise StudyError(f"{src}: [engine] actors must be a whole number >= 1, got {cfg['actors']!r}",
                         param="actors")
    if cfg["name"] == "local" and cfg["address"]:
        raise StudyError(f"{src}: [engine] address {cfg['address']!r} names a Ray cluster, but the engine is "
                         f"\"local\" (set name = \"ray\")", param="address")
    return cfg


def prepare_sharded(study, settings: dict, formula, space):
    """:func:`fusiontune.pipeline.prepare` for the ``ray`` engine: the log stays on the actors,
    the objectives of the search / select / holdout roles are theirs."""
    from ..log import in_memory_name
    from ..pipeline import Prepared
    from .ray_engine import RayEngine, ShardedLog

    src = str(study.path or "<study>")
    if study.log_data is not None:
        raise StudyError(f"{src}: the Ray engine's actors read the log from its path; an in-memory log "
                         f"({in_memory_name(study.log_data)}) cannot be sharded", param="engine")
    if formula.name == "rank" and (formula.rank_scope != "group" or not study.group):
        raise StudyError(f"{src}: the rank formula over all rows ranks across shards; the Ray engine needs "
                         f"rank_scope = \"group\" and a group column", param="rank_scope")
    engine = RayEngine(study, settings, formula.needs_probabilities, formula)
    try:
        rows, info, n = engine.prepare_split(study.split)
        names = [t.name for t in study.tasks]

        def part(r):
            return ShardedLog(rows[r], engine.source, names) if rows[r] else None

        objective = engine.objective("search", rows["search"])
        objective.set_baseline(space.baseline)
        return Prepared(study, formula, space, ShardedLog(n, engine.source, names), part("search"), part("holdout"),
                        objective, select_log=part("select"), split_info=info if study.split else None,
                        engine=engine)
    except BaseException:
        engine.close()
        raise
