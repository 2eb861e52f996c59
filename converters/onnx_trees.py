"""Read ONNX tree ensembles into :class:`fastml.ir.TreeEnsemble`.

Operators
---------
``ai.onnx.ml`` ``TreeEnsembleClassifier`` / ``TreeEnsembleRegressor`` (opsets
1 and 3; the opset-3 ``*_as_tensor`` double attributes are used when present)
and ``TreeEnsemble`` (opset 5). The handlers register themselves in
:mod:`converters.onnx_import`'s tables, so ``Scaler`` / ``Normalizer`` before
the ensemble and ``Identity`` / ``Cast`` / ``ZipMap`` / ``Reshape`` / ``Mul``
by 1 after it read as they do for linear models.

What "correct" means
--------------------
The IR reproduces what ONNX Runtime (CPU provider, 1.31) outputs for the graph,
including its conventions where the ONNX specification is vague. Where ONNX
Runtime and the specification disagree, the graph is refused rather than
guessed at. Numbers are copied exactly: float attributes are float32, widened
to float64 without rounding; ``*_as_tensor`` doubles are used as they are.
ONNX Runtime compares the input in its own dtype against these thresholds, so
the IR uses ``compare="float64"`` (a float32 ``x`` widened to float64 compares
exactly like the float32 comparison). It sums leaf weights in the threshold
type (float32 for a float graph); the IR sums in float64, so scores agree to
float32 rounding, not bit for bit.

Nodes
-----
``BRANCH_LEQ`` / ``BRANCH_LT`` map to ``SPLIT_LEQ`` / ``SPLIT_LT`` with the
true branch on the left. ``BRANCH_GT`` / ``BRANCH_GTE`` are ``not (x <= t)`` /
``not (x < t)`` for every non-NaN ``x``, so they become ``SPLIT_LEQ`` /
``SPLIT_LT`` with the *false* branch on the left. ``BRANCH_EQ`` and
``BRANCH_MEMBER`` become ``SPLIT_MEMBER`` with the true branch on the left,
``BRANCH_NEQ`` the same one-category set with the false branch on the left.
Only sets of integers in ``[0, MAX_CATEGORY)`` can be expressed (the IR's
category bitsets); anything else is refused. ONNX Runtime tests ``BRANCH_EQ``
and small ``BRANCH_MEMBER`` sets (under 31 members, all <= 30) by equality
(IR ``cat_exact=True``) but bigger sets on ``trunc(x)``, so that ``2.5`` is in
``{2, 35}`` (IR ``cat_exact=False``, LightGBM's rule); an ensemble that needs
both rules is refused.

NaN: ONNX Runtime sends NaN to the true branch when
``nodes_missing_value_tracks_true`` is 1 and otherwise lets the comparison
decide, which is false for every mode but ``BRANCH_NEQ`` (``NaN != t``).
``missing_left`` is set to wherever that branch ended up.

Node numbering (what ``apply`` returns)
---------------------------------------
Opsets 1/3: a tree's root is the first node listed for its tree id (that is
where ONNX Runtime starts); the other nodes follow in increasing
``nodes_nodeids``. With the usual dense ids that start at the root (skl2onnx,
onnxmltools) the IR's tree-local index therefore *is* the ONNX node id, and
for scikit-learn models also scikit-learn's own node id. Trees are in the order
their ids first appear. Opset 5 has no node ids: each tree is numbered in
depth-first preorder from ``tree_roots[t]``, true branch first, leaves and
interior nodes alike (scikit-learn's scheme).

Every node of a tree must be reached exactly once from its root: cycles, a
child shared by two parents (ONNX Runtime follows such DAGs), nodes
unreachable from the first node listed, and a tree whose nodes are not listed
together (ONNX Runtime reads every run as another tree) are malformed.

Aggregation
-----------
``SUM`` and ``AVERAGE`` (``MIN`` / ``MAX`` are refused). ONNX Runtime computes
``sum / n_trees + base_values`` while the IR divides ``base_score + sum``, so
an averaged ensemble gets ``base_score = base_values * n_trees``. A leaf with
weights for several targets gives the IR vector leaves (``W = n_targets``);
when every tree addresses one target the leaves are scalars with
``tree_target``. Weights attached to interior nodes are ignored, as ONNX
Runtime does.

ONNX Runtime keeps track, per row, of which output columns received a weight.
A column that received none is written as 0, *without* its base value, and a
classifier leaves it out of the label's argmax. The IR has no such notion, so
a graph where this can happen and matters is refused: a column with a base
value (or, for more than two classes, any class when there are no base
values) must be weighted in every leaf of at least one tree. With one target,
ONNX Runtime adds only a leaf's *first* weight, and a leaf without weights adds
its ``nodes_values`` entry; graphs relying on either are refused.

Classifiers: ONNX Runtime's conventions
---------------------------------------
``s`` is the sum of the leaf weights plus ``base_values[0]``.

* more than 2 classes: the label is the first argmax of the raw scores; the
  scores go through ``post_transform`` (``NONE``: IR ``post="proba"`` when no
  weight or base value is negative, as for forests, else ``"none"``).
* 2 classes, every weight for class id 0, all weights >= 0 (skl2onnx's
  binary forests and trees): label ``s > 0.5``, output ``[1 - s, s]`` whatever
  ``post_transform`` says (``NONE`` / ``SOFTMAX``), except that ``LOGISTIC``
  outputs ``[sigmoid(-s), sigmoid(s)]`` while the label stays ``s > 0.5``:
  refused. IR: two columns ``[1 - s, s]`` (``post="proba"``).
* 2 classes, every weight for class id 0, some weight < 0 (boosting:
  skl2onnx GradientBoosting, LightGBM, XGBoost): label ``s > 0``; output
  ``[sigmoid(-s), sigmoid(s)]`` with ``LOGISTIC`` (IR ``post="logistic"``),
  ``[-s, s]`` otherwise (IR ``post="none"``, decision function ``s``).
* 2 classes with weights for class id 1 (alone or with class id 0), or two
  base values: ONNX Runtime then labels with the literal integers 0 / 1 rather
  than ``classlabels_int64s``, decides on class 1's score alone, or pads a
  column with 0: refused.

Also refused (``UnsupportedModelError``): ``SOFTMAX_ZERO`` and ``PROBIT``, a
post transform on a regressor (with one target ONNX Runtime ignores it, while
the specification applies it), and opset 5's ``post_transform`` 1 / 2 (the
specification numbers SOFTMAX 1 and LOGISTIC 2; ONNX Runtime 1.31 reads them
the other way round).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from onnx import AttributeProto, TensorProto

from fastml import ir
from fastml.errors import InvalidModelError, UnsupportedModelError

from . import onnx_import as _oi
from .onnx_import import _Feat, _Label, _attr, _describe, _invalid, _scalar, _unsupported, _wrap

__all__ = ["register"]

# ONNX node modes, numbered as opset 5 numbers them; LEAF is ours
LEQ, LT, GTE, GT, EQ, NEQ, MEMBER, LEAF = 0, 1, 2, 3, 4, 5, 6, -1
_MODE_NAMES = {"BRANCH_LEQ": LEQ, "BRANCH_LT": LT, "BRANCH_GTE": GTE, "BRANCH_GT": GT,
               "BRANCH_EQ": EQ, "BRANCH_NEQ": NEQ, "LEAF": LEAF}
_MODE_BYTES = {k.encode(): v for k, v in _MODE_NAMES.items()}
_NO_MODE = -128   # not a mode code
_POSTS_V3 = ("NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO", "PROBIT")
_AGGREGATES_V3 = ("SUM", "AVERAGE", "MIN", "MAX")
_AGGREGATES_V5 = {0: "AVERAGE", 1: "SUM", 2: "MIN", 3: "MAX"}
#: largest category a set-membership split may hold (its bitset has 2**20 bits)
MAX_CATEGORY = 1 << 20
#: largest number of targets or classes (guards the (n_nodes, n_targets) leaf matrix)
MAX_TARGETS = 1 << 20
#: largest number of float64 leaf values the IR may hold (2 GiB)
MAX_LEAF_VALUES = 1 << 28
#: largest number of uint32 words in all category bitsets together (64 MiB)
MAX_CATEGORY_WORDS = 1 << 24
#: feature ids must fit the IR's int32
MAX_FEATURE = (1 << 31) - 1


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, eq=False)
class _TreeScores:
    """The score / probability output of a tree-ensemble node (``est`` is validated IR)."""

    est: ir.TreeEnsemble
    feat: _Feat
    width: int  # columns ONNX Runtime writes


@dataclass(frozen=True, eq=False)
class _TreeOut:
    """A tensor fastml's own tree writer (``onnx_export.tree_onnx``) computes from the raw
    scores: ``scaled`` = c s (one column, before a Sigmoid), ``sig`` = Sigmoid(c s) of one
    column, ``sig0`` = 1 - sig, ``proba`` = probabilities (``post`` "logistic" as [1 - sig,
    sig], or "softmax"), ``index`` = the class index by ``rule`` ("argmax", "argmax_proba",
    "gt0", "ge0"). ``scale`` is c (1 unless a Mul came before the Sigmoid)."""

    src: _TreeScores
    what: str
    post: str = ""
    rule: str = ""
    scale: float = 1.0


@dataclass(frozen=True, eq=False)
class _Feat32:
    """The features of a float64 graph cast to float32 (fastml's writer does this for models
    that compare in float32): a tree ensemble reading them compares like ``compare="float32"``."""

    feat: _Feat


def is_tree_value(v) -> bool:
    if isinstance(v, _Label):
        v = v.of
    return isinstance(v, (_TreeScores, _TreeOut))


# --------------------------------------------------------------------------- attributes


def _ints(node, name, n: Optional[int] = None, required: bool = False) -> Optional[np.ndarray]:
    v = _attr(node, name, AttributeProto.INTS)
    if v is None or v.size == 0:
        if required:
            raise _invalid(node, f"attribute {name!r} is missing or empty")
        return None
    if n is not None and v.size != n:
        raise _invalid(node, f"attribute {name!r} has {v.size} values, expected {n}")
    return v


def _float_list(node, name) -> Optional[np.ndarray]:
    """A FLOATS attribute widened exactly to float64 (NaN and infinity are left to the caller)."""
    a = next((a for a in node.attribute if a.name == name), None)
    if a is None:
        return None
    if a.type != AttributeProto.FLOATS:
        raise _invalid(node, f"attribute {name!r} has type {AttributeProto.AttributeType.Name(a.type)}, "
                             f"expected FLOATS")
    return np.array(a.floats, dtype=np.float32).astype(np.float64)


def _float_tensor(node, name) -> Optional[np.ndarray]:
    t = _attr(node, name, AttributeProto.TENSOR)
    if t is None:
        return None
    if t.dtype.kind != "f":
        raise _invalid(node, f"attribute {name!r} holds {t.dtype}, expected floating-point numbers")
    return t.astype(np.float64).ravel()  # float32 / float64 -> float64 is exact


def _numbers(node, name, tensor_name: Optional[str], n: Optional[int] = None,
             required: bool = False) -> Optional[np.ndarray]:
    """``name`` (FLOATS) or ``tensor_name`` (a double tensor, preferred), as float64."""
    floats = _float_list(node, name)
    tensor = _float_tensor(node, tensor_name) if tensor_name else None
    if floats is not None and floats.size and tensor is not None and tensor.size:
        raise _invalid(node, f"attributes {name!r} and {tensor_name!r} are both set; expected one")
    v = tensor if tensor is not None and tensor.size else floats
    if v is None or v.size == 0:
        if required:
            raise _invalid(node, f"attribute {name!r}{f' / {tensor_name!r}' if tensor_name else ''} "
                                 f"is missing or empty")
        return None
    if n is not None and v.size != n:
        raise _invalid(node, f"attribute {tensor_name if tensor is not None and tensor.size else name!r} "
                             f"has {v.size} values, expected {n}")
    return v


def _flags(node, name, n: int, what: str) -> np.ndarray:
    v = _ints(node, name)
    if v is None:
        return np.zeros(n, dtype=bool)
    if v.size != n:
        raise _invalid(node, f"attribute {name!r} has {v.size} values, expected {n} (one per node)")
    bad = np.flatnonzero((v != 0) & (v != 1))
    if bad.size:
        raise _invalid(node, f"attribute {name!r}[{bad[0]}] = {v[bad[0]]}, expected 0 or 1 ({what})")
    return v.astype(bool)


def _finite(node, v: np.ndarray, what: str) -> np.ndarray:
    bad = np.flatnonzero(~np.isfinite(v))
    if bad.size:
        raise _invalid(node, f"{what}[{bad[0]}] is {v[bad[0]]}, expected a finite number")
    return v


# --------------------------------------------------------------------------- forest


@dataclass
class _Forest:
    """All trees in ONNX terms, nodes already in the IR's order (see the module docstring)."""

    offsets: np.ndarray    # (n_trees + 1,)
    mode: np.ndarray       # (n,) LEAF or an ONNX mode
    feature: np.ndarray    # (n,) int64
    threshold: np.ndarray  # (n,) float64; at leaves the source's nodes_values entry
    true: np.ndarray       # (n,) tree-local index of the true branch, -1 at leaves
    false: np.ndarray      # (n,)
    nan_true: np.ndarray   # (n,) bool: nodes_missing_value_tracks_true
    members: Dict[int, np.ndarray]  # node -> its set (BRANCH_MEMBER, or the threshold of EQ / NEQ)
    truncated: Dict[int, bool]      # node -> ONNX Runtime truncates x before testing the set
    w_node: np.ndarray     # leaf weights: global node index, target, weight
    w_target: np.ndarray
    w_value: np.ndarray
    describe: Callable[[int], str]  # global node index -> the source's name for it

    @property
    def n_trees(self) -> int:
        return len(self.offsets) - 1


