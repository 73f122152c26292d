"""Config dataclasses shared by the CLI and the GUI.

Every job has one dataclass whose fields carry their help text in ``metadata``; the CLI builds
its argparse options from it and the napari widgets build their forms from it, so the two never
disagree. This module imports nothing heavy.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

from sampo_engine.errors import ConfigError  # noqa: F401  (re-exported)

#: The ``--device`` choices of every job: auto = CUDA, then Apple MPS, then the CPU.
DEVICES = ("auto", "cuda", "mps", "cpu")


def option(
    default: Any, help: str, *, flag: str | None = None, choices=None, minimum=None, **kw
) -> Any:
    """A dataclass field with help text (and optional CLI flag / choices). ``minimum``: the
    smallest value a form offers (the config's ``validate`` still says why less is refused)."""
    metadata = {"help": help, "flag": flag, "choices": choices, "minimum": minimum}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(
            default_factory=lambda: type(default)(default), metadata=metadata, **kw
        )
    return dataclasses.field(default=default, metadata=metadata, **kw)


def _flag(field: dataclasses.Field) -> str:
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def add_dataclass_arguments(
    parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()
) -> None:
    """Add one ``--option`` per field of ``cls`` (bools become ``--x / --no-x``; a bool whose
    name starts with ``no_`` becomes one ``--no-x`` switch)."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip or not field.metadata.get("help"):
            continue
        default = (
            field.default if field.default is not dataclasses.MISSING else field.default_factory()  # type: ignore[misc]
        )
        hint = hints[field.name]
        kwargs: dict[str, Any] = {"dest": field.name, "help": field.metadata["help"]}
        if hint is bool and _flag(field).startswith("--no-"):
            # argparse's BooleanOptionalAction reads any flag starting with --no- as "False":
            # `--no-inter` would silently do nothing. A negative name gets a plain switch.
            if default:
                raise TypeError(f"{field.name}: a --no-… switch must default to False")
            kwargs["action"] = "store_true"
            kwargs["default"] = False
        elif hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
            kwargs["default"] = default
        else:
            origin = typing.get_origin(hint)
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            base = args[0] if origin is not None and args else hint
            if typing.get_origin(base) in (list, tuple):
                kwargs["nargs"] = "+"
                base = typing.get_args(base)[0]
            if base in (int, float, str):
                kwargs["type"] = base
            kwargs["default"] = default
            if field.metadata.get("choices"):
                kwargs["choices"] = field.metadata["choices"]
            kwargs["help"] += f" (default: {default})"
        parser.add_argument(_flag(field), **kwargs)


def dataclass_from_args(cls, namespace: argparse.Namespace, **overrides):
    """Build ``cls`` from the parsed options (unknown attributes are ignored)."""
    values = {}
    for field in dataclasses.fields(cls):
        if hasattr(namespace, field.name):
            value = getattr(namespace, field.name)
            if isinstance(value, list) and field.type and "tuple" in str(field.type):
                value = tuple(value)
            values[field.name] = value
    values.update(overrides)
    return cls(**values)


def to_jsonable(config) -> dict:
    """The config as a plain dict (paths as strings) for metadata files."""
    out = {}
    for key, value in dataclasses.asdict(config).items():
        out[key] = str(value) if hasattr(value, "__fspath__") else value
    return out
