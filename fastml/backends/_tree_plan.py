"""``TreeEnsemble`` IR -> the tree kernel's plan (see ``kernels/src/fm_trees.h``).

Building the plan is numpy over all nodes at once (a 3-million-node model
builds in about a second):

* nodes of each tree are renumbered breadth-first, with the two children of
  a split node adjacent (left, right), so a record needs one child index;
* leaves become records that send every row to themselves;
* thresholds are rounded so that ``x <= thr`` decides exactly like the
  source: ``x < t`` becomes ``x <= prev(t)``, and for float32 records ``t``
  becomes the largest float32 that the source's comparison would still send
  left (a float32 ``x`` is ``<= t`` iff it is ``<=`` that float32).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import ir
from ..errors import UnsupportedModelError
from ..kernels import _trees

FEAT_MASK = 0x3FFFFFFF
CAT = 0x40000000
MISS_LEFT = 0x80000000


@dataclass(frozen=True)
class TreePlan:
    kernel: "_trees.ForestKernel"
    local_id: np.ndarray   # plan node -> the source's tree-local node id (for apply)
    max_depth: int
    n_nodes: int


def _bfs_order(est: ir.TreeEnsemble, t0: int = 0, t1: int | None = None):
    """Plan position of every IR node of trees ``t0 .. t1 - 1`` (all by default), each node's
    level, and the tree of each node. Nodes and positions count from the first node of tree
    ``t0``: the run's nodes take the same stretch of the plan as of the IR."""
    off = np.asarray(est.tree_offsets, dtype=np.int64)
    t1 = est.n_trees if t1 is None else t1
    lo, hi = int(off[t0]), int(off[t1])
    n = hi - lo
    sizes = np.diff(off[t0:t1 + 1])
    tree_of = np.repeat(np.arange(t0, t1), sizes)
    start = np.repeat(off[t0:t1] - lo, sizes)
    left = np.asarray(est.left[lo:hi], dtype=np.int64)
    right = np.asarray(est.right[lo:hi], dtype=np.int64)
    is_leaf = left < 0
    glob_left = np.where(is_leaf, -1, left + start)
    glob_right = np.where(is_leaf, -1, right + start)
    del left, right, start

    level = np.empty(n, dtype=np.int64)
    found = []                         # nodes in order of discovery, level by level
    frontier = off[t0:t1] - lo         # roots, in tree order
    depth = 0
    while frontier.size:
        found.append(frontier)
        level[frontier] = depth
        inner = frontier[~is_leaf[frontier]]
        # children as adjacent (left, right) pairs, parents in frontier order
        frontier = np.column_stack([glob_left[inner], glob_right[inner]]).reshape(-1)
        depth += 1
    found = np.concatenate(found)
    # plan position -> IR node: by tree, then level, then discovery (a stable sort keeps it)
    key = (tree_of[found] - t0) * depth + level[found]
    order = found[np.argsort(key, kind="stable")]
    pos = np.empty(n, dtype=np.int64)
    pos[order] = np.arange(n)
    return order, pos, level, tree_of, glob_left, is_leaf


def _round_down_f32(t: np.ndarray, strict: np.ndarray) -> np.ndarray:
    """Largest float32 ``<= t`` (``< t`` where ``strict``); NaN where none exists."""
    with np.errstate(over="ignore"):
        r = t.astype(np.float32)
    too_big = np.where(strict, r.astype(np.float64) >= t, r.astype(np.float64) > t)
    r[too_big] = np.nextafter(r[too_big], np.float32(-np.inf))
    still = np.where(strict, r.astype(np.float64) >= t, r.astype(np.float64) > t)
    r[still] = np.nan
    return r


def _round_down_f64(t: np.ndarray, strict: np.ndarray) -> np.ndarray:
    r = np.where(strict, np.nextafter(t, -np.inf), t)
    r[strict & (r >= t)] = np.nan
    return r


