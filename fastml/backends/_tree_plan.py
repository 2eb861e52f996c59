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


def _bfs_order(est: ir.TreeEnsemble):
    """Plan position of every IR node, each node's level, and the tree of each node."""
    off = np.asarray(est.tree_offsets, dtype=np.int64)
    n, n_trees = est.n_nodes, est.n_trees
    tree_of = np.repeat(np.arange(n_trees), np.diff(off))
    left = np.asarray(est.left, dtype=np.int64)
    right = np.asarray(est.right, dtype=np.int64)
    is_leaf = left < 0
    glob_left = np.where(is_leaf, -1, left + off[tree_of])
    glob_right = np.where(is_leaf, -1, right + off[tree_of])

    level = np.empty(n, dtype=np.int64)
    found = []                         # nodes in order of discovery, level by level
    frontier = off[:-1].copy()         # roots, in tree order
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
    key = tree_of[found] * depth + level[found]
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
    order, pos, level, tree_of, glob_left, is_leaf = _bfs_order(est)
    n = est.n_nodes
    split = (np.zeros(n, dtype=np.uint8) if est.split is None
             else np.asarray(est.split, dtype=np.uint8))
    member = ~is_leaf & (split == ir.SPLIT_MEMBER)
    strict = ~is_leaf & (split == ir.SPLIT_LT)
    miss = np.asarray(est.missing_left, dtype=bool) & ~is_leaf
    thr = np.where(is_leaf | member, 0.0, np.asarray(est.threshold, dtype=np.float64))

    t32 = _round_down_f32(thr, strict)
    t64 = _round_down_f64(thr, strict) if est.compare == "float64" else None
    # a NaN threshold means "no value goes left": fine unless NaN itself must go left
    # (the record's `!(x > thr)` would then send everything left)
    never = np.isnan(t32) | (np.isnan(t64) if t64 is not None else False)
    if np.any(never & miss):
        i = int(np.flatnonzero(never & miss)[0])
        raise UnsupportedModelError(
            f"{est.name}: tree {int(tree_of[i])}: node {i - int(est.tree_offsets[tree_of[i]])} sends only "
            "NaN left (x < -inf with missing values going left); fastml cannot run this split")

    fl = np.where(is_leaf, 0, np.asarray(est.feature, dtype=np.int64)).astype(np.uint32)
    fl |= np.where(miss | is_leaf, MISS_LEFT, 0).astype(np.uint32)
    fl |= np.where(member, CAT, 0).astype(np.uint32)
    child = np.where(is_leaf, pos, pos[np.maximum(glob_left, 0)]).astype(np.int32)
    t32[is_leaf] = np.inf
    nodes32 = np.empty(n, dtype=_trees.NODE32)
    nodes32["fl"], nodes32["thr"], nodes32["child"] = fl[order], t32[order], child[order]
    nodes64 = None
    if t64 is not None:
        t64[is_leaf] = np.inf
        nodes64 = np.empty(n, dtype=_trees.NODE64)
        nodes64["fl"], nodes64["thr"], nodes64["child"] = fl[order], t64[order], child[order]

    off = np.asarray(est.tree_offsets, dtype=np.int64)
    depth = np.zeros(est.n_trees, dtype=np.int64)
    np.maximum.at(depth, tree_of, level)
    base = (np.zeros(est.n_targets) if est.base_score is None
            else np.asarray(est.base_score, dtype=np.float64))
    cat = {}
    if member.any():
        cat = dict(cat_off=np.where(member, est.cat_offset, 0)[order],
                   cat_nw=np.where(member, est.cat_nwords, 0)[order],
                   cat_bits=np.asarray(est.cat_bits), cat_exact=est.cat_exact)
    kernel = _trees.ForestKernel(
        nodes32, nodes64, root=pos[off[:-1]], depth=depth,
        target=None if est.tree_target is None else est.tree_target,
        value=np.asarray(est.value)[order], base=base, n_features=est.n_features,
        average=est.average, **cat)
    local_id = (order - off[tree_of[order]]).astype(np.int64)
    return TreePlan(kernel=kernel, local_id=local_id, max_depth=int(depth.max()), n_nodes=n)
