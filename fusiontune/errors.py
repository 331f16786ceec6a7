"""Errors that reach the user as one line on stderr and exit code 2."""


class InputError(Exception):
    """Bad user input (file, column, value, study key).

    The CLI prints ``fusiontune: error: <message>`` and exits with code 2, with no
    traceback.  Raise it with a message that names the file, the column or key and an
    example of the offending value.
    """
