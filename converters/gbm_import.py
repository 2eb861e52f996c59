"""LightGBM and XGBoost models -> ``fastml.ir.TreeEnsemble``.

Both libraries are optional: nothing here imports them. A model is read
through its own serialisation (LightGBM's model string, XGBoost's UBJSON), so
the frontend only needs the object the user already has. Either is read a few
iterations at a time and converted straight into the IR's arrays, so loading
needs little more memory than those arrays.

Node numbering (what ``apply`` returns)
---------------------------------------
* **XGBoost**: the IR node id is XGBoost's node id, so ``apply`` equals
  ``predict(pred_leaf=True)``.
* **LightGBM** numbers split nodes ``0 .. L-2`` and leaves ``0 .. L-1`` apart.
  In the IR split ``i`` keeps id ``i`` and leaf ``j`` becomes node
  ``(L - 1) + j``.
* A few splits cannot be one IR node (see below). They become several nodes
  and a copy of one or two subtrees. Nodes added this way get ids after the
  source's nodes. :func:`convert` with ``leaf_map=True`` also returns, for
  every IR node, the source's leaf id (LightGBM leaf index, XGBoost node id;
  ``-1`` at splits), so ``leaf_map[tree_offsets[t] + apply[:, t]]`` is the
  source's ``pred_leaf`` for every row.

LightGBM (``include/LightGBM/tree.h``, ``src/c_api.cpp``)
---------------------------------------------------------
* Rows are read as float64. For dense input, values with ``|x| <=
  kZeroThreshold`` (``1e-35f``) are dropped before prediction, so they count
  as ``0.0``. Numerical splits send ``x`` left iff ``x <= threshold`` in
  float64 (``compare="float64"``). NaN is replaced by 0.0 unless
  ``missing_type`` is NaN, which sends NaN to the default side.
  ``missing_type`` Zero sends ``[-kZeroThreshold, kZeroThreshold]`` and NaN
  to the default side.
* All of this becomes plain ``<=`` / ``<`` splits with the threshold moved to
  ``+-kZeroThreshold`` where the zero band decides. A Zero split whose
  default side is not the side of its threshold that 0 falls on sends
  four stretches of the line alternately left and right (``L | 0 -> R | L
  | R``). That cannot be one node, so it becomes three nodes and a copy of
  each child. Inside a copy, splits that its band already decides are
  dropped. This grows ``zero_as_missing`` models several times (about 5x for
  31 leaves and 14x for 127 leaves on data with 30% zeros), up to
  ``MAX_TREE_NODES`` per tree.
* Categorical splits go left iff ``int(x)`` is in the node's bitset:
  ``SPLIT_MEMBER`` with truncation (``cat_exact=False``). Negative values,
  values beyond the bitset and NaN go right. ``-0.5`` truncates to category
  0. NaN goes right whatever ``missing_type`` says, because
  ``static_cast<int>(NaN)`` is ``INT_MIN`` on x86-64, which fails the ``< 0``
  test before ``isnan`` is checked (checked against lightgbm 4.7 on x86-64;
  on ARM the cast gives 0 and LightGBM would read NaN as category 0).
* Outputs: ``binary`` -> ``post="logistic"``, ``multiclass`` ->
  ``"softmax"``, ``multiclassova`` -> one sigmoid per class (not
  normalised, as LightGBM does). ``LGBMClassifier.predict`` takes the argmax
  of ``predict_proba`` (``predict_rule="argmax_proba"``). A ``sigmoid:``
  parameter other than 1 is refused: LightGBM computes ``1 / (1 +
  exp(-k * raw))``. Folding ``k`` into the leaves would change the raw
  scores ``decision_function`` returns. It would also change how their sum
  rounds.
* ``boosting="rf"`` (``average_output``) divides the sum by the number of
  *iterations*, while the IR divides by the number of trees. A multiclass
  forest of ``K`` trees per iteration gets leaves scaled by ``K``. That is
  exact for ``K`` a power of two and otherwise within an ulp per leaf.
  LightGBM's ``raw_score=True`` does not average. The IR's raw (the
  ``decision_function``) is the averaged score that ``predict_proba`` goes
  through.
* ``poisson``, ``gamma``, ``tweedie``: ``predict`` is ``exp(raw)`` (IR
  ``post="exp"``); ``binary`` / ``multiclassova`` with ``sigmoid=c``:
  probabilities ``1 / (1 + exp(-c raw))`` (``post_params=(c,)``).
* Refused: linear trees, objectives whose output is not the raw score, its
  exp or a sigmoid/softmax of it (``cross_entropy``, ``regression`` with
  ``reg_sqrt``), custom objectives for classifiers.
* A bare ``Booster`` is imported by objective. ``binary``, ``multiclass``
  and ``multiclassova`` give a classifier with classes ``0 .. K-1`` whose
  ``predict_proba`` holds ``Booster.predict`` (binary: its column 1). Any
  other objective gives a regressor whose ``predict`` is ``Booster.predict``.

XGBoost (``src/predictor``, ``src/common/categorical.h``)
----------------------------------------------------------
* The model is read as slices ``booster[a:b]`` of a few iterations (about
  ``XGB_CHUNK_BYTES`` each), saved as UBJSON: node arrays come as big-endian
  float32/int32 arrays (thresholds exact, no decimal text) that become numpy
  views, never a Python object per node. A slice keeps the learner's
  parameters (``base_score``, objective, classes), its trees' ``tree_info``
  and, for dart, their ``weight_drop``. Runs of trees whose nodes are all
  reachable and numbered after their parents, with no categorical split
  (what XGBoost grows), are converted in numpy; the others (pruned nodes left
  in the arrays by ``tree_method="exact"``, categorical splits) tree by tree.
* ``X`` is cast to float32. A split goes left iff ``x < split_condition``
  (``compare="float32"``, ``SPLIT_LT``). NaN goes to ``default_left``.
  ``inplace_predict``, which the scikit-learn wrappers use, accepts
  ``+-inf``. A ``DMatrix`` refuses it.
* Categorical splits send a category *in* the node's set to the right. So in
  the IR the children are swapped (the IR goes left on membership) and
  ``missing_left = not default_left``. XGBoost sends values ``< 0`` (as
  float32) to the left child before truncating. The IR's truncation would
  make ``-0.5`` category 0, so a split whose set holds category 0 gets a
  ``x < 0`` guard and a copy of its left subtree.
* The margin starts at ``base_score``, which the model stores after the
  inverse link. It is ``logit(base_score)`` (computed in float32, as XGBoost
  does) for ``binary:logistic`` and ``reg:logistic``, and the value itself
  for the identity-link objectives and for ``multi:softprob`` /
  ``multi:softmax`` (XGBoost 3.2 stores one value per class). XGBoost then adds leaf
  values in tree order in float32. The IR adds the same float32 values in
  float64, so raw scores agree within float32 rounding of the running sums.
  (A dart booster adds ``(base + leaf) - base`` per tree in float32: the
  leaf itself only when the base is 0, otherwise within a float32 ulp.)
  Categories are the numbers XGBoost sees in a numpy array (a model trained
  on pandas categories recodes pandas input; fastml takes the codes).
* ``XGBClassifier.predict``: binary ``proba > 0.5`` (``predict_rule="gt0"``
  on the margin), multiclass argmax (``"argmax"``). The scikit-learn
  wrappers stop at ``best_iteration`` when early stopping set it. A bare
  ``Booster.predict`` uses every tree.
* Refused: ``gblinear``, ``dart`` unless every tree weight is 1, vector-leaf
  trees (``multi_strategy="multi_output_tree"``), multi-label classifiers,
  ``binary:logitraw`` / ``binary:hinge`` classifiers, objectives with an
  output other than the margin, its exp or logistic/softmax
  (``reg:logistic``, survival), custom objectives for classifiers, and a
  ``missing`` value other than NaN.
* ``count:poisson``, ``reg:gamma``, ``reg:tweedie``: ``predict`` is
  ``exp(margin)`` (IR ``post="exp"``); their ``base_score`` is in output
  space, its margin ``log`` in double rounded to float32 (ProbToMargin), so
  the margin still replays bit for bit.
"""
from __future__ import annotations

