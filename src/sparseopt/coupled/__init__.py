r"""Coupled groups: one group spans slices of several parameters (attention heads, MLP neurons).

Every grouping of :mod:`sparseopt.groups` lives inside one weight tensor. A
transformer's natural units do not: **attention head** :math:`h` is the rows
:math:`h d{:}(h+1)d` of the query, key and value projections (and of their biases)
*and* the columns :math:`h d{:}(h+1)d` of the output projection; **MLP neuron**
:math:`j` is row :math:`j` of the up-projection (and of the gate, and their biases)
*and* column :math:`j` of the down-projection. Removing such a unit removes all of its
slices at once, which is what makes a transformer smaller and faster (Michel, Levy &
Neubig, "Are Sixteen Heads Really Better than One?", NeurIPS 2019; Voita et al.,
ACL 2019).

A :class:`CoupledGroups` is a *set* of :math:`G` coupled groups of equal size (the
heads of one attention layer, the neurons of one MLP), described as plain data: a
list of :class:`Slice` (a parameter name, the dimension it is cut along and, for
fused projections, the number of chunks). Group :math:`g` of the set is, in every
slice, block :math:`g` of the dimension viewed as ``(chunks, G, block)``:

.. math::
    x_g = \big(W^{(1)}_{[g]}, \dots, W^{(S)}_{[g]}\big),\qquad
    \|x_g\|_2^2 = \sum_s \|W^{(s)}_{[g]}\|_2^2 .

The group penalties act on the joint norm, with the same weights as
:mod:`sparseopt.penalties` (:math:`|g|` the number of entries of all slices of one
group; group ℓ1's :math:`w_g=\sqrt{|g|}` or 1, group ℓ0's 1 or :math:`|g|`):

.. math::
    J(x) = \lambda\sum_g w_g\|x_g\|_2 \;(\texttt{group\_l1}),\qquad
    J(x) = \lambda\sum_g w_g\,\mathbf 1[x_g\neq 0] \;(\texttt{group\_l0}),

and their prox is the group soft / hard threshold of the joint vector
(:func:`coupled_prox`).

**How every optimizer acts on the joint norms: packing.** :func:`pack_coupled` moves
the entries of each set into one parameter :math:`P\in\mathbb R^{G\times |g|}` (row
:math:`g` = group :math:`g`) registered under ``model.sparseopt_coupled``, deletes the
original parameters and, before every forward pass of the model, writes them back as
*views* (or, for fused projections, gathers) of :math:`P`, so gradients reach
:math:`P`. The ``filter`` grouping of :math:`P` (its rows) is then exactly the coupled
grouping, with the same :math:`\sqrt{|g|}` weights, so **every** optimizer of
:mod:`sparseopt.optim` — wherever it applies its prox (to :math:`\delta v` for the
Bregman methods, to :math:`\Gamma` for SplitLBI, to :math:`w_0-c_t\bar g_t` for RDA, to
:math:`u` for RVSM, after the step for ProxSGD), on its for-loop and ``foreach`` paths,
and its supports, subgradients and deployable networks — works on coupled groups
without a line of optimizer code: all their other operations are elementwise and do not
see the layout. :func:`coupled_param_groups` builds the param groups;
:func:`unpack_coupled` restores ordinary parameters (e.g. before
:func:`sparseopt.prune.heads.shrink_coupled`, or to save a plain state dict).

**Automatic detection** (:func:`detect_coupled_groups`) from the module structure:

===================================== ============================================= ==========
module                                head set (per layer)                          neuron set
===================================== ============================================= ==========
``nn.MultiheadAttention``             ``in_proj_weight``/``in_proj_bias`` rows       —
                                      (3 chunks: q, k, v; or ``q/k/v_proj_weight``),
                                      ``out_proj.weight`` columns
``nn.TransformerEncoderLayer`` /      its attention modules as above                ``linear1`` rows + bias,
``nn.TransformerDecoderLayer``                                                      ``linear2`` columns
HF BERT-style (``query/key/value`` +  q/k/v rows + biases, ``output.dense`` columns ``intermediate.dense`` rows + bias,
``output.dense``)                                                                   ``output.dense`` columns
HF GPT-2-style (``c_attn``, Conv1D)   fused ``c_attn`` columns + bias (3 chunks),   ``c_fc`` columns + bias,
                                      ``c_proj`` rows (Conv1D stores ``(in, out)``) ``c_proj`` rows
HF Llama-style (``q/k/v/o_proj``,     one group per **key/value head**: its k/v     ``gate_proj``/``up_proj`` rows
``gate/up/down_proj``)                rows and the q rows and o columns of the      (+ biases), ``down_proj``
                                      :math:`r = n_q/n_{kv}` query heads sharing it columns
===================================== ============================================= ==========

With grouped-query attention a query head cannot be removed on its own without
changing the ``n_q/n_kv`` repetition the attention kernels assume, and a key/value head
is only dead when all the query heads reading it are; so the group is the key/value
head together with its query heads (``r = 1`` — plain multi-head attention — gives one
group per head). GPT-2 cross-attention (``q_attn``) is not detected.

Example:
    >>> import torch
    >>> layer = torch.nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True)
    >>> sets = detect_coupled_groups(layer)
    >>> [(s.kind, s.num_groups, s.group_size) for s in sets]
    [('neuron', 16, 17), ('head', 2, 140)]
"""

from __future__ import annotations

from ._core import (
    CONTAINER,
    CoupledGroups,
    Slice,
    coupled_norms,
    coupled_prox,
    dead_groups,
    gather_blocks,
    scatter_blocks,
    zero_groups_,
)
from .detect import detect_coupled_groups
from .pack import coupled_param_groups, is_packed, pack_coupled, packed_groups, unpack_coupled

__all__ = [
    "CONTAINER",
    "CoupledGroups",
    "Slice",
    "coupled_norms",
    "coupled_param_groups",
    "coupled_prox",
    "dead_groups",
    "detect_coupled_groups",
    "gather_blocks",
    "is_packed",
    "pack_coupled",
    "packed_groups",
    "scatter_blocks",
    "unpack_coupled",
    "zero_groups_",
]
