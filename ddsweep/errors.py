"""Errors that reach the user as one clear line (exit code 2)."""

import reprlib


class UserError(Exception):
    """Bad input or an unusable environment: printed as one line, exit code 2."""

    exit_code = 2


class GridError(UserError):
    """A grid file that cannot be used; the message names file, key and value."""

    def __init__(self, path, key: str, value, problem: str):
        self.path, self.key, self.value, self.problem = str(path), key, value, problem
        where = f"{self.path}: {key}" if key else self.path
        shown = "" if value is _MISSING else f" = {_short_repr(value)}"
        super().__init__(" ".join(f"{where}{shown}: {problem}".splitlines()))  # always one line


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict = 3, 12, 12, 8
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 80, 80, 40


def _short_repr(value) -> str:
    """repr of a value from a YAML file, bounded: a huge or deeply aliased value stays one short line."""
    text = _REPR.repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


class DatabaseBusy(UserError):
    """The database stayed locked by another process for longer than we wait."""


class SchemaError(UserError):
    """The database was written by a newer ddsweep, or is not a ddsweep database."""


class _Missing:
    def __repr__(self):
        return "<missing>"


_MISSING = _Missing()
MISSING = _MISSING
