"""The optimizer registry is the one source of every default (issue 11)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import torch

import sparseopt as so
from sparseopt.config import TrainConfig
from sparseopt.control import GLOBAL_PENALTIES, PRESETS
from sparseopt.optim.registry import OPTIMIZERS, PENALTY_NAMES, get_optimizer_info

ROOT = Path(__file__).resolve().parents[1]
SPARSE = [n for n, info in OPTIMIZERS.items() if info.sparse]


@pytest.mark.parametrize("name", SPARSE)
def test_every_sparse_recipe_has_a_lambda_per_penalty(name: str) -> None:
    info = get_optimizer_info(name)
    assert set(info.lam) == set(PENALTY_NAMES)
    assert all(v > 0 for v in info.lam.values())
    assert {"init_density", "schedule"} <= set(info.training)


@pytest.mark.parametrize("name", SPARSE)
@pytest.mark.parametrize("penalty", PENALTY_NAMES)
def test_config_and_factory_take_the_same_lambda_from_the_registry(name: str, penalty: str) -> None:
    info = get_optimizer_info(name)
    r = TrainConfig(optimizer=name, penalty=penalty).resolve()
    # a structured run's group recipe, a run with one penalty's recipe (penalty_training)
    recipe = {
        **info.training,
        **info.group_training.get(penalty, {}),
        **info.penalty_training.get(penalty, {}),
    }
    # steered to a target, the controller starts from target_lam's λ where there is one;
    # a structured run's group recipe may bring its own (RDA's group ℓ0, with its weight)
    assert r.lam == recipe.get("lam", info.default_lam(penalty, steered=bool(r.target_density)))
    fixed = TrainConfig(optimizer=name, penalty=penalty, target_density=0).resolve()
    assert fixed.lam == recipe.get("lam", info.lam[penalty])
    assert r.lr == recipe.get("lr", info.defaults.get("lr", r.lr))
    assert r.warmup == recipe.get("warmup", 0.0)
    assert r.init_density == recipe["init_density"]
    assert r.schedule == recipe["schedule"]
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(16, 2))
    opt = so.create_optimizer(net, name, penalty=penalty)
    # the λ as given (a recipe with λ per layer, lam_scale, multiplies it by each factor)
    lams = [
        g["lam"] / g.get("lam_factor", 1.0)
        for g in opt.param_groups
        if g.get("penalty", "none") != "none"
    ]
    assert lams == pytest.approx([info.lam[penalty]] * len(lams))
    scaled = info.defaults.get("lam_scale", "none") == "fan_in"
    assert all(("lam_factor" in g) == scaled for g in opt.param_groups if g["penalty"] != "none")
    # per layer kind: a conv penalty of another kind gets its own recipe λ
    default = info.defaults.get("penalty", "l1")  # the recipe's penalty (rda: l0)
    mixed = TrainConfig(optimizer=name, conv_penalty="group_l1").resolve()
    assert mixed.penalty == default
    steered = bool(mixed.target_density)  # a steered run starts from target_lam's
    assert (mixed.lam, mixed.conv_lam) == (
        info.default_lam(default, steered=steered),
        info.default_lam("group_l1", steered=steered),
    )
    # a user's λ wins everywhere
    assert TrainConfig(optimizer=name, penalty=penalty, lam=0.123).resolve().lam == 0.123


def test_proxsgds_l0_starts_its_controller_from_its_l1_threshold() -> None:
    """Round 55: steered, ProxSGD's ℓ0 starts from λ₀ = tλ₁²/2 = 2.5e-7 (the threshold of
    its ℓ1 start); wherever λ stays fixed — no target, a λ warm-up (which turns the
    recipe's target off), a class or ``create_optimizer`` — it is 0.025, a real λ."""
    info = get_optimizer_info("proxsgd")
    assert dict(info.target_lam) == {"l0": 2.5e-7}
    assert 2.5e-7 == pytest.approx(0.02 * info.lam["l1"] ** 2 / 2)
    assert TrainConfig(optimizer="proxsgd", penalty="l0").resolve().lam == 2.5e-7
    steered = TrainConfig(optimizer="proxsgd", penalty="l0", linear_penalty="l0").resolve()
    assert steered.lam == 2.5e-7
    l1_l0 = TrainConfig(optimizer="proxsgd", penalty="l1", conv_penalty="l0").resolve()
    assert (l1_l0.lam, l1_l0.conv_lam) == (5e-3, 2.5e-7)  # matched thresholds
    for kw in ({"target_density": 0}, {"lam_warmup": 0.5}):
        assert TrainConfig(optimizer="proxsgd", penalty="l0", **kw).resolve().lam == 0.025
    assert TrainConfig(optimizer="proxsgd", penalty="group_l0").resolve().lam == 0.025
    net = torch.nn.Linear(3, 2)
    assert so.create_optimizer(net, "proxsgd", penalty="l0").param_groups[0]["lam"] == 0.025
    steered_opt = so.create_optimizer(net, "proxsgd", penalty="l0", steered=True)
    assert steered_opt.param_groups[0]["lam"] == 2.5e-7
    # one's own TargetDensity callback in the engine steers λ too: the controller's start
    from sparseopt.engine.checkpoint import initial_config

    own = initial_config({"optimizer": "proxsgd", "penalty": "l0"}, None, own_controller=True)
    assert (own.lam, own.target_density) == (2.5e-7, 0.0)
    assert TrainConfig(optimizer="proxsgd", penalty="l0").resolve(controller=True).lam == 2.5e-7
    # one scale for the controller's common factor: a λ of the user's keeps every filled
    # λ fixed
    mixed = TrainConfig(optimizer="proxsgd", penalty="l0", conv_lam=0.025, target_density=0.1)
    assert mixed.resolve().lam == 0.025
    assert get_optimizer_info("rvsm").default_lam("l0", steered=True) == 5e-4  # none there


@pytest.mark.parametrize("name", SPARSE)
def test_class_defaults_are_the_registry_recipe(name: str) -> None:
    info = get_optimizer_info(name)
    sig = inspect.signature(info.cls.__init__).parameters
    for key, value in info.defaults.items():
        if key == "lam_scale":  # a param-group setting: it needs the model's layers
            continue
        assert sig[key].default == value, (name, key)
    default = info.defaults.get("penalty", "l1")
    assert sig["lam"].default is None and sig["penalty"].default == default
    w = torch.nn.Parameter(torch.zeros(3, 2))
    plain = info.cls([w])  # the class alone gives the recipe too
    assert (plain.param_groups[0]["penalty"], plain.param_groups[0]["lam"]) == (
        default,
        info.lam[default],
    )
    assert plain.param_groups[0]["lr"] == info.defaults["lr"]
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(16, 2))
    for penalty in PENALTY_NAMES:
        assert info.cls([w], penalty=penalty).param_groups[0]["lam"] == info.lam[penalty]
        # param groups without λ: each group gets the recipe's λ of its own penalty
        groups = so.param_groups(net, penalty=penalty, linear_penalty="l0")
        opt = info.cls(groups)
        lams = {g["name"]: g["lam"] for g in opt.param_groups}
        assert lams == {"conv": info.lam[penalty], "linear": info.lam["l0"], "unpenalised": 0.0}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_registry_hyperparameters_are_what_the_factory_and_the_run_use(name: str) -> None:
    info = get_optimizer_info(name)
    net = torch.nn.Linear(3, 2)
    opt = so.create_optimizer(net, name)
    sig = inspect.signature(info.cls.__init__).parameters
    group_keys = {"lam_scale"}  # recipe keys that shape the param groups, not the class
    for key, value in info.defaults.items():
        if key in group_keys:
            continue
        assert key in sig, f"{name}: recipe key {key!r} is not a keyword of the class"
        assert opt.param_groups[0][key] == value
    r = TrainConfig(optimizer=name).resolve()
    run_opt = so.create_optimizer(net, r.optimizer, **r.optimizer_kwargs())  # as the engine does
    for key, value in info.defaults.items():
        # a training setting of the recipe replaces the keyword default in a run (the
        # peak lr a recipe warms up to)
        value = info.training.get(key, value)
        if hasattr(r, key):  # a setting of its own: resolved into the run's config
            assert getattr(r, key) == value
        if key not in group_keys:
            assert run_opt.param_groups[0][key] == value
    if info.defaults.get("lam_scale") == "fan_in":  # one group per penalised layer
        assert "lam_factor" in run_opt.param_groups[0] and "lam_factor" in opt.param_groups[0]
    # the variant is part of the recipe: RDA's adaptive metric with its own γ
    if name == "rda":
        assert (opt.param_groups[0]["adaptive"], r.gamma) == (True, 100.0)


