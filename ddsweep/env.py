"""Every DDSWEEP_* environment variable: defined, parsed and validated here, and read nowhere else.

`ddsweep work` reads the variables once at its start (ddsweep.workers.options.WorkOptions)
and hands their values down as explicit options; a bad value is one line naming the
variable and the value (exit code 2) before any job is leased. The two locations
(DDSWEEP_CACHE, DDSWEEP_DATA) are read where a dataset is loaded, through `value()`.
DDSWEEP_DB is the command line's default for `--db` (ddsweep.cli; the Python functions
take their `db` argument only).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable

from ddsweep.errors import UserError


def _flag(text: str) -> bool:
    if text not in ("0", "1"):
        raise ValueError("must be 0 or 1")
    return text == "1"


def _gib(text: str) -> float:
    try:
        gib = float(text)
    except ValueError:
        gib = math.nan
    if not gib > 0 or math.isinf(gib):
        raise ValueError("must be a number of GiB above 0 (e.g. 20)")
    return gib


def _path(text: str) -> str:
    return text


def _database(text: str) -> str:
    if os.path.isdir(text) or text.endswith(("/", os.sep)):
        raise ValueError("must be a database file, not a folder (e.g. /data/results.duckdb)")
    return text


@dataclass(frozen=True)
class Variable:
    name: str
    meaning: str  # one line for `ddsweep work --help`
    parse: Callable[[str], object]  # text -> value; a ValueError says what the text must be


VARIABLES: dict[str, Variable] = {v.name: v for v in (
    Variable("DDSWEEP_COMPILE", "1: conv packs on a GPU run through torch.compile (default 0; --compile)", _flag),
    Variable("DDSWEEP_CUDA_GRAPHS", "0: conv packs on a GPU step eagerly, not by CUDA graphs (default 1; "
             "--no-cuda-graphs)", _flag),
    Variable("DDSWEEP_DENSE_MEMBERS", "1/0: wide conv members run as dense networks / grouped (default: "
             "automatic; --dense-members)", _flag),
    Variable("DDSWEEP_PACK_MEMORY_GB", "GiB one pack of conv models may use (default: from the device; "
             "--pack-memory-gb)", _gib),
    Variable("DDSWEEP_CACHE", "where generated datasets (MNIST-1D, image caches) are kept (default "
             "~/.cache/ddsweep)", _path),
    Variable("DDSWEEP_DATA", "root of the image datasets when a grid names none (default ~/.cache/ddsweep/data)",
             _path),
    Variable("DDSWEEP_DB", "the database of every command when --db is not given (default results.duckdb)",
             _database),
)}


def value(name: str):
    """The parsed value of the variable `name`, None where it is unset or empty; a bad value is a UserError."""
    var = VARIABLES[name]
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        return var.parse(text)
    except ValueError as e:
        raise UserError(f"${name} = {text!r}: {e}") from None


def check_all() -> dict[str, object]:
    """Every variable that is set, parsed (the first bad one raises): name -> value."""
    values = {name: value(name) for name in VARIABLES}
    return {name: v for name, v in values.items() if v is not None}


def help_text() -> str:
    """The variables, one per line, for `--help`."""
    return "\n".join(f"${v.name}: {v.meaning}" for v in VARIABLES.values())
