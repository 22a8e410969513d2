"""User errors: problems with the user's files or options, printed by the CLI as one line.

Everything here is an expected condition a user can fix. The CLI prints ``str(error)`` and exits
with code 1; library callers catch :class:`StackError`.
"""


class StackError(Exception):
    """Base of every error the user can act on (bad file, bad option, missing input)."""


class LayoutError(StackError, ValueError):
    """A file of the standard prediction layout is missing, malformed or inconsistent."""

    def __init__(self, message: str, *, experiment: str | None = None, path=None):
        self.experiment = experiment
        self.path = path
        prefix = []
        if experiment is not None:
            prefix.append(f"experiment '{experiment}'")
        if path is not None:
            prefix.append(str(path))
        super().__init__(f"{': '.join(prefix)}: {message}" if prefix else message)


class OptionError(StackError, ValueError):
    """A command-line option or function argument has a value that cannot be used."""


class OutputExistsError(StackError, FileExistsError):
    """An output file exists and would be overwritten; the user must pass --force or a new path."""
