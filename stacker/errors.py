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


class TemplateError(StackError, ValueError):
    """The submission template does not match the layout (ids, classes) or cannot be read."""


class PredictionMismatch(StackError):
    """Re-predicted probabilities differ from the saved ones."""


class MetadataError(StackError, ValueError):
    """A metadata CSV is missing, malformed, or lacks a needed column; names the file and the fix."""


class AudioError(StackError, ValueError):
    """An audio file is missing, unreadable or empty; the message names the file and the fix."""


class ModelOutputError(StackError, ValueError):
    """A fold model returned predictions of the wrong shape or values that are not probabilities."""


class FeatureError(StackError, ValueError):
    """A feature CSV cannot be used as model input."""


class ClusterError(StackError):
    """The dask cluster named by --scheduler cannot be used: not installed, unreachable, or a task
    kept killing its workers."""


class LockedError(StackError):
    """Another command is writing the same layout root (its ``.stack/lock`` is held)."""
