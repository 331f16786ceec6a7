"""The ``fusiontune`` command.

Each subcommand lives in its own module under ``fusiontune/commands/`` with ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``; :data:`COMMANDS` lists them.  Command
modules import heavy libraries (torch, matplotlib, optuna) inside ``run`` only, so that
``fusiontune --help`` and ``fusiontune search`` stay quick.

Errors in the user's input (:class:`~fusiontune.errors.FusiontuneError` and its subclasses)
print one line, ``fusiontune: error: ...``, on stderr and exit with code 2, without a
traceback.  Core modules name the Python parameter or study key at fault (``exc.param``);
:func:`flag_hint` maps it to this command's option, e.g. ``level`` -> ``--level``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import FusiontuneError

#: subcommand -> module (in the order ``--help`` lists them)
COMMANDS = {
    "search": "fusiontune.commands.search",
    "compare": "fusiontune.commands.compare",
    "simulate": "fusiontune.commands.simulate",
    "train": "fusiontune.commands.train",
    "select": "fusiontune.commands.select",
    "report": "fusiontune.commands.report",
    "export": "fusiontune.commands.export",
    "eval": "fusiontune.commands.eval",
    "ltr": "fusiontune.commands.ltr",
    "score": "fusiontune.commands.score",
    "bucket": "fusiontune.commands.bucket",
}


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="fusiontune",
        description="Multi-task score fusion for recommender ranking: search fusion weights "
                    "on prediction logs, select A/B candidates, export them.")
    parser.add_argument("--version", action="version", version=f"fusiontune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, modname in COMMANDS.items():
        mod = importlib.import_module(modname)
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run, _parser=p)
    return parser


def flag_hint(parser: argparse.ArgumentParser | None, param: str | None) -> str:
    """`` (option --x)`` when ``param`` is set by an option of ``parser``, else ``""``."""
    if parser is None or not param:
        return ""
    for action in parser._actions:
        if action.dest == param and action.option_strings:
            return f" (option {action.option_strings[-1]})"
    return ""


#: commands whose work goes through Optuna (samplers or the trial storage)
OPTUNA_COMMANDS = ("search", "compare")


def configure_logging(command: str | None) -> None:
    """Loggers are configured here, by the command line only: the library never changes a
    logger's level.  Optuna's per-trial INFO lines would bury the progress bar."""
    if command in OPTUNA_COMMANDS:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    configure_logging(args.command)
    import signal

    from .interrupt import exit_status, handle_sigterm, signal_name

    previous = signal.getsignal(signal.SIGTERM)
    installed = handle_sigterm()  # SIGTERM stops a command the way Ctrl-C does
    try:
        return int(args._run(args) or 0)
    except FusiontuneError as exc:
        msg = " ".join(str(exc).split("\n"))
        print(f"fusiontune: error: {msg}{flag_hint(getattr(args, '_parser', None), exc.param)}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"fusiontune: stopped by {signal_name(exc)}", file=sys.stderr)
        return exit_status(exc)
    finally:
        if installed:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
