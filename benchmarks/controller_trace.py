"""Trace the target-density controller: every penalised param group's density and λ after
each update, over the first steps of a training run.

Where a run ends over its target, this shows which layer went past its share and when
(docs/recipes.md, round 37: the Table 1 ConvNet's fc1 and fc2 past theirs in the first
epoch, then creeping under a held λ). The run trains as ``sparseopt train`` would with
the same settings (its built-in controller steers; a callback of ours only reads) into a
temporary directory, and stops after ``--steps`` optimizer steps; a run that ends before
them also records its final validation accuracy, weight density and status (``final``).

Usage::

    python benchmarks/controller_trace.py --set dataset=fashion-mnist \\
        --set data_dir=/usr/share/datasets/fashion-mnist --set model=convnet \\
        --set optimizer=adabreg --set epochs=20 --set target_density=0.022 \\
        --steps 2000 --out runs/trace.json

``--set KEY=VALUE`` takes any ``TrainConfig`` field (VALUE parsed as YAML, ``1e-3`` a
number); ``--controller KEY=VALUE`` replaces one setting of the run's controller preset
(:data:`sparseopt.control.PRESETS` of its optimizer: ``gain``, ``kp``, ``max_factor``,
``start_step``, ...) for this run. The output holds one row per controller update
(``--every`` defaults to the run's ``target_density_every``; a controller held through
the lr warm-up, ``hold_warmup``, has rows there without updates, λ where it starts):
``step``, the network's density of penalised weights and per
group ``[density, λ]`` (λ without the layer factor, :func:`sparseopt.groups.group_lam`),
with the groups' parameter names; ``--print`` shows a few rows.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from robustness_tasks import controller_preset

from sparseopt.config import TrainConfig
from sparseopt.config.files import load_yaml
from sparseopt.control import group_densities, penalised_density
from sparseopt.engine import TrainingInterrupted, train
from sparseopt.groups import group_lam
from sparseopt.logging_utils import atomic_write_text


class Trace:
    """A callback recording every group's density and λ every ``every`` steps, and
    asking the run to stop after ``steps`` steps."""

    def __init__(self, every: int, steps: int) -> None:
        self.every, self.steps = every, steps
        self.rows: list[dict[str, Any]] = []
        self.names: list[list[str]] = []

    def on_step_end(self, trainer: Any, step: int) -> None:
        if step % self.every == 0:
            opt = trainer.optimizer
            groups = group_densities(opt)
            if not self.names:
                ids = {id(p): n for n, p in trainer.model.named_parameters()}
                self.names = [
                    [ids.get(id(p), "?") for p in opt.param_groups[i]["params"]] for i, _ in groups
                ]
            row = {"step": step, "density": penalised_density(opt), "groups": []}
            for i, d in groups:
                row["groups"].append([d, group_lam(opt.param_groups[i])])
            self.rows.append(row)
        if step >= self.steps:
            raise KeyboardInterrupt  # the engine stops at the next step


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument(
        "--every",
        type=int,
        default=None,
        help="record every N steps (default: the controller's target_density_every, so "
        "one row per update)",
    )
    p.add_argument(
        "--controller",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="replace one setting of the optimizer's controller preset for this run",
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--print", action="store_true", help="print a few rows")
    args = p.parse_args(argv)
    fields: dict[str, Any] = {"threads": 1, "quiet": True, "plots": False, "tensorboard": False}
    for item in args.set:
        key, _, value = item.partition("=")
        fields[key.replace("-", "_")] = load_yaml(value)
    overrides = {}
    for item in args.controller:
        key, _, value = item.partition("=")
        overrides[key.replace("-", "_")] = load_yaml(value)
    final: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="trace-") as tmp:
        run = Path(tmp) / "run"
        cfg = TrainConfig.from_dict({**fields, "out": str(run), "record_path": False})
        trace = Trace(args.every or cfg.target_density_every, args.steps)
        try:
            with controller_preset(cfg.resolve().optimizer, overrides):
                train(cfg, callbacks=[trace], install_signal_handlers=False, echo=False)
            summary = json.loads((run / "summary.json").read_text())
            final = {
                "val_acc": summary["metrics"].get("val_acc"),
                "weight_density": summary["metrics"].get("weight_density"),
                "status": summary.get("status"),
            }
        except TrainingInterrupted:
            pass
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        args.out,
        json.dumps(
            {
                "config": fields,
                "controller": overrides,
                "names": trace.names,
                "rows": trace.rows,
                "final": final,
            }
        ),
    )
    if args.print:
        rows = trace.rows
        for row in rows[:: max(1, len(rows) // 10)] + rows[-1:]:
            cells = " ".join(f"{100 * d:.3f}%/{lam:.3g}" for d, lam in row["groups"])
            print(f"step {row['step']:6d}  network {100 * row['density']:.3f}%  {cells}")
        if final is not None:
            print(f"final: {final}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
