"""Config files: YAML, TOML or JSON mappings of :class:`~sparseopt.config.TrainConfig` fields."""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path
from typing import Any

__all__ = ["load_config_file", "load_run_config", "load_yaml", "save_config_file"]

#: YAML 1.2's floats: PyYAML resolves YAML 1.1, where ``1e-3`` (no dot) is a string.
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


@functools.cache
def _loader() -> type:
    """PyYAML's SafeLoader with :data:`_FLOAT` among its implicit resolvers (built once;
    ``add_implicit_resolver`` copies the resolver table, the SafeLoader's stays as it is)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))
    return Loader


def load_yaml(text: str) -> Any:
    r"""``yaml.safe_load`` with YAML 1.2's numbers: ``1e-3`` and ``5E4`` are floats (YAML
    1.1, PyYAML's default, reads them as strings, so ``lam: 1e-3`` failed validation).

    Example:
        >>> load_yaml("lam: 1e-3\nlr: 0.1\nname: 1e3x")
        {'lam': 0.001, 'lr': 0.1, 'name': '1e3x'}
    """
    import yaml

    return yaml.load(text, Loader=_loader())  # a SafeLoader


#: Settings a run directory's ``config.yaml`` lacks when it was written before the field
#: existed, with the value that run had then (not today's recipe's): no lr warm-up, no
#: refit (nor its warm-up or guard), no λ warm-up (RDA's recipe has one since round 49), one
#: λ group per layer kind (the layout of its optimizer state), one density steered.
_BEFORE_FIELDS: dict[str, Any] = {
    "warmup": 0.0,
    "refit": 0.0,
    "refit_warmup": 0.0,
    "refit_guard": False,
    "lam_warmup": 0.0,
    "lam_scale": "none",
    "target_allocation": "global",
    "target_density_hold": False,  # before round 72 no controller held λ through a warm-up
    "clip_grad_norm": 0.0,  # no clipping before 2026-11-29
    "clip_grad_ratio": 0.0,
    "target_density_lr_coupled": False,  # before round 99 no recipe coupled λ to the lr
}


def _key(name: str) -> str:
    return str(name).replace("-", "_")


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``), TOML (``.toml``) or JSON (``.json``) config file.

    Returns the mapping as read, keys normalised (``-`` → ``_``); validate it with
    :meth:`TrainConfig.from_dict`. A ``train:`` top-level table is unwrapped.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unreadable or not a mapping (the message names the file).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file not found: {p}")
    text = p.read_text(encoding="utf-8")
    suffix = p.suffix.lower()
    try:
        if suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # pragma: no cover - Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            data: Any = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            data = load_yaml(text)
    except Exception as err:  # parser errors of three libraries
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot parse config file {p}: {first}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(
            f"config file {p} must hold a mapping of settings, got {type(data).__name__}"
        )
    if set(data) == {"train"} and isinstance(data["train"], dict):
        data = data["train"]
    return {_key(k): v for k, v in data.items()}


def load_run_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A run directory's saved ``config.yaml`` (:func:`load_config_file`), with the values
    that runs saved before a setting existed had (``refit`` 0, ``lam_scale`` none,
    ``target_allocation`` global), so that resuming or reusing
    an old run does not give it today's recipe's; a ``lam_warmup`` saved beside a
    ``target_density`` (accepted, and unused, before 2026-11-28) reads as 0, what the run did,
    a group penalty over filters saved without ``head_groups`` groups its output layer's
    rows (``filter``), a structured run's sparse start saved without its grouping is
    elementwise (``init_groups: elementwise``), and an AdaBreg run saved without a weight
    decay had none (0; the recipe's 0.05 came with round 64 of docs/recipes.md and every
    run since writes it out), and an RDA group ℓ0 run saved without a group weight counted
    groups (``one``; round 69 gave its recipe ``size``), and an RVSM run with a refit saved
    without its lr refitted at the default (a tenth of SGD's; round 90 gave its recipe
    one), and a run with a refit saved before the refit optimizer was a setting refitted
    with SGD (``refit_optimizer: sgd``; a run without a refit, or a dense one, has none),
    as they were then."""
    raw = load_config_file(path)
    saved = {**_BEFORE_FIELDS, **raw}
    if "refit_optimizer" not in raw:  # every refit was SGD's before 2026-11-29; a dense
        saved["refit_optimizer"] = "sgd" if saved.get("refit") else None  # run has none
    if saved.get("lam_warmup") and saved.get("target_density"):
        # accepted before it was refused, and unused: the controller steered λ
        saved["lam_warmup"] = 0.0
    from sparseopt.config import rows_grouped, structure
    from sparseopt.init import ELEMENTWISE

    if saved.get("head_groups") is None and rows_grouped(saved):
        # before 2026-11-28 a filter grouping grouped the output layer's rows too
        saved["head_groups"] = "filter"
    start = saved.get("init_density")
    if saved.get("init_groups") is None and start is not None and start < 1 and structure(saved):
        # a structured run writes the grouping of its start since round 56 (or
        # "elementwise"): one saved without it drew its start elementwise
        saved["init_groups"] = ELEMENTWISE
    if saved.get("optimizer") == "adabreg" and saved.get("weight_decay") is None:
        saved["weight_decay"] = 0.0  # before round 64 AdaBreg's recipe had no decay
    old_rvsm = saved.get("optimizer") == "rvsm" and "refit_optimizer" not in raw
    if old_rvsm and saved.get("refit") and saved.get("refit_lr") is None:
        # a refit asked of RVSM before round 90 ran at the default lr (a tenth of SGD's
        # recipe); since then its recipe's refit lr would fill the saved null in
        from sparseopt.baselines import refit_optimizer_settings

        saved["refit_lr"] = refit_optimizer_settings()["lr"]
    shape = structure(saved)  # (penalty, grouping) of a structured run, else None
    if saved.get("optimizer") == "rda" and saved.get("group_weight") is None:
        if shape is not None and shape[0] == "group_l0":
            saved["group_weight"] = "one"  # before round 69 RDA's group ℓ0 counted groups
    return saved


def save_config_file(config: Any, path: str | os.PathLike[str]) -> Path:
    """Write a config (a ``TrainConfig`` or a mapping) as YAML (``.yaml``/``.yml``) or JSON (other suffixes); returns the path."""
    data = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    p = Path(path)
    if p.suffix.lower() in (".yaml", ".yml"):
        import yaml

        text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
    else:
        text = json.dumps(data, indent=2) + "\n"
    p.write_text(text, encoding="utf-8")
    return p