def _v3_forest(node, prefix: str, n_out: int) -> _Forest:
    """Nodes and leaf weights of a TreeEnsembleClassifier (``prefix="class"``) or Regressor ("target")."""
    tree_ids = _ints(node, "nodes_treeids", required=True)
    n = tree_ids.size
    node_ids = _ints(node, "nodes_nodeids", n, required=True)
    features = _ints(node, "nodes_featureids", n, required=True)
    trues = _ints(node, "nodes_truenodeids", n, required=True)
    falses = _ints(node, "nodes_falsenodeids", n, required=True)
    raw = next((a for a in node.attribute if a.name == "nodes_modes"), None)
    if raw is not None and raw.type == AttributeProto.STRINGS and len(raw.strings) == n:
        codes = [_MODE_BYTES.get(b, _NO_MODE) for b in raw.strings]   # no decoding on the common path
        modes = np.array(codes, dtype=np.int64)
    if raw is None or raw.type != AttributeProto.STRINGS or len(raw.strings) != n or (modes == _NO_MODE).any():
        names = _attr(node, "nodes_modes", AttributeProto.STRINGS)   # the typed errors
        if names is None or len(names) != n:
            raise _invalid(node, f"attribute 'nodes_modes' has {0 if names is None else len(names)} values, "
                                 f"expected {n}")
        unknown = next(i for i, s in enumerate(names) if s not in _MODE_NAMES)
        raise _invalid(node, f"nodes_modes[{unknown}] = {names[unknown]!r}, expected one of {sorted(_MODE_NAMES)}")
    values = _numbers(node, "nodes_values", "nodes_values_as_tensor", n, required=True)
    tracks = _flags(node, "nodes_missing_value_tracks_true", n, "NaN follows the true branch or not")
    if np.any(node_ids < 0):
        raise _invalid(node, f"nodes_nodeids[{np.flatnonzero(node_ids < 0)[0]}] is negative")

    # trees: runs of equal nodes_treeids; ONNX Runtime starts each run at its first node
    starts = np.flatnonzero(np.r_[True, tree_ids[1:] != tree_ids[:-1]])
    run_ids, counts = np.unique(tree_ids[starts], return_counts=True)
    if np.any(counts > 1):
        raise _invalid(node, f"the nodes of tree {run_ids[counts > 1][0]} are not listed together "
                             f"(ONNX Runtime would read them as separate trees)")
    ends = np.r_[starts[1:], n]
    offsets = np.r_[starts, n].astype(np.int64)
    ix = _NodeIndex.build(tree_ids, node_ids, starts, n)
    fast = ix is not None and ix.children(modes, trues, falses, offsets)
    if fast:
        order, true, false = ix.order, *fast
    else:   # duplicate ids, dangling children or huge ids: the loops below name the culprit
        order, true, false, where = _v3_index_slow(node, tree_ids, node_ids, starts, ends, modes,
                                                   trues, falses, offsets)
    mode = modes[order]
    leaf = mode == LEAF
    forest = _Forest(offsets=offsets, mode=mode, feature=np.where(leaf, -1, features[order]),
                     threshold=values[order], true=true, false=false,
                     nan_true=tracks[order] & ~leaf, members={}, truncated={}, w_node=None, w_target=None,
                     w_value=None,
                     describe=lambda i: f"tree {tree_ids[order[i]]} node {node_ids[order[i]]}")
    if not (fast and _is_forest(forest)):
        _check_structure(node, forest)

    # leaf weights
    w_trees = _ints(node, f"{prefix}_treeids")
    m = 0 if w_trees is None else w_trees.size
    w_nodes = _ints(node, f"{prefix}_nodeids", m) if m else None
    w_ids = _ints(node, f"{prefix}_ids", m) if m else None
    w_values = _numbers(node, f"{prefix}_weights", f"{prefix}_weights_as_tensor", m) if m else None
    if m and (w_nodes is None or w_ids is None or w_values is None):
        raise _invalid(node, f"attributes '{prefix}_treeids', '{prefix}_nodeids', '{prefix}_ids' and "
                             f"'{prefix}_weights' must all have {m} values")
    if not m and any(_ints(node, f"{prefix}_{a}") is not None for a in ("nodeids", "ids")):
        raise _invalid(node, f"attribute '{prefix}_treeids' is missing or empty but other {prefix}_* are set")
    if m:
        _finite(node, w_values, f"{prefix}_weights")
        bad = np.flatnonzero((w_ids < 0) | (w_ids >= n_out))
        if bad.size:
            raise _invalid(node, f"{prefix}_ids[{bad[0]}] = {w_ids[bad[0]]} is out of range [0, {n_out})")
        pos = ix.find(ix.run_of_tree(w_trees), w_nodes) if fast else None
        if pos is None or (pos < 0).any():
            if fast:   # the slow path's map, for the message
                where = {(int(tree_ids[g]), int(node_ids[g])): i for i, g in enumerate(order.tolist())}
            pos = np.empty(m, dtype=np.int64)
            for i, key in enumerate(zip(w_trees.tolist(), w_nodes.tolist())):
                j = where.get(key)
                if j is None:
                    raise _invalid(node, f"{prefix} weight {i} is for tree {key[0]} node {key[1]}, "
                                         f"which does not exist")
                pos[i] = j
        keep = leaf[pos]  # ONNX Runtime ignores weights on interior nodes (old onnxmltools wrote some)
        forest.w_node, forest.w_target, forest.w_value = pos[keep], w_ids[keep], w_values[keep]
    else:
        forest.w_node = np.zeros(0, np.int64)
        forest.w_target = np.zeros(0, np.int64)
        forest.w_value = np.zeros(0)
    _check_splits(node, forest)
    return forest


