"""Quantized tree ensembles: thresholds as per-feature indexes (lossless).

:func:`quantize_trees` turns a :class:`fastml.ir.TreeEnsemble` into a
:class:`QTrees`. Every split ``x <= t`` / ``x < t`` is first folded to a
``x <= c`` test in the model's comparison precision (``x < t`` becomes ``x <=
prev(t)``; with ``compare == "float32"``, ``c`` is the largest float32 the
source would still send left, exactly as the float kernel's plan rounds it).
The distinct ``c`` of each feature, sorted, are that feature's *cuts*; a node
keeps the index ``k`` of its cut. A row's value ``x`` on feature ``f`` maps to
``bin = number of cuts of f below x`` (NaN to a reserved bin), and

    ``x <= cuts[f][k]``  iff  ``bin <= k``

for every ``x``, ±inf included: every split decides as before, so leaves,
sums and labels are those of the float model, bit for bit. Leaf values stay
float64. What the native kernel makes of it: ``kernels/src/fm_qtrees.h``.

Not quantized (:class:`~fastml.errors.UnsupportedModelError`): category-set
splits, a feature with 65,535 cuts or more, 32,768 features or more, and a
split that sends no value left (``x < -inf``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

from . import ir
from .errors import InvalidModelError, UnsupportedModelError

#: a feature may have at most this many cuts (bin 0xFFFF is NaN's)
MAX_CUTS = 0xFFFF - 1
#: feature ids fit in 15 bits of a node record
MAX_FEATURES = 1 << 15


@dataclass(frozen=True)
class QTrees:
    """A tree ensemble whose splits compare per-feature threshold indexes.

    ``ensemble`` is the float model written with the folded cuts as its
    thresholds (every split ``x <= threshold``, ``split`` None): it decides
    exactly like the model that was quantized and holds the structure, leaf
    values and head (classes, ``post``, ``predict_rule``) the quantized model
    shares. ``cuts[cut_offsets[f]:cut_offsets[f + 1]]`` are feature ``f``'s
    cuts (float64 array; float32 values when ``ensemble.compare ==
    "float32"``), strictly increasing; ``node_cut[i]`` is split node ``i``'s
    index among its feature's cuts (-1 at leaves).
    """

    ensemble: ir.TreeEnsemble
    cuts: np.ndarray          # (n_cuts,) float64
    cut_offsets: np.ndarray   # (n_features + 1,) int64
    node_cut: np.ndarray      # (n_nodes,) int32

    # the float model's face
    n_features = property(lambda self: self.ensemble.n_features)
    n_targets = property(lambda self: self.ensemble.n_targets)
    n_trees = property(lambda self: self.ensemble.n_trees)
    n_nodes = property(lambda self: self.ensemble.n_nodes)
    is_classifier = property(lambda self: self.ensemble.is_classifier)
    classes = property(lambda self: self.ensemble.classes)
    allow_nan = property(lambda self: self.ensemble.allow_nan)
    allow_inf = property(lambda self: self.ensemble.allow_inf)
    inf_refused = property(lambda self: self.ensemble.inf_refused)
    compare = property(lambda self: self.ensemble.compare)
    name = property(lambda self: self.ensemble.name)

    def methods(self) -> frozenset:
        return self.ensemble.methods()

    def dequantized(self) -> ir.TreeEnsemble:
        """The float model: thresholds ``cuts[node_cut]`` (it decides exactly as this one)."""
        return self.ensemble

    def n_cuts(self) -> np.ndarray:
        return np.diff(self.cut_offsets)

    def param_bytes(self) -> Tuple[int, int]:
        """(bytes of the float kernel's plan, bytes of the quantized kernel's): node records
        (12 bytes each, plus a 16-byte float64 record each where the comparison is float64),
        leaf values (float64) and, quantized, 8-byte records plus the cuts."""
        n = self.n_nodes
        values = int(np.asarray(self.ensemble.value).shape[1]) * 8 * n
        flt = n * (12 + (16 if self.compare == "float64" else 0)) + values
        cut = 8 if self.compare == "float64" else 4
        q = n * 8 + int(self.cuts.shape[0]) * cut + int(self.cut_offsets.nbytes) + values
        return flt, q

    def validate(self) -> "QTrees":  # noqa: C901 - one check per rule
        est = self.ensemble.validate()
        owner = est.name
        if est.split is not None and np.any(np.asarray(est.split) != ir.SPLIT_LEQ):
            raise InvalidModelError(f"{owner}: a quantized ensemble's splits are all 'x <= threshold'")
        F = est.n_features
        if F >= MAX_FEATURES:
            raise InvalidModelError(f"{owner}: {F} features; quantized trees take fewer than {MAX_FEATURES}")
        cuts = np.asarray(self.cuts)
        off = np.asarray(self.cut_offsets)
        nc = np.asarray(self.node_cut)
        if cuts.dtype != np.float64 or cuts.ndim != 1 or np.isnan(cuts).any():
            raise InvalidModelError(f"{owner}: cuts must be a 1-D float64 array without NaN")
        if est.compare == "float32" and np.any(cuts.astype(np.float32).astype(np.float64) != cuts):
            raise InvalidModelError(f"{owner}: cuts of a float32 comparison must be float32 values")
        if (off.dtype != np.int64 or off.shape != (F + 1,) or off[0] != 0 or off[-1] != cuts.shape[0]
                or np.any(np.diff(off) < 0) or np.any(np.diff(off) > MAX_CUTS)):
            raise InvalidModelError(f"{owner}: cut_offsets must be {F + 1} non-decreasing int64 offsets "
                                    f"from 0 to {cuts.shape[0]}, at most {MAX_CUTS} cuts per feature")
        rank = np.arange(cuts.shape[0]) - np.repeat(off[:-1], np.diff(off))
        if np.any((np.diff(cuts) <= 0) & (rank[1:] > 0)):
            raise InvalidModelError(f"{owner}: each feature's cuts must be strictly increasing")
        leaf = np.asarray(est.left) < 0
        if nc.dtype != np.int32 or nc.shape != (est.n_nodes,) or np.any(nc[leaf] != -1):
            raise InvalidModelError(f"{owner}: node_cut must be int32 (n_nodes,), -1 at leaves")
        feat = np.where(leaf, 0, np.asarray(est.feature)).astype(np.int64)
        counts = np.diff(off)[feat]
        if np.any(~leaf & ((nc < 0) | (nc >= counts))):
            i = int(np.flatnonzero(~leaf & ((nc < 0) | (nc >= counts)))[0])
            raise InvalidModelError(f"{owner}: node {i}: cut index {int(nc[i])} out of range for feature "
                                    f"{int(feat[i])} ({int(counts[i])} cuts)")
        at = np.where(leaf, 0, off[feat] + np.maximum(nc, 0))
        if np.any(~leaf & (cuts[np.minimum(at, max(cuts.shape[0] - 1, 0))] != np.asarray(est.threshold))) \
                if cuts.shape[0] else np.any(~leaf):
            raise InvalidModelError(f"{owner}: a split's threshold is not its cut")
        ir._frozen(cuts, off, nc)
        return self


def _fold(est: ir.TreeEnsemble) -> np.ndarray:
    """Every split's threshold as a ``x <= c`` test in the comparison precision (as float64);
    NaN where no value goes left."""
    from .backends._tree_plan import _round_down_f32, _round_down_f64

    leaf = np.asarray(est.left) < 0
    split = np.zeros(est.n_nodes, np.uint8) if est.split is None else np.asarray(est.split)
    strict = ~leaf & (split == ir.SPLIT_LT)
    thr = np.where(leaf, 0.0, np.asarray(est.threshold, dtype=np.float64))
    if est.compare == "float32":
        return _round_down_f32(thr, strict).astype(np.float64)
    return _round_down_f64(thr, strict)


def quantize_trees(est: ir.TreeEnsemble) -> QTrees:
    """The lossless threshold-index form of ``est`` (see the module docstring)."""
    est = est.validate()
    owner = est.name
    leaf = np.asarray(est.left) < 0
    if est.split is not None and np.any(~leaf & (np.asarray(est.split) == ir.SPLIT_MEMBER)):
        raise UnsupportedModelError(f"{owner}: category-set splits have no quantized form; run the float model")
    if est.n_features >= MAX_FEATURES:
        raise UnsupportedModelError(f"{owner}: {est.n_features} features; quantized trees take fewer than "
                                    f"{MAX_FEATURES}")
    c = _fold(est)
    bad = ~leaf & np.isnan(c)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise UnsupportedModelError(f"{owner}: node {i} sends no value left (x < -inf); it has no cut")
    feat = np.where(leaf, 0, np.asarray(est.feature)).astype(np.int64)
    idx = np.flatnonzero(~leaf)
    order = idx[np.lexsort((c[idx], feat[idx]))]
    fs, cs = feat[order], c[order]
    new = np.ones(order.shape[0], dtype=bool)
    new[1:] = (fs[1:] != fs[:-1]) | (cs[1:] != cs[:-1])
    uid = np.cumsum(new) - 1                      # global id of each distinct (feature, cut)
    cuts = cs[new]
    counts = np.bincount(fs[new], minlength=est.n_features).astype(np.int64)
    if counts.max(initial=0) > MAX_CUTS:
        f = int(counts.argmax())
        raise UnsupportedModelError(f"{owner}: feature {f} has {int(counts[f])} distinct thresholds; "
                                    f"quantized trees take at most {MAX_CUTS} per feature")
    off = np.zeros(est.n_features + 1, dtype=np.int64)
    np.cumsum(counts, out=off[1:])
    node_cut = np.full(est.n_nodes, -1, dtype=np.int32)
    node_cut[order] = (uid - off[fs]).astype(np.int32)
    folded = ir.replace(est, threshold=np.where(leaf, np.asarray(est.threshold, dtype=np.float64), c),
                        split=None)
    if np.isnan(folded.threshold[~leaf]).any():  # pragma: no cover - refused above
        raise UnsupportedModelError(f"{owner}: a split has no cut")
    return QTrees(ensemble=folded, cuts=np.ascontiguousarray(cuts, dtype=np.float64), cut_offsets=off,
                  node_cut=node_cut).validate()
