"""Simplify and enlarge sparse networks: masks, physical shrinking, widening, reports.

- :mod:`~sparseopt.prune.masks` — keep-masks from weights, an optimizer's support or a
  path point; zeroed state dicts; ``torch.nn.utils.prune.custom_from_mask``; fine-tuning
  with the mask fixed;
- :mod:`~sparseopt.prune.shrink` — physical removal of dead filters / input channels /
  neurons with Torch-Pruning's dependency graph (Fang et al., DepGraph, CVPR 2023),
  exactly function-preserving;
- :mod:`~sparseopt.prune.grow` — function-preserving widening of saturated layers
  during training (DessiLBI's network enlargement, Fu et al., ICML 2020);
- :mod:`~sparseopt.prune.report` — parameters, MACs, latency (interleaved rounds, median
  and quartiles) and file size before and after; ``torch.export`` artifacts with a
  dynamic batch dimension, written atomically;
- :mod:`~sparseopt.prune.deploy` — the frozen TorchScript inference form (oneDNN
  convolutions, BatchNorm folded) used to deploy and time shrunk networks.
"""

from sparseopt.prune.deploy import freeze_for_inference
from sparseopt.prune.grow import (
    GrowCallback,
    grow_saturated,
    layer_saturation,
    match_widths,
    widen,
)
from sparseopt.prune.masks import (
    Masks,
    apply_masks_,
    attach_masks,
    detach_masks,
    finetune_masked,
    mask_density,
    masked_state_dict,
    masks_from_optimizer,
    masks_from_weights,
)
from sparseopt.prune.report import (
    ModelStats,
    ShrinkReport,
    compare_models,
    measure_latencies,
    measure_latency,
    save_artifacts,
    state_dict_bytes,
)
from sparseopt.prune.shrink import ShrinkPlan, ShrinkResult, apply_plan, shrink

__all__ = [
    "GrowCallback",
    "match_widths",
    "Masks",
    "ModelStats",
    "ShrinkPlan",
    "ShrinkReport",
    "ShrinkResult",
    "apply_masks_",
    "apply_plan",
    "attach_masks",
    "compare_models",
    "detach_masks",
    "finetune_masked",
    "freeze_for_inference",
    "grow_saturated",
    "layer_saturation",
    "mask_density",
    "masked_state_dict",
    "masks_from_optimizer",
    "masks_from_weights",
    "measure_latencies",
    "measure_latency",
    "save_artifacts",
    "shrink",
    "state_dict_bytes",
    "widen",
]
