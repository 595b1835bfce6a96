"""Build: the one place that turns a :class:`~sparseopt.config.TrainConfig` into objects.

:func:`build` loads the dataset, builds and sparsely initialises the model (with the
model options the dataset describes, e.g. the teacher's patch size for ``nooverlap``),
creates the optimizer from the registry, its learning-rate schedule and the structure
callbacks the config asks for. Every command goes through it: ``sparseopt train`` and
``compare`` (via :class:`~sparseopt.engine.Trainer`), ``prune``, and the benchmarks;
the parts (:func:`load_data`, :func:`build_model`, :func:`build_optimizer`...) are
usable alone.

Every failure caused by the config is a :class:`~sparseopt.engine.errors.ConfigError`
(one line, exit status 2 on the command line).

Example:
    >>> from sparseopt.config import TrainConfig
    >>> built = build(TrainConfig(epochs=1).resolve())  # doctest: +SKIP
    >>> built.model, built.optimizer, built.data.train  # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sparseopt.config import TrainConfig, refit_epochs
from sparseopt.engine.distributed import Dist
from sparseopt.engine.errors import ConfigError
from sparseopt.groups import is_penalised

__all__ = [
    "SMALL_MODEL_PARAMS",
    "Built",
    "build",
    "build_health",
    "probe_batch",
    "build_callbacks",
    "build_model",
    "build_optimizer",
    "build_scheduler",
    "flush_denormals",
    "flushes_denormals",
    "set_flush_denormal_all",
    "check_output",
    "data_tensors",
    "eval_batch_size",
    "fastest_implementation",
    "load_data",
    "lr_lam",
    "model_options",
    "pack_model",
    "threads_for",
]

#: Below this many parameters a CPU run defaults to one intra-op thread.
SMALL_MODEL_PARAMS = 1_000_000

Scheduler = torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau


@dataclass
class Built:
    """What :func:`build` returns.

    Attributes:
        config: the (resolved) configuration it was built from.
        data: the :class:`~sparseopt.data.SplitData`.
        tensors: ``{"train"|"val"|"test": (x, y)}`` on the device.
        model: the (sparsely initialised) model on the device.
        optimizer: the optimizer; ``info`` its registry entry.
        scheduler: the per-epoch learning-rate schedule, or ``None``.
        callbacks: the structure callbacks of the config, then the caller's.
        health: the :class:`~sparseopt.health.HealthMonitor` of the run; ``probe`` the
            (validation) inputs on which it checks for a constant output.
    """

    config: TrainConfig
    data: Any
    tensors: dict[str, tuple[Tensor, Tensor]]
    model: nn.Module
    optimizer: torch.optim.Optimizer
    info: Any
    scheduler: Scheduler | None = None
    callbacks: list[Any] = field(default_factory=list)
    health: Any = None
    probe: Tensor | None = None

    @property
    def task(self) -> str:
        """``classification`` or ``regression``."""
        return str(self.data.task)


def load_data(cfg: TrainConfig, ctx: Dist | None = None) -> Any:
    """The dataset of ``cfg`` (rank 0 first, so a cache file is written once).

    Raises:
        ConfigError: invalid dataset name or options, or no training samples.
        sparseopt.data.DatasetNotFoundError: the dataset's files are missing.
    """
    from sparseopt.data import load_dataset

    ctx = ctx or Dist()

    def load() -> Any:
        try:
            return load_dataset(
                cfg.dataset,
                data_dir=cfg.data_dir,
                seed=cfg.seed,
                val_fraction=cfg.val_fraction,
                **cfg.dataset_options,
            )
        except FileNotFoundError:
            raise
        except (ValueError, TypeError) as err:
            raise ConfigError(str(err)) from None

    data = load() if ctx.is_main else None
    ctx.barrier()
    if not ctx.is_main:
        data = load()
    if len(data.train) == 0:
        raise ConfigError(f"dataset {cfg.dataset!r} has no training samples")
    return data


def data_tensors(data: Any, device: torch.device | str = "cpu") -> dict[str, tuple[Tensor, Tensor]]:
    """``{split: (x, y)}`` of the ``train``, ``val`` and ``test`` parts on ``device``."""
    out = {}
    for split in ("train", "val", "test"):
        x, y = getattr(data, split).tensors
        out[split] = (x.to(device), y.to(device))
    return out


def model_options(cfg: TrainConfig, data: Any) -> dict[str, Any]:
    """``cfg.model_options``, plus the options the dataset describes (e.g. the teacher's
    patch size ``k`` and count ``r`` for ``nooverlap``) unless the user set any of them.

    Raises:
        ConfigError: unknown model name.
    """
    from sparseopt.models import get_model_spec

    options = dict(cfg.model_options)
    try:
        spec_options = get_model_spec(cfg.model).options()
    except ValueError as err:
        raise ConfigError(str(err)) from None
    described = {
        k: v
        for k, v in data.meta.items()
        if k in spec_options and isinstance(v, int) and not isinstance(v, bool)
    }
    if not set(described) & set(options):
        options.update(described)
    return options


def build_model(
    cfg: TrainConfig, data: Any, device: torch.device | str = "cpu", *, sparse_init: bool = True
) -> nn.Module:
    """The model of ``cfg`` for ``data`` on ``device``, sparsely initialised when the
    config asks (``init_density < 1``; ``sparse_init=False`` skips it, e.g. when
    weights are loaded next). With ``cfg.coupled`` its heads/neurons are packed
    (:func:`pack_model`) and the start is dense: a head or neuron whose slices are all
    zero gets a zero gradient (docs/transformers.md), so it could never enter.

    Raises:
        ConfigError: the model cannot be built for this dataset, or invalid init options.
    """
    from sparseopt.init import sparse_init_
    from sparseopt.models import build_model as build_architecture

    options = model_options(cfg, data)
    try:
        model = build_architecture(cfg.model, data.input_shape, data.num_classes, **options)
    except (ValueError, TypeError) as err:
        what = (
            f"{data.num_classes} classes"
            if data.task == "classification"
            else "regression, one output"
        )
        raise ConfigError(
            f"cannot build model {cfg.model!r} for dataset {cfg.dataset!r} (input "
            f"{tuple(data.input_shape)}, {what}): {err}"
        ) from None
    if cfg.coupled:  # a dense start: a zero head/neuron is a saddle point (no gradient)
        pack_model(cfg, model)
    elif sparse_init and cfg.init_density is not None and cfg.init_density < 1.0:
        gen = torch.Generator().manual_seed(cfg.seed)
        try:
            sparse_init_(
                model,
                cfg.init_density,
                groups=cfg.init_groups,
                # a config that sets no head grouping (no group penalty over filters)
                # draws its output layer like the other layers, as every run did before
                # 2026-11-28: a run saved then starts the same
                head_groups=cfg.head_groups or "filter",
                distribution=cfg.init_distribution,
                floor=cfg.init_floor,
                generator=gen,
            )
        except ValueError as err:
            raise ConfigError(str(err)) from None
    return model.to(device)


def pack_model(cfg: TrainConfig, model: nn.Module) -> nn.Module:
    """Pack the coupled groups of the kinds ``cfg.coupled`` names (heads, neurons) into
    one ``(G, |g|)`` parameter per set (:func:`sparseopt.coupled.pack_coupled`), in place.

    The model's state dict then holds ``sparseopt_coupled.packed.<i>`` instead of the
    packed weights: a run's ``checkpoint.pt`` and ``model_sparse.pt`` load into the model
    :func:`build_model` builds from its ``config.yaml`` (``sparseopt prune`` does so);
    :func:`sparseopt.coupled.unpack_coupled` gives back ordinary parameters.

    Raises:
        ConfigError: the model has no coupled group of those kinds.
    """
    from sparseopt.config.checks import coupled_kinds
    from sparseopt.coupled import detect_coupled_groups, pack_coupled

    kinds = coupled_kinds(cfg.coupled)
    sets = [cg for cg in detect_coupled_groups(model) if cg.kind in kinds]
    if not sets:
        raise ConfigError(
            f"Invalid coupled value: {cfg.coupled!r}; model {cfg.model!r} has no attention "
            "heads or MLP neurons of those kinds (docs/transformers.md lists the modules)"
        )
    return pack_coupled(model, sets)


@torch.no_grad()
def check_output(model: nn.Module, x: Tensor, cfg: TrainConfig, data: Any) -> None:
    """Check on one sample ``x[:1]`` that the model's output fits the dataset's task.

    Raises:
        ConfigError: the model rejects the input shape or outputs the wrong shape.
    """
    was_training = model.training
    model.eval()
    try:
        out = model(x[:1])
    except RuntimeError as err:
        raise ConfigError(
            f"model {cfg.model!r} cannot take inputs of shape {tuple(data.input_shape)} from "
            f"dataset {cfg.dataset!r}: {str(err).splitlines()[0]}"
        ) from None
    finally:
        model.train(was_training)
    if data.task == "classification":
        want = (1, data.num_classes)
        ok = tuple(out.shape) == want
    else:
        want = (1,)
        ok = out.numel() == 1
    if not ok:
        raise ConfigError(
            f"model {cfg.model!r} outputs shape {tuple(out.shape)[1:]} per sample but "
            f"dataset {cfg.dataset!r} is {data.task} and needs {want[1:] or 'a scalar'}"
        )


def threads_for(cfg: TrainConfig, model: nn.Module, device: torch.device) -> int | None:
    """The intra-op thread count to use (``None``: leave torch's setting).

    ``cfg.threads`` when set; otherwise one thread for a CPU network under
    :data:`SMALL_MODEL_PARAMS` parameters (the synchronisation of threads costs more
    than it saves there, and much more on a shared machine) unless
    ``OMP_NUM_THREADS`` is set.
    """
    if cfg.threads is not None:
        return cfg.threads
    small = sum(p.numel() for p in model.parameters()) < SMALL_MODEL_PARAMS
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ and small:
        return 1
    return None


def flushes_denormals() -> bool:
    """Whether float32 arithmetic on the CPU flushes subnormal results to zero in this
    thread now (torch has a setter, :func:`torch.set_flush_denormal`, but no getter: this
    halves the smallest normal number, ``finfo.tiny``, and sees whether zero comes back)."""
    tiny = torch.tensor([torch.finfo(torch.float32).tiny], dtype=torch.float32, device="cpu")
    return bool((tiny * 0.5).item() == 0.0)


def _gomp_parallel() -> Any | None:
    """``GOMP_parallel`` of the OpenMP runtime torch's CPU kernels run on, else ``None``
    (another parallel backend, or no ``libtorch_cpu`` to look it up through).

    The symbol is looked up through torch's own ``libtorch_cpu``, whose handle searches
    the libraries it depends on: the runtime torch links (its bundled libgomp in the
    wheels), not another one loaded beside it — scikit-learn's wheels bring a libgomp of
    their own, with a thread pool of its own. libgomp, LLVM's libomp and Intel's libiomp5
    all export the GNU entry point."""
    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return None
    lib_dir = Path(torch.__file__).parent / "lib"
    for name in ("libtorch_cpu.so", "libtorch_cpu.dylib"):
        if (lib_dir / name).is_file():
            try:
                fn = ctypes.CDLL(str(lib_dir / name)).GOMP_parallel  # already loaded
            except (OSError, AttributeError):
                return None
            fn.restype = None
            fn.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint)
            return fn
    return None


def set_flush_denormal_all(on: bool, threads: int | None = None) -> bool:
    """:func:`torch.set_flush_denormal` in the calling thread and in each thread of
    torch's intra-op OpenMP team of ``threads`` threads (default
    ``torch.get_num_threads()``); whether the team's threads were reached (or one thread
    needs none).

    The x86 MXCSR register that the setting lives in is per thread. libgomp's worker
    threads keep theirs from one parallel region to the next (a thread created later
    copies its creator's), so with the flag set in the calling thread alone a
    multi-threaded op would flush only that thread's share of its elements (LLVM's libomp
    and Intel's libiomp5 copy the caller's register into the workers at every region).
    The team's threads are reached by one parallel region of the runtime's own
    (``GOMP_parallel``) whose body sets the flag; where the runtime is not found the
    calling thread alone is set (``False``).
    """
    torch.set_flush_denormal(on)
    n = torch.get_num_threads() if threads is None else threads
    if n <= 1:
        return True
    gomp_parallel = _gomp_parallel()
    if gomp_parallel is None:
        return False

    @ctypes.CFUNCTYPE(None, ctypes.c_void_p)
    def body(_: int | None) -> None:  # runs in each thread of the team, with the GIL
        torch.set_flush_denormal(on)

    gomp_parallel(ctypes.cast(body, ctypes.c_void_p), None, n, 0)
    return True


def flush_denormals(device: torch.device) -> bool:
    """On CPU, flush subnormal numbers to zero (x86's FTZ/DAZ) for training; whether this
    call turned it on (then the caller turns it off again when done, with
    :func:`set_flush_denormal_all`).

    Why: weights and optimizer state that decay geometrically towards zero (RVSM's dense
    copy ``w`` of a weight whose input unit died, pulled towards ``u = 0`` by β) spend
    many steps as subnormal numbers, which some CPUs compute in microcode
    (docs/optimizers.md, "Subnormal numbers on CPUs"). Flushing changes only results
    with a subnormal input or output (float64 runs never come near their 2.2e-308). It is
    set in the calling thread and in the threads of torch's intra-op team at the current
    thread count (:func:`set_flush_denormal_all`): call it once the run's thread count is
    set, and turn it off at the same count.
    """
    if device.type != "cpu" or flushes_denormals():
        return False
    if not torch.set_flush_denormal(True):  # not supported on this CPU
        return False
    set_flush_denormal_all(True)
    return True


def eval_batch_size(cfg: TrainConfig, device: torch.device) -> int:
    """``cfg.eval_batch_size``, or the device's default: 256 on CPU (per sample faster
    than 1024 there: smaller activations stay in cache), 1024 on accelerators."""
    if cfg.eval_batch_size is not None:
        return cfg.eval_batch_size
    return 256 if device.type == "cpu" else 1024


def fastest_implementation(info: Any, model: nn.Module, given: Any = ()) -> dict[str, Any]:
    """``{"fused": True}`` for a dense torch baseline (``sgd``, ``adam``) whose parameters
    are floating-point tensors on CPU or CUDA, unless ``foreach``/``fused`` is ``given``.

    torch's default is the for-loop on CPU; measured there with one thread
    (``benchmarks`` note in docs/cli.md), fused Adam is 3.8× (MLP) to 7× (ConvNet) faster
    than it and fused SGD with momentum 1.4–1.7× (foreach is no faster on CPU).
    """
    if info.sparse or "fused" not in info.accepted_keywords():
        return {}
    if {"fused", "foreach"} & set(given):
        return {}
    params = list(model.parameters())
    ok = all(  # plain tensors only: a sharded (DTensor) parameter has no fused kernel
        type(p.data) is torch.Tensor
        and p.device.type in ("cpu", "cuda")
        and p.dtype.is_floating_point
        for p in params
    )
    return {"fused": True} if params and ok else {}


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> tuple[torch.optim.Optimizer, Any]:
    """``(optimizer, registry entry)`` of ``cfg`` for ``model`` (dense baselines with
    torch's fastest implementation: :func:`fastest_implementation`).

    Raises:
        ConfigError: unknown optimizer or invalid hyperparameters.
    """
    from sparseopt.optim.registry import create_optimizer, get_optimizer_info

    try:
        info = get_optimizer_info(cfg.optimizer)
        kwargs = cfg.optimizer_kwargs()
        kwargs = {**fastest_implementation(info, model, kwargs), **kwargs}
        target: Any = model
        if cfg.coupled and info.sparse:
            target, kwargs = _coupled_groups(cfg, model, kwargs)
        optimizer = create_optimizer(target, cfg.optimizer, **kwargs)
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err)) from None
    return optimizer, info


def _coupled_groups(
    cfg: TrainConfig, model: nn.Module, kwargs: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The param groups of a packed model (:func:`sparseopt.coupled.coupled_param_groups`:
    heads/neurons with ``cfg.penalty`` and λ ``cfg.lam`` or ``cfg.coupled_lam[kind]``,
    everything else unpenalised) and the optimizer keywords left."""
    from sparseopt.coupled import coupled_param_groups
    from sparseopt.optim.registry import PARAM_GROUP_KEYS

    groups = coupled_param_groups(
        model,
        penalty=cfg.penalty or "group_l1",
        lam=cfg.lam,
        group_weight=cfg.group_weight,
        lam_by_kind={k: float(v) for k, v in cfg.coupled_lam.items()},
    )
    return groups, {k: v for k, v in kwargs.items() if k not in PARAM_GROUP_KEYS}


def build_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer) -> Scheduler | None:
    """The per-epoch learning-rate schedule of ``cfg.schedule`` (``None`` for ``none``);
    ``cosine`` reaches 0 where the refit begins (:mod:`~sparseopt.engine.refit`)."""
    lr_scheduler = torch.optim.lr_scheduler
    if cfg.schedule == "cosine":
        sparse_epochs = cfg.epochs - refit_epochs(cfg.epochs, cfg.refit)
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(sparse_epochs, 1))
    if cfg.schedule == "step":
        return lr_scheduler.StepLR(optimizer, step_size=cfg.lr_step_size, gamma=cfg.lr_gamma)
    if cfg.schedule == "multistep":
        return lr_scheduler.MultiStepLR(
            optimizer, milestones=list(cfg.lr_milestones), gamma=cfg.lr_gamma
        )
    if cfg.schedule == "plateau":
        return lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=cfg.lr_gamma, patience=cfg.lr_patience
        )
    return None