import json
import math
import struct
import warnings
from typing import Dict, List, Optional, Tuple

import numpy as np

from fastml import ir
from fastml.errors import InvalidModelError, NotFittedError, UnsupportedModelError

from .sklearn_import import find_frontend, register

#: LightGBM's ``kZeroThreshold`` is the float literal ``1e-35f`` widened to double
K_ZERO = float(np.float32(1e-35))
#: refuse a tree whose exact rewrite would grow past this many nodes
MAX_TREE_NODES = 1 << 22


def _check_fitted(model) -> None:
    fitted = getattr(model, "__sklearn_is_fitted__", None)
    if fitted is not None and not fitted():
        raise NotFittedError(
            f"This {type(model).__name__} instance is not fitted yet; call 'fit' before converting it.")


# --------------------------------------------------------------------------- tree building


class _Tree:
    """Grows one IR tree node by node. Ids below ``n_fixed`` are the source's own.
    Added nodes (rewrites, copies) are numbered from ``n_fixed`` on."""

    def __init__(self, n_fixed: int):
        self.n = n_fixed
        self.feature: Dict[int, int] = {}
        self.threshold: Dict[int, float] = {}
        self.left: Dict[int, int] = {}
        self.right: Dict[int, int] = {}
        self.miss: Dict[int, bool] = {}
        self.kind: Dict[int, int] = {}
        self.cat: Dict[int, np.ndarray] = {}
        self.value: Dict[int, float] = {}
        self.origin: Dict[int, int] = {}

    def new(self) -> int:
        if self.n >= MAX_TREE_NODES:
            raise UnsupportedModelError(
                f"a tree grows past {MAX_TREE_NODES} nodes when rewritten into fastml's splits "
                "(LightGBM zero_as_missing splits are rewritten with copies of their subtrees)")
        self.n += 1
        return self.n - 1

    def split(self, nid: int, feature: int, kind: int, threshold: float, miss: bool,
              left: int, right: int, cat: Optional[np.ndarray] = None) -> None:
        self.feature[nid], self.kind[nid], self.threshold[nid] = feature, kind, threshold
        self.miss[nid], self.left[nid], self.right[nid] = miss, left, right
        if cat is not None:
            self.cat[nid] = cat

    def leaf(self, nid: int, value: float, origin: int) -> None:
        self.value[nid], self.origin[nid] = value, origin

    def arrays(self) -> dict:
        """The tree as a piece for :class:`_Nodes`."""
        n = self.n
        if len(self.value) + len(self.feature) != n:
            raise InvalidModelError(f"tree has {n} node ids but {len(self.value) + len(self.feature)} nodes")
        out = _empty_piece(n)
        out["sizes"][0] = n
        feature, left, right, thr = out["feature"], out["left"], out["right"], out["threshold"]
        miss, kind, value, origin = out["missing_left"], out["split"], out["value"], out["origin"]
        for i in self.feature:
            feature[i], left[i], right[i] = _int32(self.feature[i], "feature id"), self.left[i], self.right[i]
            thr[i], miss[i], kind[i] = self.threshold[i], self.miss[i], self.kind[i]
        for i, v in self.value.items():
            value[i], origin[i] = v, self.origin[i]
        out["cat"] = self.cat
        return out


#: a piece holds the IR arrays of consecutive trees (tree-local child ids): what :class:`_Nodes` joins
_PIECE = (("feature", np.int32, -1), ("threshold", np.float64, 0.0), ("left", np.int32, -1),
          ("right", np.int32, -1), ("missing_left", np.bool_, False), ("split", np.uint8, 0),
          ("value", np.float64, 0.0), ("origin", np.int64, -1))
_INT32_MAX = np.iinfo(np.int32).max


def _empty_piece(n: int, n_trees: int = 1, with_origin: bool = True) -> dict:
    piece = {key: np.full(n, fill, dtype) for key, dtype, fill in _PIECE if with_origin or key != "origin"}
    piece.update(sizes=np.zeros(n_trees, np.int64), cat={})
    return piece


def _int32(v: int, what: str) -> int:
    if not -1 <= v <= _INT32_MAX:
        raise InvalidModelError(f"{what} {v} does not fit a 32-bit node array")
    return v


