"""Errors that reach the user as one clear line (exit code 2)."""


class UserError(Exception):
    """Bad input or an unusable environment: printed as one line, exit code 2."""

    exit_code = 2


class GridError(UserError):
    """A grid file that cannot be used; the message names file, key and value."""

    def __init__(self, path, key: str, value, problem: str):
        self.path, self.key, self.value, self.problem = str(path), key, value, problem
        where = f"{self.path}: {key}" if key else self.path
        shown = "" if value is _MISSING else f" = {value!r}"
        super().__init__(f"{where}{shown}: {problem}")


class DatabaseBusy(UserError):
    """The database stayed locked by another process for longer than we wait."""


class SchemaError(UserError):
    """The database was written by a newer ddsweep, or is not a ddsweep database."""


class _Missing:
    def __repr__(self):
        return "<missing>"


_MISSING = _Missing()
MISSING = _MISSING
