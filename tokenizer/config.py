"""Strict, typed configs: dataclass schemas filled from YAML plus ``dotted.key=value`` overrides.

A misspelt key or a value of the wrong type fails at load time with a ``ValueError`` naming its path, e.g.
``optimizer.learning_rate: expected float, got str 'fast'``. Shared by both training entry points.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import operator
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

T = TypeVar("T")
_FLOAT_LITERAL = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp, path: str):
    """Checks (and minimally converts: int -> float, list -> tuple) ``value`` against the annotation ``tp``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, path)
            except ValueError as error:
                errors.append(str(error))
        raise ValueError(errors[0] if len(errors) == 1 else f"{path}: {value!r} matches none of {tp}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ValueError(f"{path}: expected one of {list(get_args(tp))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError(f"{path}: expected a mapping for {tp.__name__}, got {type(value).__name__}")
        return from_dict(tp, value, path)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{path}: expected a list, got {type(value).__name__} {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:  # tuple[float, float]: exactly that many
            if len(value) != len(args):
                raise ValueError(f"{path}: expected {len(args)} values, got {len(value)}: {list(value)!r}")
            return tuple(_convert(v, t, f"{path}[{i}]") for i, (v, t) in enumerate(zip(value, args)))
        item_type = args[0] if args else Any
        items = [_convert(v, item_type, f"{path}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{path}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if tp is float:
        if isinstance(value, str) and _FLOAT_LITERAL.match(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{path}: expected float, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{path}: expected int, got {type(value).__name__} {value!r}")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise ValueError(f"{path}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
        return value
    raise TypeError(f"{path}: unsupported annotation {tp}")


def from_dict(schema: type[T], data: dict, path: str = "") -> T:
    """Builds the dataclass ``schema`` from ``data``; unknown keys and wrong types raise ``ValueError``."""
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = path or schema.__name__
        raise ValueError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(value, hints[name], f"{path}.{name}" if path else name)
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(f"{path or schema.__name__}: missing required key(s) {missing}")
    return schema(**kwargs)


def apply_override(data: dict, override: str) -> None:
    """Applies ``a.b.c=value`` (value parsed as YAML) to a nested dict in place."""
    if "=" not in override:
        raise ValueError(f"override {override!r} must look like key.path=value")
    key, raw = override.split("=", 1)
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {override!r}: {part} is not a mapping")
    node[parts[-1]] = yaml.safe_load(raw)


def read_yaml(path: str | Path) -> dict:
    """A YAML file's top-level mapping; a missing file, a syntax error or a non-mapping names the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:  # one line: the problem and where (PyYAML's message spans several)
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ValueError(f"{path}: not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be a mapping")
    return data


def load_config(schema: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Loads a YAML file (or nothing) into ``schema``, after applying command-line overrides."""
    data: dict = read_yaml(path) if path is not None else {}
    for override in overrides or []:
        apply_override(data, override)
    return from_dict(schema, data)


def to_dict(config) -> dict:
    """A dataclass config as plain data (tuples as lists), for writing the resolved config."""

    def plain(value):
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


def constructor_defaults(cls) -> dict:
    """``cls(...)``'s keyword defaults as plain data (tuples as lists): what a config's ``model:`` dict means
    for a key it leaves out."""
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(cls.__init__).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    return json.loads(json.dumps(defaults, default=str))


def first_difference(old: dict, new: dict, ignore: tuple[str, ...] = ()) -> tuple[str, Any, Any] | None:
    """The first (sorted) dotted key whose value differs between two nested config dicts, with both values,
    or None. Keys in ``ignore`` (dotted, e.g. ``"optimizer.max_steps"``) and everything under them are
    skipped; a key present on one side only counts as a difference (its missing value reads as None)."""

    def flat(data: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in data.items():
            name = f"{prefix}{key}"
            if name in ignore:
                continue
            out.update(flat(value, f"{name}.") if isinstance(value, dict) else {name: value})
        return out

    before, after = flat(old), flat(new)
    for key in sorted(before.keys() | after.keys()):
        if before.get(key) != after.get(key):
            return key, before.get(key), after.get(key)
    return None


def check_kwargs(callable_, kwargs: dict, path: str) -> None:
    """Checks a block of constructor arguments (e.g. ``model:``) against ``callable_``'s signature: unknown keys
    and values of the wrong type (against its annotations) raise ``ValueError`` naming ``path.key``; values are
    converted in place like the rest of the config (int -> float, list -> tuple)."""
    parameters = inspect.signature(callable_).parameters
    unknown = sorted(set(kwargs) - set(parameters) - {"self"})
    if unknown:
        accepted = sorted(p for p in parameters if p != "self")
        raise ValueError(f"{path}: unknown key(s) {unknown}; expected some of {accepted}")
    hints = typing.get_type_hints(callable_)
    for key, value in kwargs.items():
        # an annotation the checker does not know (TypeError) is left to the constructor
        with contextlib.suppress(TypeError):
            if key in hints:
                kwargs[key] = _convert(value, hints[key], f"{path}.{key}")


_COMPARISONS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


def check_bounds(config, rules: dict[str, str]) -> None:
    """Fails naming the first dotted field of ``config`` outside its bounds, e.g. ``{"optimizer.ema_decay":
    ">= 0, < 1"}`` -> ``optimizer.ema_decay must be >= 0 and < 1, got 1.5``. ``None`` (an optional setting left
    off) passes; a tuple (Adam betas) is checked element-wise and named ``path[i]``."""
    for path, rule in rules.items():
        value = config
        for part in path.split("."):
            value = getattr(value, part)
        if value is None:
            continue
        bounds = [(op, float(limit)) for op, limit in (b.split() for b in rule.split(","))]
        items = enumerate(value) if isinstance(value, (list, tuple)) else [(None, value)]
        for index, item in items:
            if not all(_COMPARISONS[op](item, limit) for op, limit in bounds):
                name = path if index is None else f"{path}[{index}]"
                wanted = " and ".join(f"{op} {limit:g}" for op, limit in bounds)
                raise ValueError(f"{name} must be {wanted}, got {item}")


# Settings both training schemas (tokenizer and prior) share, with their valid ranges (``check_bounds``).
TRAINING_BOUNDS = {
    "optimizer.learning_rate": "> 0",
    "optimizer.betas": ">= 0, < 1",
    "optimizer.ema_decay": ">= 0, < 1",
    "optimizer.grad_clip_norm": "> 0",
    "seed": ">= 0",  # numpy's seed range starts at 0
}


def check_positive(config, paths: list[str]) -> None:
    """Fails naming the first dotted field of ``config`` (e.g. ``optimizer.max_steps``) that is below 1."""
    check_bounds(config, dict.fromkeys(paths, ">= 1"))