def extend_cosine(scheduler: Any, t_max: int, epoch: int) -> None:
    r"""Put a loaded ``CosineAnnealingLR`` on the cosine of a run extended to ``t_max``
    epochs, at ``epoch``: the learning rate the longer run would have there,
    :math:`\eta_{\min} + (\eta_0 - \eta_{\min})(1 + \cos(\pi e / T))/2`. Without this
    the old schedule, past its end, climbs back to :math:`\eta_0` at the new last epoch.
    """
    scheduler.T_max = t_max
    scheduler.last_epoch = epoch
    eta_min = scheduler.eta_min
    lrs = [
        eta_min + (base - eta_min) * (1 + math.cos(math.pi * epoch / t_max)) / 2
        for base in scheduler.base_lrs
    ]
    for group, lr in zip(scheduler.optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
    scheduler._last_lr = lrs


def build_callbacks(
    cfg: TrainConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    user: Sequence[Any] = (),
    *,
    distributed: bool = False,
) -> list[Any]:
    """The structure callbacks of ``cfg``, then the caller's ``user`` callbacks.

    Always in the order PathRecorder (``record_path``), TargetDensity
    (``target_density``), GrowCallback (``grow_every``), LamWarmup (``lam_warmup``,
    without ``target_density``), so that the checkpoint keys
    ``"{i}:{Class}"`` of every callback are the same in a resumed run. A
    ``PathRecorder`` among ``user`` replaces the built-in one.

    Raises:
        ConfigError: a structure setting that cannot work with this model/optimizer.
    """
    from sparseopt.control import TargetDensity
    from sparseopt.path import PathRecorder
    from sparseopt.prune.grow import GrowCallback, layer_saturation

    builtin: list[Any] = []
    if cfg.record_path and not any(isinstance(cb, PathRecorder) for cb in user):
        builtin.append(PathRecorder())
    if cfg.target_density:  # None or 0: off
        if any(isinstance(cb, TargetDensity) for cb in user):
            raise ConfigError(
                f"target_density is set ({cfg.target_density:g}) and a TargetDensity "
                "callback was passed too; use one of them"
            )
        if not any(is_penalised(g) for g in optimizer.param_groups):
            raise ConfigError(
                f"Invalid target_density value: {cfg.target_density!r}; no weight is "
                "penalised (penalty 'none'), so there is no λ to steer"
            )
        builtin.append(
            TargetDensity.for_optimizer(
                cfg.optimizer,
                cfg.target_density,
                every_steps=cfg.target_density_every,
                **({} if cfg.target_density_ramp is None else {"ramp": cfg.target_density_ramp}),
                **(
                    {}
                    if cfg.target_density_hold is None
                    else {"hold_warmup": cfg.target_density_hold}
                ),
                **({} if cfg.target_allocation is None else {"allocation": cfg.target_allocation}),
                **(
                    {}
                    if cfg.target_density_lr_coupled is None
                    else {"lr_coupled": cfg.target_density_lr_coupled}
                ),
            )
        )
    if cfg.grow_every is not None:
        if distributed:
            raise ConfigError(
                f"Invalid grow_every value: {cfg.grow_every!r}; growing layers is not "
                "supported in distributed runs (DistributedDataParallel keeps the old "
                "parameters)"
            )
        try:
            widenable = layer_saturation(model, optimizer)
        except ValueError as err:
            raise ConfigError(
                f"Invalid grow_every value: {cfg.grow_every!r}; model {cfg.model!r} "
                f"cannot grow: {err}"
            ) from None
        if not widenable:
            raise ConfigError(
                f"Invalid grow_every value: {cfg.grow_every!r}; model {cfg.model!r} has no "
                "layer that can be widened (only a Conv/Linear layer followed by another "
                "one can)"
            )
        builtin.append(GrowCallback(every=cfg.grow_every, tau=cfg.grow_tau, seed=cfg.seed))
    if cfg.lam_warmup and not cfg.target_density and hasattr(optimizer, "set_lam"):
        from sparseopt.control import LamWarmup

        builtin.append(LamWarmup(optimizer, cfg.lam_warmup))  # last: earlier keys unchanged
    return [*builtin, *user]


def build(
    cfg: TrainConfig,
    *,
    ctx: Dist | None = None,
    callbacks: Sequence[Any] = (),
    set_threads: bool = True,
) -> Built:
    """Everything a run of ``cfg`` (resolved) needs, in a fixed order.

    Dataset, model (sparse start; checked against the data), the thread count
    (:func:`threads_for`, applied with ``set_threads``), optimizer, schedule and
    callbacks. The global RNGs must be seeded before (the architecture's own
    initialisation draws from torch's).

    Raises:
        ConfigError: anything in the config that cannot be built.
        sparseopt.data.DatasetNotFoundError: the dataset's files are missing.
    """
    ctx = ctx or Dist()
    data = load_data(cfg, ctx)
    tensors = data_tensors(data, ctx.device)
    if cfg.augment and tensors["train"][0].ndim != 4:
        raise ConfigError(
            f"Invalid augment value: True; dataset {cfg.dataset!r} is not made of images"
        )
    model = build_model(cfg, data, ctx.device)
    check_output(model, tensors["train"][0], cfg, data)
    threads = threads_for(cfg, model, ctx.device)
    if set_threads and threads is not None:
        torch.set_num_threads(threads)
    if cfg.fsdp and ctx.distributed:  # shard before the optimizer takes the parameters
        from sparseopt.fsdp import shard_model

        shard_model(model)
    optimizer, info = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer)
    cbs = build_callbacks(cfg, model, optimizer, callbacks, distributed=ctx.distributed)
    health, probe = build_health(cfg, data, optimizer, info, tensors, callbacks=cbs)
    return Built(cfg, data, tensors, model, optimizer, info, scheduler, cbs, health, probe)


