r"""The failure detection's verdict on a finished run, given after the fact.

A run trained with the failure detection off (``stall_epochs`` 0: the fine-tunings of
``sparseopt compare --prune-baseline``), or before a change of :mod:`sparseopt.health`,
has ``ok`` in its ``summary.json`` whatever its network became. :func:`judge_finished`
judges its **final** network once, as the trainer judges an epoch's: it reloads the
deployable network (``model_sparse.pt``) with the run's saved config, probes it with the
trainer's probe batch (:func:`~sparseopt.engine.build.probe_batch`) and reads the last
epoch's metrics, through a :class:`~sparseopt.health.HealthMonitor` of patience 1:

- ``collapsed``: the same output for every probe input, or two or more of the classes
  the training data holds with the same score for every probe input;
- ``stalled``: the last epoch's training loss :math:`\ge 0.9\ln C` with the accuracy at
  chance level, or the validation accuracy at chance level;
- ``ok`` otherwise.

One epoch decides (patience 1): the network judged is the one a user gets, and a
fine-tuning of a few epochs is shorter than the trainer's patience. A magnitude-pruned
Adam network of the full Fashion-MNIST MLP at 1-2 % of the weights gave 2-6 classes one
score for every input and was saved ``ok`` (docs/robustness.md): this is what says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["judge_finished"]


def judge_finished(run_dir: str | Path, cache: dict[Any, Any] | None = None) -> tuple[str, str]:
    """``(status, reason)`` of the final network of the finished run in ``run_dir``
    (see the module docstring; ``reason`` is empty for ``ok``).

    Args:
        run_dir: a run directory with ``config.yaml``, ``summary.json`` and
            ``model_sparse.pt``.
        cache: a dict to keep the loaded datasets in between calls (keyed by dataset,
            seed, validation fraction and options); ``None``: no reuse.

    Raises:
        FileNotFoundError: one of those files is missing.
    """
    import torch

    from sparseopt.config import TrainConfig, load_run_config
    from sparseopt.engine.build import build_model, data_tensors, load_data, probe_batch
    from sparseopt.health import (
        HealthMonitor,
        classes_present,
        empty_layers,
        majority_share,
        probe_constant,
    )

    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    cfg = TrainConfig.from_dict(load_run_config(run_dir / "config.yaml")).resolve()
    cache = {} if cache is None else cache
    key = (cfg.dataset, cfg.seed, cfg.val_fraction, json.dumps(cfg.dataset_options, sort_keys=True))
    if key not in cache:
        data = load_data(cfg)
        cache[key] = (data, data_tensors(data))
    data, tensors = cache[key]
    model = build_model(cfg, data, sparse_init=False)
    state = torch.load(run_dir / "model_sparse.pt", map_location="cpu", weights_only=False)
    model.load_state_dict(state.state_dict() if hasattr(state, "state_dict") else state)
    classes = data.num_classes if data.task == "classification" else None
    judged = tensors["val"] if len(tensors["val"][0]) else tensors["train"]
    monitor = HealthMonitor(
        classes,
        patience=1,
        sparse=False,
        majority=majority_share(judged[1], classes) if classes else None,
        classes_seen=classes_present(tensors["train"][1], classes) if classes else None,
    )
    row = dict(summary.get("metrics") or {})
    constant, scores = probe_constant(model, probe_batch(tensors), classes)
    monitor.observe(
        row,
        constant_output=constant,
        empty_layers=empty_layers(row.get("layer_filters_alive") or {}),
        constant_scores=scores,
    )
    return monitor.status, monitor.reason
