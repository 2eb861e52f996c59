"""``TreeEnsemble`` IR -> the tree kernel's plan (see ``kernels/src/fm_trees.h``).

Building the plan is numpy over a run of whole trees at a time (a 3-million-node
model builds in well under a second):

* nodes of each tree are renumbered breadth-first, with the two children of
  a split node adjacent (left, right), so a record needs one child index;
* leaves become records that send every row to themselves;
* thresholds are rounded so that ``x <= thr`` decides exactly like the
  source: ``x < t`` becomes ``x <= prev(t)``, and for float32 records ``t``
  becomes the largest float32 that the source's comparison would still send
  left (a float32 ``x`` is ``<= t`` iff it is ``<=`` that float32).

Only what every call needs is built with the plan (leaf values in plan order,
roots, depths, category sets); the rest is built on first use, once, under a
lock: the float32 node records by the kernel on its first float32-input call
(or float64 input of a model that compares in float32), the float64 records on
its first float64-input call of a model that compares in float64, and the
source's node ids (``local_id``) on the first ``apply``. A model used with one
input dtype holds one set of records. Every lazy array is the one an eager
build would make, so results do not depend on the order of first calls.
Refusals (``UnsupportedModelError``) still come when the plan is built.
"""
from __future__ import annotations

import threading
from typing import Callable, List

import numpy as np

from .. import ir
from ..errors import UnsupportedModelError
from ..kernels import _trees

FEAT_MASK = 0x3FFFFFFF
CAT = 0x40000000
MISS_LEFT = 0x80000000


class TreePlan:
    """A compiled ensemble: ``kernel`` (which builds its node records on first use) and the
    plan node -> source node id map of ``apply``, built on first access of ``local_id``.
    ``built`` lists the lazy arrays built so far, in order ("nodes32", "nodes64",
    "local_id"); it is live (the runner's ``info`` shows it)."""

    def __init__(self, kernel, local_ids: Callable[[], np.ndarray], max_depth: int, n_nodes: int,
                 built: List[str]):
        self.kernel = kernel
        self.max_depth = max_depth
        self.n_nodes = n_nodes
        self.built = built
        self._local_ids = local_ids
        self._local_id = None
        self._lock = threading.Lock()

    @property
    def local_id(self) -> np.ndarray:
        """plan node -> the source's tree-local node id (int32), built on first access."""
        lid = self._local_id
        if lid is None:
            with self._lock:
                lid = self._local_id
                if lid is None:
                    lid = self._local_ids()
                    self._local_id, self._local_ids = lid, None
                    self.built.append("local_id")
        return lid


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


def _split_kinds(est: ir.TreeEnsemble, lo: int, hi: int, is_leaf: np.ndarray):
    """(set-membership split, ``x < t`` split, NaN goes left) of IR nodes ``lo .. hi - 1``."""
    split = (np.zeros(hi - lo, dtype=np.uint8) if est.split is None
             else np.asarray(est.split[lo:hi], dtype=np.uint8))
    member = ~is_leaf & (split == ir.SPLIT_MEMBER)
    strict = ~is_leaf & (split == ir.SPLIT_LT)
    miss = np.asarray(est.missing_left[lo:hi], dtype=bool) & ~is_leaf
    return member, strict, miss


def _refuse_nan_only_left(est: ir.TreeEnsemble, lo: int, strict: np.ndarray, check: np.ndarray) -> None:
    """A NaN record threshold means "no value goes left": fine unless NaN itself must go left
    (the record's ``!(x > thr)`` would then send everything left). ``check``: the threshold
    splits of IR nodes ``lo ..`` that send NaN left."""
    at = np.flatnonzero(check)
    thr, lt = np.asarray(est.threshold[lo:lo + check.size], dtype=np.float64)[at], strict[at]
    never = np.isnan(_round_down_f32(thr, lt))
    if est.compare == "float64":
        never |= np.isnan(_round_down_f64(thr, lt))
    if never.any():
        node = lo + int(at[np.argmax(never)])
        off = np.asarray(est.tree_offsets, dtype=np.int64)
        tree = int(np.searchsorted(off, node, side="right")) - 1
        raise UnsupportedModelError(
            f"{est.name}: tree {tree}: node {node - int(off[tree])} sends only "
            "NaN left (x < -inf with missing values going left); fastml cannot run this split")


