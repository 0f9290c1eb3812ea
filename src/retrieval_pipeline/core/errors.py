"""The errors a stage reports as one line (exit code 2, no traceback): each names the params key, or the file and
line, at fault and what was expected."""


class ParamsError(ValueError):
    """params.yaml (or a resolved params file) is missing, unreadable or does not match what a family expects."""


class DataError(ValueError):
    """Input data that a stage cannot use, with where it came from and what was expected."""


class ModelError(ValueError):
    """A model reference that cannot be loaded, with the params key that names it and what was expected."""


class OutputError(OSError):
    """An output that could not be written (a full disk, a read-only or forbidden folder), named with the reason."""
