r"""The failure detection's verdict on a finished run, given after the fact.

A run trained with the failure detection off (``stall_epochs`` 0: the fine-tunings of
``sparseopt compare --prune-baseline``), or before a change of :mod:`sparseopt.health`,
has ``ok`` in its ``summary.json`` whatever its network became. :func:`judge_finished`
judges its **final** network once, as the trainer judges an epoch's: it reloads the
deployable network (``model_sparse.pt``, loaded as tensors only, never as pickled code)
with the run's saved config, probes it with the trainer's probe batch
(:func:`~sparseopt.engine.build.probe_batch`) and reads its accuracy, through a
:class:`~sparseopt.health.HealthMonitor` of patience 1:

- ``collapsed``: the same output for every probe input, or two or more of the classes
  the training data holds with the same score for every probe input;
- ``stalled``: the validation accuracy of the final network at chance level, or its
  training loss :math:`\ge 0.9\ln C` with the accuracy at chance level — without a
  validation split the final network is evaluated on the training split here (the
  last epoch's recorded training loss is an average over a network that changed during
  it, which after pruning starts far below where it ends);
- ``ok`` otherwise.

One epoch decides (patience 1): the network judged is the one a user gets, and a
fine-tuning of a few epochs is shorter than the trainer's patience. Magnitude-pruned
Adam networks of the full Fashion-MNIST MLP at RVSM's 1.1 % of the weights gave 3-6
classes one score for every input and were saved ``ok`` (docs/robustness.md): this is
what says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["judge_finished"]


def _data(cfg: Any, cache: dict[Any, Any]) -> tuple[Any, Any]:
    """``(data, tensors)`` of ``cfg``'s dataset, loaded once per key in ``cache``: the
    dataset, where its files were read, the seed, the validation fraction and the
    options (everything :func:`~sparseopt.engine.build.load_data` reads)."""
    from sparseopt.engine.build import data_tensors, load_data

    where = str(Path(cfg.data_dir).resolve()) if cfg.data_dir else None
    options = json.dumps(cfg.dataset_options, sort_keys=True)
    key = (cfg.dataset, where, cfg.seed, cfg.val_fraction, options)
    if key not in cache:
        data = load_data(cfg)
        cache[key] = (data, data_tensors(data))
    return cache[key]


def judge_finished(run_dir: str | Path, cache: dict[Any, Any] | None = None) -> tuple[str, str]:
    """``(status, reason)`` of the final network of the finished run in ``run_dir``
    (see the module docstring; ``reason`` is empty for ``ok``). Runs on the CPU.

    Args:
        run_dir: a run directory with ``config.yaml``, ``summary.json`` and
            ``model_sparse.pt``.
        cache: a dict to keep the loaded datasets in between calls (:func:`_data`);
            ``None``: no reuse.

    Raises:
        FileNotFoundError: ``config.yaml`` or ``summary.json`` is missing.
        ValueError: ``model_sparse.pt`` is missing, unreadable, holds pickled code, or
            does not fit the model of the saved config.
        sparseopt.data.DatasetNotFoundError: the dataset's files are not where the run
            read them (a relative ``data_dir`` is relative to the current directory).
    """
    from sparseopt.config import TrainConfig, load_run_config
    from sparseopt.engine.build import build_model, health_inputs, probe_batch
    from sparseopt.engine.evaluate import evaluate_split
    from sparseopt.health import HealthMonitor, empty_layers, probe_constant
    from sparseopt.prune._files import load_state, load_tensor_file, state_dict_of

    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    cfg = TrainConfig.from_dict(load_run_config(run_dir / "config.yaml")).resolve()
    data, tensors = _data(cfg, {} if cache is None else cache)
    model = build_model(cfg, data, sparse_init=False)
    path = run_dir / "model_sparse.pt"
    load_state(
        model,
        state_dict_of(load_tensor_file(path, "sparse model"), path, "sparse model"),
        path,
        "sparse model",
    )
    monitor = HealthMonitor(**health_inputs(data, tensors), patience=1, sparse=False)
    row = dict(summary.get("metrics") or {})
    if monitor.num_classes and not len(tensors["val"][0]):  # the final network's, not the epoch's
        model.eval()
        row["train_loss"], row["train_acc"] = evaluate_split(model, *tensors["train"], data.task)
    constant, scores = probe_constant(model, probe_batch(tensors), monitor.num_classes)
    empty = empty_layers(row.get("layer_filters_alive") or {})
    monitor.observe(row, constant_output=constant, empty_layers=empty, constant_scores=scores)
    if monitor.status == "collapsed":
        return "collapsed", monitor.collapse_message(empty, None)
    if monitor.status == "stalled":
        return "stalled", monitor.stall_message(row, None)
    return "ok", ""
