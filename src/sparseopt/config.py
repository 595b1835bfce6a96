"""Training configuration: the :class:`TrainConfig` dataclass and its file format.

One :class:`TrainConfig` describes one training run completely: data, model, optimizer
and its hyperparameters, sparse initialisation, schedule, budget, seed, device and
output. It holds only plain data (strings, numbers, booleans, lists and dicts of those),
so it round-trips through ``dict``, YAML, TOML and JSON:

    >>> cfg = TrainConfig(optimizer="adabreg", epochs=3)
    >>> TrainConfig.from_dict(cfg.to_dict()) == cfg
    True

Every field is also a ``sparseopt train`` flag (``lam`` is ``--lam``, ``batch_size``
is ``--batch-size``...), and a config file (``--config FILE``) uses the field names as
keys (``-`` and ``_`` are interchangeable); flags given on the command line override
the file.

Fields left at ``None`` are filled by :meth:`TrainConfig.resolve` from the optimizer's
recipe in the registry (:mod:`sparseopt.optim.registry`, the one source of every
default: hyperparameters, λ per penalty, sparse-start density, schedule); the resolved
values are what a run directory's ``config.yaml`` records.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sparseopt.optim.registry import PARAM_GROUP_KEYS

__all__ = [
    "HYPERPARAMETER_FIELDS",
    "PENALTY_FIELDS",
    "RESUME_OVERRIDABLE",
    "SCHEDULES",
    "SPARSE_ONLY_FIELDS",
    "TrainConfig",
    "load_config_file",
    "save_config_file",
]

#: Learning-rate schedules (stepped once per epoch).
SCHEDULES = ("none", "cosine", "step", "multistep", "plateau")

#: Fields routed to :func:`sparseopt.groups.param_groups` (per-layer penalties): the
#: registry's param-group keywords, less ``exclude`` (not a config field).
PENALTY_FIELDS = tuple(k for k in PARAM_GROUP_KEYS if k != "exclude")

#: Optimizer hyperparameters passed to the optimizer when set (``None``: its default).
HYPERPARAMETER_FIELDS = (
    "lr",
    "delta",
    "momentum",
    "betas",
    "eps",
    "kappa",
    "nu",
    "beta",
    "gamma",
    "weight_decay",
    "nesterov",
)

#: Structure settings that need a sparse optimizer (``None``: off). A dense optimizer
#: (``sgd``, ``adam``) has no λ to control and no support whose saturation means anything.
SPARSE_ONLY_FIELDS = ("target_density", "grow_every")

#: Fields a resumed run may change (everything else must match the saved config).
RESUME_OVERRIDABLE = frozenset(
    {
        "epochs",
        "quiet",
        "plots",
        "device",
        "threads",
        "tensorboard",
        "eval_batch_size",
        "keep_checkpoints",
        "stall_epochs",
    }
)


def _key(name: str) -> str:
    return str(name).replace("-", "_")


@dataclass
class TrainConfig:
    """Everything one training run needs; plain data, round-trips to dict / YAML.

    The defaults are the main job: an AdaBreg-trained MLP on the scikit-learn digits,
    started from a 1 %-dense network (about 20 s on two CPU cores, ≥ 95 % test
    accuracy, well under 25 % of the weights nonzero).

    Attributes:
        dataset: a name of :func:`sparseopt.data.list_datasets`.
        data_dir: where file-based datasets live (default: ``$SPARSEOPT_DATA`` or
            ``~/.cache/sparseopt``).
        val_fraction: fraction of the training data held out for validation, in [0, 1).
        dataset_options: extra keyword options of the dataset loader (e.g. ``limit_train``).
        augment: random crop (padding 4) and horizontal flip of training images (CIFAR).
        model: a name of :func:`sparseopt.models.list_models`.
        model_options: extra keyword options of the architecture (e.g. ``hidden``).
        optimizer: a name of :func:`sparseopt.list_optimizers`.
        lr: learning rate (``None``: preset / registry default).
        penalty, lam, groups: penalty of every Conv/Linear weight (biases and norms are
            never penalised), its λ and grouping (``filter``, ``channel``, ``kernel``).
        conv_penalty, conv_groups, conv_lam: the same for Conv weights only.
        linear_penalty, linear_groups, linear_lam: the same for Linear weights only.
        a: shape parameter of the transformed-ℓ1 penalty ``tl1``.
        group_weight: weight of a group in group penalties (``sqrt`` of its size, or ``one``).
        delta, momentum, betas, eps, kappa, nu, beta, gamma, weight_decay, nesterov:
            optimizer hyperparameters, passed when set (see each optimizer's docstring).
        optimizer_options: any other keyword of the optimizer (e.g. ``adaptive`` of
            RDA, ``deploy`` of SplitLBI, ``dampening``).
        init_density: density of the sparse initialisation (Bungert et al. §4.1); ``1``
            keeps the architecture's own dense initialisation.
        init_groups: draw the sparse-init mask per group (``filter``...) instead of per entry.
        init_distribution: layer densities of the sparse start: ``uniform`` (every layer
            at ``init_density``) or ``erk`` (Erdős–Rényi-kernel, overall ``init_density``).
        init_floor: give every output unit and input channel of every layer at least one
            nonzero weight at the sparse start (:func:`sparseopt.sparse_init_`).
        epochs: number of passes over the training data.
        batch_size: global minibatch size (split across processes when distributed).
        eval_batch_size: batch size of evaluation passes.
        limit_batches: stop each epoch after this many batches (quick trials, tests).
        schedule: learning-rate schedule stepped per epoch (``None``: the optimizer's
            recipe): ``none``, ``cosine``
            (to 0 at the last epoch), ``step`` (× ``lr_gamma`` every ``lr_step_size``
            epochs), ``multistep`` (× ``lr_gamma`` at each of ``lr_milestones``) or
            ``plateau`` (:class:`torch.optim.lr_scheduler.ReduceLROnPlateau`: × ``lr_gamma``
            when the validation loss — the test loss without a validation split — has
            not improved for ``lr_patience`` epochs; the schedule of Bungert et al.'s
            notebooks).
        lr_step_size, lr_gamma, lr_milestones, lr_patience: parameters of the schedules.
        seed: seeds the data split, initialisation, batch order and augmentation.
        device: ``auto`` (CUDA if available), ``cpu``, ``cuda`` or ``cuda:N``.
        threads: number of CPU threads for torch (``None``: one for networks under a
            million parameters on CPU, where threading costs more than it gains, unless
            ``OMP_NUM_THREADS`` is set; torch's default otherwise).
        out: run directory (default ``runs/<name>`` or ``runs/<timestamp>-<dataset>-<optimizer>``).
        name: run name used for the default ``out``.
        tensorboard: log to TensorBoard (``None``: if ``torch.utils.tensorboard`` imports).
        quiet: no progress bar and no per-epoch lines (the final summary is still printed).
        plots: draw the PNG plots at the end (matplotlib).
        keep_checkpoints: also keep one checkpoint per epoch under ``checkpoints/``.
        target_density: steer λ during training so that the deployable network's penalised
            weights end at this density, in (0, 1] (:class:`sparseopt.control.TargetDensity`
            with the optimizer's presets; sparse optimizers only). ``None``: λ is fixed.
        target_density_every: update λ every this many optimizer steps.
        record_path: record the solution path into ``path.npz``/``path.json`` of the run
            directory (:class:`sparseopt.path.PathRecorder`; ``sparseopt path``/``prune``
            read it).
        grow_every: every this many epochs, widen the layers whose fraction of selected
            filters exceeds ``grow_tau`` by 50 % (:class:`sparseopt.prune.GrowCallback`,
            DessiLBI's enlargement; sparse optimizers and sequential networks only).
            ``None``: the architecture stays fixed.
        grow_tau: saturation threshold τ of ``grow_every``, in (0, 1] (0.8 as in DessiLBI).
        stall_epochs: report a run whose training loss stays at chance level, or whose
            deployable network gives one output for every input, for this many epochs in
            a row (:mod:`sparseopt.health`); its status is then ``stalled`` /
            ``collapsed`` and the command exits with 4. ``0`` turns the checks off.
    """

    dataset: str = "digits"
    data_dir: str | None = None
    val_fraction: float = 0.1
    dataset_options: dict[str, Any] = field(default_factory=dict)
    augment: bool = False
    model: str = "mlp"
    model_options: dict[str, Any] = field(default_factory=dict)
    optimizer: str = "adabreg"
    lr: float | None = None
    penalty: str | None = None
    lam: float | None = None
    groups: str | None = None
    conv_penalty: str | None = None
    conv_groups: str | None = None
    conv_lam: float | None = None
    linear_penalty: str | None = None
    linear_groups: str | None = None
    linear_lam: float | None = None
    a: float | None = None
    group_weight: str | None = None
    delta: float | None = None
    momentum: float | None = None
    betas: list[float] | None = None
    eps: float | None = None
    kappa: float | None = None
    nu: float | None = None
    beta: float | None = None
    gamma: float | None = None
    weight_decay: float | None = None
    nesterov: bool | None = None
    optimizer_options: dict[str, Any] = field(default_factory=dict)
    init_density: float | None = None
    init_groups: str | None = None
    init_distribution: str = "uniform"
    init_floor: bool = True
    epochs: int = 30
    batch_size: int = 64
    eval_batch_size: int = 1024
    limit_batches: int | None = None
    schedule: str | None = None
    lr_step_size: int = 30
    lr_gamma: float = 0.1
    lr_milestones: list[int] = field(default_factory=list)
    lr_patience: int = 10
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    out: str | None = None
    name: str | None = None
    tensorboard: bool | None = None
    quiet: bool = False
    plots: bool = True
    keep_checkpoints: bool = False
    target_density: float | None = None
    target_density_every: int = 2
    record_path: bool = True
    grow_every: int | None = None
    grow_tau: float = 0.8
    stall_epochs: int = 3

    # ------------------------------------------------------------------ conversion

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of every field, in declaration order."""
        return [f.name for f in fields(cls)]

    def to_dict(self) -> dict[str, Any]:
        """Plain-data dict of every field (lists, not tuples)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build a config from a mapping of field names (``-`` or ``_``) to values.

        Raises:
            ValueError: for an unknown key (the message lists the valid ones) or an
                invalid value.
        """
        if not isinstance(data, Mapping):
            raise ValueError(
                f"Invalid config: expected a mapping of settings, got {type(data).__name__}"
            )
        valid = cls.field_names()
        kwargs: dict[str, Any] = {}
        for raw_key, value in data.items():
            key = _key(raw_key)
            if key not in valid:
                raise ValueError(
                    f"Invalid config key: {raw_key!r}; valid keys are {', '.join(valid)}"
                )
            kwargs[key] = value
        cfg = cls(**kwargs)
        cfg.validate()
        return cfg

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated)."""
        cfg = dataclasses.replace(self, **{_key(k): v for k, v in changes.items()})
        cfg.validate()
        return cfg

    # ------------------------------------------------------------------ validation

    def validate(self) -> TrainConfig:
        """Check types and ranges of the fields the engine interprets; return ``self``.

        Names of datasets, models, optimizers and penalties and the optimizer
        hyperparameters are checked where they are used (the messages then list the
        valid names).

        Raises:
            ValueError: naming the field and the offending value.
        """
        _check_int("epochs", self.epochs, 0)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("eval_batch_size", self.eval_batch_size, 1)
        _check_int("limit_batches", self.limit_batches, 1, allow_none=True)
        _check_int("lr_step_size", self.lr_step_size, 1)
        _check_int("lr_patience", self.lr_patience, 0)
        _check_int("seed", self.seed, 0)
        _check_int("threads", self.threads, 1, allow_none=True)
        _check_int("target_density_every", self.target_density_every, 1)
        _check_int("grow_every", self.grow_every, 1, allow_none=True)
        _check_int("stall_epochs", self.stall_epochs, 0)
        _check_number("grow_tau", self.grow_tau, 0.0, 1.0, low_open=True)
        if self.target_density is not None:
            _check_number("target_density", self.target_density, 0.0, 1.0, low_open=True)
        _check_number("val_fraction", self.val_fraction, 0.0, 1.0, high_open=True)
        _check_number("lr_gamma", self.lr_gamma, 0.0, None, low_open=True)
        if self.init_density is not None:
            _check_number("init_density", self.init_density, 0.0, 1.0, low_open=True)
        if self.lr is not None:
            _check_number("lr", self.lr, 0.0, None)
        for name in ("dataset", "model", "optimizer"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"Invalid {name} value: {value!r}; expected a name")
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise ValueError(
                f"Invalid schedule value: {self.schedule!r}; expected one of {list(SCHEDULES)}"
            )
        if not isinstance(self.lr_milestones, list) or not all(
            isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in self.lr_milestones
        ):
            raise ValueError(
                f"Invalid lr_milestones value: {self.lr_milestones!r}; expected a list of epochs > 0"
            )
        if self.schedule == "multistep" and not self.lr_milestones:
            raise ValueError(
                "Invalid lr_milestones value: []; schedule 'multistep' needs milestones"
            )
        if not (
            self.device in ("auto", "cpu", "cuda")
            or (isinstance(self.device, str) and self.device.startswith("cuda:"))
        ):
            raise ValueError(
                f"Invalid device value: {self.device!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'"
            )
        for name in ("dataset_options", "model_options", "optimizer_options"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(
                    f"Invalid {name} value: {getattr(self, name)!r}; expected a mapping"
                )
        if self.betas is not None:
            if isinstance(self.betas, tuple):
                self.betas = list(self.betas)
            if not isinstance(self.betas, list) or len(self.betas) != 2:
                raise ValueError(f"Invalid betas value: {self.betas!r}; expected two numbers")
        from sparseopt.init import DISTRIBUTIONS

        if self.init_distribution not in DISTRIBUTIONS:
            raise ValueError(
                f"Invalid init_distribution value: {self.init_distribution!r}; expected one "
                f"of {list(DISTRIBUTIONS)}"
            )
        for name in ("augment", "quiet", "plots", "keep_checkpoints", "record_path", "init_floor"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"Invalid {name} value: {getattr(self, name)!r}; expected true/false"
                )
        return self

    # ------------------------------------------------------------------ resolution

    def resolve(self) -> TrainConfig:
        """A copy with ``None`` fields filled from the optimizer's registry recipe.

        Fills the recipe's hyperparameters the optimizer takes (``lr``, ``momentum``...),
        its training settings (``init_density``, ``schedule``) and, for sparse methods,
        ``penalty`` (``l1``) and the recipe's λ for the penalties in use
        (:func:`sparseopt.optim.registry.recipe_lams`). The optimizer name is
        canonicalised.

        Raises:
            ValueError: unknown optimizer name (the message lists the valid ones), or a
                :data:`SPARSE_ONLY_FIELDS` setting with a dense optimizer.
        """
        from sparseopt.optim.registry import get_optimizer_info, list_optimizers, recipe_lams

        info = get_optimizer_info(self.optimizer)
        if not info.sparse:
            for key in SPARSE_ONLY_FIELDS:
                if getattr(self, key) is not None:
                    sparse = [n for n in list_optimizers() if get_optimizer_info(n).sparse]
                    raise ValueError(
                        f"Invalid {key} value: {getattr(self, key)!r}; optimizer "
                        f"{info.name!r} is dense (no λ, no sparse support); use one of "
                        f"{', '.join(sparse)}"
                    )
        changes: dict[str, Any] = {"optimizer": info.name}
        accepted = info.accepted_keywords()
        for key, value in info.defaults.items():
            if key in HYPERPARAMETER_FIELDS and key in accepted and getattr(self, key) is None:
                changes[key] = list(value) if isinstance(value, tuple) else value
        for key, value in info.training.items():
            if getattr(self, key) is None:
                changes[key] = value
        if info.sparse:
            if self.penalty is None:
                changes["penalty"] = "l1"
            settings = {k: getattr(self, k) for k in PENALTY_FIELDS}
            settings["penalty"] = changes.get("penalty", self.penalty)
            changes.update(recipe_lams(info, settings))
        if self.init_density is None and "init_density" not in changes:
            changes["init_density"] = 1.0
        if self.schedule is None and "schedule" not in changes:
            changes["schedule"] = "none"
        return self.replace(**changes)

    def optimizer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`sparseopt.create_optimizer` (set fields only)."""
        out: dict[str, Any] = {}
        for key in (*HYPERPARAMETER_FIELDS, *PENALTY_FIELDS):
            value = getattr(self, key)
            if value is None:
                continue
            out[key] = tuple(value) if key == "betas" else value
        for key, value in self.optimizer_options.items():
            if key in out:
                raise ValueError(
                    f"Invalid optimizer_options key: {key!r} is a setting of its own (use it directly)"
                )
            out[key] = value
        return out


# ---------------------------------------------------------------------- checks


def _check_int(name: str, value: Any, minimum: int, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"Invalid {name} value: {value!r}; expected an integer >= {minimum}")


def _check_number(
    name: str,
    value: Any,
    low: float | None,
    high: float | None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        interval = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
        raise ValueError(f"Invalid {name} value: {value!r}; expected a number in {interval}")


# ---------------------------------------------------------------------- files


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
            import yaml

            data = yaml.safe_load(text)
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


def save_config_file(config: TrainConfig | Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a config as YAML (``.yaml``/``.yml``) or JSON (other suffixes); returns the path."""
    data = config.to_dict() if isinstance(config, TrainConfig) else dict(config)
    p = Path(path)
    if p.suffix.lower() in (".yaml", ".yml"):
        import yaml

        text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
    else:
        text = json.dumps(data, indent=2) + "\n"
    p.write_text(text, encoding="utf-8")
    return p
