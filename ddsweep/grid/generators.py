"""Axis values: a scalar, a list, or a generator ({geom|range|linspace: [...]}), made canonical."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ddsweep.errors import MISSING, GridError
from ddsweep.grid.spec import INT_AXES, MAX_JOBS


def axis_values(name: str, raw: Any, path) -> list:
    """Expand one axis: a scalar, a list, or a generator {geom|range|linspace: [...]}."""
    return dedup_values(name, axis_list(name, raw, path))


def axis_list(name: str, raw: Any, path, key: str | None = None) -> list:
    """An axis as the list of values it gives, in order, duplicates kept (so errors index the file)."""
    key = key or f"grid.{name}"
    if isinstance(raw, dict):
        if len(raw) != 1:
            raise GridError(path, key, raw, "an axis generator has exactly one of geom, range, linspace")
        (kind, args), = raw.items()
        if kind not in ("geom", "range", "linspace"):
            raise GridError(path, key, raw, f"unknown axis generator {kind!r} (use geom, range or linspace)")
        if not isinstance(args, list) or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
            hint = TEXT_NUMBER_HINT if isinstance(args, list) and any(map(looks_numeric, args)) else ""
            raise GridError(path, f"{key}.{kind}", args, "arguments must be a list of numbers" + hint)
        if not all(math.isfinite(a) for a in args):
            raise GridError(path, f"{key}.{kind}", args, "arguments must be finite numbers")
        values = _generate(kind, args, path, f"{key}.{kind}")
        if not all(math.isfinite(v) for v in values):
            raise GridError(path, f"{key}.{kind}", args, "generates values too large to represent")
        if name in INT_AXES:
            values = [int(round(v)) for v in values]
    elif isinstance(raw, list):  # values, and generators whose values are spliced in: [{range: [1, 32]}, 96]
        values = []
        for i, item in enumerate(raw):
            if isinstance(item, dict):
                values.extend(axis_list(name, item, path, f"{key}[{i}]"))
            elif isinstance(item, list):
                raise GridError(path, f"{key}[{i}]", item, "axis values must be single values, not lists")
            else:
                values.append(item)
            if len(values) > MAX_JOBS:
                raise GridError(path, key, MISSING, f"more than {MAX_JOBS} values, the most cells a grid may have")
    else:
        values = [raw]
    if not values:
        raise GridError(path, key, raw, "empty axis: give at least one value")
    for i, v in enumerate(values):
        if isinstance(v, (dict, list)):
            raise GridError(path, f"{key}[{i}]" if isinstance(raw, list) else key, v,
                            "axis values must be single values, not lists or mappings")
    return values


TEXT_NUMBER_HINT = " (YAML reads 1e-3 and 1.0e12 as text: write 1.0e-3 and 1.0e+12)"


def looks_numeric(v) -> bool:
    if not isinstance(v, str):
        return False
    try:
        float(v)
    except ValueError:
        return False
    return True


def canonical_values(name: str, values: list) -> list:
    """Canonical floats: 0.1 from a generator equals 0.1 typed."""
    return [float(f"{v:.10g}") if isinstance(v, float) and name not in INT_AXES else v for v in values]


def dedup_values(name: str, values: list) -> list:
    seen, unique = set(), []
    for v in canonical_values(name, values):
        marker = (type(v).__name__, v) if not isinstance(v, (int, float)) or isinstance(v, bool) else v
        if marker not in seen:
            seen.add(marker)
            unique.append(v)
    return unique


def _generate(kind: str, args: list, path, key: str) -> list[float]:
    if kind in ("geom", "linspace") and len(args) == 3 and args[2] > MAX_JOBS:
        raise GridError(path, key, args, f"absurd count {args[2]:g}; a grid has at most {MAX_JOBS} cells")
    if kind == "geom":
        if len(args) != 3 or args[0] <= 0 or args[1] <= 0 or int(args[2]) != args[2] or args[2] < 1:
            raise GridError(path, key, args, "geom takes [start > 0, stop > 0, count >= 1]")
        with np.errstate(all="ignore"):
            return list(np.geomspace(args[0], args[1], int(args[2])))
    if kind == "linspace":
        if len(args) != 3 or int(args[2]) != args[2] or args[2] < 1:
            raise GridError(path, key, args, "linspace takes [start, stop, count >= 1]")
        with np.errstate(all="ignore"):
            return list(np.linspace(args[0], args[1], int(args[2])))
    # range: inclusive of stop, so {range: [1, 64]} is k = 1..64 as in the paper
    if len(args) not in (2, 3) or (len(args) == 3 and args[2] <= 0):
        raise GridError(path, key, args, "range takes [start, stop] or [start, stop, step > 0] (stop included)")
    start, stop, step = args[0], args[1], args[2] if len(args) == 3 else 1
    if stop < start:
        raise GridError(path, key, args, "range is empty: stop < start")
    span = (stop - start) / step
    if not span < MAX_JOBS:
        raise GridError(path, key, args, f"absurd range: more than {MAX_JOBS} values, the most cells a grid may have")
    count = int(math.floor(span + 1e-9)) + 1
    return [start + i * step for i in range(count)]