def lr_lam(optimizer: torch.optim.Optimizer) -> tuple[float, float | None]:
    """The learning rate of the first param group and the run's λ (the first penalised
    group's, before a per-layer factor: :func:`sparseopt.groups.base_lam`)."""
    groups = optimizer.param_groups
    from sparseopt.groups import base_lam

    return float(groups[0]["lr"]), base_lam(groups)


def probe_batch(tensors: dict[str, tuple[Tensor, Tensor]]) -> Tensor:
    """The inputs the failure detection probes the deployable network with: up to 256
    validation inputs (training inputs without a validation split)."""
    x = tensors["val"][0]
    return (x if len(x) >= 2 else tensors["train"][0])[:256]


def health_inputs(data: Any, tensors: dict[str, tuple[Tensor, Tensor]]) -> dict[str, Any]:
    """What the failure detection takes from the data (:class:`~sparseopt.health.HealthMonitor`
    keywords): ``num_classes`` (``None`` for a regression), ``majority`` (the most common
    class's share of the split whose accuracy is judged: validation, else training) and
    ``classes_seen`` (the classes the training labels hold)."""
    from sparseopt.health import classes_present, majority_share

    classes = data.num_classes if data.task == "classification" else None
    judged = tensors["val"] if len(tensors["val"][0]) else tensors["train"]  # its accuracy
    return {
        "num_classes": classes,
        "majority": majority_share(judged[1], classes) if classes else None,
        "classes_seen": classes_present(tensors["train"][1], classes) if classes else None,
    }


def build_health(
    cfg: TrainConfig,
    data: Any,
    optimizer: torch.optim.Optimizer,
    info: Any,
    tensors: dict[str, tuple[Tensor, Tensor]],
    *,
    callbacks: Sequence[Any] = (),
) -> tuple[Any, Tensor]:
    """The stall/collapse monitor (:mod:`sparseopt.health`) and its probe batch
    (:func:`probe_batch`). The :class:`~sparseopt.control.TargetDensity` among
    ``callbacks`` (built-in or the caller's) decides whether a collapse's hint asks for
    one density (``per_layer``)."""
    from sparseopt.control import TargetDensity
    from sparseopt.health import HealthMonitor

    lr, lam = lr_lam(optimizer)
    health = HealthMonitor(
        **health_inputs(data, tensors),
        patience=cfg.stall_epochs or 0,
        lr=lr,
        lam=lam,
        sparse=info.sparse,
        support_grows=getattr(optimizer, "support_grows_with_steps", False),
        epochs=cfg.epochs,
        target_density=cfg.target_density or None,
        per_layer=any(isinstance(c, TargetDensity) and c.allocation != "global" for c in callbacks),
    )
    return health, probe_batch(tensors)
