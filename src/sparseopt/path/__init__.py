"""The solution (regularisation) path: record, save, load, plot and select.

Sparsity-promoting training traces a path of sparse networks. For inverse scale space
methods the path is the point of the method: LinBreg/AdaBreg (Bungert et al., JMLR 23,
2022, arXiv 2105.04319) and Split LBI / DessiLBI (Fu et al., ICML 2020, arXiv
2007.02010) start from an (almost) empty support and let weights or whole filters
enter it one after another, like the Lasso path of LARS where the penalty decreases.
DessiLBI's *simplify* then picks one point of that path (an epoch) and keeps the
network restricted to the support it had there.

:class:`PathRecorder` is a training callback (``on_train_begin``/``on_epoch_end`` of
:mod:`sparseopt.engine`; :meth:`PathRecorder.record` for any loop) that stores, per
recorded point (epoch, or every ``k`` steps),

- the support of every penalised Conv/Linear weight in the deployable network
  (``optimizer.support(p)``: supp Γ for SplitLBI), bit-packed with
  :func:`numpy.packbits` (1 bit per weight),
- its group norms :math:`\\|W_g\\|_2` per filter (output channel / neuron), the lasso-path
  coordinates,
- the epoch's metrics (validation/test accuracy and loss...).

:meth:`PathRecorder.save` writes ``path.npz`` (arrays) and ``path.json`` (layer names,
shapes, per-point metrics and densities) into the run directory; :func:`load_path`
reads them back as a :class:`SolutionPath`, which draws the path
(:meth:`SolutionPath.plot`: per-layer density vs epoch, accuracy vs density and the
group-norm paths) and selects a point (:meth:`SolutionPath.select`):

- ``epoch=N`` — the (last) point recorded at epoch ``N``;
- ``within=ε`` — the sparsest point whose validation metric is within ε of the best
  one (accuracy ≥ best − ε; for a loss: ≤ best + ε);
- ``target_density=D`` — among the points with weight density ≤ D the one with the
  best validation metric (ties: the denser, later one); if no point is that sparse, the
  sparsest point, and the selection says so (:attr:`Selection.note`).

**Density** has the one definition of :func:`sparseopt.metrics.density`, the one that
``sparseopt train`` reports, counted on the deployable network: the *weight density*
is the fraction of nonzero Conv/Linear weights (train's ``weight_density``; the rules
above and the plots use it) and the *parameter density* the fraction of nonzero
entries over all parameters, biases and norms included (train's ``density``). A point
stores both, as ``weight_density`` and ``density``, with the same names as
``metrics.jsonl``. The recorded support (the masks that ``sparseopt prune`` applies)
can be larger than the nonzero weights: under a group penalty it holds whole groups.
Paths written before this definition store only the support fraction as ``density``;
it is read as their weight density.

Example:
    >>> import tempfile
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    >>> rec = PathRecorder()
    >>> for epoch, acc in [(1, 0.5), (2, 0.9)]:
    ...     with torch.no_grad():
    ...         _ = net[0].weight.fill_(1.0)
    ...         net[0].weight[epoch:] = 0  # `epoch` live neurons
    ...     _ = rec.record(net, epoch=epoch, metrics={"val_acc": acc})
    >>> d = tempfile.mkdtemp()
    >>> _ = rec.save(d)
    >>> path = load_path(d)
    >>> len(path), path.select(within=0.5).epoch  # sparsest within 0.5 of the best
    (2, 1)
"""

from __future__ import annotations

from sparseopt.path.recorder import PathRecorder
from sparseopt.path.solution import PATH_FORMAT, Selection, SolutionPath, load_path

__all__ = [
    "PATH_FORMAT",
    "PathRecorder",
    "Selection",
    "SolutionPath",
    "load_path",
]
