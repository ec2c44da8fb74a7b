"""Errors the engine raises for bad user input.

Every message is one line that names the culprit (file, line, parameter);
the command line prints it without a traceback.
"""


class InputError(ValueError):
    """Bad user input: a file, a table line or a parameter value."""
