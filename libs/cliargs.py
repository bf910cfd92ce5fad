"""Command-line flags generated from dataclass fields (as transformers' HfArgumentParser does), so a
config's defaults are written once, in its dataclass, and a CLI cannot drift from them.

A field ``name`` becomes ``--{prefix}{name}`` with dashes (dest ``{prefix}{name}``) and the
field's default; ``bool`` -> ``--x/--no-x``; ``bool | None`` -> ``auto|on|off``; ``tuple[T, ...]``
-> repeatable and comma-separated (``--dims 256,128`` or ``--dims 256 --dims 128``, the first use
replaces the default). Nested dataclasses and dicts get no flag (give them their own prefix).
A field's ``metadata`` may carry ``help`` and ``choices``.
"""

import argparse
import dataclasses
import types
import typing
from collections.abc import Collection

SWITCH = {"auto": None, "on": True, "off": False}


class _Extend(argparse.Action):
    """Repeatable, comma-separated values: the first use replaces the default, later uses add to it."""

    def __call__(self, parser, namespace, values, option_string=None):
        current = getattr(namespace, self.dest)
        setattr(namespace, self.dest, (() if current is self.default else tuple(current)) + tuple(values))


def _switch(text: str) -> bool | None:
    if text not in SWITCH:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(SWITCH)}, got {text!r}")
    return SWITCH[text]


def _items(item_type):
    def parse(text: str) -> tuple:
        return tuple(item_type(v) for v in text.split(",") if v)

    parse.__name__ = f"comma-separated {item_type.__name__}"
    return parse


def _flag_kwargs(field: dataclasses.Field, hint) -> dict | None:
    """argparse keyword arguments for a field of type ``hint`` (None: the field gets no flag)."""
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if set(args) == {bool, type(None)}:
            return {"type": _switch, "metavar": "{auto,on,off}"}
        return None
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if hint in (int, float, str):
        return {"type": hint}
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] in (int, float, str):
        return {"type": _items(args[0]), "action": _Extend}
    return None


def add_dataclass_args(
    parser: argparse.ArgumentParser,
    cls,
    prefix: str = "",
    *,
    only: Collection[str] | None = None,
    skip: Collection[str] = (),
    names: dict[str, list[str]] | None = None,
    optional: Collection[str] = (),
) -> None:
    """Add a flag per field of ``cls`` (those in ``only``, if given, less ``skip``). ``names`` gives
    a field other option strings (``{"learning_rate": ["--learning-rate", "--lr"]}``); a field
    without a default is a required flag unless listed in ``optional`` (then it defaults to None)."""
    hints = typing.get_type_hints(cls)
    names = names or {}
    for field in dataclasses.fields(cls):
        if field.name in skip or (only is not None and field.name not in only):
            continue
        kwargs = _flag_kwargs(field, hints[field.name])
        if kwargs is None:
            continue
        dest = prefix + field.name
        options = names.get(field.name) or ["--" + dest.replace("_", "-")]
        help_text = field.metadata.get("help", "")
        if field.default is not dataclasses.MISSING:
            default = field.default
            shown = {None: "auto", True: "on", False: "off"}[default] if kwargs.get("type") is _switch else default
            if isinstance(shown, tuple):
                shown = ",".join(map(str, shown)) or "none"
            help_text = f"{help_text} (default: {shown})".strip()
            kwargs["default"] = default
        elif field.default_factory is not dataclasses.MISSING:
            kwargs["default"] = field.default_factory()
        elif field.name in optional:
            kwargs["default"] = None
        else:
            kwargs["required"] = True
        if "choices" in field.metadata:
            kwargs["choices"] = field.metadata["choices"]
        parser.add_argument(*options, dest=dest, help=help_text.replace("%", "%%") or None, **kwargs)


def dataclass_from_args(cls, args: argparse.Namespace, prefix: str = "", **values):
    """An instance of ``cls`` from the flags ``add_dataclass_args`` added (fields without a flag keep
    their defaults, or take ``values``, which win over flags)."""
    given = {
        f.name: getattr(args, prefix + f.name)
        for f in dataclasses.fields(cls)
        if getattr(args, prefix + f.name, None) is not None
    }
    for f in dataclasses.fields(cls):  # an auto|on|off switch left at auto is None, a real value
        if f.name not in given and hasattr(args, prefix + f.name) and f.default is None:
            given[f.name] = None
    return cls(**(given | values))
