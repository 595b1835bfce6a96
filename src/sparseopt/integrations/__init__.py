"""Use sparseopt where people already train: PyTorch Lightning and Hugging Face ``Trainer``.

- :mod:`sparseopt.integrations.lightning`: :class:`~sparseopt.integrations.lightning.SparsityCallback`
  (needs ``pip install "sparseopt[lightning]"``);
- :mod:`sparseopt.integrations.hf`: :class:`~sparseopt.integrations.hf.SparsityTrainerCallback`,
  :class:`~sparseopt.integrations.hf.SparseTrainer` and
  :func:`~sparseopt.integrations.hf.sparse_optimizer_cls_and_kwargs`
  (needs ``pip install "sparseopt[hf]"``).

Both do the same four things around any sparseopt optimizer: evaluate the deployable
network (``optimizer.deployed()``), log its density (overall, weights, per layer) and λ,
record the solution path (:class:`sparseopt.path.PathRecorder`), optionally run the
target-density controller (:class:`sparseopt.control.TargetDensity`), and call
``optimizer.finalize()`` when training ends. Importing this package needs neither
framework; each submodule imports its own.
"""

from __future__ import annotations

__all__: list[str] = []