class _Nodes:
    """The IR's node arrays, filled piece by piece (a piece holds the arrays of consecutive
    trees, tree-local child ids), so that the arrays never exist twice: converting needs the
    IR's memory plus a block's.

    Pieces wait until about ``ir.TREE_BLOCK_NODES`` nodes are pending. The arrays are first
    allocated for the expected node count (``expect``; pages not written to cost nothing),
    grow in place when it was too low (``ndarray.resize``: ``realloc``, which moves a large
    block's pages instead of copying them) and shrink to the node count at the end."""

    def __init__(self, with_origin: bool, expect: int = 0):
        self.dtypes = {key: dtype for key, dtype, _ in _PIECE if with_origin or key != "origin"}
        self.arrays: Optional[dict] = None
        self.expected = expect
        self.sizes: List[np.ndarray] = []
        self.cats: List[Tuple[int, np.ndarray]] = []   # (node, bits) of set-membership splits
        self.n = 0
        self.pending: List[dict] = []
        self.n_pending = 0

    def expect(self, n_nodes: float) -> None:
        """The node count the arrays are sized for when they are (re)allocated."""
        self.expected = int(n_nodes)

    def add(self, piece: dict) -> None:
        base = self.n + self.n_pending
        self.cats += [(base + nid, bits) for nid, bits in sorted(piece["cat"].items())]
        self.sizes.append(piece["sizes"])
        self.pending.append(piece)
        self.n_pending += piece["feature"].shape[0]
        if self.n_pending >= ir.TREE_BLOCK_NODES:
            self._flush()

    def _flush(self) -> None:
        m = self.n + self.n_pending
        if self.arrays is None:
            self.arrays = {key: np.empty(max(m, self.expected), dtype) for key, dtype in self.dtypes.items()}
        for key, a in self.arrays.items():
            if a.shape[0] < m:
                a.resize(m, refcheck=False)   # nothing else refers to it
            pos = self.n
            for p in self.pending:
                part = p[key]
                a[pos:pos + part.shape[0]] = part
                pos += part.shape[0]
        self.n, self.pending, self.n_pending = m, [], 0

    def ensemble(self, n_features: int, **kw) -> Tuple[ir.TreeEnsemble, Optional[np.ndarray]]:
        """The IR of the trees, and each node's id in the source library (``origin``, when asked)."""
        self._flush()
        sizes = np.concatenate(self.sizes)
        offsets = np.zeros(sizes.shape[0] + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        n = self.n
        if self.cats:
            cat_offset = np.zeros(n, np.int64)
            cat_nwords = np.zeros(n, np.int32)
            pos = 0
            for nid, bits in self.cats:
                cat_offset[nid], cat_nwords[nid] = pos, len(bits)
                pos += len(bits)
            kw.update(cat_offset=cat_offset, cat_nwords=cat_nwords,
                      cat_bits=np.concatenate([bits for _, bits in self.cats]).astype(np.uint32), cat_exact=False)
        fields = self.arrays
        self.arrays = None
        for a in fields.values():
            if a.shape[0] != n:
                a.resize(n, refcheck=False)
        origin = fields.pop("origin", None)
        fields["value"] = fields["value"].reshape(n, 1)
        return ir.TreeEnsemble(n_features=int(n_features), tree_offsets=offsets, **fields, **kw), origin


def _bitset(categories) -> np.ndarray:
    cats = np.asarray(categories, dtype=np.int64)
    if cats.size == 0:
        return np.zeros(1, np.uint32)
    if cats.min() < 0:
        raise InvalidModelError(f"negative category {int(cats.min())} in a categorical split")
    words = np.zeros(int(cats.max()) // 32 + 1, np.uint64)
    np.bitwise_or.at(words, cats // 32, np.left_shift(np.uint64(1), (cats % 32).astype(np.uint64)))
    return words.astype(np.uint32)


# --------------------------------------------------------------------------- LightGBM


def _lgb_parse(text: str) -> Tuple[dict, List[dict]]:
    """LightGBM's model string: the header's ``key=value`` lines and one dict per tree."""
    header: dict = {}
    trees: List[dict] = []
    cur = header
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("Tree="):
            cur = {}
            trees.append(cur)
        elif line == "end of trees":
            break
        elif "=" in line:
            k, v = line.split("=", 1)
            cur[k] = v
        elif line:
            cur[line] = ""  # a flag such as ``average_output``
    return header, trees


def _numbers(tree: dict, key: str, dtype) -> np.ndarray:
    # numpy's text parser (C strtod/strtoll: correctly rounded, like float()); callers
    # check the counts against num_leaves
    text = tree.get(key, "")
    if not text.strip():
        return np.zeros(0, dtype)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return np.fromstring(text, dtype=dtype, sep=" ")
    except ValueError:
        raise InvalidModelError(f"LightGBM tree: {key} holds values that are not numbers") from None


def _floats(tree: dict, key: str) -> np.ndarray:
    return _numbers(tree, key, np.float64)


def _ints(tree: dict, key: str) -> np.ndarray:
    return _numbers(tree, key, np.int64)


def _lgb_numeric(mtype: int, default_left: bool, t: float):
    """One numerical LightGBM split as ``(kind, threshold, missing_left)``, or
    ``None`` when it needs the three-node rewrite (see the module docstring)."""
    z = K_ZERO
    if mtype == 1:  # Zero: the band [-z, z] and NaN go to the default side
        if -z <= t <= z:
            return (ir.SPLIT_LEQ, z, True) if default_left else (ir.SPLIT_LT, -z, False)
        if (t > z) == default_left:
            return ir.SPLIT_LEQ, t, default_left
        return None
    # None / NaN: values in the band are read as 0.0
    if -z <= t < 0.0:
        kind, thr = ir.SPLIT_LT, -z
    elif 0.0 <= t <= z:
        kind, thr = ir.SPLIT_LEQ, z
    else:
        kind, thr = ir.SPLIT_LEQ, t
    miss = default_left if mtype == 2 else (0.0 <= t)
    return kind, thr, miss


def _lgb_goes_left(mtype: int, default_left: bool, t: float, x: float) -> bool:
    """LightGBM's ``NumericalDecision`` on one dense input value, literally."""
    if math.isnan(x):
        if mtype == 2:
            return default_left
        x = 0.0
    if abs(x) <= K_ZERO:  # dropped from the sparse row: reads as 0.0
        x = 0.0
    if mtype == 1 and x == 0.0:
        return default_left
    return x <= t


def _lgb_constant(mtype: int, default_left: bool, t: float, box) -> Optional[bool]:
    """The side every value in ``box = (lo, hi, nan_possible)`` takes, or None.

    The decision is constant between its breakpoints ``-z, z, t``, so it is
    enough to try those, their float neighbours and the ends of the box."""
    lo, hi, nan = box
    pts = {lo, hi}
    for b in (-K_ZERO, K_ZERO, t):
        pts.update((b, math.nextafter(b, -math.inf), math.nextafter(b, math.inf)))
    sides = {_lgb_goes_left(mtype, default_left, t, x) for x in pts if lo <= x <= hi}
    if nan:
        sides.add(_lgb_goes_left(mtype, default_left, t, math.nan))
    return sides.pop() if len(sides) == 1 else (True if not sides else None)


def _narrow(boxes: dict, feature: int, kind: int, thr: float, miss: bool, left: bool) -> dict:
    """The path's per-feature ``(lo, hi, nan)`` after taking one side of an IR split."""
    lo, hi, nan = boxes.get(feature, (-math.inf, math.inf, True))
    if kind == ir.SPLIT_MEMBER:  # a set is no interval: keep the box, NaN goes right
        box = (lo, hi, nan and not left)
    elif left:
        top = thr if kind == ir.SPLIT_LEQ else math.nextafter(thr, -math.inf)
        box = (lo, min(hi, top), nan and miss)
    else:
        bottom = math.nextafter(thr, math.inf) if kind == ir.SPLIT_LEQ else thr
        box = (max(lo, bottom), hi, nan and not miss)
    out = dict(boxes)
    out[feature] = box
    return out


def _lgb_fast(L: np.ndarray, feat, thr, dt, lc, rc, leaf_value, with_origin: bool) -> dict:
    """Consecutive LightGBM trees (``L[k]`` leaves each; split and leaf arrays joined over
    the trees) none of whose splits is categorical or needs the zero-as-missing rewrite,
    as one piece, in numpy: the rules of ``_lgb_numeric`` on arrays. In each tree, split
    ``i`` is node ``i`` and leaf ``j`` is node ``L - 1 + j``."""
    z = K_ZERO
    mtype, dleft = (dt >> 2) & 3, (dt & 2) != 0
    band = (-z <= thr) & (thr <= z)
    zero = mtype == 1
    neg_band = (-z <= thr) & (thr < 0.0)
    pos_band = (0.0 <= thr) & (thr <= z)
    kind = np.where(neg_band, ir.SPLIT_LT, ir.SPLIT_LEQ)
    t = np.where(neg_band, -z, np.where(pos_band, z, thr))
    miss = np.where(mtype == 2, dleft, 0.0 <= thr)
    # Zero missing type: inside the band the default side decides; outside, the threshold
    kind = np.where(zero & band, np.where(dleft, ir.SPLIT_LEQ, ir.SPLIT_LT), np.where(zero, ir.SPLIT_LEQ, kind))
    t = np.where(zero & band, np.where(dleft, z, -z), np.where(zero, thr, t))
    miss = np.where(zero, dleft, miss)
    ns = L - 1
    first = np.cumsum(2 * L - 1) - (2 * L - 1)        # each tree's first node in the piece
    at_split = np.arange(feat.shape[0]) + np.repeat(first - (np.cumsum(ns) - ns), ns)
    leaf_no = np.arange(leaf_value.shape[0]) - np.repeat(np.cumsum(L) - L, L)   # j within its tree
    at_leaf = leaf_no + np.repeat(first + ns, L)
    n_int = np.repeat(ns, ns)
    out = _empty_piece(int(first[-1] + 2 * L[-1] - 1), L.shape[0], with_origin)
    out["sizes"] = 2 * L - 1
    out["feature"][at_split], out["threshold"][at_split], out["split"][at_split] = feat, t, kind
    out["left"][at_split] = np.where(lc >= 0, lc, n_int + ~lc)
    out["right"][at_split] = np.where(rc >= 0, rc, n_int + ~rc)
    out["missing_left"][at_split], out["value"][at_leaf] = miss, leaf_value
    if with_origin:
        out["origin"][at_leaf] = leaf_no
    return out


_LGB_SPLIT_KEYS = (("split_feature", np.int64), ("threshold", np.float64), ("decision_type", np.int64),
                   ("left_child", np.int64), ("right_child", np.int64))


def _lgb_read(tree: dict, scale: float):
    """``(L, leaf values, [split_feature, threshold, decision_type, left_child, right_child])``
    of one tree of LightGBM's model string, with their counts checked."""
    try:
        L = int(tree["num_leaves"])
    except (KeyError, ValueError):
        raise InvalidModelError("LightGBM tree: num_leaves is missing or not an integer") from None
    if L < 1:
        raise InvalidModelError(f"LightGBM tree has num_leaves={L}")
    leaf_value = _floats(tree, "leaf_value") * scale
    if leaf_value.shape[0] != L:
        raise InvalidModelError(f"LightGBM tree has num_leaves={L} but {leaf_value.shape[0]} leaf values")
    if L == 1:
        return L, leaf_value, [np.zeros(0, dtype) for _, dtype in _LGB_SPLIT_KEYS]
    arrays = [_numbers(tree, key, dtype) for key, dtype in _LGB_SPLIT_KEYS]
    for (key, _), a in zip(_LGB_SPLIT_KEYS, arrays):
        if a.shape[0] != L - 1:
            raise InvalidModelError(f"LightGBM tree has {L} leaves but {a.shape[0]} {key} entries")
    return L, leaf_value, arrays


def _lgb_trees(trees: List[dict], scale: float, with_origin: bool) -> List[dict]:
    """Consecutive trees of LightGBM's model string as pieces: runs of trees that need no
    rewrite are converted together in numpy, the others one by one."""
    read = [_lgb_read(t, scale) for t in trees]
    L = np.array([r[0] for r in read], dtype=np.int64)
    leaf_value = np.concatenate([r[1] for r in read])
    feat, thr, dt, lc, rc = (np.concatenate([r[2][k] for r in read]) for k in range(len(_LGB_SPLIT_KEYS)))
    del read
    ns = L - 1
    Ls = np.repeat(L, ns)
    bad = np.flatnonzero((lc < -Ls) | (lc >= Ls - 1) | (rc < -Ls) | (rc >= Ls - 1))
    if bad.size:
        i = int(bad[0])
        child = int(lc[i]) if not -Ls[i] <= lc[i] < Ls[i] - 1 else int(rc[i])
        raise InvalidModelError(f"LightGBM tree: child {child} out of range for {int(Ls[i])} leaves")
    z = K_ZERO
    rewrite = ((dt & 1) != 0) | ((((dt >> 2) & 3) == 1) & ~((-z <= thr) & (thr <= z)) & ((thr > z) != ((dt & 2) != 0)))
    slow = np.bincount(np.repeat(np.arange(L.shape[0]), ns)[rewrite], minlength=L.shape[0]) > 0
    s_end, l_end = np.cumsum(ns), np.cumsum(L)
    s_at, l_at = s_end - ns, l_end - L
    pieces = []
    k = 0
    while k < L.shape[0]:
        if slow[k]:
            s, e = s_at[k], s_end[k]
            pieces.append(_lgb_slow(trees[k], int(L[k]), feat[s:e], thr[s:e], dt[s:e], lc[s:e], rc[s:e],
                                    leaf_value[l_at[k]:l_end[k]]))
            k += 1
            continue
        j = k + 1
        while j < L.shape[0] and not slow[j]:
            j += 1
        s, e, ls, le = s_at[k], s_end[j - 1], l_at[k], l_end[j - 1]
        pieces.append(_lgb_fast(L[k:j], feat[s:e], thr[s:e], dt[s:e], lc[s:e], rc[s:e], leaf_value[ls:le],
                                with_origin))
        k = j
    return pieces


def _lgb_slow(tree: dict, L: int, feat, thr, dt, lc, rc, leaf_value) -> dict:
    """One tree with categorical splits or zero-as-missing rewrites, node by node."""
    n_int = L - 1
    out = _Tree(2 * L - 1)
    cb, ct = _ints(tree, "cat_boundaries"), _ints(tree, "cat_threshold")

    def child(c: int, copy: bool) -> int:
        """IR id of source child ``c``: its own id, or a fresh one inside a copy."""
        if copy:
            return out.new()
        return int(c) if c >= 0 else n_int + ~int(c)

    # (source node, IR id, inside a copy, what the path says about each feature);
    # an explicit stack, LightGBM trees can be deep
    stack = [(0, 0, False, {})]
    while stack:
        src, nid, copy, boxes = stack.pop()
        if src < 0:
            out.leaf(nid, float(leaf_value[~src]), ~src)
            continue
        f, d, t = int(feat[src]), int(dt[src]), float(thr[src])
        lsrc, rsrc = int(lc[src]), int(rc[src])
        if d & 1:  # categorical
            k = int(t)
            if not 0 <= k < len(cb) - 1 or not 0 <= cb[k] <= cb[k + 1] <= len(ct):
                raise InvalidModelError(f"LightGBM tree: categorical split {src} has no bitset {k}")
            bits = ct[cb[k]:cb[k + 1]].astype(np.uint32)
            if bits.size == 0:
                bits = np.zeros(1, np.uint32)
            left, right = child(lsrc, copy), child(rsrc, copy)
            out.split(nid, f, ir.SPLIT_MEMBER, 0.0, False, left, right, cat=bits)
            stack += [(lsrc, left, copy, _narrow(boxes, f, ir.SPLIT_MEMBER, 0.0, False, True)),
                      (rsrc, right, copy, _narrow(boxes, f, ir.SPLIT_MEMBER, 0.0, False, False))]
            continue
        mtype, dleft = (d >> 2) & 3, bool(d & 2)
        if copy and f in boxes:
            # copies are reached by a narrow band of this feature: drop decided splits
            side = _lgb_constant(mtype, dleft, t, boxes[f])
            if side is not None:
                stack.append((lsrc if side else rsrc, nid, copy, boxes))
                continue
        rule = _lgb_numeric(mtype, dleft, t)
        if rule is not None:
            left, right = child(lsrc, copy), child(rsrc, copy)
            out.split(nid, f, rule[0], rule[1], rule[2], left, right)
            stack += [(lsrc, left, copy, _narrow(boxes, f, *rule, True)),
                      (rsrc, right, copy, _narrow(boxes, f, *rule, False))]
            continue
        # Zero-as-missing split whose zero band goes against its threshold
        a, b = out.new(), out.new()
        L_orig, R_orig = child(lsrc, copy), child(rsrc, copy)
        L_copy, R_copy = out.new(), out.new()
        z = K_ZERO
        if t > z:   # default right: (-inf,-z) L | band R | (z,t] L | (t,inf) R; NaN R
            nodes = [(nid, ir.SPLIT_LEQ, z, False, a, b), (a, ir.SPLIT_LT, -z, False, L_orig, R_copy),
                     (b, ir.SPLIT_LEQ, t, False, L_copy, R_orig)]
        else:       # default left: (-inf,t] L | (t,-z) R | band L | (z,inf) R; NaN L
            nodes = [(nid, ir.SPLIT_LT, -z, False, a, b), (a, ir.SPLIT_LEQ, t, False, L_orig, R_copy),
                     (b, ir.SPLIT_LEQ, z, True, L_copy, R_orig)]
        box_of = {nid: boxes}
        for n_, kind, th, miss, lft, rgt in nodes:
            out.split(n_, f, kind, th, miss, lft, rgt)
            box_of[lft] = _narrow(box_of[n_], f, kind, th, miss, True)
            box_of[rgt] = _narrow(box_of[n_], f, kind, th, miss, False)
        stack += [(lsrc, L_orig, copy, box_of[L_orig]), (rsrc, R_orig, copy, box_of[R_orig]),
                  (lsrc, L_copy, True, box_of[L_copy]), (rsrc, R_copy, True, box_of[R_copy])]
    return out.arrays()


def _lgb_objective(header: dict) -> Tuple[str, dict]:
    words = header.get("objective", "").split()
    if not words:
        return "custom", {}
    params = {}
    for w in words[1:]:
        if ":" in w:
            k, v = w.split(":", 1)
            params[k] = v
        else:
            params[w] = ""
    return words[0], params


#: objectives whose output is the raw score (LightGBM writes canonical names; aliases are harmless)
_LGB_IDENTITY = {"regression", "regression_l2", "l2", "mean_squared_error", "mse", "l2_root",
                 "root_mean_squared_error", "rmse", "regression_l1", "l1", "mean_absolute_error", "mae", "huber", "fair", "quantile",
                 "mape", "mean_absolute_percentage_error", "lambdarank", "rank_xendcg", "xendcg", "xe_ndcg",
                 "xe_ndcg_mart", "xendcg_mart", "custom"}
_LGB_CLASSIFY = {"binary", "multiclass", "softmax", "multiclassova", "multiclass_ova", "ova", "ovr"}
#: objectives with a log link: Booster.predict is exp(raw score)
_LGB_LOG = {"poisson", "gamma", "tweedie"}


#: model text per ``model_to_string`` call: LightGBM's wrapper offers a 1 MiB buffer
#: first and writes the whole model a second time when it is too small
LGB_CHUNK_BYTES = 1 << 19


def _lgb_n_iterations(booster) -> int:
    """The iterations ``model_to_string()`` writes: all, or ``best_iteration`` when set."""
    K = max(1, int(booster.num_model_per_iteration()))
    n_iter = -(-int(booster.num_trees()) // K)
    best = int(getattr(booster, "best_iteration", 0) or 0)
    return min(n_iter, best) if best > 0 else n_iter


def _lgb_texts(booster):
    """LightGBM's model string a few iterations at a time, each with the header, about
    ``LGB_CHUNK_BYTES`` long: the trees ``model_to_string()`` writes (it stops at
    ``best_iteration`` when that is set), without ever holding all of the text."""
    n_iter = _lgb_n_iterations(booster)
    if n_iter == 0:
        yield booster.model_to_string()
        return
    start, step = 0, 1
    while start < n_iter:
        step = min(step, n_iter - start)
        text = booster.model_to_string(num_iteration=step, start_iteration=start)
        begin = text.find("Tree=")
        trees = text.find("end of trees", max(begin, 0)) - begin if begin >= 0 else 0
        rest = len(text) - trees
        yield text
        del text
        start += step
        # size the next call from this one; a large header (many features) gets more trees
        step = max(1, int(max(LGB_CHUNK_BYTES - rest, 2 * rest) * step // max(trees, 1)))


def _lgb_refuse_linear(name: str, trees: List[dict]) -> None:
    if any(t.get("is_linear", "0") not in ("", "0") for t in trees):
        raise UnsupportedModelError(f"{name}: linear trees (linear_tree=True) are not supported")


def _lightgbm_ir(model, with_origin: bool = False) -> Tuple[ir.TreeEnsemble, Optional[np.ndarray]]:
    _check_fitted(model)
    booster = getattr(model, "booster_", model)
    name = type(model).__name__
    texts = _lgb_texts(booster)
    header, trees = _lgb_parse(next(texts))
    if not trees:
        raise UnsupportedModelError(f"{name}: the model has no trees")
    _lgb_refuse_linear(name, trees)
    K = int(header.get("num_tree_per_iteration", "1"))
    n_class = int(header.get("num_class", "1"))
    if K < 1:
        raise InvalidModelError(f"{name}: num_tree_per_iteration={K}")
    objective, params = _lgb_objective(header)
    if params.get("sqrt") is not None:
        raise UnsupportedModelError(f"{name}: objective {objective!r} with reg_sqrt=True squares its output; "
                                    "fastml cannot express that")
    if objective not in _LGB_IDENTITY | _LGB_CLASSIFY | _LGB_LOG:
        raise UnsupportedModelError(
            f"{name}: LightGBM objective {objective!r} transforms the raw score (log or sigmoid) "
            "in a way fastml's TreeEnsemble cannot express")
    sigmoid = float(params.get("sigmoid", "1"))
    if objective in _LGB_CLASSIFY and objective not in ("multiclass", "softmax") and not (
            np.isfinite(sigmoid) and sigmoid > 0):
        raise InvalidModelError(f"{name}: objective {objective!r} with sigmoid={sigmoid!r}")
    average = "average_output" in header
    scale = float(K) if average and K > 1 else 1.0
    # tree by tree from the text, a few iterations at a time: text, per-tree arrays and
    # the pieces never hold more than a chunk's worth beyond the IR's own arrays
    nodes = _Nodes(with_origin)
    n_trees, n_nodes, expected_trees = 0, 0, _lgb_n_iterations(booster) * K
    while trees is not None:
        _lgb_refuse_linear(name, trees)
        for piece in _lgb_trees(trees, scale, with_origin):
            nodes.add(piece)
            n_nodes += piece["feature"].shape[0]
        n_trees += len(trees)
        nodes.expect(n_nodes * max(expected_trees, n_trees) / n_trees)   # trees so far as a sample
        text = next(texts, None)
        trees = None if text is None else _lgb_parse(text)[1]
        del text
    if n_trees % K:
        raise InvalidModelError(f"{name}: {n_trees} trees is not a multiple of num_tree_per_iteration={K}")
    kw = dict(n_targets=K, tree_target=np.arange(n_trees, dtype=np.int32) % K if K > 1 else None,
              average=average, compare="float64", allow_nan=True, allow_inf=True, name=name)
    n_features = int(header.get("max_feature_idx", "-1")) + 1
    sk_classifier = hasattr(model, "classes_") and hasattr(model, "booster_")
    if sk_classifier or (objective in _LGB_CLASSIFY and not hasattr(model, "booster_")):
        if objective not in _LGB_CLASSIFY:
            raise UnsupportedModelError(f"{name}: a classifier with objective {objective!r} "
                                        "(custom objectives return raw scores) is not supported")
        classes = np.array(model.classes_, copy=True) if sk_classifier else np.arange(max(n_class, 2))
        binary = objective == "binary"
        if len(classes) != (2 if binary else K) or (binary and K != 1):
            raise UnsupportedModelError(f"{name}: {len(classes)} classes with objective {objective!r} and "
                                        f"{K} trees per iteration are not supported")
        post = "softmax" if objective in ("multiclass", "softmax") else "logistic"
        # LightGBM's probability is 1 / (1 + exp(-sigmoid * raw))
        scale = (sigmoid,) if post == "logistic" and sigmoid != 1.0 else ()
        return nodes.ensemble(n_features, is_classifier=True, classes=classes, post=post, post_params=scale,
                              predict_rule="argmax_proba", **kw)
    if objective in _LGB_CLASSIFY:
        raise UnsupportedModelError(f"{name}: a regressor with the classification objective {objective!r} "
                                    "predicts probabilities; fastml cannot express that as a regressor")
    # poisson / gamma / tweedie: predict = exp(raw), the inverse of the log link
    return nodes.ensemble(n_features, flat=K == 1, post="exp" if objective in _LGB_LOG else "none", **kw)


# --------------------------------------------------------------------------- XGBoost


_XGB_IDENTITY = {"reg:squarederror", "reg:linear", "reg:squaredlogerror", "reg:pseudohubererror",
                 "reg:absoluteerror", "reg:quantileerror", "rank:pairwise", "rank:ndcg", "rank:map",
                 "binary:logitraw"}
_XGB_LOGIT_BASE = {"binary:logistic", "reg:logistic"}
#: objectives with a log link: predict = exp(margin), base_score in output space (margin log(base))
_XGB_LOG = {"count:poisson", "reg:gamma", "reg:tweedie"}


def _xgb_float_list(s) -> np.ndarray:
    if isinstance(s, str):
        s = s.strip()
        vals = json.loads(s) if s.startswith("[") else [float(s)]
    else:
        vals = s if isinstance(s, list) else [s]
    return np.array(vals, dtype=np.float32)


def _xgb_base_margin(objective: str, base: np.ndarray) -> np.ndarray:
    if objective in _XGB_LOGIT_BASE:
        one = np.float32(1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            m = -np.log(one / base - one)  # float32 throughout, like ProbToMargin
        if not np.all(np.isfinite(m)):
            raise InvalidModelError(f"XGBoost base_score {base} is outside (0, 1) for {objective}")
        return m
    if objective in _XGB_LOG:
        with np.errstate(divide="ignore", invalid="ignore"):
            m = np.log(base.astype(np.float64)).astype(np.float32)  # ProbToMargin: log in double, to float
        if not np.all(np.isfinite(m)):
            raise InvalidModelError(f"XGBoost base_score {base} is not positive for {objective}")
        return m
    return base


def _xgb_field(tree: dict, key: str):
    try:
        return tree[key]
    except (KeyError, TypeError):
        raise InvalidModelError(f"XGBoost tree has no {key!r}") from None


def _xgb_read(tree: dict):
    """``(left_children, right_children, split_conditions, split_indices, default_left,
    split_type)`` of one tree, with their lengths checked; conditions are float32 values
    (as float64), whatever the source (UBJSON's float32, or JSON's shortest decimals)."""
    fields = [_xgb_field(tree, key) for key in
              ("left_children", "right_children", "split_conditions", "split_indices", "default_left")]
    try:
        lc, rc = (np.asarray(a, dtype=np.int64) for a in fields[:2])
        n = lc.shape[0]
        cond = np.asarray(fields[2], dtype=np.float64).astype(np.float32).astype(np.float64)
        feat = np.asarray(fields[3], dtype=np.int64)
        dl = np.asarray(fields[4], dtype=np.int64).astype(bool)
        stype = np.asarray(tree["split_type"], dtype=np.int64) if "split_type" in tree else np.zeros(n, np.int64)
        leaf_vector = int(tree.get("tree_param", {}).get("size_leaf_vector", "1"))
    except (TypeError, ValueError, AttributeError, OverflowError, IndexError):
        raise InvalidModelError("XGBoost tree: an array holds values that are not numbers") from None
    if leaf_vector > 1:
        raise UnsupportedModelError("XGBoost trees with vector leaves (multi_strategy='multi_output_tree') "
                                    "are not supported")
    for nm, a in (("left_children", lc), ("right_children", rc), ("split_conditions", cond),
                  ("split_indices", feat), ("default_left", dl), ("split_type", stype)):
        if a.ndim != 1 or a.shape[0] != n:
            raise InvalidModelError(f"XGBoost tree has {n} left_children but {a.size} {nm}")
    return lc, rc, cond, feat, dl, stype


def _xgb_tree(tree: dict, read=None) -> dict:
    """One tree node by node (categorical splits, pruned nodes, anything unusual)."""
    lc, rc, cond, feat, dl, stype = read if read is not None else _xgb_read(tree)
    n = lc.shape[0]
    cats: Dict[int, np.ndarray] = {}
    if np.any(stype == 1):
        nodes = _xgb_field(tree, "categories_nodes")
        segs, sizes = _xgb_field(tree, "categories_segments"), _xgb_field(tree, "categories_sizes")
        allc = _xgb_field(tree, "categories")
        try:
            for k, nid in enumerate(nodes):
                cats[int(nid)] = np.asarray(allc[int(segs[k]):int(segs[k]) + int(sizes[k])], dtype=np.int64)
        except (IndexError, TypeError, ValueError):
            raise InvalidModelError("XGBoost tree: categories_nodes, categories_segments, categories_sizes "
                                    "and categories do not match") from None
    # Deleted (pruned) nodes may remain in the arrays unreachable: renumber the
    # reachable ones in order, so ids stay XGBoost's whenever nothing was pruned.
    reach = np.zeros(n, bool)
    todo = [0]
    while todo:
        i = todo.pop()
        if not 0 <= i < n or reach[i]:
            raise InvalidModelError(f"XGBoost tree: node {i} is out of range or reached twice")
        reach[i] = True
        if lc[i] != -1:
            todo += [int(lc[i]), int(rc[i])]
    new_id = np.cumsum(reach) - 1
    out = _Tree(int(reach.sum()))
    for i in np.flatnonzero(reach):
        nid = int(new_id[i])
        if lc[i] == -1:
            out.leaf(nid, float(cond[i]), int(i))
            continue
        L, R = int(new_id[lc[i]]), int(new_id[rc[i]])
        if stype[i] != 1:
            out.split(nid, int(feat[i]), ir.SPLIT_LT, float(cond[i]), bool(dl[i]), L, R)
            continue
        if i not in cats:
            raise InvalidModelError(f"XGBoost tree: categorical split {i} has no categories")
        bits = _bitset(cats[i])
        # XGBoost goes right on membership: the IR's left child is XGBoost's right
        if cats[i].size and cats[i].min() == 0:
            # -1 < x < 0 truncates to category 0 in the IR but is invalid (left) in XGBoost
            member, L_copy = out.new(), out.new()
            out.split(nid, int(feat[i]), ir.SPLIT_LT, 0.0, False, L_copy, member)
            out.split(member, int(feat[i]), ir.SPLIT_MEMBER, 0.0, not dl[i], R, L, cat=bits)
            _xgb_copy(out, L_copy, int(lc[i]), lc, rc, feat, cond, dl, stype, cats)
        else:
            out.split(nid, int(feat[i]), ir.SPLIT_MEMBER, 0.0, not dl[i], R, L, cat=bits)
    return out.arrays()


def _xgb_copy(out: _Tree, nid: int, src: int, lc, rc, feat, cond, dl, stype, cats) -> None:
    """Copy XGBoost's subtree ``src`` into fresh ids from ``nid`` (the same rules as ``_xgb_tree``)."""
    stack = [(src, nid)]
    while stack:
        i, nid = stack.pop()
        if lc[i] == -1:
            out.leaf(nid, float(cond[i]), int(i))
            continue
        L, R = out.new(), out.new()
        stack += [(int(lc[i]), L), (int(rc[i]), R)]
        if stype[i] != 1:
            out.split(nid, int(feat[i]), ir.SPLIT_LT, float(cond[i]), bool(dl[i]), L, R)
            continue
        bits = _bitset(cats[i])
        if cats[i].size and cats[i].min() == 0:
            member, L_copy = out.new(), out.new()
            out.split(nid, int(feat[i]), ir.SPLIT_LT, 0.0, False, L_copy, member)
            out.split(member, int(feat[i]), ir.SPLIT_MEMBER, 0.0, not dl[i], R, L, cat=bits)
            stack.append((int(lc[i]), L_copy))
        else:
            out.split(nid, int(feat[i]), ir.SPLIT_MEMBER, 0.0, not dl[i], R, L, cat=bits)


def _xgb_fast(n: np.ndarray, lc, rc, cond, feat, dl, local, with_origin: bool) -> dict:
    """Consecutive XGBoost trees (``n[k]`` nodes each, arrays joined over the trees) whose
    nodes are all reachable, children numbered after their parent, and no split categorical,
    as one piece, in numpy: IR node ``i`` is XGBoost's node ``i`` (what ``_xgb_tree`` gives
    such a tree)."""
    split = lc != -1
    out = {"sizes": n.astype(np.int64), "cat": {},
           "feature": np.where(split, feat, -1).astype(np.int32),
           "threshold": np.where(split, cond, 0.0),
           "left": np.where(split, lc, -1).astype(np.int32),
           "right": np.where(split, rc, -1).astype(np.int32),
           "missing_left": split & dl,
           "split": np.where(split, ir.SPLIT_LT, 0).astype(np.uint8),
           "value": np.where(split, 0.0, cond)}
    if with_origin:
        out["origin"] = np.where(split, -1, local)
    return out


def _xgb_trees(trees: list, with_origin: bool) -> List[dict]:
    """Consecutive trees of XGBoost's model as pieces: runs of ordinary trees converted
    together in numpy, the others (categorical splits, pruned nodes left in the arrays,
    anything malformed) one by one by ``_xgb_tree``, which names what is wrong."""
    if not trees:
        return []
    read = [_xgb_read(t) for t in trees]
    n = np.array([r[0].shape[0] for r in read], dtype=np.int64)
    lc, rc, cond, feat, dl, stype = (np.concatenate([r[k] for r in read]) for k in range(6))
    first = np.cumsum(n) - n
    base = np.repeat(first, n)
    local = np.arange(lc.shape[0], dtype=np.int64) - base
    size = np.repeat(n, n)
    split = lc != -1
    # a child numbered after its parent and every node but the root a child exactly once:
    # each tree is whole, acyclic and fully reachable from node 0, in XGBoost's own ids
    good = ~split | ((lc > local) & (lc < size) & (rc > local) & (rc < size) & (feat >= -1) & (feat <= _INT32_MAX))
    edges = split & good
    indegree = np.bincount(np.concatenate([(lc + base)[edges], (rc + base)[edges]]), minlength=lc.shape[0])
    good &= np.where(local == 0, indegree == 0, indegree == 1) & (stype != 1)
    slow = (np.bincount(np.repeat(np.arange(n.shape[0]), n)[~good], minlength=n.shape[0]) > 0) | (n == 0)
    del edges, indegree, size, split, base
    pieces = []
    k = 0
    while k < n.shape[0]:
        if slow[k]:
            pieces.append(_xgb_tree(trees[k], read[k]))
            k += 1
            continue
        j = k + 1
        while j < n.shape[0] and not slow[j]:
            j += 1
        s, e = first[k], first[j - 1] + n[j - 1]
        pieces.append(_xgb_fast(n[k:j], lc[s:e], rc[s:e], cond[s:e], feat[s:e], dl[s:e], local[s:e], with_origin))
        k = j
    return pieces


# UBJSON (https://ubjson.org) as XGBoost writes it: big-endian numbers; typed, counted arrays
# of numbers for the trees' node arrays
_UBJ_NUMBERS = {ord("i"): ">i1", ord("U"): ">u1", ord("I"): ">i2", ord("l"): ">i4", ord("L"): ">i8",
                ord("d"): ">f4", ord("D"): ">f8"}
_UBJ_STRUCT = {m: struct.Struct(f) for m, f in
               ((ord("i"), ">b"), (ord("U"), ">B"), (ord("I"), ">h"), (ord("l"), ">i"), (ord("L"), ">q"),
                (ord("d"), ">f"), (ord("D"), ">d"))}
_UBJ_INT64 = _UBJ_STRUCT[ord("L")]


class _UBJ:
    """A UBJSON document as dicts, lists and scalars. Typed arrays of numbers become numpy
    views of the buffer (no Python object per element). ``span`` is where the value of the
    last ``"trees"`` key lies."""

    def __init__(self, buf):
        self.buf, self.pos, self.span = buf, 0, (0, 0)

    def parse(self):
        try:
            value = self._value(self._marker())
        except (IndexError, struct.error, UnicodeDecodeError, ValueError, RecursionError):
            raise InvalidModelError(f"XGBoost model: malformed UBJSON at byte {self.pos}") from None
        return value

    def _marker(self) -> int:
        m = self.buf[self.pos]
        self.pos += 1
        while m == 78:   # N: no-op
            m = self.buf[self.pos]
            self.pos += 1
        return m

    def _count(self) -> int:
        pos = self.pos
        if self.buf[pos] == 76:   # L: int64, how XGBoost writes every length and count
            c = _UBJ_INT64.unpack_from(self.buf, pos + 1)[0]
            self.pos = pos + 9
        else:
            c = self._value(self._marker())
            if not isinstance(c, int) or isinstance(c, bool):
                raise ValueError("bad count")
        if not 0 <= c <= len(self.buf):
            raise ValueError("bad count")
        return c

    def _value(self, m: int):
        if m == 91:   # [
            return self._array()
        if m == 83 or m == 72:   # S, H: length, utf-8
            return self._string()
        if m == 123:  # {
            return self._object()
        st = _UBJ_STRUCT.get(m)
        if st is not None:
            v = st.unpack_from(self.buf, self.pos)[0]
            self.pos += st.size
            return v
        if m == 84 or m == 70:   # T, F
            return m == 84
        if m == 90:   # Z
            return None
        if m == 67:   # C
            self.pos += 1
            return chr(self.buf[self.pos - 1])
        raise ValueError(f"marker {m}")

    def _string(self) -> str:
        k = self._count()
        raw = self.buf[self.pos:self.pos + k]
        if len(raw) != k:
            raise ValueError("string past the end")
        self.pos += k
        return bytes(raw).decode()

    def _header(self):
        """``(type marker or None, count or None)`` of a container."""
        typ = count = None
        if self.buf[self.pos] == 36:   # $
            typ = self.buf[self.pos + 1]
            self.pos += 2
            if self.buf[self.pos] != 35:
                raise ValueError("a typed container without a count")
        if self.buf[self.pos] == 35:   # #
            self.pos += 1
            count = self._count()
        return typ, count

    def _array(self):
        typ, count = self._header()
        if typ in _UBJ_NUMBERS:
            dt = np.dtype(_UBJ_NUMBERS[typ])
            if self.pos + count * dt.itemsize > len(self.buf):
                raise ValueError("array past the end")
            a = np.frombuffer(self.buf, dt, count, self.pos)
            self.pos += count * dt.itemsize
            return a
        if count is not None:
            return [self._value(typ if typ is not None else self._marker()) for _ in range(count)]
        out = []
        while True:
            m = self._marker()
            if m == 93:   # ]
                return out
            out.append(self._value(m))

    def _object(self) -> dict:
        typ, count = self._header()
        out = {}
        while count is None or len(out) < count:
            if count is None and self.buf[self.pos] == 125:   # }
                self.pos += 1
                break
            key = self._string()
            start = self.pos
            out[key] = self._value(typ if typ is not None else self._marker())
            if key == "trees":
                self.span = (start, self.pos)
        return out


#: UBJSON bytes per slice of the booster (``booster[a:b]``): one slice is parsed at a time
XGB_CHUNK_BYTES = 1 << 19


def _xgb_chunks(booster, n_layers: int):
    """``(learner, iterations)``: XGBoost's model (``save_raw("ubj")``) a few iterations at
    a time, as slices ``booster[a:b]`` of about ``XGB_CHUNK_BYTES``, for the first
    ``n_layers`` iterations. Each slice holds the learner's parameters, its own trees,
    ``tree_info`` and (dart) ``weight_drop``; the whole model is never serialised at once."""
    start, step = 0, 1
    while start < n_layers:
        step = min(step, n_layers - start)
        part = booster[start:start + step]
        raw = part.save_raw(raw_format="ubj")
        del part
        doc = _UBJ(raw)
        learner = doc.parse()
        if not isinstance(learner, dict) or not isinstance(learner.get("learner"), dict):
            raise InvalidModelError("XGBoost model: no 'learner' object")
        trees = doc.span[1] - doc.span[0]
        rest = len(raw) - trees
        yield learner["learner"], step
        del raw, learner, doc
        start += step
        step = max(1, int(max(XGB_CHUNK_BYTES - rest, 2 * rest) * step // max(trees, 1)))


def _xgb_key(d, *keys):
    """``d[k0][k1]...``, or a typed error naming the path."""
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            raise InvalidModelError(f"XGBoost model: no {'/'.join(keys)}")
        d = d[k]
    return d


def _xgb_slice_trees(name: str, learner: dict, n_out: int):
    """The trees and ``tree_info`` of one slice; dart weights other than 1 are refused."""
    gb = _xgb_key(learner, "gradient_booster")
    kind = gb.get("name")
    if kind == "dart":
        weights = np.asarray(gb.get("weight_drop", []), dtype=np.float64)
        if np.any(weights != 1.0):
            raise UnsupportedModelError(
                f"{name}: dart boosters with dropout weights other than 1 are not supported")
        gb = _xgb_key(gb, "gbtree")
    elif kind != "gbtree":
        raise UnsupportedModelError(f"{name}: XGBoost booster {kind!r} is not supported (only gbtree)")
    trees, info = _xgb_key(gb, "model", "trees"), _xgb_key(gb, "model", "tree_info")
    try:
        info = np.asarray(info, dtype=np.int64)
    except (TypeError, ValueError):
        info = np.zeros(0, np.int64)
    if not isinstance(trees, list) or info.ndim != 1 or info.shape[0] != len(trees) \
            or np.any((info < 0) | (info >= n_out)):
        raise InvalidModelError(f"{name}: tree_info does not give an output group in [0, {n_out}) per tree")
    return trees, info


def _xgboost_ir(model, with_origin: bool = False) -> Tuple[ir.TreeEnsemble, Optional[np.ndarray]]:
    _check_fitted(model)
    name = type(model).__name__
    is_sklearn = hasattr(model, "get_booster")
    booster = model.get_booster() if is_sklearn else model
    if is_sklearn:
        missing = getattr(model, "missing", np.nan)
        if missing is not None and not (isinstance(missing, float) and math.isnan(missing)):
            raise UnsupportedModelError(f"{name}: missing={missing!r}; fastml treats only NaN as missing")
    kind = json.loads(booster.save_config())["learner"]["gradient_booster"].get("name")
    if kind not in ("gbtree", "dart"):   # gblinear cannot be sliced
        raise UnsupportedModelError(f"{name}: XGBoost booster {kind!r} is not supported (only gbtree)")
    # the scikit-learn wrappers stop at best_iteration; a bare Booster uses every tree
    n_layers = int(booster.num_boosted_rounds())
    if is_sklearn and "best_iteration" in booster.attributes():
        n_layers = min(n_layers, int(booster.best_iteration) + 1)
    if n_layers <= 0:
        raise UnsupportedModelError(f"{name}: the model has no trees")
    chunks = _xgb_chunks(booster, n_layers)
    learner, layers = next(chunks)
    lmp = _xgb_key(learner, "learner_model_param")
    n_features = _xgb_key(lmp, "num_feature")
    try:
        n_class = int(lmp.get("num_class", "0"))
        n_target = int(lmp.get("num_target", "1"))
        n_features = int(n_features)
    except (TypeError, ValueError):
        raise InvalidModelError(f"{name}: learner_model_param holds values that are not integers") from None
    n_out = n_class if n_class > 1 else max(n_target, 1)
    objective = _xgb_key(learner, "objective", "name")
    base = _xgb_float_list(lmp.get("base_score", "0.5"))
    if base.shape[0] not in (1, n_out):
        raise InvalidModelError(f"{name}: base_score has {base.shape[0]} values for {n_out} outputs")
    base = np.broadcast_to(_xgb_base_margin(objective, base), (n_out,)).astype(np.float64)
    # what the model is, decided (and refused) before its trees are read
    classify = objective in ("binary:logistic", "multi:softprob", "multi:softmax")
    sk_classifier = is_sklearn and hasattr(model, "n_classes_")
    if sk_classifier:
        if callable(getattr(model, "objective", None)) or not classify:
            raise UnsupportedModelError(f"{name}: a classifier with objective {objective!r} is not supported "
                                        "(supported: binary:logistic, multi:softprob, multi:softmax)")
    if sk_classifier or (classify and not is_sklearn):
        k = int(model.n_classes_) if sk_classifier else max(n_class, 2)
        binary = objective == "binary:logistic"
        if sk_classifier and k == 2 and not binary:
            raise UnsupportedModelError(f"{name}: two classes with objective {objective!r}: XGBClassifier.predict "
                                        "treats two probability columns as multi-label")
        if n_target != 1 or (binary and (k != 2 or n_out != 1)) or (not binary and k != n_out):
            raise UnsupportedModelError(f"{name}: {k} classes with {n_out} outputs (objective {objective!r}, "
                                        f"num_target={n_target}) are not supported; multi-label is not")
        what = dict(is_classifier=True, classes=np.arange(k), post="logistic" if binary else "softmax",
                    predict_rule="gt0" if binary else "argmax")
    elif objective not in _XGB_IDENTITY | _XGB_LOG:
        raise UnsupportedModelError(
            f"{name}: XGBoost objective {objective!r} transforms the margin in a way fastml's "
            "TreeEnsemble cannot express")
    else:
        what = dict(flat=n_out == 1, post="exp" if objective in _XGB_LOG else "none")
    # slice by slice: the slice's bytes, its parsed arrays and the pieces never hold more
    # than a chunk's worth beyond the IR's own arrays
    nodes = _Nodes(with_origin)
    infos: List[np.ndarray] = []
    n_nodes, done = 0, 0
    while learner is not None:
        trees, info = _xgb_slice_trees(name, learner, n_out)
        infos.append(info)
        for piece in _xgb_trees(trees, with_origin):
            nodes.add(piece)
            n_nodes += piece["feature"].shape[0]
        done += layers
        nodes.expect(n_nodes * n_layers / done)   # iterations so far as a sample
        del trees, learner
        learner, layers = next(chunks, (None, 0))
    info = np.concatenate(infos)
    if info.shape[0] == 0:
        raise UnsupportedModelError(f"{name}: the model has no trees")
    kw = dict(n_targets=n_out, tree_target=info.astype(np.int32) if n_out > 1 else None,
              base_score=base, compare="float32", allow_nan=True, allow_inf=True, name=name)
    return nodes.ensemble(n_features, **what, **kw)


# --------------------------------------------------------------------------- public


def convert(model, *, leaf_map: bool = False):
    """Import a LightGBM or XGBoost model (Booster or scikit-learn wrapper).

    Parameters
    ----------
    model
        ``lightgbm.Booster``, ``LGBMClassifier``, ``LGBMRegressor``,
        ``LGBMRanker``, ``xgboost.Booster``, ``XGBClassifier``,
        ``XGBRegressor``, ``XGBRanker`` (and their subclasses).
    leaf_map
        Also return, for every IR node, the source's leaf id: LightGBM's leaf
        index or XGBoost's node id (``-1`` at split nodes).

    Returns
    -------
    TreeEnsemble, or ``(TreeEnsemble, ndarray)`` with ``leaf_map=True``.
    """
    frontend = find_frontend(model)
    if frontend is _lightgbm:
        ens, origin = _lightgbm_ir(model, leaf_map)
    elif frontend is _xgboost:
        ens, origin = _xgboost_ir(model, leaf_map)
    else:
        raise UnsupportedModelError(f"not a LightGBM or XGBoost model: {type(model).__module__}."
                                    f"{type(model).__name__}")
    ens = ens.validate()
    return (ens, origin) if leaf_map else ens


@register("Booster", "LGBMClassifier", "LGBMRegressor", "LGBMRanker", package="lightgbm")
def _lightgbm(model) -> ir.TreeEnsemble:
    return _lightgbm_ir(model)[0]


@register("Booster", "XGBClassifier", "XGBRegressor", "XGBRanker", package="xgboost")
def _xgboost(model) -> ir.TreeEnsemble:
    return _xgboost_ir(model)[0]
