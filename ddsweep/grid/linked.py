"""Linked axes: `grid.zip`, groups of axes whose i-th values go together instead of crossing.

    grid:
      width: [16, 64]
      zip:                    # one group: (32, 0.025, 0), (64, 0.05, 100), ...
        batch_size: [32, 64, 128, 256]
        lr: [0.025, 0.05, 0.1, 0.2]
        warmup: [0, 100, 200, 400]

`zip` is one group (a mapping of axes to equally long lists) or a list of such groups.
Each group is one factor of the grid's product: it crosses with the other axes and
groups, its own axes vary together. A job's config does not record the grouping, so
a linked cell is the same job (same id) as that cell of the crossed grid, and grids
without `zip` keep their ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ddsweep.errors import MISSING, GridError
from ddsweep.grid.generators import axis_list, canonical_values
from ddsweep.grid.spec import ALL_AXES
from ddsweep.suggest import unknown

ZIP = "zip"  # the key of grid.zip


@dataclass(frozen=True)
class Factor:
    """One factor of a grid's product: a plain axis (one name) or a linked group (several).

    rows:    the distinct value tuples, in the file's order (one value per name);
    written: each axis's values as written (canonical, duplicates kept) for error messages;
    keys:    each axis's key in the grid file (grid.lr, grid.zip.lr, grid.zip[1].lr).
    """

    names: tuple[str, ...]
    rows: tuple[tuple, ...]
    written: dict[str, list]
    keys: dict[str, str]


def _groups(raw: Any, path) -> list[tuple[str, dict]]:
    """grid.zip as (key, group) pairs: one mapping, or a list of them."""
    shape = ("a group of linked axes is a mapping of axes to equally long lists of values, "
             "or a list of such mappings")
    if isinstance(raw, dict):
        return [(f"grid.{ZIP}", raw)]
    if isinstance(raw, list) and raw:
        for i, g in enumerate(raw):
            if not isinstance(g, dict):
                raise GridError(path, f"grid.{ZIP}[{i}]", g, shape)
        return [(f"grid.{ZIP}[{i}]", g) for i, g in enumerate(raw)]
    raise GridError(path, f"grid.{ZIP}", raw, shape)


def axis_key(grid: dict, name: str) -> str:
    """Where an axis is given in a grid mapping (for error messages): grid.lr or grid.zip[1].lr."""
    raw = grid.get(ZIP)
    groups = [raw] if isinstance(raw, dict) else raw if isinstance(raw, list) else []
    for i, g in enumerate(groups):
        if isinstance(g, dict) and name in g:
            return f"grid.{ZIP}.{name}" if isinstance(raw, dict) else f"grid.{ZIP}[{i}].{name}"
    return f"grid.{name}"


def axis_names(grid: dict) -> set[str]:
    """Every axis a grid mapping names, plain or linked (malformed groups are left to `factors`)."""
    names = {k for k in grid if k != ZIP}
    raw = grid.get(ZIP)
    for g in [raw] if isinstance(raw, dict) else raw if isinstance(raw, list) else []:
        if isinstance(g, dict):
            names.update(k for k in g if isinstance(k, str))
    return names


def factors(grid: dict, path) -> list[Factor]:
    """The grid's factors in the file's order; GridError for an unknown, repeated or unequal axis."""
    plain = [k for k in grid if k != ZIP]
    out: list[Factor] = []
    linked_in: dict[str, str] = {}
    for name, raw in grid.items():
        if name != ZIP:
            _known(name, f"grid.{name}", raw, path)
            written = canonical_values(name, axis_list(name, raw, path))
            out.append(Factor((name,), _distinct([(v,) for v in written]), {name: written}, {name: f"grid.{name}"}))
            continue
        for key, group in _groups(raw, path):
            if not group:
                raise GridError(path, key, group, "an empty group: link at least one axis")
            names = tuple(group)
            label = f"{key} ({', '.join(map(str, names))})"
            written, keys = {}, {}
            for a in names:
                _known(a, f"{key}.{a}", group[a], path)
                if a in plain:
                    raise GridError(path, label, MISSING, f"{a} is both in this group and a plain axis of the grid; "
                                    "give it in one place")
                if a in linked_in:
                    raise GridError(path, label, MISSING, f"{a} is also linked in {linked_in[a]}; "
                                    "an axis belongs to at most one group")
                linked_in[a] = key
                keys[a] = f"{key}.{a}"
                written[a] = canonical_values(a, axis_list(a, group[a], path, keys[a]))
            lengths = {len(v) for v in written.values()}
            if len(lengths) > 1:
                counts = ", ".join(f"{a} {len(v)}" for a, v in written.items())
                raise GridError(path, label, MISSING,
                                f"linked axes need equally many values (the i-th values go together); got {counts}")
            out.append(Factor(names, _distinct(list(zip(*written.values()))), written, keys))
    return out


def _known(name, key: str, raw, path) -> None:
    if not isinstance(name, str) or name not in ALL_AXES:
        raise GridError(path, key, raw, unknown("axis", name, ALL_AXES))


def _distinct(rows: list[tuple]) -> tuple[tuple, ...]:
    """Rows without repeats, in order (0.1 and 0.1 alike; 1 and true not: bool is not a number here)."""
    seen, out = set(), []
    for row in rows:
        marker = tuple((type(v).__name__, v) if not isinstance(v, (int, float)) or isinstance(v, bool) else v
                       for v in row)
        if marker not in seen:
            seen.add(marker)
            out.append(row)
    return tuple(out)
