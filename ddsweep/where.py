"""`--where`: which cells a command reads, as typed on the command line and as a Python dict.

A filter is {column: [condition, ...]}. A plain value (`43`, `"sgd"`) means equality;
several plain values of one column are alternatives (`width=8,16`: 8 or 16; numbers
match with a relative tolerance of 1e-9, as typed 0.1 matches a stored
0.1000000001). A `Compare` (`width>=10`, `lr!=0.1`) or a `Between` (`width=8..64`, both
ends included, either end may be left out) must hold as well: conditions on one column
are AND-ed with each other and with its set of plain values.

The read layer turns a filter into SQL (ddsweep.store.results); the pure analysis
applies the same filter to a frame (ddsweep.analysis.frames.apply_where).
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass

from ddsweep.errors import UserError

TOLERANCE = (1e-9, 1e-12)  # (relative, absolute): typed numbers equal stored ones this close (numpy's isclose)
OPERATORS = {">=": operator.ge, "<=": operator.le, "!=": operator.ne, ">": operator.gt, "<": operator.lt}
SYNTAX = "expected AXIS=VALUE[,VALUE...], AXIS>=V (also <=, >, <, !=) or AXIS=LO..HI, e.g. --where width=8..64"


@dataclass(frozen=True)
class Compare:
    """`column op value`, op one of >=, <=, >, <, != (value a number, or text for !=)."""

    op: str
    value: object

    def __str__(self) -> str:
        return f"{self.op}{_num_text(self.value) if isinstance(self.value, float) else self.value}"


@dataclass(frozen=True)
class Between:
    """`lo <= column <= hi`; None leaves that end open."""

    lo: float | None
    hi: float | None

    def __str__(self) -> str:
        return f"={'' if self.lo is None else _num_text(self.lo)}..{'' if self.hi is None else _num_text(self.hi)}"


def _num_text(x: float) -> str:
    return f"{x:g}"


def _number(text: str, item: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise UserError(f"--where {item}: {text!r} is not a number (a comparison or a range needs one)") from None
    if x != x:
        raise UserError(f"--where {item}: NaN is no bound")
    return x


_ITEM = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|!=|>|<|=)\s*(.*?)\s*$")


def parse_item(item: str) -> tuple[str, list]:
    """One `--where` item -> (column, conditions)."""
    m = _ITEM.match(str(item))
    if not m or not m.group(3):
        raise UserError(f"--where {item}: {SYNTAX}")
    col, op, rest = m.groups()
    if op != "=":
        value = _number(rest, item) if op != "!=" else _maybe_number(rest)
        return col, [Compare(op, value)]
    if ".." in rest:
        lo, _, hi = rest.partition("..")
        if not lo.strip() and not hi.strip() or "," in rest:
            raise UserError(f"--where {item}: {SYNTAX}")
        span = Between(_number(lo, item) if lo.strip() else None, _number(hi, item) if hi.strip() else None)
        if span.lo is not None and span.hi is not None and span.lo > span.hi:
            raise UserError(f"--where {item}: the range is empty ({_num_text(span.lo)} > {_num_text(span.hi)})")
        return col, [span]
    values = [v.strip() for v in rest.split(",") if v.strip()]
    if not values:
        raise UserError(f"--where {item}: {SYNTAX}")
    return col, values


def _maybe_number(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def parse_where(items) -> dict[str, list]:
    """`["width=43", "n_train=1000,2000", "lr>=0.01", "width=8..64"]` -> {column: [conditions]}."""
    where: dict[str, list] = {}
    for item in items or ():
        col, conditions = parse_item(item)
        where.setdefault(col, []).extend(conditions)
    return where


def split(values) -> tuple[list, list]:
    """A column's conditions -> (plain values: any of them; Compare/Between conditions: all of them)."""
    values = values if isinstance(values, (list, tuple, set)) else [values]
    plain = [v for v in values if not isinstance(v, (Compare, Between))]
    conds = [v for v in values if isinstance(v, (Compare, Between))]
    return plain, conds


def holds(cond, x) -> bool:
    """Whether the value `x` satisfies a Compare or Between (missing values never do)."""
    if x is None or isinstance(x, float) and x != x:
        return False
    if isinstance(cond, Between):
        return (cond.lo is None or x >= cond.lo) and (cond.hi is None or x <= cond.hi)
    value = cond.value
    if isinstance(value, float) and not isinstance(x, (int, float)):
        try:
            x = float(x)
        except (TypeError, ValueError):
            return cond.op == "!="
    if isinstance(value, str):
        x = str(x)
    elif cond.op == "!=":  # (numbers: unequal beyond the tolerance equality allows)
        return abs(x - value) > TOLERANCE[1] + TOLERANCE[0] * abs(value)
    return OPERATORS[cond.op](x, value)


def describe(col: str, values) -> str:
    """The filter on one column as typed: `width=8,16`, `width>=10`, `width=8..64`."""
    plain, conds = split(values)
    parts = ([f"{col}={','.join(map(str, plain))}"] if plain else []) + [f"{col}{c}" for c in conds]
    return " ".join(parts)
