"""The ``train``/``compare`` flags, generated from :class:`~sparseopt.config.TrainConfig`.

Every field of the config is one flag; its ``metadata`` (see the config module) gives
the help text, the group of ``--help``, the metavar, the flag names (first the main
one, then aliases), the choices and the default as printed. The argparse type follows
the field's annotation: ``int``/``float``/``str``; ``bool`` is ``--x/--no-x`` (or a
plain switch with ``action="store_true"``); a ``dict`` is a repeatable ``KEY=VALUE``
flag; a ``list`` takes ``nargs`` values. The same list feeds the config-file loader
(:func:`settings`) and the flag table of docs/cli.md (:func:`flag_table`).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from sparseopt.cli._common import KeyValue, UsageError
from sparseopt.config import TrainConfig, load_config_file

__all__ = [
    "FlagSpec",
    "add_train_flags",
    "flag_specs",
    "flag_table",
    "settings",
    "train_flag_dests",
]

#: The groups of ``--help``, in order.
GROUPS = ("data", "model", "optimizer", "training", "structure", "output")


@dataclasses.dataclass(frozen=True)
class FlagSpec:
    """One config field as a flag: ``flags`` (names), argparse ``kwargs``, its group,
    and the ``shown`` default."""

    dest: str
    flags: tuple[str, ...]
    group: str
    kwargs: dict[str, Any]
    shown: str


class _PerOptimizer(dict):  # type: ignore[type-arg]
    """``table[key]``: ``value for names; ...`` over the optimizers whose settings
    (``settings()``: name → mapping, read when a key is asked for) set ``key``; ``empty``
    when none does."""

    def __init__(self, settings: Callable[[], Mapping[str, Mapping[str, Any]]], empty: str = ""):
        super().__init__()
        self._settings = settings
        self._empty = empty

    def __missing__(self, key: str) -> str:
        by: dict[str, list[str]] = {}
        for name, values in self._settings().items():
            if key in values:
                by.setdefault(f"{values[key]}", []).append(name)
        return "; ".join(f"{v} for {'/'.join(n)}" for v, n in by.items()) or self._empty


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else f"{value}"


def _per_penalty(attr: str) -> dict[str, dict[str, Any]]:
    """Per optimizer, each setting of its per-penalty recipes (``attr``: the registry's
    ``group_training`` or ``penalty_training``) as ``value (penalty)``, every penalty that
    sets it listed."""
    from sparseopt.optim.registry import OPTIMIZERS

    out: dict[str, dict[str, Any]] = {}
    for name, info in OPTIMIZERS.items():
        for pen, recipe in getattr(info, attr).items():
            for key, value in recipe.items():
                text = f"{_shown(value)} ({pen})"
                settings = out.setdefault(name, {})
                settings[key] = f"{settings[key]}, {text}" if key in settings else text
    return out


def _placeholders() -> dict[str, Any]:
    """Values of ``{datasets}``, ``{models}``, ``{optimizers}``, ``{recipe[KEY]}``,
    ``{group_recipe[KEY]}`` (under a group penalty), ``{penalty_recipe[KEY]}`` (one
    elementwise penalty on every layer), ``{control[KEY]}``, ``{one_density}`` and
    ``{refit_lrs}``."""

    def names(kind: str) -> str:
        try:
            if kind == "datasets":
                from sparseopt.data import list_datasets

                return ", ".join(list_datasets())
            if kind == "models":
                from sparseopt.models import list_models

                return ", ".join(list_models())
            from sparseopt.optim.registry import list_optimizers

            return ", ".join(list_optimizers())
        except Exception:  # a half-installed package must not break --help
            return "see `sparseopt list`"

    def recipes() -> dict[str, dict[str, Any]]:  # training settings, else keyword defaults
        from sparseopt.optim.registry import OPTIMIZERS

        return {name: {**info.defaults, **info.training} for name, info in OPTIMIZERS.items()}

    def group_recipes() -> dict[str, dict[str, Any]]:  # structured runs: "value (penalty)"
        from sparseopt.optim.registry import OPTIMIZERS

        out = _per_penalty("group_training")
        for name, info in OPTIMIZERS.items():
            for pen, recipe in info.group_training.items():
                if recipe.get("init_density", 1.0) < 1.0:  # its start is drawn per group
                    out[name]["init_groups"] = pen
        return out

    def presets() -> dict[str, dict[str, Any]]:
        from sparseopt.control import PRESETS

        return PRESETS

    def refit_lrs() -> str:  # the refit's default lr per refit optimizer
        from sparseopt.baselines import refit_optimizer_settings
        from sparseopt.config import REFIT_OPTIMIZERS

        lrs = ((n, refit_optimizer_settings(None, n)["lr"]) for n in REFIT_OPTIMIZERS)
        return ", ".join(f"{n} {_shown(lr)}" for n, lr in lrs)

    def one_density() -> str:  # control.GLOBAL_PENALTIES, e.g. "adabreg's tl1"
        from sparseopt.control import GLOBAL_PENALTIES

        return ", ".join(f"{o}'s {'/'.join(p)}" for o, p in GLOBAL_PENALTIES.items()) or "none"

    return {k: names(k) for k in ("datasets", "models", "optimizers")} | {
        "recipe": _PerOptimizer(recipes),  # e.g. refit: sparse methods only; penalty: rda's
        "group_recipe": _PerOptimizer(group_recipes, empty="the same"),
        "penalty_recipe": _PerOptimizer(lambda: _per_penalty("penalty_training"), empty="the same"),
        "control": _PerOptimizer(presets, empty="none"),
        "one_density": one_density(),
        "refit_lrs": refit_lrs(),
    }


def _kind(annotation: str) -> str:
    text = str(annotation)
    for kind in ("dict", "list[int]", "list[float]", "bool", "int", "float"):
        if kind in text:
            return kind
    return "str"


def flag_specs() -> Iterator[FlagSpec]:
    """Every :class:`TrainConfig` field as a :class:`FlagSpec`, in declaration order."""
    values = _placeholders()
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        meta = f.metadata
        flags = tuple(meta.get("flags") or ()) or (f"--{f.name.replace('_', '-')}",)
        kwargs: dict[str, Any] = {"dest": f.name, "help": str(meta["help"]).format_map(values)}
        kind = _kind(str(f.type))
        if meta.get("action") == "store_true":
            kwargs["action"] = "store_true"
        elif kind == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        elif kind == "dict":
            kwargs["action"] = KeyValue
        else:
            if kind in ("int", "float", "list[int]", "list[float]"):
                kwargs["type"] = int if "int" in kind else float
            if meta.get("nargs") is not None:
                kwargs["nargs"] = meta["nargs"]
        for key in ("metavar", "choices"):
            if meta.get(key) is not None:
                kwargs[key] = meta[key]
        shown = meta.get("shown")
        if shown is None:
            value = getattr(defaults, f.name)
            shown = "" if value in (None, [], {}) else str(value).lower()
            if kind == "bool" and meta.get("action") != "store_true":
                shown = {"true": "yes", "false": "no"}.get(shown, shown)
            elif meta.get("action") == "store_true":
                shown = ""
        shown = str(shown).format_map(values)
        # "per optimizer: {recipe[KEY]}; else D" where no recipe sets KEY: just D
        shown = shown.removeprefix("per optimizer: ; else ")
        yield FlagSpec(f.name, flags, str(meta["group"]), kwargs, shown)


def add_train_flags(parser: argparse.ArgumentParser, *, skip: Sequence[str] = ()) -> None:
    """Add a flag per config field (less ``skip``), grouped as in :data:`GROUPS`.

    Every flag defaults to "not given" (absent from the namespace), so a config file's
    value stands unless the flag is on the command line.
    """
    specs = [s for s in flag_specs() if s.dest not in skip]
    for title in GROUPS:
        group = parser.add_argument_group(title)
        for spec in (s for s in specs if s.group == title):
            kw = dict(spec.kwargs, default=argparse.SUPPRESS)
            help_text = kw["help"] + (f" (default: {spec.shown})" if spec.shown else "")
            kw["help"] = help_text.replace("%", "%%")
            group.add_argument(*spec.flags, **kw)


def train_flag_dests() -> list[str]:
    """Config fields that have a ``sparseopt train`` flag (all of them, by construction)."""
    return [s.dest for s in flag_specs()]


def settings(args: argparse.Namespace, skip: Sequence[str] = ()) -> dict[str, Any]:
    """Config-file settings (``args.config``) overridden by the flags given.

    Raises:
        UsageError: the config file cannot be read.
    """
    out: dict[str, Any] = {}
    if getattr(args, "config", None):
        try:
            out = load_config_file(args.config)
        except (FileNotFoundError, ValueError) as err:
            raise UsageError(str(err)) from None
    for dest in train_flag_dests():
        if dest in skip or not hasattr(args, dest):
            continue
        value = getattr(args, dest)
        if dest.endswith("_options") and isinstance(out.get(dest), dict):
            value = {**out[dest], **value}
        out[dest] = value
    return out


def config_from(values: dict[str, Any]) -> TrainConfig:
    """:meth:`TrainConfig.from_dict`, its errors as :class:`UsageError`."""
    try:
        return TrainConfig.from_dict(values)
    except (ValueError, TypeError) as err:
        raise UsageError(str(err)) from None


def _flag_cell(spec: FlagSpec) -> str:
    metavar = spec.kwargs.get("metavar")
    if isinstance(metavar, tuple):
        metavar = " ".join(metavar)
    if spec.kwargs.get("nargs") == "+":
        metavar = f"{metavar} ..."
    main, aliases = spec.flags[0], spec.flags[1:]
    action = spec.kwargs.get("action")
    if action is argparse.BooleanOptionalAction:
        text = f"`{main}`, `--no-{main[2:]}`"
    elif action in ("store_true",):
        text = f"`{main}`"
    else:
        text = f"`{main} {metavar or spec.dest.upper()}`"
    return text + "".join(f", `{a}`" for a in aliases)


def flag_table(skip: Sequence[str] = ()) -> str:
    """The Markdown table of the config flags (docs/cli.md holds it verbatim)."""
    lines = ["| flag | default | meaning |", "|---|---|---|"]
    specs = [s for s in flag_specs() if s.dest not in skip]
    for title in GROUPS:
        lines.append(f"| **{title}** | | |")
        for spec in (s for s in specs if s.group == title):
            help_text = spec.kwargs["help"].replace("|", "\\|")
            shown = f"`{spec.shown}`" if spec.shown else ""
            lines.append(f"| {_flag_cell(spec)} | {shown} | {help_text} |")
    return "\n".join(lines)
