"""The errors fusiontune raises for bad input, one small hierarchy.

Every error is a :class:`FusiontuneError`, which subclasses :class:`ValueError` (as
scikit-learn's estimator errors do), so ``except ValueError`` in a notebook catches them.
The message names the file, the parameter or the study key and the offending value; it
never names a command-line flag.  The CLI prints ``fusiontune: error: <message>`` on one
line and exits with code 2; when the error carries ``param``, the CLI adds the flag that
sets it.

==================  ===============================================================
class               raised for
==================  ===============================================================
LogError            a prediction log: missing file or column, bad values, changed log
StudyError          a study: unknown key, bad value, inconsistent tables
RunError            a run directory or result: missing, incomplete, wrong kind
DependencyError     an optional package (torch, lightgbm, ...) is not installed
==================  ===============================================================

``InputError`` is the older name of :class:`FusiontuneError`, kept so that code raising or
catching it keeps working.

Examples
--------
>>> from fusiontune.errors import StudyError, FusiontuneError
>>> err = StudyError("[select] level must be in (0, 1), got 2", param="level")
>>> isinstance(err, ValueError), isinstance(err, FusiontuneError), err.param
(True, True, 'level')
"""

from __future__ import annotations

__all__ = ["FusiontuneError", "LogError", "StudyError", "RunError", "DependencyError", "InputError",
           "missing_dependency"]


class FusiontuneError(ValueError):
    """Bad input to fusiontune: a file, a column, a study key or a parameter value.

    Parameters
    ----------
    message : str
        One line naming the file, the key or parameter and the offending value.
    param : str, optional
        The Python parameter (or study key) at fault, e.g. ``"level"``.  The CLI uses it to
        name the matching command-line option; library users read it programmatically.
    """

    def __init__(self, message: str = "", *, param: str | None = None):
        super().__init__(message)
        self.param = param


class LogError(FusiontuneError):
    """A prediction log is missing, unreadable, lacks a column, holds bad values or changed
    since a run was made from it."""


class StudyError(FusiontuneError):
    """A study (TOML file or built in code) has an unknown key, a bad value or tables that do
    not fit together."""


class RunError(FusiontuneError):
    """A run directory or a result is missing, incomplete or of the wrong kind (e.g. exporting
    weights from a learned fuser)."""


class DependencyError(FusiontuneError, ImportError):
    """An optional dependency is not installed; the message is a one-line install hint.

    It is both a :class:`FusiontuneError` (the CLI prints one line, exit code 2) and an
    :class:`ImportError`.
    """


#: older name of :class:`FusiontuneError`, kept for compatibility
InputError = FusiontuneError


def missing_dependency(package: str, needed_for: str, install: str) -> DependencyError:
    """A :class:`DependencyError` saying what needs ``package`` and how to install it.

    Examples
    --------
    >>> str(missing_dependency("torch", "the DNN fuser", "pip install 'torch==2.13.0'"))
    "the DNN fuser needs torch, which is not installed: pip install 'torch==2.13.0'"
    """
    return DependencyError(f"{needed_for} needs {package}, which is not installed: {install}")