def build_plan(est: ir.TreeEnsemble) -> TreePlan:
    """The kernel's arrays, filled a run of whole trees at a time (``ir.tree_blocks``): a
    run's nodes keep their stretch of the arrays, so the temporaries stay a few MB and the
    memory needed is the IR's plus the plan's."""
    n, n_trees = est.n_nodes, est.n_trees
    off = np.asarray(est.tree_offsets, dtype=np.int64)
    cmp64 = est.compare == "float64"
    nodes32 = np.empty(n, dtype=_trees.NODE32)
    nodes64 = np.empty(n, dtype=_trees.NODE64) if cmp64 else None
    value = np.empty(est.value.shape)
    local_id = np.empty(n, dtype=np.int32)   # tree-local ids are below 2**31 (int32 children)
    root = np.empty(n_trees, dtype=np.int64)
    depth = np.empty(n_trees, dtype=np.int64)
    cat = {}
    for t0, t1 in ir.tree_blocks(off):
        lo, hi = int(off[t0]), int(off[t1])
        order, pos, level, tree_of, glob_left, is_leaf = _bfs_order(est, t0, t1)
        split = (np.zeros(hi - lo, dtype=np.uint8) if est.split is None
                 else np.asarray(est.split[lo:hi], dtype=np.uint8))
        member = ~is_leaf & (split == ir.SPLIT_MEMBER)
        strict = ~is_leaf & (split == ir.SPLIT_LT)
        miss = np.asarray(est.missing_left[lo:hi], dtype=bool) & ~is_leaf
        thr = np.where(is_leaf | member, 0.0, np.asarray(est.threshold[lo:hi], dtype=np.float64))

        t32 = _round_down_f32(thr, strict)
        t64 = _round_down_f64(thr, strict) if cmp64 else None
        # a NaN threshold means "no value goes left": fine unless NaN itself must go left
        # (the record's `!(x > thr)` would then send everything left)
        never = np.isnan(t32) | (np.isnan(t64) if t64 is not None else False)
        if np.any(never & miss):
            i = int(np.flatnonzero(never & miss)[0])
            raise UnsupportedModelError(
                f"{est.name}: tree {int(tree_of[i])}: node {lo + i - int(off[tree_of[i]])} sends only "
                "NaN left (x < -inf with missing values going left); fastml cannot run this split")

        fl = np.where(is_leaf, 0, np.asarray(est.feature[lo:hi], dtype=np.int64)).astype(np.uint32)
        fl |= np.where(miss | is_leaf, MISS_LEFT, 0).astype(np.uint32)
        fl |= np.where(member, CAT, 0).astype(np.uint32)
        child = (np.where(is_leaf, pos, pos[np.maximum(glob_left, 0)]) + lo).astype(np.int32)
        fl, child = fl[order], child[order]
        t32[is_leaf] = np.inf
        run = nodes32[lo:hi]
        run["fl"], run["thr"], run["child"] = fl, t32[order], child
        if t64 is not None:
            t64[is_leaf] = np.inf
            run = nodes64[lo:hi]
            run["fl"], run["thr"], run["child"] = fl, t64[order], child
        np.take(est.value[lo:hi], order, axis=0, out=value[lo:hi])
        local_id[lo:hi] = order - (off[tree_of[order]] - lo)
        root[t0:t1] = pos[off[t0:t1] - lo] + lo
        depth[t0:t1] = level[order][off[t0 + 1:t1 + 1] - lo - 1]   # each tree's last node is its deepest
        if member.any() and not cat:
            cat = dict(cat_off=np.zeros(n, dtype=np.int64), cat_nw=np.zeros(n, dtype=np.int32),
                       cat_bits=np.asarray(est.cat_bits), cat_exact=est.cat_exact)
        if cat:
            cat["cat_off"][lo:hi] = np.where(member, est.cat_offset[lo:hi], 0)[order]
            cat["cat_nw"][lo:hi] = np.where(member, est.cat_nwords[lo:hi], 0)[order]
    base = (np.zeros(est.n_targets) if est.base_score is None
            else np.asarray(est.base_score, dtype=np.float64))
    kernel = _trees.ForestKernel(
        nodes32, nodes64, root=root, depth=depth,
        target=None if est.tree_target is None else est.tree_target,
        value=value, base=base, n_features=est.n_features, average=est.average, **cat)
    return TreePlan(kernel=kernel, local_id=local_id, max_depth=int(depth.max()), n_nodes=n)
