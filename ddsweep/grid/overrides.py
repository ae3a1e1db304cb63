"""Overrides of a grid file's keys on the command line, and the presets shipped with the package.

`ddsweep plan grid.yaml grid.width=[8,16] train.lr=0.05` sets keys of the loaded YAML
mapping (dotted paths; each value is YAML: `[8,16]`, `{geom: [2, 300, 19]}`, `0.05`,
`sgd`), then the result is validated exactly as a file would be (ddsweep.grid.load).
A key the file lacks is added (an unknown key is then refused with a did-you-mean, as
in a file). An error caused by an override names it.

`ddsweep plan mnist1d-mlp` plans the preset sweeps/mnist1d-mlp.yaml shipped inside the
package (ddsweep/sweeps: in a checkout a symlink to the repository's sweeps/ folder).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from ddsweep.errors import MISSING, GridError
from ddsweep.suggest import hint

PRESETS = Path(__file__).resolve().parents[1] / "sweeps"
SYNTAX = "expected KEY=VALUE with a dotted key, e.g. grid.width=[8,16] or train.lr=0.05"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS.glob("*.yaml"))


def resolve(grid: str | Path) -> str | Path:
    """`grid` as given when it is a file (or `-`); a preset's file when it names one (no folder, no suffix)."""
    text = str(grid)
    if text == "-" or Path(text).exists() or "/" in text or Path(text).suffix:
        return grid
    preset = PRESETS / f"{text}.yaml"
    if preset.is_file():
        return preset
    raise GridError(text, "", MISSING, f"no such grid file or preset{hint(text, preset_names())}")


def parse(item: str) -> tuple[list[str], Any]:
    """`train.lr=0.05` -> (["train", "lr"], 0.05); a GridError naming the override otherwise."""
    key, sep, text = str(item).partition("=")
    keys = key.strip().split(".")
    if not sep or not key.strip() or any(not k.strip() for k in keys):
        raise GridError(f"override {item}", "", MISSING, SYNTAX)
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or "not valid YAML"
        raise GridError(f"override {item}", "", MISSING, f"the value is not valid YAML ({problem})") from None
    if value is None and text.strip() not in ("null", "~"):
        raise GridError(f"override {item}", "", MISSING, "no value (to set a key to null, write KEY=null)")
    return [k.strip() for k in keys], value


def apply(raw: Any, overrides, path) -> Any:
    """A copy of the loaded YAML document with each override set (in order)."""
    if not overrides:
        return raw
    doc = copy.deepcopy(raw) if raw is not None else {}
    if not isinstance(doc, dict):
        raise GridError(path, "", MISSING, "overrides need a grid file that is a mapping of keys")
    for item in overrides:
        keys, value = parse(item)
        node = doc
        for depth, key in enumerate(keys[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            elif isinstance(child, str) and depth == 0 and key in ("dataset", "model"):
                child = node[key] = {"name": child}  # (`dataset: mnist1d` is short for {name: mnist1d})
            elif not isinstance(child, dict):
                where = ".".join(keys[: depth + 1])
                raise GridError(f"override {item}", "", MISSING,
                                f"{where} is {child!r} in the grid file, not a mapping with keys")
            node = child
        node[keys[-1]] = value
    return doc


def text_of(doc: Any, source, overrides) -> str:
    """The YAML stored with the sweep: the overridden document, headed by where it came from."""
    head = f"# {source} with overrides: {' '.join(overrides)}\n"
    return head + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None)


def blame(e: GridError, overrides) -> GridError:
    """The same error, naming the override that set (or sits above) the key it is about, if one did."""
    overrides = list(overrides or ())
    for item in reversed(overrides):
        key = str(item).partition("=")[0].strip()
        if e.key and (e.key == key or e.key.startswith((key + ".", key + "[")) or key.startswith(e.key + ".")):
            return GridError(f"override {item}", e.key, e.value, e.problem)
    if overrides:  # (caused by the file, or by an override through another key: say both)
        return GridError(f"{e.path} with {' '.join(overrides)}", e.key, e.value, e.problem)
    return e
