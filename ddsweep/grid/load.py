"""Reading a grid file: YAML (duplicate keys refused), then validation into a GridSpec.

Every problem is a GridError naming the file, the key and the value in plain words.
"""

from __future__ import annotations

import sys
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ddsweep.errors import MISSING, GridError
from ddsweep.grid.linked import axis_key, axis_names
from ddsweep.grid.overrides import apply as apply_overrides, blame, text_of
from ddsweep.grid.spec import SECTIONS, GridSpec
from ddsweep.suggest import unknown


MAX_GRID_BYTES = 4 << 20  # a grid file is a page of YAML; more is the wrong file (or /dev/zero)


def read_grid_text(path: str | Path) -> str:
    """A grid file's text, read once (a FIFO or process substitution can only be read once) and at
    most MAX_GRID_BYTES of it; `-` reads standard input. GridError when it cannot be read."""
    path = Path(path)
    try:
        if str(path) == "-":
            data = sys.stdin.buffer.read(MAX_GRID_BYTES + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(MAX_GRID_BYTES + 1)
    except OSError as e:
        raise GridError(path, "", MISSING, f"cannot read grid file ({e.strerror or e})") from None
    if len(data) > MAX_GRID_BYTES:
        raise GridError(path, "", MISSING, f"larger than {MAX_GRID_BYTES >> 20} MiB: not a grid file") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise GridError(path, "", MISSING, f"not valid UTF-8 text (line {line}, byte {e.start}); "
                        "save the grid file as UTF-8") from None


def load_grid(path: str | Path, text: str | None = None, overrides=()) -> GridSpec:
    """Read and validate a grid file; raise GridError naming file, key and value.

    `text`: the file's contents, read already (read_grid_text): the file is not opened again.
    `overrides`: KEY=VALUE strings set on the loaded mapping before it is validated
    (ddsweep.grid.overrides); an error they cause names them."""
    return load_grid_text(path, text, overrides)[0]


def load_grid_text(path: str | Path, text: str | None = None, overrides=()) -> tuple[GridSpec, str]:
    """(the validated grid, the YAML text it was validated from): the file's text, or with overrides
    the overridden document as YAML (what a sweep stores, so that refine re-plans the same grid)."""
    path = Path(path)
    if text is None:
        text = read_grid_text(path)
    raw = _read_yaml(text, path)
    if not overrides:
        return parse_grid(raw, path), text
    doc = apply_overrides(raw, overrides, path)
    try:
        spec = parse_grid(doc, path)
    except GridError as e:
        raise blame(e, overrides) from None
    return spec, text_of(doc, path, overrides)


def _read_yaml(text: str, path: Path) -> Any:
    try:
        raw = _load_yaml(text, path)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = getattr(e, "problem", None) or (str(e).splitlines() or ["unreadable YAML"])[0]
        context, context_mark = getattr(e, "context", None), getattr(e, "context_mark", None)
        if context and context_mark and mark and context_mark.line != mark.line:
            problem += f" ({context} started at line {context_mark.line + 1})"
        raise GridError(path, "", MISSING, f"YAML syntax error at {where}: {problem}") from None
    except RecursionError:
        raise GridError(path, "", MISSING, "YAML nested too deeply") from None
    return raw


def _load_yaml(text: str, path) -> Any:
    """yaml.safe_load, but a key given twice in one mapping is an error, not silently the last."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_duplicate_keys(node, "", path, set())
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_duplicate_keys(node, where: str, path, seen: set) -> None:
    if id(node) in seen:  # an alias: already checked (and may be recursive)
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = f"{where}.{key_node.value}" if where else key_node.value
                ident = (key_node.tag, key_node.value)
                line = key_node.start_mark.line + 1
                if ident in first:
                    lines = f"lines {first[ident]} and {line}" if first[ident] != line else f"twice on line {line}"
                    raise GridError(path, key, MISSING,
                                    f"duplicate key ({lines}); YAML would silently keep only the last one")
                first[ident] = line
                _check_duplicate_keys(value_node, key, path, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicate_keys(item, f"{where}[{i}]", path, seen)


def parse_grid(raw: Any, path: str | Path = "<grid>") -> GridSpec:
    """Validate an already-parsed grid document."""
    if raw is None:
        raise GridError(path, "", MISSING, "the grid file is empty (it needs at least name and grid)")
    if not isinstance(raw, dict):
        kind = {"list": "a list", "str": "a single string"}.get(type(raw).__name__, f"a single {type(raw).__name__}")
        raise GridError(path, "", MISSING,
                        f"a grid file must be a mapping of keys ({', '.join(GridSpec.model_fields)}), got {kind}")
    raw = dict(raw)
    for key, default_name in (("dataset", "name"), ("model", "name")):
        if isinstance(raw.get(key), str):
            raw[key] = {default_name: raw[key]}
    if "grid" not in raw:
        raise GridError(path, "grid", MISSING, "missing: a grid needs at least the axes width and n_train")
    for section, model in SECTIONS.items():
        if isinstance(raw.get(section), dict):
            for k, v in raw[section].items():
                if isinstance(v, bool) and k in model.model_fields and _is_numeric(model.model_fields[k].annotation):
                    raise GridError(path, f"{section}.{k}", v, "must be a number, not true/false")
    try:
        spec = GridSpec.model_validate(raw)
    except ValidationError as e:
        raise pydantic_error(e, path) from None
    _check_registry(spec, path)
    return spec


def _is_numeric(annotation) -> bool:
    return all(a in (int, float, type(None)) for a in (typing.get_args(annotation) or (annotation,)))


def pydantic_error(e: ValidationError, path) -> GridError:
    """The first error pydantic found, as a GridError naming key and value in plain words."""
    err = e.errors()[0]
    loc = list(err["loc"])
    bad_key = bool(loc) and loc[-1] == "[key]"  # a key of the wrong type, e.g. a number as an axis name
    if bad_key:
        loc.pop()
    key = ".".join(str(p) for p in loc)
    kind = err["type"]
    value = err.get("input", MISSING) if kind != "missing" and not bad_key else MISSING
    if isinstance(value, dict) and kind != "extra_forbidden":
        value = MISSING
    if bad_key:
        problem = "keys must be names, not numbers or other values"
    elif kind == "extra_forbidden":
        model = SECTIONS.get(".".join(str(p) for p in loc[:-1]), GridSpec)
        problem = unknown("key", loc[-1] if loc else "", model.model_fields)
    elif kind == "missing":
        problem = "missing"
    elif kind == "string_pattern_mismatch" and loc == ["name"]:
        problem = "a sweep name is letters, digits, '_', '.' and '-' (no spaces or slashes)"
    elif kind == "finite_number":
        problem = "must be a finite number"
    elif kind in ("model_type", "dict_type"):
        fields = SECTIONS[key].model_fields if key in SECTIONS else None
        problem = f"must be a mapping (keys: {', '.join(fields)})" if fields else "must be a mapping of axes to values"
    else:
        problem = err["msg"].removeprefix("Value error, ")
    return GridError(path, key, value, problem)


def _check_registry(spec: GridSpec, path) -> None:
    from ddsweep.data import DATASETS, availability_problem, spec_problem
    from ddsweep.models import CONV_MODELS, MODELS, TEXT_MODELS

    if spec.dataset.name not in DATASETS:
        raise GridError(path, "dataset.name", spec.dataset.name,
                        unknown("dataset", spec.dataset.name, sorted(DATASETS)))
    if spec.model.name not in MODELS:
        raise GridError(path, "model.name", spec.model.name,
                        unknown("model", spec.model.name, sorted(MODELS)))
    raw = spec.dataset.model_dump()
    problem = spec_problem(raw)
    if problem:
        value = raw
        for part in problem[0].split("."):  # a key may be nested: test_from.name
            value = value.get(part, MISSING) if isinstance(value, dict) else MISSING
        raise GridError(path, f"dataset.{problem[0]}", value, problem[1])
    _check_text_model(spec, path)
    if spec.model.name in CONV_MODELS:
        if "depth" in spec.model.model_fields_set or "depth" in axis_names(spec.grid):
            where = "model.depth" if "depth" in spec.model.model_fields_set else axis_key(spec.grid, "depth")
            raise GridError(path, where, MISSING, f"{spec.model.name} has a fixed depth; only its width varies")
        from ddsweep.data import is_vision

        if not is_vision(spec.dataset.name):
            raise GridError(path, "model.name", spec.model.name,
                            f"a conv model needs an image dataset, not {spec.dataset.name}")
    elif spec.train.precision == "bf16" and spec.model.name not in TEXT_MODELS:
        raise GridError(path, "train.precision", "bf16",
                        f"bf16 is for the conv models and the transformer ({', '.join(sorted(CONV_MODELS | TEXT_MODELS))}); "
                        f"{spec.model.name} trains in float32")
    missing = availability_problem(raw)
    if missing:
        raise GridError(path, "dataset.root" if spec.dataset.root else "dataset", MISSING, missing)


TRANSFORMER_KEYS = ("layers", "heads", "ffn_ratio", "norm", "embeddings")


def _check_text_model(spec: GridSpec, path) -> None:
    """Text datasets go with the transformer and the transformer with them; its options only with it."""
    from ddsweep.data import is_text
    from ddsweep.models import TEXT_MODELS

    text_model, text_data = spec.model.name in TEXT_MODELS, is_text(spec.dataset.name)
    if text_model != text_data:
        what = (f"{spec.model.name} needs a text dataset (translation, synthetic_translation), not {spec.dataset.name}"
                if text_model else f"{spec.dataset.name} is text: it needs model: transformer")
        raise GridError(path, "model.name", spec.model.name, what)
    if not text_model:
        for key in TRANSFORMER_KEYS:
            if getattr(spec.model, key) is not None or key in axis_names(spec.grid):
                where = f"model.{key}" if key not in axis_names(spec.grid) else axis_key(spec.grid, key)
                raise GridError(path, where, MISSING,
                                "applies to model: transformer only")
        return
    if "depth" in spec.model.model_fields_set or "depth" in axis_names(spec.grid):
        where = "model.depth" if "depth" in spec.model.model_fields_set else axis_key(spec.grid, "depth")
        raise GridError(path, where, MISSING,
                        "the transformer's depth is `layers` (encoder and decoder layers each)")
    if spec.train.loss != "cross_entropy" or "loss" in axis_names(spec.grid):
        where = "train.loss" if "loss" not in axis_names(spec.grid) else axis_key(spec.grid, "loss")
        raise GridError(path, where, spec.train.loss,
                        "the transformer trains on token cross-entropy (label_smoothing is its knob)")