def node_records(est: ir.TreeEnsemble, wide: bool) -> np.ndarray:
    """The kernel's node records in plan order: ``NODE64`` (float64 thresholds) when ``wide``,
    else ``NODE32``; a run of whole trees at a time."""
    off = np.asarray(est.tree_offsets, dtype=np.int64)
    nodes = np.empty(est.n_nodes, dtype=_trees.NODE64 if wide else _trees.NODE32)
    for t0, t1 in ir.tree_blocks(off):
        lo, hi = int(off[t0]), int(off[t1])
        order, pos, _, _, glob_left, is_leaf = _bfs_order(est, t0, t1)
        member, strict, miss = _split_kinds(est, lo, hi, is_leaf)
        thr = np.where(is_leaf | member, 0.0, np.asarray(est.threshold[lo:hi], dtype=np.float64))
        thr = (_round_down_f64 if wide else _round_down_f32)(thr, strict)
        thr[is_leaf] = np.inf
        fl = np.where(is_leaf, 0, np.asarray(est.feature[lo:hi], dtype=np.int64)).astype(np.uint32)
        fl |= np.where(miss | is_leaf, MISS_LEFT, 0).astype(np.uint32)
        fl |= np.where(member, CAT, 0).astype(np.uint32)
        child = (np.where(is_leaf, pos, pos[np.maximum(glob_left, 0)]) + lo).astype(np.int32)
        run = nodes[lo:hi]
        run["fl"], run["thr"], run["child"] = fl[order], thr[order], child[order]
    return nodes


def local_ids(est: ir.TreeEnsemble) -> np.ndarray:
    """plan node -> the source's tree-local node id (int32: tree-local ids are below 2**31)."""
    off = np.asarray(est.tree_offsets, dtype=np.int64)
    local_id = np.empty(est.n_nodes, dtype=np.int32)
    for t0, t1 in ir.tree_blocks(off):
        lo, hi = int(off[t0]), int(off[t1])
        order, _, _, tree_of, _, _ = _bfs_order(est, t0, t1)
        local_id[lo:hi] = order - (off[tree_of[order]] - lo)
    return local_id


def build_plan(est: ir.TreeEnsemble) -> TreePlan:
    """The plan with what every call needs (leaf values, roots, depths, category sets), filled
    a run of whole trees at a time (``ir.tree_blocks``): a run's nodes keep their stretch of
    the arrays, so the temporaries stay a few MB. Node records and ``local_id`` are built on
    first use (module docstring)."""
    n, n_trees = est.n_nodes, est.n_trees
    off = np.asarray(est.tree_offsets, dtype=np.int64)
    value = np.empty(est.value.shape)
    depth = np.empty(n_trees, dtype=np.int64)
    cat = {}
    for t0, t1 in ir.tree_blocks(off):
        lo, hi = int(off[t0]), int(off[t1])
        order, _, level, _, _, is_leaf = _bfs_order(est, t0, t1)
        member, strict, miss = _split_kinds(est, lo, hi, is_leaf)
        _refuse_nan_only_left(est, lo, strict, miss & ~member)
        np.take(est.value[lo:hi], order, axis=0, out=value[lo:hi])
        depth[t0:t1] = level[order][off[t0 + 1:t1 + 1] - lo - 1]   # each tree's last node is its deepest
        if member.any() and not cat:
            cat = dict(cat_off=np.zeros(n, dtype=np.int64), cat_nw=np.zeros(n, dtype=np.int32),
                       cat_bits=np.asarray(est.cat_bits), cat_exact=est.cat_exact)
        if cat:
            cat["cat_off"][lo:hi] = np.where(member, est.cat_offset[lo:hi], 0)[order]
            cat["cat_nw"][lo:hi] = np.where(member, est.cat_nwords[lo:hi], 0)[order]
    base = (np.zeros(est.n_targets) if est.base_score is None
            else np.asarray(est.base_score, dtype=np.float64))
    built: List[str] = []

    def records(width: int) -> np.ndarray:   # called by the kernel, under its lock, once per width
        nodes = node_records(est, wide=width == 64)
        built.append(f"nodes{width}")
        return nodes

    kernel = _trees.ForestKernel(
        None, None, root=off[:-1], depth=depth,   # a tree's root is the first record of its stretch
        target=None if est.tree_target is None else est.tree_target,
        value=value, base=base, n_features=est.n_features, average=est.average,
        compare64=est.compare == "float64", build=records, logistic_scale=est.logistic_scale, **cat)
    return TreePlan(kernel, lambda: local_ids(est), max_depth=int(depth.max()), n_nodes=n, built=built)