def test_docs_recipe_table_is_the_registry() -> None:
    text = (ROOT / "docs" / "cli.md").read_text()
    for name, info in OPTIMIZERS.items():
        row = next(line for line in text.splitlines() if line.startswith(f"| `{name}` |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == f"{info.training['init_density']:g}", row
        warm_lam, warm_lr = info.training.get("lam_warmup"), info.training.get("warmup")
        assert cells[2] == info.training["schedule"] + (
            f", warm-up {warm_lr:g}" if warm_lr else ""
        ) + (f", λ warm-up {warm_lam:g}" if warm_lam else ""), row
        peak = info.training.get("lr")  # a recipe that warms up to an lr of its own
        lr = info.defaults["lr"]
        assert cells[3] == (f"{peak:g} ({lr:g} with --warmup 0)" if peak else f"{lr:g}"), row
        if info.sparse:
            shown = dict(re.findall(r"(\w+) ([0-9.e-]+)", cells[4]))
            assert {k: float(v) for k, v in shown.items()} == pytest.approx(dict(info.lam)), row
        other = [
            f"{k} {str(v).lower() if isinstance(v, (bool, str)) else format(v, 'g')}"
            for k, v in info.defaults.items()
            if k != "lr"
        ]
        assert cells[5] == ", ".join(other), row
        refit = info.training.get("refit")
        if refit is None:
            assert cells[6] == "—", row
        else:
            lr = info.training.get("refit_lr")
            warm = info.training.get("refit_warmup")
            assert cells[6] == f"{refit:g}" + (f", lr {lr:g}" if lr is not None else "") + (
                f", warm-up {warm:g}" if warm else ""
            ), row
        target = info.training.get("target_density")
        per_layer = PRESETS.get(name, {}).get("allocation", "global") != "global"
        one = "".join(f"{p}: one density; " for p in GLOBAL_PENALTIES.get(name, ()))
        start = "".join(f"λ from {p} {v:g}; " for p, v in info.target_lam.items())
        alloc = PRESETS.get(name, {}).get("allocation")
        note = f", per layer ({alloc}; {one}{start}" if per_layer else f" ({start}"
        assert cells[7] == ("—" if target is None else f"{target:g}{note}off when a λ is given)"), (
            row
        )
        cells_ = []
        for pen, recipe in [*info.penalty_training.items(), *info.group_training.items()]:
            bits = []
            if "init_density" in recipe:
                bits.append(f"start {recipe['init_density']:g} per group")
            if recipe.get("target_density") == 0:
                bits.append(f"λ {info.lam[pen]:g} fixed (no target)")
            if "weight_decay" in recipe:
                bits.append(f"weight_decay {recipe['weight_decay']:g}")
            if "group_weight" in recipe:
                bits.append(f"group_weight {recipe['group_weight']}")
            if "lam" in recipe:
                bits.append(f"λ {recipe['lam']:g}")
            if "lr" in recipe:
                bits.append(f"lr {recipe['lr']:g}")
            if "warmup" in recipe:
                bits.append(f"warm-up {recipe['warmup']:g}")
            if "refit" in recipe:
                bits.append(f"refit {recipe['refit']:g}" if recipe["refit"] else "no refit")
            if "refit_lr" in recipe:
                bits.append(f"refit lr {recipe['refit_lr']:g}")
            if "target_density_ramp" in recipe:
                bits.append(f"ramp {recipe['target_density_ramp']:g} for a target given")
            if recipe.get("target_density_lr_coupled"):
                bits.append("the threshold steered (lr-coupled)")
            cells_.append(f"{pen}: " + ", ".join(bits))
        structured = "; ".join(cells_)
        shown = {"init_density", "target_density", "weight_decay", "group_weight", "lam"}
        shown |= {"lr", "warmup", "refit", "refit_lr", "target_density_ramp"}
        shown |= {"target_density_lr_coupled"}
        assert set().union(*info.group_training.values()) <= shown, name
        assert set().union(*info.penalty_training.values()) <= shown, name
        assert cells[8] == (structured or "—"), row


def test_rdas_group_l0_recipe_counts_weights_at_its_own_lambda() -> None:
    """Rounds 67-69: RDA's structured group ℓ0 run counts the weights of the nonzero
    groups at a third of its ℓ0 λ; that λ goes with that weight (a weight given keeps
    the group ℓ0 λ, a λ given is the user's), and a kernel-grouped run is not structured."""
    from sparseopt.config import TrainConfig

    info = get_optimizer_info("rda")
    cfg = TrainConfig(optimizer="rda", penalty="group_l0").resolve()
    assert (cfg.group_weight, cfg.lam) == ("size", pytest.approx(info.lam["l0"] / 3))
    counted = TrainConfig(optimizer="rda", penalty="group_l0", group_weight="one").resolve()
    assert (counted.group_weight, counted.lam) == ("one", info.lam["group_l0"])
    given = TrainConfig(optimizer="rda", penalty="group_l0", lam=1e-3).resolve()
    assert (given.group_weight, given.lam) == ("size", 1e-3)
    kernel = TrainConfig(optimizer="rda", penalty="group_l0", groups="kernel").resolve()
    assert (kernel.group_weight, kernel.lam) == (None, info.lam["group_l0"])
    assert TrainConfig(optimizer="rda").resolve().group_weight is None  # ℓ0, elementwise


def test_an_rda_group_l0_run_saved_before_round_69_reloads_counting_groups(tmp_path) -> None:
    import yaml

    from sparseopt.config import TrainConfig
    from sparseopt.config.files import load_run_config

    path = tmp_path / "config.yaml"
    saved = TrainConfig(optimizer="rda", penalty="group_l0").resolve().to_dict()
    assert saved["group_weight"] == "size"  # written out since
    path.write_text(yaml.safe_dump({**saved, "group_weight": None, "lam": 3e-3}))
    old = TrainConfig.from_dict(load_run_config(path)).resolve()
    assert (old.group_weight, old.lam) == ("one", 3e-3)  # as it ran
    mixed = {**saved, "group_weight": None, "conv_penalty": "group_l1"}
    path.write_text(yaml.safe_dump(mixed))  # group ℓ1 layers keep their own default
    assert load_run_config(path)["group_weight"] is None
    # a run that is not structured (kernel groups) never had the recipe: written as it was
    kernel = TrainConfig(optimizer="rda", penalty="group_l0", groups="kernel").resolve()
    path.write_text(yaml.safe_dump(kernel.to_dict()))
    assert load_run_config(path)["group_weight"] is None
    # the same structured run spelled per layer kind (linear_penalty none) is mapped too
    spelled = {**saved, "group_weight": None, "lam": 3e-3, "linear_penalty": "none"}
    path.write_text(yaml.safe_dump(spelled))
    assert load_run_config(path)["group_weight"] == "one"
    # a sparse start asked for is drawn per group, as for every method whose recipe
    # starts dense (the group recipe's weight and λ do not decide it)
    start = TrainConfig(optimizer="rda", penalty="group_l0", init_density=0.2).resolve()
    assert start.init_groups == "filter"


def test_adabregs_group_l0_recipe_runs_without_the_weight_decay() -> None:
    """Round 64p: AdaBreg's weight decay (0.05) is off in a group ℓ0 run of the recipe
    (it collapsed the words CNN there), with the start as before (elementwise, with its
    floor); a decay given is the user's, and ℓ1 and group ℓ1 keep the decay."""
    from sparseopt.config import TrainConfig

    cfg = TrainConfig(optimizer="adabreg", penalty="group_l0").resolve()
    assert (cfg.weight_decay, cfg.init_groups, cfg.init_density) == (0.0, "elementwise", 0.01)
    given = TrainConfig(optimizer="adabreg", penalty="group_l0", weight_decay=0.01).resolve()
    assert given.weight_decay == 0.01
    assert TrainConfig(optimizer="adabreg").resolve().weight_decay == 0.05
    grouped = TrainConfig(optimizer="adabreg", penalty="group_l1").resolve()
    assert (grouped.weight_decay, grouped.init_groups) == (0.05, "filter")


def test_an_adabreg_run_saved_before_round_64_reloads_without_the_weight_decay(
    tmp_path,
) -> None:
    """A config saved before round 64 has no weight decay: it ran without one, so a
    reused or resumed run keeps 0 (compare then sees the recipe changed); one saved since
    writes the recipe's 0.05 out. Other optimizers are untouched."""
    import yaml

    from sparseopt.config import TrainConfig
    from sparseopt.config.files import load_run_config

    path = tmp_path / "config.yaml"
    saved = TrainConfig(optimizer="adabreg").resolve().to_dict()
    assert saved["weight_decay"] == 0.05
    path.write_text(yaml.safe_dump(saved))
    assert load_run_config(path)["weight_decay"] == 0.05
    path.write_text(yaml.safe_dump({**saved, "weight_decay": None}))
    old = TrainConfig.from_dict(load_run_config(path)).resolve()
    assert old.weight_decay == 0.0
    other = TrainConfig(optimizer="linbreg").resolve().to_dict()
    path.write_text(yaml.safe_dump({**other, "weight_decay": None}))
    assert load_run_config(path)["weight_decay"] is None


def test_a_structured_sparse_start_is_per_group_but_where_measured_elementwise() -> None:
    """The methods whose recipes start dense (SplitLBI, RDA, RVSM, ProxSGD) draw a sparse
    start a user asks for per group in a structured run, whatever their group recipe sets
    (SplitLBI's and ProxSGD's group ℓ1 λ fixed, as before round 64p; RVSM's and RDA's
    target and refit of 0, rounds 90p and 91p, did not flip it); LinBreg's and AdaBreg's
    group ℓ0 keep the elementwise 1 % start with its floor they were measured with."""
    from sparseopt.config import TrainConfig

    for name in ("splitlbi", "rda", "rvsm", "proxsgd"):
        for pen in ("group_l1", "group_l0"):
            cfg = TrainConfig(optimizer=name, penalty=pen, init_density=0.05).resolve()
            assert cfg.init_groups == "filter", (name, pen)
    for name in ("linbreg", "adabreg"):
        assert TrainConfig(optimizer=name, penalty="group_l0").resolve().init_groups == (
            "elementwise"
        )
        assert TrainConfig(optimizer=name, penalty="group_l1").resolve().init_groups == "filter"


def test_rdas_recipe_warms_lambda_up_unless_a_target_steers_it() -> None:
    """Round 49: RDA's recipe raises λ from 0 over the first half of the sparse phase; a
    target density steers λ from its first step instead (the resolved config says 0, as
    the run does), and a warm-up given, 0 included, is the user's."""
    from sparseopt.config import TrainConfig

    assert TrainConfig(optimizer="rda").resolve().lam_warmup == 0.5
    assert TrainConfig(optimizer="rda", lam=1e-4).resolve().lam_warmup == 0.5  # λ's schedule
    assert TrainConfig(optimizer="rda", target_density=0.1).resolve().lam_warmup == 0.0
    assert TrainConfig(optimizer="rda", lam_warmup=0.0).resolve().lam_warmup == 0.0
    assert TrainConfig(optimizer="rda", lam_warmup=0.2).resolve().lam_warmup == 0.2
    assert TrainConfig(optimizer="rvsm").resolve().lam_warmup == 0.0  # the others have none
    resolved = TrainConfig(optimizer="rda", target_density=0.1).resolve()
    assert resolved.resolve() == resolved


@pytest.mark.parametrize(
    ("name", "target"),
    [("linbreg", 0.13), ("adabreg", 0.13), ("splitlbi", 0.1), ("rvsm", 0.13), ("proxsgd", 0.13)],
)
def test_a_recipe_steers_to_a_density_unless_a_lam_is_given(name: str, target: float) -> None:
    """Rounds 25, 26, 28 and 90: SplitLBI's, AdaBreg's, ProxSGD's and RVSM's recipes steer
    λ to a density (one λ gave 3-47 %, 8-20 %, 13-58 % and 1-34 % of the weights); a λ given is a fixed
    λ, 0 turns it off, and the resolved config says which."""
    assert TrainConfig(optimizer=name).resolve().target_density == target
    for given in ({"lam": 0.05}, {"conv_lam": 0.05}, {"linear_lam": 0.05}):
        assert TrainConfig(optimizer=name, **given).resolve().target_density == 0.0
    assert TrainConfig(optimizer=name, target_density=0.2, lam=0.05).resolve().target_density == 0.2
    assert TrainConfig(optimizer=name, target_density=0).resolve().target_density == 0
    # λ is the user's in other ways too: λ through optimizer_options, a λ warm-up, or no
    # penalised weight (the controller would have nothing to steer)
    for kw in (
        {"optimizer_options": {"linear_lam": 0.01}},
        {"lam_warmup": 0.5},
        {"penalty": "none"},
        {"conv_penalty": "none", "linear_penalty": "none"},
    ):
        assert TrainConfig(optimizer=name, **kw).resolve().target_density == 0.0, kw
    for kw in ({"penalty": "none", "conv_penalty": "l1"}, {"conv_penalty": "none"}):
        assert TrainConfig(optimizer=name, **kw).resolve().target_density == target, kw
    resolved = TrainConfig(optimizer=name).resolve()
    assert resolved.resolve() == resolved  # a resume resolves again to the same run


@pytest.mark.parametrize("name", ["proxsgd", "rvsm"])
def test_the_ramp_ends_near_80_percent_of_the_run_before_a_refit(name: str) -> None:
    """ProxSGD's and RVSM's recipes ramp over 0.94 of the steps before their refit of the
    last 15 %: near 80 % of the run, as the controller preset's 0.8 of a run without a
    refit (rounds 42 and 90); with a λ of the user's there is no target and no ramp."""
    from sparseopt.control import PRESETS

    cfg = TrainConfig(optimizer=name, penalty="l1").resolve()  # (ProxSGD's ℓ0: round 99)
    assert cfg.target_density_ramp * (1 - cfg.refit) == pytest.approx(0.8, abs=2e-3)
    assert PRESETS[name]["ramp"] == 0.8
    fixed = TrainConfig(optimizer=name, lam=0.01).resolve()
    assert (fixed.target_density, fixed.target_density_ramp) == (0.0, None)
    assert TrainConfig(optimizer=name, target_density_ramp=0.5).resolve().target_density_ramp == 0.5


def test_proxsgds_l0_recipe_takes_gradual_pruning_s_span_and_steers_the_threshold(
    tmp_path: Path,
) -> None:
    """Round 99: ProxSGD's default penalty is ℓ0, steered from dense to 13 % over the first
    60 % of the steps (a ramp of the whole sparse phase before a refit of 40 %), refitted
    at lr 0.007, its controller coupled to the lr (the threshold held while the cosine lr
    falls); ℓ1 keeps its recipe; a λ of the user's steers nothing, so nothing is coupled;
    the run's controller is built coupled, and a run saved before the field reads as it
    ran (uncoupled)."""
    from sparseopt.control import TargetDensity
    from sparseopt.engine import Trainer

    cfg = TrainConfig(optimizer="proxsgd").resolve()
    assert (cfg.penalty, cfg.target_density, cfg.refit, cfg.refit_lr) == ("l0", 0.13, 0.4, 0.007)
    assert cfg.target_density_ramp * (1 - cfg.refit) == pytest.approx(0.6)
    assert cfg.target_density_lr_coupled is True
    l1 = TrainConfig(optimizer="proxsgd", penalty="l1").resolve()
    assert (l1.refit, l1.refit_lr, l1.target_density_lr_coupled) == (0.15, 0.005, False)
    fixed = TrainConfig(optimizer="proxsgd", lam=0.01).resolve()
    assert (fixed.target_density, fixed.target_density_lr_coupled) == (0.0, None)
    off = TrainConfig(optimizer="proxsgd", target_density=0).resolve()
    assert off.target_density_lr_coupled is None  # no controller to couple
    assert TrainConfig(optimizer="rvsm").resolve().target_density_lr_coupled is False
    off = TrainConfig(optimizer="proxsgd", target_density_lr_coupled=False).resolve()
    assert off.target_density_lr_coupled is False  # the user's choice stands
    kw = {"epochs": 2, "limit_batches": 2, "quiet": True, "plots": False, "tensorboard": False}
    with Trainer(TrainConfig(optimizer="proxsgd", out=str(tmp_path / "r"), **kw)) as t:
        (ctl,) = [cb for cb in t.callbacks if isinstance(cb, TargetDensity)]
        assert ctl.lr_coupled is True
    off = TrainConfig(
        optimizer="proxsgd", target_density_lr_coupled=False, out=str(tmp_path / "o"), **kw
    )
    with Trainer(off) as t:  # the user's "no" reaches the controller
        (ctl,) = [cb for cb in t.callbacks if isinstance(cb, TargetDensity)]
        assert ctl.lr_coupled is False
    # a coupled run without a penalty is group ℓ1, and takes group ℓ1's training, as one
    # that names it (not the ℓ0 default's)
    coupled = {"optimizer": "proxsgd", "model": "transformer", "coupled": "head,neuron"}
    named = TrainConfig(**coupled, penalty="group_l1").resolve()
    assert TrainConfig(**coupled).resolve() == named and named.refit == 0.15
    # a sticky plant has no threshold to hold: refused before anything runs
    for name in ("linbreg", "adabreg"):
        with pytest.raises(ValueError, match="Invalid target_density_lr_coupled value: True"):
            TrainConfig(optimizer=name, target_density_lr_coupled=True).resolve()
    saved = tmp_path / "r" / "config.yaml"
    text = saved.read_text()
    assert "target_density_lr_coupled: true" in text
    saved.write_text(text.replace("target_density_lr_coupled: true\n", ""))
    from sparseopt.config import load_run_config

    assert load_run_config(saved)["target_density_lr_coupled"] is False


def test_the_other_recipes_have_no_target_density() -> None:
    for name in ("rda", "sgd", "adam"):
        assert TrainConfig(optimizer=name).resolve().target_density is None
    assert TrainConfig(optimizer="sgd", target_density=0).resolve().target_density == 0


def test_a_target_density_of_zero_is_off(tmp_path: Path) -> None:
    from engine_helpers import tiny

    from sparseopt.control import TargetDensity
    from sparseopt.engine import Trainer

    for td, on in ((None, True), (0.0, False)):
        with Trainer(tiny(tmp_path / f"s{td}", optimizer="splitlbi", target_density=td)) as t:
            assert any(isinstance(cb, TargetDensity) for cb in t.callbacks) is on
            assert (t.health.target_density == 0.1) is on


def test_a_structured_run_starts_per_group_and_takes_its_group_recipe() -> None:
    """One group penalty over filters or channels on every penalised layer kind is a
    structured run; where the optimizer has a recipe for that penalty
    (``group_training``), it replaces the recipe's training settings and a sparse start
    is drawn per group of that grouping (an elementwise start puts a weight in every
    unit, which switches every group on); a mixed or coupled run is not structured."""
    assert TrainConfig(optimizer="linbreg", penalty="group_l1").structured() == (
        "group_l1",
        "filter",
    )
    assert TrainConfig(optimizer="rda", penalty="group_l0", groups="column").structured() == (
        "group_l0",
        "channel",
    )
    for kw in (
        {"penalty": "l1"},
        {"penalty": "group_l1", "linear_penalty": "l1"},
        {"penalty": "group_l1", "linear_penalty": "group_l0"},
        {"penalty": "group_l1", "conv_groups": "kernel"},
        {"penalty": "group_l1", "conv_groups": "channel"},  # two groupings: no one start
        {"penalty": "group_l1", "coupled": "neuron"},
        {"penalty": "none"},
    ):
        assert TrainConfig(optimizer="linbreg", **kw).structured() is None, kw
    # one kind unpenalised: the other decides
    assert TrainConfig(optimizer="linbreg", penalty="group_l1", conv_penalty="none").structured()
    for name in SPARSE:
        info = get_optimizer_info(name)
        for pen in ("group_l1", "group_l0"):
            cfg = TrainConfig(optimizer=name, penalty=pen).resolve()
            group = info.group_training.get(pen, {})
            recipe = {**info.training, **group}
            assert cfg.init_density == recipe["init_density"], name
            # a group recipe's own start is drawn per group; LinBreg's and AdaBreg's group
            # ℓ0 keep the elementwise start they were measured with (rounds 53, 64p, 72p)
            own = "init_density" in group or recipe["init_density"] >= 1
            start = ("filter" if own else "elementwise") if cfg.init_density < 1 else None
            assert cfg.init_groups == start, (name, pen)
            assert cfg.resolve() == cfg
        plain = TrainConfig(optimizer=name).resolve()
        assert plain.init_density == info.training["init_density"] and plain.init_groups is None
    # given settings stand
    given = TrainConfig(optimizer="linbreg", penalty="group_l1", init_groups="kernel").resolve()
    assert given.init_groups == "kernel"
    dense = TrainConfig(optimizer="linbreg", penalty="group_l1", init_density=1.0).resolve()
    assert dense.init_groups is None


def test_linbregs_group_l1_run_starts_with_whole_neurons_not_every_neuron() -> None:
    """The per-group start of a structured run: whole rows of the hidden layers, whole
    input columns of the output layer (every class keeps a weight), and far from every
    unit switched on, which the elementwise start with its floor did (round 53: 83 % of
    the weights after one epoch, whatever the λ)."""
    from sparseopt.data import load_dataset
    from sparseopt.engine.build import build_model

    cfg = TrainConfig(optimizer="linbreg", penalty="group_l1").resolve()
    net = build_model(cfg, load_dataset(cfg.dataset, seed=0))
    layers = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    for layer in layers[:-1]:
        on = layer.weight != 0
        assert (on.all(1) == on.any(1)).all()  # whole neurons
        assert 0 < on.any(1).float().mean() < 0.5
    head = layers[-1].weight != 0
    assert (head.all(0) == head.any(0)).all() and head.any(1).all()


def test_a_run_saved_before_round_56_reads_as_it_ran(tmp_path: Path) -> None:
    """``head_groups`` and a structured run's ``init_groups`` are written out whenever
    they decide something; a ``config.yaml`` saved before them reads with what the run
    had (rows grouped, an elementwise start), and today's resolve of a run whose layout
    never depended on them leaves them unset, so ``sparseopt compare`` reuses it."""
    from sparseopt.config import load_run_config, save_config_file

    def saved(**kw: object) -> dict:
        cfg = TrainConfig(optimizer="linbreg", **kw).resolve().to_dict()
        del cfg["head_groups"]  # as an earlier version wrote it: no such field
        cfg["init_groups"] = None  # and a start it did not write out
        path = save_config_file(cfg, tmp_path / "config.yaml")
        return load_run_config(path)

    old = saved(penalty="group_l1")
    assert (old["head_groups"], old["init_groups"]) == ("filter", "elementwise")
    today = TrainConfig(optimizer="linbreg", penalty="group_l1").resolve()
    assert (today.head_groups, today.init_groups) == ("channel", "filter")
    assert TrainConfig.from_dict(old).resolve().init_groups == "elementwise"  # as it ran
    # a group ℓ0 run without a recipe for it writes its elementwise start out
    assert TrainConfig(optimizer="linbreg", penalty="group_l0").resolve().init_groups == (
        "elementwise"
    )
    # layouts that never depended on them: coupled groups, channel groups, ℓ1, a dense start
    for kw in (
        {"penalty": "group_l1", "coupled": "neuron"},
        {"penalty": "group_l1", "groups": "channel"},
        {"penalty": "l1"},
    ):
        fresh = TrainConfig(optimizer="linbreg", **kw).resolve()
        assert saved(**kw).get("head_groups") == fresh.head_groups, kw
    dense = saved(penalty="group_l1", init_density=1.0)
    assert dense.get("init_groups") is None
    assert (
        TrainConfig(optimizer="linbreg", penalty="group_l1", init_density=1.0).resolve().init_groups
        is None
    )
    for field, bad in (("init_groups", "none"), ("head_groups", "kernel")):
        with pytest.raises(ValueError, match=f"Invalid {field} value: '{bad}'"):
            TrainConfig(optimizer="linbreg", penalty="group_l1", **{field: bad}).validate()
    with pytest.raises(ValueError, match="Invalid head_groups value"):
        TrainConfig(optimizer="adabreg", coupled="neuron", head_groups="filter").validate()


def test_an_unset_head_grouping_starts_the_output_layer_like_the_others() -> None:
    """The engine draws the output layer of a per-filter start by its inputs where the
    config groups it so (a group penalty over filters: ``head_groups`` channel), and like
    the other layers where it sets no head grouping — an ℓ1 run with ``--init-groups
    filter``, as every run before 2026-11-28, so a run saved then starts the same."""
    from sparseopt.data import load_dataset
    from sparseopt.engine.build import build_model

    data = load_dataset("digits", seed=0)
    for kw, by_rows in (
        ({"penalty": "l1", "init_groups": "filter", "init_density": 0.3}, True),
        ({"penalty": "group_l1", "init_density": 0.3}, False),
    ):
        cfg = TrainConfig(optimizer="linbreg", **kw).resolve()
        head = [m for m in build_model(cfg, data).modules() if isinstance(m, torch.nn.Linear)][-1]
        on = head.weight != 0
        whole = on.all(1) == on.any(1) if by_rows else on.all(0) == on.any(0)
        assert whole.all(), kw
    # 'elementwise' is written only where it decides something (a structured sparse start)
    for name, kw in (("sgd", {}), ("linbreg", {"penalty": "l1"}), ("rda", {"penalty": "group_l1"})):
        assert (
            TrainConfig(optimizer=name, init_groups="elementwise", **kw).resolve().init_groups
            is None
        )


def test_a_structured_group_l1_keeps_lambda_fixed_where_the_recipe_says_so() -> None:
    """Rounds 60-61: SplitLBI's and ProxSGD's structured group ℓ1 keep λ fixed (no target,
    no ramp); a target given steers from the steered start with the recipe's ramp; a
    mixed run (group ℓ1 on the convolutions only) is not structured and steers as before;
    ``--target-density 0`` and the recipe's 0 compare as the same settings."""
    from sparseopt.cli.compare import _comparable

    for name, lam, start, ramp in (("splitlbi", 0.01, 0.03, 0.0), ("proxsgd", 0.005, 0.005, 0.94)):
        fixed = TrainConfig(optimizer=name, penalty="group_l1").resolve()
        assert (fixed.lam, fixed.target_density, fixed.target_density_ramp) == (lam, 0.0, None)
        steered = TrainConfig(optimizer=name, penalty="group_l1", target_density=0.1).resolve()
        assert (steered.lam, steered.target_density_ramp) == (start, ramp)
        mixed = TrainConfig(optimizer=name, conv_penalty="group_l1").resolve()
        recipe = get_optimizer_info(name).training["target_density"]
        assert mixed.target_density == recipe and mixed.conv_lam == start
        given = TrainConfig(optimizer=name, penalty="group_l1", target_density=0)
        assert _comparable(given) == _comparable(TrainConfig(optimizer=name, penalty="group_l1"))


def test_a_run_with_one_penalty_takes_that_penaltys_recipe() -> None:
    """Round 72p: AdaBreg's ℓ0 keeps lr 0.01 and no warm-up (the warm-up at twice the lr
    collapsed its words CNN) wherever every penalised layer kind has ℓ0; a run mixing
    ℓ0 with another penalty, or with ℓ0 on one kind and no penalty on the other, is
    decided by what remains; given settings stand."""
    info = get_optimizer_info("adabreg")
    assert dict(info.penalty_training) == {"l0": {"lr": 0.01, "warmup": 0.0}}
    for kw in ({"penalty": "l0"}, {"penalty": "l1", "conv_penalty": "l0", "linear_penalty": "l0"}):
        r = TrainConfig(optimizer="adabreg", **kw).resolve()
        assert (r.lr, r.warmup, r.init_groups) == (0.01, 0.0, None), kw
        assert r.resolve() == r
    one_kind = TrainConfig(optimizer="adabreg", penalty="l0", conv_penalty="none").resolve()
    assert (one_kind.lr, one_kind.warmup) == (0.01, 0.0)
    mixed = TrainConfig(optimizer="adabreg", penalty="l0", linear_penalty="l1").resolve()
    assert (mixed.lr, mixed.warmup) == (info.training["lr"], info.training["warmup"])
    given = TrainConfig(optimizer="adabreg", penalty="l0", lr=0.05, warmup=2.0).resolve()
    assert (given.lr, given.warmup) == (0.05, 2.0)
    assert TrainConfig(optimizer="adabreg", penalty="none").sole_penalty() is None
    # RDA's recipe penalty (ℓ0) is its sole penalty when none is given
    assert TrainConfig(optimizer="rda").sole_penalty("l0") == "l0"


def test_a_recipes_peak_lr_goes_with_its_warmup() -> None:
    """AdaBreg's and SplitLBI's recipes warm up to twice the lr they were measured at
    without a warm-up (rounds 71-72); turned off (``--warmup 0``), a run takes that lr:
    SplitLBI's peak from the first step collapsed the words CNN on one seed of three
    (probe74w). A longer warm-up keeps the peak, a given lr stands, and the classes and
    ``create_optimizer`` take the lr without a warm-up."""
    for name, peak, plain in (("adabreg", 0.02, 0.01), ("splitlbi", 0.04, 0.02)):
        info = get_optimizer_info(name)
        assert (info.training["lr"], info.training["warmup"], info.defaults["lr"]) == (
            peak,
            1.0,
            plain,
        )
        assert TrainConfig(optimizer=name).resolve().lr == peak
        off = TrainConfig(optimizer=name, warmup=0).resolve()
        assert (off.lr, off.warmup) == (plain, 0) and off.resolve() == off
        assert TrainConfig(optimizer=name, warmup=2).resolve().lr == peak
        assert TrainConfig(optimizer=name, warmup=0, lr=0.05).resolve().lr == 0.05
        assert so.create_optimizer(torch.nn.Linear(3, 2), name).param_groups[0]["lr"] == plain


def test_an_rvsm_run_from_before_round_90_reads_as_it_ran(tmp_path: Path) -> None:
    """Round 90 gave RVSM's recipe a target, a refit and its lr. A run saved before it
    (λ written, no target, ``refit_lr`` null) resolves as it ran: its λ fixed, and a refit
    it asked for at the default lr of then (a tenth of SGD's), not the recipe's 0.005."""
    import yaml

    from sparseopt.config import TrainConfig
    from sparseopt.config.files import load_run_config

    path = tmp_path / "config.yaml"
    saved = {**TrainConfig(optimizer="rvsm", lam=7e-3, refit=0.0).resolve().to_dict()}
    saved.update(target_density=None, target_density_ramp=None, refit_lr=None)
    del saved["refit_optimizer"]  # a setting since 2026-11-29
    path.write_text(yaml.safe_dump(saved))
    plain = TrainConfig.from_dict(load_run_config(path)).resolve()
    assert (plain.lam, plain.target_density, plain.refit) == (7e-3, 0.0, 0.0)
    path.write_text(yaml.safe_dump({**saved, "refit": 0.2}))
    refit = TrainConfig.from_dict(load_run_config(path)).resolve()
    assert (refit.refit, refit.refit_lr) == (0.2, pytest.approx(0.002))
    # a run of today's recipe reads its own refit lr
    path.write_text(yaml.safe_dump(TrainConfig(optimizer="rvsm").resolve().to_dict()))
    assert TrainConfig.from_dict(load_run_config(path)).resolve().refit_lr == 0.005