class _NodeIndex:
    """(tree id, node id) -> IR node index for a v1/v3 node list, with numpy only.

    Trees are the runs of equal ``nodes_treeids`` (``starts``); a node's key is its run
    times ``M`` (one more than the largest node id) plus its node id. ``order`` lists the
    source index of each IR node: each run's first node, then the rest by node id (stable).
    ``build`` returns None where the keys would overflow or two nodes of a tree share an
    id; the caller then takes the loops that name the culprit."""

    def __init__(self, order, run, keys, sort, ir_of, run_tid, M):
        self.order, self.run, self._keys, self._sort, self._ir_of = order, run, keys, sort, ir_of
        self._run_tid, self._M = run_tid, M

    @classmethod
    def build(cls, tree_ids, node_ids, starts, n) -> Optional["_NodeIndex"]:
        R = starts.size
        M = int(node_ids.max()) + 1
        if R * M >= 2 ** 62:
            return None
        run = np.repeat(np.arange(R, dtype=np.int64), np.diff(np.r_[starts, n]))
        later = np.ones(n, dtype=np.int64)
        later[starts] = 0
        order = np.lexsort((np.arange(n), node_ids, later, run))
        keys = run * M + node_ids
        sort = np.argsort(keys, kind="stable")
        sk = keys[sort]
        if sk.size > 1 and (sk[1:] == sk[:-1]).any():
            return None
        ir_of = np.empty(n, dtype=np.int64)
        ir_of[order] = np.arange(n, dtype=np.int64)
        return cls(order, run, sk, sort, ir_of, tree_ids[starts], M)

    def run_of_tree(self, tids: np.ndarray) -> np.ndarray:
        """Run index of each tree id, -1 for ids that are no tree."""
        st = np.argsort(self._run_tid, kind="stable")
        srt = self._run_tid[st]
        i = np.minimum(np.searchsorted(srt, tids), srt.size - 1)
        return np.where(srt[i] == tids, st[i], -1)

    def find(self, runs: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """IR index of node ``ids`` in runs ``runs``, -1 where there is none."""
        ok = (runs >= 0) & (ids >= 0) & (ids < self._M)
        q = np.where(ok, runs * self._M + np.where(ok, ids, 0), -1)
        i = np.minimum(np.searchsorted(self._keys, q), self._keys.size - 1)
        hit = ok & (self._keys[i] == q)
        return np.where(hit, self._ir_of[self._sort[i]], -1)

    def children(self, modes, trues, falses, offsets):
        """(true, false) child of each IR node as an index within its tree (-1 for leaves),
        or None when a child id is not a node of its tree."""
        g = self.order
        split = modes[g] != LEAF
        base = offsets[self.run[g]]
        out = []
        for which in (trues, falses):
            j = self.find(self.run[g[split]], which[g[split]])
            if (j < 0).any():
                return None
            c = np.full(g.size, -1, dtype=np.int64)
            c[split] = j - base[split]
            out.append(c)
        return tuple(out)


def _v3_index_slow(node, tree_ids, node_ids, starts, ends, modes, trues, falses, offsets):
    """``_NodeIndex``'s result by loops that raise the error naming the first bad node."""
    n = tree_ids.size
    order = []       # global source index of each IR node
    where: Dict[Tuple[int, int], int] = {}  # (tree id, node id) -> IR node index
    for s, e in zip(starts.tolist(), ends.tolist()):
        rest = s + 1 + np.argsort(node_ids[s + 1:e], kind="stable")
        for g in [s] + rest.tolist():
            key = (int(tree_ids[g]), int(node_ids[g]))
            if key in where:
                raise _invalid(node, f"tree {key[0]} has node id {key[1]} twice")
            where[key] = len(order)
            order.append(g)
    order = np.asarray(order, dtype=np.int64)
    tree_of = np.repeat(np.arange(len(starts)), np.diff(offsets))
    leaf = modes[order] == LEAF

    def child(which: np.ndarray, label: str) -> np.ndarray:
        out = np.full(n, -1, dtype=np.int64)
        for i in np.flatnonzero(~leaf).tolist():
            g = order[i]
            key = (int(tree_ids[g]), int(which[g]))
            j = where.get(key)
            if j is None:
                raise _invalid(node, f"tree {key[0]} node {node_ids[g]}: its {label} node id {key[1]} "
                                     f"is not a node of that tree")
            out[i] = j - offsets[tree_of[i]]
        return out

    return order, child(trues, "true"), child(falses, "false"), where


def _is_forest(f: _Forest, max_levels: int = 4096) -> bool:
    """Whether every node of every tree is reached exactly once from its root (what
    ``_check_structure`` checks node by node), level by level over all trees at once:
    each non-root node has exactly one parent, roots none, and the levels reach every
    node. False (the caller then runs ``_check_structure`` for the message) otherwise,
    and for trees deeper than ``max_levels``."""
    n = f.mode.size
    split = np.flatnonzero(f.mode != LEAF)
    tree = np.repeat(np.arange(f.n_trees), np.diff(f.offsets))
    base = f.offsets[tree[split]]
    kids = np.concatenate([f.true[split] + base, f.false[split] + base])
    parents = np.bincount(kids, minlength=n)
    roots = f.offsets[:-1]
    want = np.ones(n, dtype=np.int64)
    want[roots] = 0
    if not np.array_equal(parents, want):
        return False
    is_split = f.mode != LEAF
    frontier, seen = roots, roots.size
    for _ in range(max_levels):
        frontier = frontier[is_split[frontier]]
        if frontier.size == 0:
            return seen == n
        b = f.offsets[tree[frontier]]
        frontier = np.concatenate([f.true[frontier] + b, f.false[frontier] + b])
        seen += frontier.size
    return False


def _check_structure(node, f: _Forest) -> None:
    """Every node of a tree reached exactly once from its root: no cycle, no shared child."""
    leaf = f.mode == LEAF
    for t in range(f.n_trees):
        base, size = int(f.offsets[t]), int(f.offsets[t + 1] - f.offsets[t])
        seen = np.zeros(size, dtype=bool)
        stack = [0]
        while stack:
            i = stack.pop()
            if seen[i]:
                raise _invalid(node, f"{f.describe(base + i)} is reached twice from the root of its tree "
                                     f"(a cycle or a shared child)")
            seen[i] = True
            if not leaf[base + i]:
                stack.extend((int(f.false[base + i]), int(f.true[base + i])))
        if not seen.all():
            i = int(np.flatnonzero(~seen)[0])
            raise _invalid(node, f"{f.describe(base + i)} is unreachable from its tree's root "
                                 f"({f.describe(base)}, the first node listed for the tree)")


def _check_splits(node, f: _Forest) -> None:
    split = f.mode != LEAF
    thr = f.threshold
    bad = np.flatnonzero(split & (f.mode < EQ) & np.isnan(thr))
    if bad.size:
        raise _invalid(node, f"{f.describe(int(bad[0]))}: threshold is NaN")
    bad = np.flatnonzero(split & ((f.feature < 0) | (f.feature > MAX_FEATURE)))
    if bad.size:
        i = int(bad[0])
        raise _invalid(node, f"{f.describe(i)}: feature id {f.feature[i]} is "
                             f"{'negative' if f.feature[i] < 0 else 'too large'}")
    for i in np.flatnonzero(split & ((f.mode == EQ) | (f.mode == NEQ))).tolist():
        f.members[i] = np.array([thr[i]])
        f.truncated[i] = False
    for i, cats in f.members.items():
        if cats.size == 0:
            raise _invalid(node, f"{f.describe(i)}: BRANCH_MEMBER has an empty set")
        ok = np.isfinite(cats) & (cats >= 0) & (cats == np.floor(cats)) & (cats < MAX_CATEGORY)
        if not ok.all():
            bad = cats[~ok][0]
            raise _unsupported(node, f"{f.describe(i)}: equality / membership with {bad!r}; only categories "
                                     f"that are integers in [0, {MAX_CATEGORY}) can be expressed "
                                     f"(TreeEnsemble IR has category bitsets)")


def _big_set(members: np.ndarray) -> bool:
    """ONNX Runtime 1.31 unrolls a small BRANCH_MEMBER set (fewer than 31 members, all in [0, 30])
    into equality tests; a bigger one tests ``trunc(x)`` against the set (LightGBM's rule)."""
    return not (members.size < 31 and members.size and members.min() >= 0 and members.max() <= 30)


def _v5_forest(node, n_targets: int) -> _Forest:
    modes = _attr(node, "nodes_modes", AttributeProto.TENSOR)
    if modes is None or modes.size == 0:
        raise _invalid(node, "attribute 'nodes_modes' is missing or empty")
    if modes.dtype.kind not in "iu":
        raise _invalid(node, f"attribute 'nodes_modes' holds {modes.dtype}, expected uint8")
    modes = modes.ravel().astype(np.int64)
    n = modes.size
    bad = np.flatnonzero((modes < LEQ) | (modes > MEMBER))
    if bad.size:
        raise _invalid(node, f"nodes_modes[{bad[0]}] = {modes[bad[0]]}, expected 0 (BRANCH_LEQ) to 6 (BRANCH_MEMBER)")
    splits = _float_tensor(node, "nodes_splits")
    if splits is None or splits.size != n:
        raise _invalid(node, f"attribute 'nodes_splits' has {0 if splits is None else splits.size} values, "
                             f"expected {n}")
    features = _ints(node, "nodes_featureids", n, required=True)
    trues = _ints(node, "nodes_truenodeids", n, required=True)
    falses = _ints(node, "nodes_falsenodeids", n, required=True)
    true_leaf = _flags(node, "nodes_trueleafs", n, "the true branch is a leaf or not")
    false_leaf = _flags(node, "nodes_falseleafs", n, "the false branch is a leaf or not")
    if _ints(node, "nodes_trueleafs") is None or _ints(node, "nodes_falseleafs") is None:
        raise _invalid(node, "attributes 'nodes_trueleafs' and 'nodes_falseleafs' are required")
    tracks = _flags(node, "nodes_missing_value_tracks_true", n, "NaN follows the true branch or not")
    target_ids = _ints(node, "leaf_targetids", required=True)
    n_leaves = target_ids.size
    weights = _float_tensor(node, "leaf_weights")
    if weights is None or weights.size != n_leaves:
        raise _invalid(node, f"attribute 'leaf_weights' has {0 if weights is None else weights.size} values, "
                             f"expected {n_leaves} (one per leaf_targetids)")
    _finite(node, weights, "leaf_weights")
    bad = np.flatnonzero((target_ids < 0) | (target_ids >= n_targets))
    if bad.size:
        raise _invalid(node, f"leaf_targetids[{bad[0]}] = {target_ids[bad[0]]} is out of range [0, {n_targets})")
    roots = _ints(node, "tree_roots", required=True)
    bad = np.flatnonzero((roots < 0) | (roots >= n))
    if bad.size:
        raise _invalid(node, f"tree_roots[{bad[0]}] = {roots[bad[0]]} is out of range [0, {n})")
    for name, ids, is_leaf in (("nodes_truenodeids", trues, true_leaf), ("nodes_falsenodeids", falses, false_leaf)):
        limit = np.where(is_leaf, n_leaves, n)
        bad = np.flatnonzero((ids < 0) | (ids >= limit))
        if bad.size:
            i = int(bad[0])
            raise _invalid(node, f"{name}[{i}] = {ids[i]} is out of range [0, {limit[i]}) "
                                 f"({'a leaf' if is_leaf[i] else 'a node'} index)")
    # membership sets, in the order BRANCH_MEMBER nodes appear, separated by NaN
    member_nodes = np.flatnonzero(modes == MEMBER)
    sets: Dict[int, np.ndarray] = {}
    if member_nodes.size:
        mv = _float_tensor(node, "membership_values")
        if mv is None:
            raise _invalid(node, "BRANCH_MEMBER nodes need attribute 'membership_values'")
        cut = np.flatnonzero(np.isnan(mv))
        groups = np.split(mv, cut)
        groups = [groups[0]] + [g[1:] for g in groups[1:]]
        if len(groups) > 1 and groups[-1].size == 0:
            groups.pop()  # a trailing NaN closes the last set
        if len(groups) != member_nodes.size:
            raise _invalid(node, f"membership_values holds {len(groups)} NaN-separated set(s) for "
                                 f"{member_nodes.size} BRANCH_MEMBER node(s)")
        sets = {int(i): g for i, g in zip(member_nodes, groups)}

    # walk each tree in preorder, true branch first
    order: List[Tuple[bool, int]] = []  # (is a leaf, source index)
    true_l: List[int] = []
    false_l: List[int] = []
    offsets = [0]
    used_node = np.zeros(n, dtype=bool)
    used_leaf = np.zeros(n_leaves, dtype=bool)

    def name_of(is_leaf: bool, i: int) -> str:
        return f"leaf_*[{i}]" if is_leaf else f"nodes_*[{i}]"

    for t, r in enumerate(roots.tolist()):
        base = len(order)
        if true_leaf[r] and false_leaf[r] and trues[r] == falses[r]:
            stack = [(True, int(trues[r]), -1, True)]  # the tree is one leaf
        else:
            stack = [(False, r, -1, True)]
        while stack:
            is_leaf, i, parent, on_true = stack.pop()
            used = used_leaf if is_leaf else used_node
            if used[i]:
                raise _invalid(node, f"tree {t}: {name_of(is_leaf, i)} is reached twice (a cycle, a shared "
                                     f"subtree or a node of two trees)")
            used[i] = True
            local = len(order) - base
            order.append((is_leaf, i))
            true_l.append(-1)
            false_l.append(-1)
            if parent >= 0:
                (true_l if on_true else false_l)[base + parent] = local
            if not is_leaf:
                stack.append((bool(false_leaf[i]), int(falses[i]), local, False))
                stack.append((bool(true_leaf[i]), int(trues[i]), local, True))
        offsets.append(len(order))
    kind = np.array([lf for lf, _ in order], dtype=bool)
    src = np.array([i for _, i in order], dtype=np.int64)
    src_node = np.where(kind, 0, src)
    mode = np.where(kind, LEAF, modes[src_node])
    leaves = np.flatnonzero(kind)
    forest = _Forest(
        offsets=np.asarray(offsets, dtype=np.int64), mode=mode,
        feature=np.where(kind, -1, features[src_node]),
        threshold=np.where(kind | (mode == MEMBER), 0.0, splits[src_node]),  # v5 leaves have no nodes_values
        true=np.asarray(true_l, dtype=np.int64), false=np.asarray(false_l, dtype=np.int64),
        nan_true=np.where(kind, False, tracks[src_node]),
        members={int(j): sets[int(src[j])] for j in np.flatnonzero(mode == MEMBER)},
        truncated={int(j): _big_set(sets[int(src[j])]) for j in np.flatnonzero(mode == MEMBER)},
        w_node=leaves, w_target=target_ids[src[leaves]], w_value=weights[src[leaves]],
        describe=lambda j: name_of(bool(kind[j]), int(src[j])))
    _check_splits(node, forest)
    return forest


# --------------------------------------------------------------------------- IR


def _ir_nodes(node, f: _Forest) -> dict:
    """Split arrays of the IR: GT/GTE/NEQ swap their branches (see the module docstring)."""
    leaf = f.mode == LEAF
    swap = (f.mode == GT) | (f.mode == GTE) | (f.mode == NEQ)
    nan_true = f.nan_true | (f.mode == NEQ)  # NaN != t holds
    split = np.where((f.mode == LT) | (f.mode == GTE), ir.SPLIT_LT,
                     np.where(f.mode >= EQ, ir.SPLIT_MEMBER, ir.SPLIT_LEQ)).astype(np.uint8)
    out = dict(feature=f.feature.astype(np.int32),
               threshold=np.where(leaf | (f.mode >= EQ), 0.0, f.threshold).astype(np.float64),
               left=np.where(leaf, -1, np.where(swap, f.false, f.true)).astype(np.int32),
               right=np.where(leaf, -1, np.where(swap, f.true, f.false)).astype(np.int32),
               missing_left=(np.where(swap, ~nan_true, nan_true) & ~leaf).astype(bool),
               split=np.where(leaf, ir.SPLIT_LEQ, split).astype(np.uint8), compare="float64")
    if f.members:
        n = len(f.mode)
        offset = np.zeros(n, dtype=np.int64)
        nwords = np.zeros(n, dtype=np.int32)
        words = []
        total = 0
        for i in sorted(f.members):
            cats = f.members[i].astype(np.int64)
            k = int(cats.max()) // 32 + 1
            w = np.zeros(k, dtype=np.uint32)
            np.bitwise_or.at(w, cats // 32, (np.uint32(1) << (cats % 32).astype(np.uint32)))
            offset[i], nwords[i] = total, k
            total += k
            if total > MAX_CATEGORY_WORDS:
                raise _unsupported(node, f"the category sets need more than {MAX_CATEGORY_WORDS} words")
            words.append(w)
        truncated = {bool(v) for v in f.truncated.values()}
        if len(truncated) > 1:
            big = next(i for i, v in f.truncated.items() if v)
            exact = next(i for i, v in f.truncated.items() if not v)
            raise _unsupported(node, f"{f.describe(big)} has a set that ONNX Runtime tests on trunc(x) (31 or more "
                                     f"members, or one above 30) while {f.describe(exact)} tests equality; "
                                     f"the IR has one rule per ensemble (cat_exact)")
        out.update(cat_offset=offset, cat_nwords=nwords, cat_bits=np.concatenate(words),
                   cat_exact=not truncated.pop())
    return out


def _tree_of(f: _Forest, nodes: np.ndarray) -> np.ndarray:
    return np.searchsorted(f.offsets, nodes, side="right") - 1


def _leaf_values(node, f: _Forest, n_targets: int):
    """(value, tree_target): scalar leaves when each tree addresses one target, else vector leaves."""
    n = len(f.mode)
    tree = _tree_of(f, f.w_node)
    lo = np.full(f.n_trees, n_targets, dtype=np.int64)
    hi = np.full(f.n_trees, -1, dtype=np.int64)
    np.minimum.at(lo, tree, f.w_target)
    np.maximum.at(hi, tree, f.w_target)
    if np.all((hi < 0) | (lo == hi)):
        value = np.zeros((n, 1))
        np.add.at(value[:, 0], f.w_node, f.w_value)
        return value, (None if n_targets == 1 else np.where(hi < 0, 0, lo).astype(np.int32))
    if n * n_targets > MAX_LEAF_VALUES:
        raise _unsupported(node, f"{n} nodes x {n_targets} targets of vector leaves is too large")
    value = np.zeros((n, n_targets))
    np.add.at(value, (f.w_node, f.w_target), f.w_value)
    return value, None


def _finish_ir(node, est: ir.TreeEnsemble) -> ir.TreeEnsemble:
    try:
        return est.validate()
    except InvalidModelError as e:
        raise _invalid(node, str(e)) from None


def _n_features(feat: _Feat, f: _Forest) -> int:
    if feat.n is not None:
        return feat.n
    split = f.mode != LEAF
    return int(f.feature[split].max()) + 1 if split.any() else 1


def _input(node, args) -> _Feat:
    feat = args[0]
    if not isinstance(feat, _Feat):
        raise _unsupported(node, f"expected features as input, got {_describe(feat)}")
    return feat


def _count(node, name: str, k: int) -> int:
    if k < 1:
        raise _invalid(node, f"attribute {name!r} = {k}, expected at least 1")
    if k > MAX_TARGETS:
        raise _unsupported(node, f"attribute {name!r} = {k} is larger than {MAX_TARGETS}")
    return k


# --------------------------------------------------------------------------- handlers


def _h_tree_classifier(r, node, args):
    feat = _input(node, args)
    ints = _ints(node, "classlabels_int64s")
    strings = _attr(node, "classlabels_strings", AttributeProto.STRINGS)
    if (ints is None) == (not strings):
        raise _invalid(node, "needs exactly one of the attributes 'classlabels_int64s' / 'classlabels_strings'")
    classes = ints if ints is not None else np.array(strings, dtype=object)
    k = len(classes)
    if k < 2:
        raise _invalid(node, f"has {k} class label(s), expected at least 2")
    _count(node, "classlabels", k)
    if len(np.unique(classes)) != k:
        raise _invalid(node, "class labels are not unique")
    pt = _attr(node, "post_transform", AttributeProto.STRING, "NONE")
    if pt not in _POSTS_V3:
        raise _invalid(node, f"attribute 'post_transform' = {pt!r}, expected one of {_POSTS_V3}")
    if pt in ("SOFTMAX_ZERO", "PROBIT"):
        raise _unsupported(node, f"post_transform {pt} has no IR equivalent")
    f = _v3_forest(node, "class", k)
    base = _numbers(node, "base_values", "base_values_as_tensor")
    base = np.zeros(0) if base is None else _finite(node, base, "base_values")
    # ONNX Runtime decides its conventions on every class weight, interior nodes included
    all_ids = _ints(node, "class_ids")
    all_ids = np.zeros(0, np.int64) if all_ids is None else all_ids
    all_w = _numbers(node, "class_weights", "class_weights_as_tensor")
    positive = all_w is None or not np.any(all_w < 0)
    nodes = _ir_nodes(node, f)
    common = dict(n_features=_n_features(feat, f), tree_offsets=f.offsets, is_classifier=True, classes=classes,
                  allow_nan=True, allow_inf=True, name=f"{node.op_type}:{node.name}", **nodes)
    if k == 2:
        ids = set(np.unique(all_ids).tolist())
        if ids != {0}:
            raise _unsupported(node, f"a binary classifier with weights for class ids {sorted(ids)}: ONNX Runtime "
                                     f"then labels rows 0 / 1 from the score of class id 1 alone (or pads a "
                                     f"column with zeros), which the IR cannot express; expected weights for "
                                     f"class id 0 only")
        if base.size > 1:
            raise _unsupported(node, f"a binary classifier with {base.size} base_values: ONNX Runtime then "
                                     f"ignores one and outputs a column of zeros; expected 0 or 1 base value")
        b = float(base[0]) if base.size else 0.0
        if b != 0.0 and not _covered(f, 1)[0]:
            raise _unsupported(node, "some rows get no weight, and ONNX Runtime then drops base_values[0] "
                                     "(it outputs a zero score), which the IR cannot express")
        value, _ = _leaf_values(node, f, 1)
        if positive:
            if pt == "LOGISTIC":
                raise _unsupported(node, "binary classifier with non-negative weights and post_transform "
                                         "LOGISTIC: ONNX Runtime labels rows by score > 0.5 but outputs "
                                         "sigmoid(score), which the IR cannot express")
            # [1 - s, s]; the label s > 0.5 is the first argmax of that pair
            est = ir.TreeEnsemble(value=np.column_stack([-value[:, 0], value[:, 0]]), n_targets=2,
                                  base_score=np.array([1.0 - b, b]), post="proba", predict_rule="argmax", **common)
        else:
            est = ir.TreeEnsemble(value=value, n_targets=1, base_score=np.array([b]),
                                  post="logistic" if pt == "LOGISTIC" else "none", predict_rule="gt0", **common)
        return _outputs(_finish_ir(node, est), feat, 2, classes)
    if base.size not in (0, k):
        raise _invalid(node, f"attribute 'base_values' has {base.size} values, expected 0 or {k} (one per class)")
    uncovered = np.flatnonzero(~_covered(f, k))
    if base.size == 0 and uncovered.size:
        c = int(uncovered[0])
        raise _unsupported(node, f"class {_label(classes[c])} (id {c}) gets no weight on some rows and there are "
                                 f"no base_values: ONNX Runtime leaves such a class out of the label's argmax, "
                                 f"which the IR cannot express")
    value, target = _leaf_values(node, f, k)
    post = {"NONE": "proba" if positive and not np.any(base < 0) else "none",
            "LOGISTIC": "logistic", "SOFTMAX": "softmax"}[pt]
    est = ir.TreeEnsemble(value=value, n_targets=k, tree_target=target,
                          base_score=base if base.size else None, post=post, predict_rule="argmax", **common)
    return _outputs(_finish_ir(node, est), feat, k, classes)


def _covered(f: _Forest, n_out: int) -> np.ndarray:
    """Per output column: does every row get a weight for it? (Some tree weights it in every leaf.)

    ONNX Runtime tracks per row which columns received a weight: a classifier's
    label is an argmax over those only, and a column that received none is
    written as 0, without its base value."""
    leaves_per_tree = np.bincount(_tree_of(f, np.flatnonzero(f.mode == LEAF)), minlength=f.n_trees)
    node, col = np.divmod(np.unique(f.w_node * n_out + f.w_target), n_out)  # distinct (leaf, column)
    keys, count = np.unique(_tree_of(f, node) * n_out + col, return_counts=True)
    tree, col = np.divmod(keys, n_out)
    covered = np.zeros(n_out, dtype=bool)
    covered[col[count == leaves_per_tree[tree]]] = True
    return covered


def _label(c) -> str:
    return repr(c.item() if hasattr(c, "item") else c)


def _outputs(est, feat, width, classes):
    scores = _TreeScores(est, feat, width)
    return [_Label(np.asarray(classes), scores), scores]


def _regressor(node, feat, f: _Forest, n_targets: int, base: np.ndarray, aggregate: str, post: str):
    if aggregate in ("MIN", "MAX"):
        raise _unsupported(node, f"aggregate_function {aggregate} has no IR equivalent (SUM and AVERAGE do)")
    if post != "NONE":
        why = ("ONNX Runtime ignores it for a single target while the ONNX specification applies it"
               if n_targets == 1 else "the IR's regressors output raw scores")
        raise _unsupported(node, f"post_transform {post} on a regressor is not supported ({why})")
    if n_targets > 1 and base.size:
        bad = np.flatnonzero((base != 0) & ~_covered(f, n_targets))
        if bad.size:
            raise _unsupported(node, f"target {bad[0]} gets no weight on some rows: ONNX Runtime then outputs 0 "
                                     f"for it instead of its base value {float(base[bad[0]])!r}, which the IR "
                                     f"cannot express")
    if n_targets == 1:
        _single_target_leaves(node, f)
    value, target = _leaf_values(node, f, n_targets)
    average = aggregate == "AVERAGE"
    base_score = None
    if base.size:
        # ONNX Runtime: sum / n_trees + base; the IR: (base_score + sum) / n_trees
        base_score = base * f.n_trees if average else base
    est = ir.TreeEnsemble(n_features=_n_features(feat, f), tree_offsets=f.offsets, value=value,
                          n_targets=n_targets, tree_target=target, base_score=base_score, average=average,
                          flat=n_targets == 1, allow_nan=True, allow_inf=True,
                          name=f"{node.op_type}:{node.name}", **_ir_nodes(node, f))
    return [_TreeScores(_finish_ir(node, est), feat, n_targets)]


def _single_target_leaves(node, f: _Forest) -> None:
    """With one target ONNX Runtime adds a leaf's *first* weight only, and a leaf without weights
    adds its ``nodes_values`` entry; the specification sums the weights (and adds nothing)."""
    counts = np.bincount(f.w_node, minlength=len(f.mode))
    leaf = f.mode == LEAF
    several = np.flatnonzero(leaf & (counts > 1))
    if several.size:
        raise _unsupported(node, f"{f.describe(int(several[0]))} has {counts[several[0]]} weights; with one "
                                 f"target ONNX Runtime uses only the first while the specification sums them")
    odd = np.flatnonzero(leaf & (counts == 0) & (f.threshold != 0))
    if odd.size:
        i = int(odd[0])
        raise _unsupported(node, f"{f.describe(i)} has no weight but nodes_values {float(f.threshold[i])!r}, "
                                 f"which ONNX Runtime adds as the leaf's value; expected a weight or nodes_values 0")


def _n_targets(node) -> int:
    n_targets = _attr(node, "n_targets", AttributeProto.INT)
    if n_targets is None:
        raise _invalid(node, "attribute 'n_targets' is missing")
    _count(node, "n_targets", n_targets)
    return n_targets


def _h_tree_regressor(r, node, args):
    feat = _input(node, args)
    n_targets = _n_targets(node)
    aggregate = _attr(node, "aggregate_function", AttributeProto.STRING, "SUM")
    if aggregate not in _AGGREGATES_V3:
        raise _invalid(node, f"attribute 'aggregate_function' = {aggregate!r}, expected one of {_AGGREGATES_V3}")
    post = _attr(node, "post_transform", AttributeProto.STRING, "NONE")
    if post not in _POSTS_V3:
        raise _invalid(node, f"attribute 'post_transform' = {post!r}, expected one of {_POSTS_V3}")
    f = _v3_forest(node, "target", n_targets)
    base = _numbers(node, "base_values", "base_values_as_tensor")
    base = np.zeros(0) if base is None else _finite(node, base, "base_values")
    if base.size not in (0, n_targets):
        raise _invalid(node, f"attribute 'base_values' has {base.size} values, expected 0 or {n_targets}")
    return _regressor(node, feat, f, n_targets, base, aggregate, post)


def _h_tree_ensemble(r, node, args):
    feat = _input(node, args)
    n_targets = _n_targets(node)
    agg = _attr(node, "aggregate_function", AttributeProto.INT, 1)
    if agg not in _AGGREGATES_V5:
        raise _invalid(node, f"attribute 'aggregate_function' = {agg}, expected 0 (AVERAGE) to 3 (MAX)")
    post = _attr(node, "post_transform", AttributeProto.INT, 0)
    if post not in range(5):
        raise _invalid(node, f"attribute 'post_transform' = {post}, expected 0 (NONE) to 4 (PROBIT)")
    if post in (1, 2):
        raise _unsupported(node, f"post_transform = {post}: the ONNX specification reads 1 as SOFTMAX and 2 as "
                                 f"LOGISTIC, ONNX Runtime the other way round; and the IR's regressors output "
                                 f"raw scores")
    f = _v5_forest(node, n_targets)
    return _regressor(node, feat, f, n_targets, np.zeros(0), _AGGREGATES_V5[agg],
                      ("NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO", "PROBIT")[post])


# ---- after the ensemble: ops that leave its scores as they are


def _same_scores(r, node, x, c):
    v = _scalar(node, c, "operand")
    if v == 1.0:
        return x
    if node.op_type == "Mul" and x.width == 1 and not x.est.is_classifier and np.isfinite(v) and v > 0:
        return _TreeOut(x, "scaled", scale=float(v))  # the writer's Sigmoid(c raw)
    raise _unsupported(node, f"{node.op_type} of tree-ensemble scores by {v!r}")


def _wrap_handler(handler: Callable, tree_case: Callable) -> Callable:
    def h(r, node, args):
        if args and isinstance(args[0], _TreeScores):
            return tree_case(r, node, args)
        return handler(r, node, args)
    return h


def _cast_features(handler):
    def h(r, node, args):
        x = args[0] if args else None
        if isinstance(x, _Feat) and r.float_bits == 64 and _attr(node, "to", AttributeProto.INT) == TensorProto.FLOAT:
            return [_Feat32(x)]
        return handler(r, node, args)
    return h


def _float32_input(handler):
    """A tree handler that also reads Cast(X, float32): the same ensemble, comparing in float32."""
    def h(r, node, args):
        if not (args and isinstance(args[0], _Feat32)):
            return handler(r, node, args)
        outs = handler(r, node, [args[0].feat] + list(args[1:]))
        new = {}
        for o in outs:
            s = o.of if isinstance(o, _Label) else o
            if s not in new:
                new[s] = _TreeScores(_finish_ir(node, ir.replace(s.est, compare="float32")), s.feat, s.width)
        return [_Label(o.classes, new[o.of]) if isinstance(o, _Label) else new[o] for o in outs]
    return h


def _cast_scores(r, node, args):
    to = _attr(node, "to", AttributeProto.INT)
    if to not in (TensorProto.FLOAT, TensorProto.DOUBLE):
        raise _unsupported(node, f"casts tree-ensemble scores to type {to}, expected float or double")
    return [args[0]]


def _reshape_scores(r, node, args):
    x = args[0]
    if len(args) > 1:
        const = args[1]
        if not isinstance(const, _oi._Const) or const.value.dtype.kind not in "iu":
            raise _unsupported(node, "expected a constant integer shape")
        shape = [int(v) for v in const.value.ravel()]
    else:
        attr = _attr(node, "shape", AttributeProto.INTS)  # Reshape-1
        shape = [] if attr is None else [int(v) for v in attr]
    if shape in ([-1, x.width], [0, x.width]) or (x.width == 1 and shape in ([-1], [0], [-1, 1])):
        return [x]
    raise _unsupported(node, f"reshapes {x.width} score column(s) to {shape}")


# ---- after the ensemble: fastml's own writer (base score, average, sigmoid/softmax, label)


def _add_base(r, node, x, c):
    est = x.est
    if est.average or est.is_classifier or est.post != "none":
        raise _unsupported(node, "adds a constant to averaged or classifier tree scores")  # not the writer's order
    v = np.asarray(c.value, dtype=np.float64).ravel()
    if v.size not in (1, est.n_targets) or not np.all(np.isfinite(v)):
        raise _unsupported(node, f"adds {v.size} value(s) to {est.n_targets} tree score column(s)")
    base = np.broadcast_to(v, (est.n_targets,)).copy()
    if est.base_score is not None:
        base = base + est.base_score
    return _TreeScores(ir.replace(est, base_score=base).validate(), x.feat, x.width)


def _divide(r, node, x, c):
    n = _scalar(node, c, "divisor")
    if n == 1.0:
        return x
    est = x.est
    if not (n > 0 and np.isfinite(n)) or est.average or est.is_classifier or est.post != "none":
        raise _unsupported(node, f"divides tree scores by {n!r}")
    if n == est.n_trees:
        return _TreeScores(_finish_ir(node, ir.replace(est, average=True)), x.feat, x.width)
    # an average over trees that ONNX splits per target (a forest of K-class trees becomes
    # K scalar trees each): divide the leaves and the base instead, the same up to rounding
    base = None if est.base_score is None else est.base_score / n
    return _TreeScores(_finish_ir(node, ir.replace(est, value=est.value / n, base_score=base)), x.feat, x.width)


def _scores_of(node, v, one_column: bool = False) -> _TreeScores:
    if not isinstance(v, _TreeScores) or v.est.is_classifier:
        raise _unsupported(node, f"expected raw tree-ensemble scores, got {_describe(v)}")
    if one_column and v.width != 1:
        raise _unsupported(node, f"expected one score column, got {v.width}")
    return v


def _h_post_unary(r, node, args):
    x = args[0]
    if node.op_type == "Sigmoid":
        if isinstance(x, _TreeOut) and x.what == "scaled":
            return [_TreeOut(x.src, "sig", scale=x.scale)]
        return [_TreeOut(_scores_of(node, x, True), "sig")]
    if _attr(node, "axis", AttributeProto.INT, -1) not in (1, -1):
        raise _unsupported(node, f"{node.op_type} along an axis other than the last")
    if node.op_type == "Softmax":
        return [_TreeOut(_scores_of(node, x), "proba", post="softmax")]
    # ArgMax
    if _attr(node, "keepdims", AttributeProto.INT, 1) != 0 or _attr(node, "select_last_index", AttributeProto.INT, 0):
        raise _unsupported(node, "ArgMax with keepdims or select_last_index")
    if isinstance(x, _TreeOut) and x.what == "proba":
        return [_TreeOut(x.src, "index", post=x.post, rule="argmax_proba")]
    return [_TreeOut(_scores_of(node, x), "index", rule="argmax")]


def _h_post_exp(r, node, args):
    x = args[0]
    if not isinstance(x, _TreeScores) or x.est.is_classifier or x.est.post != "none":
        raise _unsupported(node, f"expected a tree regressor's raw scores, got {_describe(x)}")
    return [_TreeScores(_finish_ir(node, ir.replace(x.est, post="exp")), x.feat, x.width)]  # exp(raw)


def _complement(r, node, c, x):
    if _scalar(node, c, "operand") != 1.0 or x.what != "sig":
        raise _unsupported(node, "expected 1 - Sigmoid(tree scores)")
    return _TreeOut(x.src, "sig0", scale=x.scale)


def _sign(op):
    def h(r, node, x, c):
        if _scalar(node, c, "threshold") != 0.0:
            raise _unsupported(node, f"{node.op_type} of tree scores against a value other than 0")
        return _TreeOut(_scores_of(node, x, True), "index", rule="ge0" if op == "GreaterOrEqual" else "gt0")
    return h


def _h_post_concat(r, node, args):
    if (_attr(node, "axis", AttributeProto.INT) in (1, -1) and len(args) == 2 and all(
            isinstance(a, _TreeOut) for a in args) and [a.what for a in args] == ["sig0", "sig"]
            and args[0].src is args[1].src and args[0].scale == args[1].scale):
        return [_TreeOut(args[0].src, "proba", post="logistic", scale=args[1].scale)]
    raise _unsupported(node, "a Concat of tree outputs other than [1 - Sigmoid(s), Sigmoid(s)]")


def _h_post_gather(r, node, args):
    classes, idx = args
    if (not isinstance(classes, _oi._Const) or classes.value.ndim != 1 or not isinstance(idx, _TreeOut)
            or idx.what != "index" or _attr(node, "axis", AttributeProto.INT, 0) != 0):
        raise _unsupported(node, "Gather is read only as class labels indexed by a tree ensemble's argmax or sign")
    return [_Label(np.asarray(classes.value), idx)]


def _index_passes(r, node, args):
    x = args[0]
    if node.op_type == "Cast" and _attr(node, "to", AttributeProto.INT) not in (TensorProto.INT64, TensorProto.INT32):
        raise _unsupported(node, "casts a class index to a non-integer type")
    if node.op_type == "Reshape":
        shape = [int(v) for v in args[1].value.ravel()] if len(args) > 1 and isinstance(args[1], _oi._Const) else None
        if shape not in ([-1], [0]):
            raise _unsupported(node, f"reshapes a class index to {shape}")
    return [x]


def _classifier_of(outs, name_of):
    """(est, classes) of a graph whose outputs are fastml's writer's label and scores/probabilities."""
    label = [v for _, v in outs if isinstance(v, _Label)]
    if len(label) != 1 or len(outs) != 2:
        raise UnsupportedModelError("a tree classifier graph must output one label and one score output")
    idx = label[0].of
    other = [(n, v) for n, v in outs if not isinstance(v, _Label)][0]
    src, est = idx.src, idx.src.est
    post = idx.post or ""
    scale = 1.0
    if isinstance(other[1], _TreeOut) and other[1].what == "proba":
        if other[1].src is not src or (post and post != other[1].post):
            raise UnsupportedModelError("the label and the probabilities come from different computations")
        post, scale = other[1].post, other[1].scale
    elif not (isinstance(other[1], _TreeScores) and other[1] is src):
        raise UnsupportedModelError(f"output {other[0]!r} is {_describe(other[1])}, expected the ensemble's scores "
                                    "or probabilities")
    if not post:  # raw scores: fastml's writer names them "probabilities" when they are (forests)
        post = "proba" if other[0] == "probabilities" else "none"
    if idx.rule in ("gt0", "ge0") and post == "none":
        post = "logistic"  # a raw-scores export of a binary booster: the label says sign
    est = ir.replace(est, is_classifier=True, classes=label[0].classes, post=post, predict_rule=idx.rule,
                     flat=False, post_params=(scale,) if scale != 1.0 else ())
    return src, est.validate()


def finish(outs, graph_name: str):
    """The IR behind a graph whose outputs come from one tree-ensemble node."""
    if any(isinstance(v.of if isinstance(v, _Label) else v, _TreeOut) for _, v in outs):
        src, est = _classifier_of(outs, graph_name)
        return _wrap(src.feat, est, graph_name)
    src, classes = None, None
    for name, v in outs:
        s = v.of if isinstance(v, _Label) else v
        if not isinstance(s, _TreeScores):
            raise UnsupportedModelError(f"output {name!r} is {_describe(v)}; a tree-ensemble graph may only "
                                        f"output the ensemble's label and scores")
        if src is not None and s is not src:
            raise UnsupportedModelError("the graph outputs come from different tree-ensemble nodes")
        src = s
        if isinstance(v, _Label):
            if classes is not None:
                raise UnsupportedModelError("the graph outputs two labels")
            classes = v.classes
    est = src.est
    if classes is not None and classes.dtype != est.classes.dtype:  # a Cast of the label output
        est = ir.replace(est, classes=classes)
    return _wrap(src.feat, est, graph_name)


def register(handlers: dict, binary: dict) -> None:
    """Add the tree-ensemble handlers to :mod:`converters.onnx_import`'s tables."""
    ml = _oi._ML
    handlers[(ml, "TreeEnsembleClassifier")] = (_float32_input(_h_tree_classifier), 1, 1)
    handlers[(ml, "TreeEnsembleRegressor")] = (_float32_input(_h_tree_regressor), 1, 1)
    handlers[(ml, "TreeEnsemble")] = (_float32_input(_h_tree_ensemble), 1, 1)
    for key, case in ((("", "Cast"), _cast_scores), (("", "Reshape"), _reshape_scores)):
        h, lo, hi = handlers[key]
        handlers[key] = (_wrap_handler(h, case), lo, hi)
    h, lo, hi = handlers[("", "Cast")]
    handlers[("", "Cast")] = (_cast_features(h), lo, hi)
    for op, arity in (("Cast", (1, 1)), ("Reshape", (1, 2)), ("Identity", (1, 1))):
        h, lo, hi = handlers.get(("", op), (None,) + arity)
        handlers[("", op)] = (_wrap_out(h, _index_passes), lo, hi)
    for op in ("Sigmoid", "Softmax", "ArgMax"):
        h, lo, hi = handlers.get(("", op), (None, 1, 1))
        handlers[("", op)] = (_wrap_any(h, _h_post_unary), lo, hi)
    h, lo, hi = handlers.get(("", "Exp"), (None, 1, 1))
    handlers[("", "Exp")] = (_wrap_any(h, _h_post_exp), lo, hi)
    h, lo, hi = handlers[("", "Concat")]
    handlers[("", "Concat")] = (_wrap_any(h, _h_post_concat), lo, hi)
    h, lo, hi = handlers.get(("", "Gather"), (None, 2, 2))
    handlers[("", "Gather")] = (_wrap_any(h, _h_post_gather), lo, hi)
    for op in ("Greater", "GreaterOrEqual"):
        if ("", op) not in handlers:
            handlers[("", op)] = (_oi._h_binary, 2, 2)
    kind = _TreeScores.__name__[1:].lower()  # how onnx_import._kind names these values
    out = _TreeOut.__name__[1:].lower()
    binary[("Mul", kind, "const")] = _same_scores
    binary[("Div", kind, "const")] = _divide
    binary[("Add", kind, "const")] = _add_base
    binary[("Sub", "const", out)] = _complement
    binary[("Greater", kind, "const")] = _sign("Greater")
    binary[("GreaterOrEqual", kind, "const")] = _sign("GreaterOrEqual")


def _tree_arg(args) -> bool:
    return any(isinstance(a, (_TreeScores, _TreeOut)) for a in args)


def _wrap_any(handler, tree_case):
    def h(r, node, args):
        if _tree_arg(args) or handler is None:
            return tree_case(r, node, args)
        return handler(r, node, args)
    return h


def _wrap_out(handler, out_case):
    def h(r, node, args):
        if args and isinstance(args[0], _TreeOut):
            return out_case(r, node, args)
        if handler is None:
            raise _unsupported(node, f"operator {node.op_type} is not supported here")
        return handler(r, node, args)
    return h


register(_oi._HANDLERS, _oi._BINARY)
