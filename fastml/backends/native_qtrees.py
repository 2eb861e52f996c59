"""Native runner of quantized tree ensembles (:class:`fastml.ir_qtrees.QTrees`).

The plan is the float kernel's (``_tree_plan``: breadth-first node order,
adjacent children, self-looping leaves, the same leaf-value rows), with 8-byte
records holding a cut index instead of a threshold (see
``kernels/src/fm_qtrees.h``). Everything the float runner does with the raw
scores (labels, probabilities, ``apply``'s node ids, refusals of NaN / inf)
is :class:`~fastml.backends.native.ForestNative`'s, so the two answer alike;
``apply``'s node ids are built on its first call, as the float plan's.
It registers itself in the native backend's ``RUNNERS`` table.
"""
from __future__ import annotations

import numpy as np

from .. import ir
from ..ir_qtrees import QTrees
from ..kernels import _qtrees
from ._tree_plan import TreePlan, _bfs_order, local_ids
from .native import RUNNERS, ForestNative, _Native

MISS_LEFT = np.uint32(0x80000000)
LEAF_K = 0xFFFF


def build_qplan(q: QTrees) -> TreePlan:
    est = q.ensemble
    order, pos, level, tree_of, glob_left, is_leaf = _bfs_order(est)
    feat = np.where(is_leaf, 0, np.asarray(est.feature, dtype=np.int64)).astype(np.uint32)
    k = np.where(is_leaf, LEAF_K, np.asarray(q.node_cut, dtype=np.int64)).astype(np.uint32)
    miss = np.asarray(est.missing_left, dtype=bool) & ~is_leaf
    fk = k | (feat << np.uint32(16)) | np.where(miss, MISS_LEFT, np.uint32(0))
    child = np.where(is_leaf, pos, pos[np.maximum(glob_left, 0)]).astype(np.int32)
    nodes = np.empty(est.n_nodes, dtype=_qtrees.QNODE)
    nodes["fk"], nodes["child"] = fk[order], child[order]
    off = np.asarray(est.tree_offsets, dtype=np.int64)
    depth = np.zeros(est.n_trees, dtype=np.int64)
    np.maximum.at(depth, tree_of, level)
    base = (np.zeros(est.n_targets) if est.base_score is None
            else np.asarray(est.base_score, dtype=np.float64))
    cmp64 = est.compare == "float64"
    kernel = _qtrees.QForestKernel(
        nodes, q.cuts if cmp64 else q.cuts.astype(np.float32), q.cut_offsets, root=pos[off[:-1]],
        depth=depth, target=est.tree_target, value=np.asarray(est.value)[order], base=base,
        compare64=cmp64, average=est.average, logistic_scale=est.logistic_scale)
    return TreePlan(kernel, lambda: local_ids(est), max_depth=int(depth.max()), n_nodes=est.n_nodes, built=[])


class QTreesNative(ForestNative):
    """A quantized tree ensemble (optionally behind preprocessing steps) on the threshold-index
    kernel; every method as :class:`ForestNative` computes it from the same raw scores."""

    def __init__(self, model: ir.Model, *, n_threads: int, max_rows: int | None = None):
        _Native.__init__(self, model, n_threads=n_threads, max_rows=max_rows)
        q = ir.as_pipeline(model).estimator
        est = q.ensemble
        self._setup(est, build_qplan(q))
        n_cuts = q.n_cuts()
        self.info["kernel"] = (f"quantized trees: {est.n_trees} trees, {est.n_nodes} nodes, max depth "
                               f"{self._plan.max_depth}; rows binned to uint16 threshold indexes "
                               f"({int(n_cuts.sum())} cuts, at most {int(n_cuts.max(initial=0))} per "
                               f"feature), 8-byte node records")


RUNNERS[QTrees] = QTreesNative
