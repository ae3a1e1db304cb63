"""Errors that reach the user as one clear line (exit code 2), and every exit code of `ddsweep`."""

import errno
import os
import re
import reprlib

# Exit codes (README: Reliability). A signal that stopped `work` gives 128 + its number.
EXIT_OK = 0  # every job of the scope ended done or diverged (other commands: it worked)
EXIT_BUG = 1  # an unexpected error (a traceback): please report it
EXIT_USAGE = 2  # bad input or an unusable environment (a UserError): one line says what and where
EXIT_JOBS_FAILED = 3  # `work`: some job of the scope is failed (see `ddsweep retry`)
EXIT_UNFINISHED = 4  # `work`: some job of the scope is still pending or running (e.g. leased by another `work`)


def signal_exit_code(signum: int) -> int:
    """The shell's convention: 130 after SIGINT (Ctrl-C), 143 after SIGTERM."""
    return 128 + int(signum)


class UserError(Exception):
    """Bad input or an unusable environment: printed as one line, exit code 2."""

    exit_code = EXIT_USAGE


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


class StorageError(UserError):
    """A file ddsweep must write cannot be written: no permission, a read-only file system, a full disk."""


# Faults of the storage, not of the job or the input: they stop a command (exit 2), never fail a job.
STORAGE_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EIO)
_STORAGE_TEXTS = tuple(os.strerror(n) for n in STORAGE_ERRNOS)  # as DuckDB words them in its errors


def storage_fault(e: BaseException) -> str | None:
    """'PATH: No space left on device' (or the like) when `e` is a storage fault, else None.

    An OSError with one of STORAGE_ERRNOS, or a DuckDB error (also wrapped by SQLAlchemy)
    that names one of them."""
    if isinstance(e, StorageError):
        return str(e)
    if isinstance(e, OSError):
        if e.errno not in STORAGE_ERRNOS:
            return None
        return f"{e.filename}: {e.strerror}" if e.filename else (e.strerror or str(e))
    text = str(getattr(e, "orig", None) or e)
    for fault in _STORAGE_TEXTS:
        if fault in text:
            path = re.search(r'(?:file|directory) "([^"]+)"', text)
            return f"{path.group(1)}: {fault}" if path else " ".join(text.split())[:300]
    return None


class SchemaError(UserError):
    """The database was written by a newer ddsweep, or is not a ddsweep database."""


class _Missing:
    def __repr__(self):
        return "<missing>"


_MISSING = _Missing()
MISSING = _MISSING
