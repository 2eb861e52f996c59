"""fastml's model IR: one small frozen dataclass per model family.

Every frontend (a scikit-learn estimator, an ONNX graph) produces these, and
every backend consumes them. They hold numpy arrays and scalars only.
``validate()`` checks every shape and enumerated value once, so the compiled
kernels can trust their arrays and never read out of bounds.

Semantics follow scikit-learn, which is what users compare against:

* :class:`Linear` computes ``scores = X @ coef.T + intercept`` in float64.
  A binary classifier has one row of ``coef`` and ``classes`` of length 2; its
  ``decision_function`` is 1-D and ``predict`` picks ``classes[scores > 0]``.
  A multiclass classifier has one row per class and ``predict`` is the argmax.
* ``Linear.proba`` names how scores become probabilities:

  ``"none"``            no ``predict_proba`` (LinearSVC, Ridge, Perceptron, ...)
  ``"softmax"``         multinomial logistic regression
  ``"logistic"``        binary: ``[1 - s, s]`` with ``s = sigmoid(score)``;
                        multiclass one-vs-rest: sigmoids normalised to sum 1
  ``"modified_huber"``  ``(clip(score, -1, 1) + 1) / 2``, normalised like
                        SGDClassifier(loss="modified_huber")
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Optional, Tuple, Union

import numpy as np

from .errors import InvalidModelError

PROBA_KINDS = ("none", "softmax", "logistic", "modified_huber")
SCALER_MODES = ("sub_div", "sub_mul", "mul_add")
NORMS = ("l1", "l2", "max")


def _array(name: str, value, ndim: int, owner: str) -> np.ndarray:
    a = np.asarray(value)
    if a.ndim != ndim:
        raise InvalidModelError(f"{owner}: {name} must be {ndim}-D, got shape {a.shape}")
    if a.dtype != np.float64:
        raise InvalidModelError(f"{owner}: {name} must be float64, got {a.dtype}")
    if not np.all(np.isfinite(a)):
        raise InvalidModelError(f"{owner}: {name} contains NaN or infinity")
    return a


def _frozen(*arrays: np.ndarray) -> None:
    for a in arrays:
        a.flags.writeable = False


@dataclass(frozen=True)
class Scaler:
    """Per-feature affine map.

    ``mode`` keeps the exact order of operations of the source, because
    ``(x - m) / s`` and ``(x - m) * (1 / s)`` differ in the last bit:

    * ``"sub_div"``: ``(x - offset) / scale`` (StandardScaler, RobustScaler, MaxAbsScaler)
    * ``"sub_mul"``: ``(x - offset) * scale`` (ONNX ``Scaler``)
    * ``"mul_add"``: ``x * scale + offset`` (MinMaxScaler)
    """

    offset: np.ndarray
    scale: np.ndarray
    mode: str = "sub_div"
    name: str = "Scaler"
    #: apply offset and scale in the input's dtype rather than in float64
    #: (scikit-learn's StandardScaler casts them to X's dtype since 1.8)
    cast_params: bool = False

    @property
    def n_features(self) -> int:
        return int(self.scale.shape[0])

    def validate(self) -> "Scaler":
        off = _array("offset", self.offset, 1, self.name)
        sc = _array("scale", self.scale, 1, self.name)
        if off.shape != sc.shape:
            raise InvalidModelError(
                f"{self.name}: offset has {off.shape[0]} values but scale has {sc.shape[0]}")
        if self.mode not in SCALER_MODES:
            raise InvalidModelError(f"{self.name}: unknown mode {self.mode!r}, expected one of {SCALER_MODES}")
        if self.mode == "sub_div" and np.any(sc == 0):
            raise InvalidModelError(f"{self.name}: scale contains 0 (division by zero)")
        _frozen(off, sc)
        return self


@dataclass(frozen=True)
class Normalizer:
    """Scale each row to unit ``norm`` ("l1", "l2" or "max"); zero rows stay zero."""

    norm: str = "l2"
    name: str = "Normalizer"
    n_features: Optional[int] = None

    def validate(self) -> "Normalizer":
        if self.norm not in NORMS:
            raise InvalidModelError(f"{self.name}: unknown norm {self.norm!r}, expected one of {NORMS}")
        return self


def linear_methods(is_classifier: bool, proba: str) -> frozenset:
    """The scikit-learn methods of a linear model (shared with its int8 form)."""
    m = {"predict"}
    if is_classifier:
        m.add("decision_function")
        if proba != "none":
            m.add("predict_proba")
    return frozenset(m)


@dataclass(frozen=True)
class Linear:
    """A linear classifier or regressor (see the module docstring)."""

    coef: np.ndarray                      # (n_targets, n_features) float64
    intercept: np.ndarray                 # (n_targets,) float64
    is_classifier: bool
    classes: Optional[np.ndarray] = None  # classifier labels, any dtype
    proba: str = "none"
    flat: bool = False                    # regressor: predict returns 1-D
    name: str = "Linear"

    @property
    def n_features(self) -> int:
        return int(self.coef.shape[1])

    @property
    def n_targets(self) -> int:
        return int(self.coef.shape[0])

    def methods(self) -> frozenset:
        """The scikit-learn methods this model has."""
        return linear_methods(self.is_classifier, self.proba)

    def validate(self) -> "Linear":
        coef = _array("coef", self.coef, 2, self.name)
        b = _array("intercept", self.intercept, 1, self.name)
        if coef.shape[0] == 0 or coef.shape[1] == 0:
            raise InvalidModelError(f"{self.name}: coef has an empty dimension {coef.shape}")
        if b.shape[0] != coef.shape[0]:
            raise InvalidModelError(
                f"{self.name}: intercept has {b.shape[0]} values but coef has {coef.shape[0]} rows")
        if self.proba not in PROBA_KINDS:
            raise InvalidModelError(f"{self.name}: unknown proba {self.proba!r}, expected one of {PROBA_KINDS}")
        if self.is_classifier:
            if self.classes is None:
                raise InvalidModelError(f"{self.name}: a classifier needs classes")
            classes = np.asarray(self.classes)
            if classes.ndim != 1:
                raise InvalidModelError(f"{self.name}: classes must be 1-D, got shape {classes.shape}")
            k = classes.shape[0]
            expected = 1 if k == 2 else k
            if k < 2 or coef.shape[0] != expected:
                raise InvalidModelError(
                    f"{self.name}: {k} classes need {expected} coefficient rows, got {coef.shape[0]}")
            if len(np.unique(classes)) != k:
                raise InvalidModelError(f"{self.name}: classes are not unique")
            if self.flat:
                raise InvalidModelError(f"{self.name}: flat applies to regressors only")
            _frozen(classes)
        else:
            if self.classes is not None or self.proba != "none":
                raise InvalidModelError(f"{self.name}: a regressor has no classes or probabilities")
            if self.flat and coef.shape[0] != 1:
                raise InvalidModelError(f"{self.name}: a flat (1-D) regressor has exactly one target")
        _frozen(coef, b)
        return self


# --------------------------------------------------------------------------- kernel SVMs

SVM_KERNELS = ("linear", "poly", "rbf", "sigmoid")
SVM_KINDS = ("classifier", "regressor", "one_class")
SVM_SHAPES = ("ovr", "ovo")


class SVMShape:
    """What a kernel SVM's kind, classes and Platt / offset fields imply (shared by
    :class:`KernelSVM` and its int8 form ``fastml.ir_qsvm.QKernelSVM``)."""

    @property
    def is_classifier(self) -> bool:
        return self.kind == "classifier"

    @property
    def n_classes(self) -> int:
        return len(self.classes) if self.classes is not None else 0

    @property
    def n_pairs(self) -> int:
        k = self.n_classes
        return k * (k - 1) // 2 if self.is_classifier else 1

    def methods(self) -> frozenset:
        if self.kind == "regressor":
            return frozenset({"predict"})
        if self.kind == "one_class":
            known = self.offset is not None
            return frozenset({"predict", "decision_function"} | ({"score_samples"} if known else set()))
        m = {"predict", "decision_function"}
        if self.prob_a is not None:
            m.add("predict_proba")
        return frozenset(m)


@dataclass(frozen=True)
class KernelSVM(SVMShape):
    """A kernel SVM exactly as libsvm (scikit-learn's SVC, NuSVC, SVR, NuSVR,
    OneClassSVM) evaluates it.

    ``K(x, s)`` is ``x.s`` (linear), ``(gamma x.s + coef0)^degree`` (poly),
    ``exp(-gamma |x - s|^2)`` (rbf) or ``tanh(gamma x.s + coef0)`` (sigmoid).

    * A classifier with k classes keeps its support vectors grouped by class
      (``n_support[c]`` of class c, in class order) and libsvm's one-vs-one
      coefficients: ``dual_coef`` has k - 1 rows and the pair (i, j), i < j,
      number p in the order (0,1), (0,2), ..., (1,2), ..., has the raw value
      ``dec[p] = sum_{s in i} dual_coef[j-1, s] K(x, s) + sum_{s in j} dual_coef[i, s] K(x, s)
      + intercept[p]``.  ``dec[p] > 0`` is a vote for i, else for j; ``predict``
      is the first class with the most votes.  These are libsvm's own signs
      (scikit-learn's ``_dual_coef_`` / ``_intercept_``); a binary classifier's
      ``decision_function`` is ``-dec``.  ``decision_shape`` "ovr" turns the
      pairwise values into scikit-learn's one-vs-rest scores; ``break_ties``
      predicts their argmax.  ``prob_a`` / ``prob_b`` (Platt's sigmoid per pair)
      give libsvm's pairwise-coupling probabilities.
    * A regressor or one-class model has one row of coefficients and one
      intercept: ``dec = sum_s dual_coef[0, s] K(x, s) + intercept[0]``;
      a one-class model predicts ``+1`` where ``dec > 0`` and its
      ``score_samples`` is ``dec + offset``.
    """

    support_vectors: np.ndarray              # (n_sv, n_features) float64
    dual_coef: np.ndarray                    # (k - 1, n_sv) classifiers, (1, n_sv) otherwise
    intercept: np.ndarray                    # (k (k - 1) / 2,) classifiers, (1,) otherwise
    kind: str                                # one of SVM_KINDS
    kernel: str                              # one of SVM_KERNELS
    gamma: float = 1.0
    coef0: float = 0.0
    degree: int = 3
    n_support: Optional[np.ndarray] = None   # (k,) support vectors per class, classifiers
    classes: Optional[np.ndarray] = None     # (k,) labels, classifiers
    decision_shape: str = "ovr"
    break_ties: bool = False
    prob_a: Optional[np.ndarray] = None      # (k (k - 1) / 2,) Platt scaling, or None
    prob_b: Optional[np.ndarray] = None
    offset: Optional[float] = 0.0            # one-class: score_samples = decision_function + offset
                                             # (None: not known, e.g. read from ONNX; no score_samples)
    name: str = "KernelSVM"

    @property
    def n_features(self) -> int:
        return int(np.shape(self.support_vectors)[1])

    @property
    def n_sv(self) -> int:
        return int(np.shape(self.support_vectors)[0])

    def validate(self) -> "KernelSVM":  # noqa: C901 - one check per rule, in order
        n = self.name
        sv = _array("support_vectors", self.support_vectors, 2, n)
        coef = _array("dual_coef", self.dual_coef, 2, n)
        b = _array("intercept", self.intercept, 1, n)
        if sv.shape[1] == 0:
            raise InvalidModelError(f"{n}: support vectors have no features")
        if self.kind not in SVM_KINDS:
            raise InvalidModelError(f"{n}: unknown kind {self.kind!r}, expected one of {SVM_KINDS}")
        if self.kernel not in SVM_KERNELS:
            raise InvalidModelError(f"{n}: unknown kernel {self.kernel!r}, expected one of {SVM_KERNELS}")
        for what in ("gamma", "coef0", "offset"):
            v = getattr(self, what)
            if v is None and what == "offset":
                continue
            if not isinstance(v, (float, int, np.floating, np.integer)) or not np.isfinite(v):
                raise InvalidModelError(f"{n}: {what} must be a finite number, got {v!r}")
        if not isinstance(self.degree, (int, np.integer)) or not 0 <= self.degree <= 64:
            raise InvalidModelError(f"{n}: degree must be an integer in [0, 64], got {self.degree!r}")
        if self.decision_shape not in SVM_SHAPES:
            raise InvalidModelError(f"{n}: unknown decision_shape {self.decision_shape!r}")
        if coef.shape[1] != sv.shape[0]:
            raise InvalidModelError(f"{n}: dual_coef has {coef.shape[1]} columns for {sv.shape[0]} support vectors")
        arrays = [sv, coef, b]
        if self.kind == "classifier":
            if self.classes is None or self.n_support is None:
                raise InvalidModelError(f"{n}: a classifier needs classes and n_support")
            classes = np.asarray(self.classes)
            k = classes.shape[0] if classes.ndim == 1 else 0
            if k < 2 or len(np.unique(classes)) != k:
                raise InvalidModelError(f"{n}: a classifier needs at least 2 unique classes (1-D), got {classes!r}")
            ns = _ints_array("n_support", self.n_support, 1, n)
            if ns.shape[0] != k or np.any(ns < 0) or int(ns.sum()) != sv.shape[0]:
                raise InvalidModelError(f"{n}: n_support {ns.tolist()} must give each of the {k} classes a "
                                        f"count >= 0 summing to the {sv.shape[0]} support vectors")
            if coef.shape[0] != k - 1:
                raise InvalidModelError(f"{n}: {k} classes need {k - 1} rows of dual_coef, got {coef.shape[0]}")
            pairs = k * (k - 1) // 2
            if b.shape[0] != pairs:
                raise InvalidModelError(f"{n}: {k} classes need {pairs} intercepts, got {b.shape[0]}")
            if (self.prob_a is None) != (self.prob_b is None):
                raise InvalidModelError(f"{n}: prob_a and prob_b come together")
            if self.prob_a is not None:
                pa = _array("prob_a", self.prob_a, 1, n)
                pb = _array("prob_b", self.prob_b, 1, n)
                if pa.shape[0] != pairs or pb.shape[0] != pairs:
                    raise InvalidModelError(f"{n}: prob_a / prob_b need {pairs} values each, "
                                            f"got {pa.shape[0]} and {pb.shape[0]}")
                arrays += [pa, pb]
            arrays += [classes, ns]
        else:
            if self.classes is not None or self.n_support is not None or self.prob_a is not None:
                raise InvalidModelError(f"{n}: a {self.kind} has no classes, n_support or probabilities")
            if coef.shape[0] != 1 or b.shape[0] != 1:
                raise InvalidModelError(f"{n}: a {self.kind} has one row of dual_coef and one intercept, "
                                        f"got {coef.shape[0]} and {b.shape[0]}")
        _frozen(*arrays)
        return self


# --------------------------------------------------------------------------- tree ensembles

#: how a split node sends a row left (``TreeEnsemble.split``)
SPLIT_LEQ, SPLIT_LT, SPLIT_MEMBER = 0, 1, 2
COMPARES = ("float32", "float64")
TREE_POSTS = ("none", "proba", "logistic", "softmax", "isolation", "exp")
PREDICT_RULES = ("value", "argmax", "argmax_proba", "ge0", "gt0", "isolation")


def _ints_array(name: str, value, ndim: int, owner: str, dtype=np.int32) -> np.ndarray:
    a = np.asarray(value)
    if a.ndim != ndim:
        raise InvalidModelError(f"{owner}: {name} must be {ndim}-D, got shape {a.shape}")
    if a.dtype.kind not in "iu":
        raise InvalidModelError(f"{owner}: {name} must hold integers, got {a.dtype}")
    return a


#: nodes checked (and planned) at a time: temporaries stay a few MB whatever the model's size
TREE_BLOCK_NODES = 1 << 16


def tree_blocks(tree_offsets: np.ndarray, max_nodes: int = 0):
    """Runs ``(t0, t1)`` of whole trees holding at most ``max_nodes`` nodes
    (``TREE_BLOCK_NODES`` when 0), in order; a larger tree is a run of its own.
    ``tree_offsets`` must rise strictly."""
    max_nodes = max_nodes or TREE_BLOCK_NODES
    n_trees = tree_offsets.shape[0] - 1
    t0 = 0
    while t0 < n_trees:
        t1 = int(np.searchsorted(tree_offsets, tree_offsets[t0] + max_nodes, side="right")) - 1
        t1 = min(max(t1, t0 + 1), n_trees)
        yield t0, t1
        t0 = t1


@dataclass(frozen=True)
class TreeEnsemble:
    """A forest or boosted ensemble of binary decision trees.

    Nodes of all trees are concatenated into flat arrays; tree ``t`` owns
    nodes ``tree_offsets[t] : tree_offsets[t + 1]`` and its root is the first
    of them. ``left`` / ``right`` are indices *local to the tree* (the source's
    own node numbering, which ``apply`` returns), ``-1`` at leaves.

    A split node tests ``x = X[row, feature]``:

    * ``split == SPLIT_LEQ`` (default): go left iff ``x <= threshold``
    * ``split == SPLIT_LT``: go left iff ``x < threshold``
    * ``split == SPLIT_MEMBER``: go left iff ``x`` is a category in the node's
      set: bits ``cat_bits[cat_offset : cat_offset + cat_nwords]`` (uint32
      words, bit ``c % 32`` of word ``c // 32`` for category ``c``). With
      ``cat_exact`` only an integral ``x`` is a category (ONNX's equality);
      otherwise ``x`` is truncated toward zero first (LightGBM). Negative and
      too large values are in no set.

    NaN goes left iff ``missing_left``. ``compare`` is the precision of the
    comparison: ``"float32"`` rounds ``x`` to float32 first (for every kind of
    split), as scikit-learn's
    trees and XGBoost do (their float64 thresholds then decide exactly like
    float32 ones); ``"float64"`` compares ``x`` as given (LightGBM, ONNX
    Runtime, HistGradientBoosting).

    A leaf contributes ``value[node]`` (row of width ``W``): either ``W ==
    n_targets`` (vector leaves), or ``W == 1`` and the tree adds to output
    column ``tree_target[t]``. ``raw = base_score + sum over trees`` in tree
    order, in float64, divided by the number of trees when ``average``.

    ``post`` turns ``raw`` into probabilities (classifiers) or scores:
    ``"none"``, ``"proba"`` (raw already is the class distribution: forests),
    ``"logistic"`` (one column: ``[1 - s, s]``, ``s = 1 / (1 + exp(-c raw))``
    with ``c = post_params[0]`` if given, else 1: GradientBoosting's
    exponential loss has ``c = 2``; several columns: one sigmoid per column),
    ``"softmax"``, ``"isolation"`` (IsolationForest: ``score_samples = -2 **
    (-raw / post_params[0])`` and ``decision_function = score_samples -
    post_params[1]``), ``"exp"`` (regressors: ``predict = exp(raw)``, the
    inverse of a log link: HistGradientBoosting's poisson and gamma losses).
    ``predict_rule`` says how a label is chosen: ``"value"`` (regressor: raw),
    ``"argmax"`` (first argmax of raw), ``"argmax_proba"`` (first argmax of
    the probabilities), ``"ge0"`` / ``"gt0"`` (one raw column compared with 0),
    ``"isolation"`` (``1`` if ``decision_function >= 0`` else ``-1``).
    """

    n_features: int
    tree_offsets: np.ndarray          # (n_trees + 1,) int64
    feature: np.ndarray               # (n_nodes,) int32, -1 at leaves
    threshold: np.ndarray             # (n_nodes,) float64 (NaN allowed at leaves only)
    left: np.ndarray                  # (n_nodes,) int32, tree-local, -1 at leaves
    right: np.ndarray                 # (n_nodes,) int32
    missing_left: np.ndarray          # (n_nodes,) bool
    value: np.ndarray                 # (n_nodes, W) float64; rows of split nodes are ignored
    n_targets: int = 1
    tree_target: Optional[np.ndarray] = None  # (n_trees,) int32, when W == 1 < n_targets
    base_score: Optional[np.ndarray] = None   # (n_targets,) float64, zeros if None
    average: bool = False
    split: Optional[np.ndarray] = None        # (n_nodes,) uint8, all SPLIT_LEQ if None
    cat_offset: Optional[np.ndarray] = None   # (n_nodes,) int64, at SPLIT_MEMBER nodes
    cat_nwords: Optional[np.ndarray] = None   # (n_nodes,) int32
    cat_bits: Optional[np.ndarray] = None     # (n_words,) uint32
    cat_exact: bool = False
    compare: str = "float32"
    is_classifier: bool = False
    classes: Optional[np.ndarray] = None
    post: str = "none"
    post_params: Tuple[float, ...] = ()
    predict_rule: str = "value"
    flat: bool = False                # regressor: predict returns 1-D
    allow_nan: bool = True            # the source accepts NaN in X
    allow_inf: bool = True            # the source accepts +-inf in X
    inf_refused: Optional[np.ndarray] = None  # (n_features,) bool: with allow_inf, columns that refuse +-inf
    name: str = "TreeEnsemble"

    @property
    def n_trees(self) -> int:
        return int(self.tree_offsets.shape[0]) - 1

    @property
    def n_nodes(self) -> int:
        return int(self.feature.shape[0])

    @property
    def logistic_scale(self) -> float:
        """``c`` of ``post="logistic"``: ``s = 1 / (1 + exp(-c raw))`` (1 unless given)."""
        return float(self.post_params[0]) if self.post == "logistic" and len(self.post_params) else 1.0

    @classmethod
    def from_trees(cls, trees, n_features: int, **fields) -> "TreeEnsemble":
        """One ensemble from per-tree node arrays: dicts with ``feature``, ``threshold``,
        ``left``, ``right``, ``missing_left`` and ``value`` (tree-local ids); ``fields``
        are the other fields, already concatenated."""
        offsets = np.zeros(len(trees) + 1, dtype=np.int64)
        np.cumsum([len(t["feature"]) for t in trees], out=offsets[1:])

        def cat(key, dtype):
            return np.concatenate([t[key] for t in trees]).astype(dtype)

        return cls(n_features=int(n_features), tree_offsets=offsets, feature=cat("feature", np.int32),
                   threshold=cat("threshold", np.float64), left=cat("left", np.int32),
                   right=cat("right", np.int32), missing_left=cat("missing_left", bool),
                   value=cat("value", np.float64), **fields)

    def methods(self) -> frozenset:
        """The scikit-learn methods this model has."""
        m = {"predict", "apply"}
        if self.post in ("proba", "logistic", "softmax"):
            m.add("predict_proba")
        if self.post == "isolation":
            m.update(("decision_function", "score_samples"))
        elif self.is_classifier and self.post != "proba":
            m.add("decision_function")
        return frozenset(m)

    def tree_nodes(self, t: int) -> slice:
        return slice(int(self.tree_offsets[t]), int(self.tree_offsets[t + 1]))

    def _bad(self, what: str, t: Optional[int] = None, node: Optional[int] = None) -> InvalidModelError:
        where = self.name
        if t is not None:
            where += f": tree {t}"
            if node is not None:
                where += f" node {node}"
        return InvalidModelError(f"{where}: {what}")

    def validate(self) -> "TreeEnsemble":  # noqa: C901 - one check per rule, in order
        owner = self.name
        if not isinstance(self.n_features, (int, np.integer)) or isinstance(self.n_features, bool) \
                or self.n_features < 1:
            raise self._bad(f"n_features must be >= 1 (an integer), got {self.n_features!r}")
        for field in ("tree_offsets", "feature", "threshold", "left", "right", "missing_left", "value",
                      "tree_target", "base_score", "split", "cat_offset", "cat_nwords", "cat_bits"):
            v = getattr(self, field)
            if v is not None and not isinstance(v, np.ndarray):
                object.__setattr__(self, field, np.asarray(v))  # frozen below, so keep our own array
        off = _ints_array("tree_offsets", self.tree_offsets, 1, owner).astype(np.int64)
        if off.shape[0] < 2:
            raise self._bad("an ensemble needs at least one tree")
        n = None
        arrays = {}
        for nm in ("feature", "left", "right"):
            a = _ints_array(nm, getattr(self, nm), 1, owner)
            if n is not None and a.shape[0] != n:
                raise self._bad(f"{nm} has {a.shape[0]} entries, expected {n} (one per node)")
            n = a.shape[0]
            arrays[nm] = a
        thr = np.asarray(self.threshold)
        ml = np.asarray(self.missing_left)
        if thr.shape != (n,) or thr.dtype != np.float64:
            raise self._bad(f"threshold must be float64 of shape ({n},), got {thr.dtype} {thr.shape}")
        if ml.shape != (n,) or ml.dtype != np.bool_:
            raise self._bad(f"missing_left must be bool of shape ({n},), got {ml.dtype} {ml.shape}")
        val = np.asarray(self.value)
        if val.ndim != 2 or val.shape[0] != n or val.shape[1] < 1 or val.dtype != np.float64:
            raise self._bad(f"value must be float64 of shape ({n}, W), got {val.dtype} {val.shape}")
        if off[0] != 0 or off[-1] != n or np.any(np.diff(off) < 1):
            raise self._bad(f"tree_offsets must rise strictly from 0 to the node count {n}")
        nt = int(self.n_targets)
        if nt < 1:
            raise self._bad(f"n_targets must be >= 1, got {nt}")
        W = val.shape[1]
        if W not in (1, nt):
            raise self._bad(f"leaf values have width {W}; expected 1 or n_targets={nt}")
        n_trees = off.shape[0] - 1
        if W == 1 and nt > 1:
            if self.tree_target is None:
                raise self._bad("scalar leaves with several targets need tree_target")
            tt = _ints_array("tree_target", self.tree_target, 1, owner)
            if tt.shape[0] != n_trees:
                raise self._bad(f"tree_target has {tt.shape[0]} entries for {n_trees} trees")
            bad = np.flatnonzero((tt < 0) | (tt >= nt))
            if bad.size:
                raise self._bad(f"target id {int(tt[bad[0]])} out of range [0, {nt})", int(bad[0]))
        elif self.tree_target is not None:
            raise self._bad("tree_target applies only to scalar leaves with several targets")
        if self.base_score is not None:
            b = _array("base_score", self.base_score, 1, owner)
            if b.shape[0] != nt:
                raise self._bad(f"base_score has {b.shape[0]} values, expected n_targets={nt}")
        split = None
        if self.split is not None:
            split = _ints_array("split", self.split, 1, owner)
            if split.shape[0] != n:
                raise self._bad(f"split has {split.shape[0]} entries, expected {n}")
        self._check_nodes(off, arrays["feature"], arrays["left"], arrays["right"], split, thr, val)

        if self.inf_refused is not None:
            ir_ = np.asarray(self.inf_refused)
            if ir_.dtype != np.bool_ or ir_.shape != (self.n_features,):
                raise self._bad(f"inf_refused must be a bool array of shape ({self.n_features},), "
                                f"got {ir_.dtype} {ir_.shape}")
            if not self.allow_inf:
                raise self._bad("inf_refused names the columns that refuse +-inf among columns that "
                                "accept it: it needs allow_inf=True")
        if self.compare not in COMPARES:
            raise self._bad(f"unknown compare {self.compare!r}, expected one of {COMPARES}")
        if self.post not in TREE_POSTS:
            raise self._bad(f"unknown post {self.post!r}, expected one of {TREE_POSTS}")
        if self.predict_rule not in PREDICT_RULES:
            raise self._bad(f"unknown predict_rule {self.predict_rule!r}, expected one of {PREDICT_RULES}")
        pp = tuple(self.post_params)
        if self.post == "isolation":
            if len(pp) != 2 or not all(np.isfinite(pp)) or pp[0] == 0:
                raise self._bad(f"post 'isolation' needs post_params (denominator, offset), finite, "
                                f"denominator != 0; got {pp}")
        elif self.post == "logistic":
            if len(pp) > 1 or (pp and not (np.isfinite(pp[0]) and pp[0] > 0)):
                raise self._bad(f"post 'logistic' takes post_params () or (scale,) with a finite scale > 0; "
                                f"got {pp}")
        elif pp:
            raise self._bad(f"post {self.post!r} takes no post_params, got {pp}")
        if self.is_classifier:
            if self.classes is None:
                raise self._bad("a classifier needs classes")
            classes = np.asarray(self.classes)
            k = classes.shape[0] if classes.ndim == 1 else 0
            if k < 2 or len(np.unique(classes)) != k:
                raise self._bad(f"classes must be 1-D, unique and at least 2, got {classes!r}")
            if self.predict_rule in ("ge0", "gt0") and k != 2:
                raise self._bad(f"predict_rule {self.predict_rule!r} needs 2 classes, got {k}")
            one = self.predict_rule in ("ge0", "gt0") or (self.post == "logistic" and nt == 1)
            if nt != (1 if one else k):
                raise self._bad(f"{k} classes with rule {self.predict_rule!r} and post {self.post!r} "
                                f"need {1 if one else k} output columns, got n_targets={nt}")
            if self.predict_rule in ("value", "isolation"):
                raise self._bad(f"predict_rule {self.predict_rule!r} is for regressors")
            if self.post == "none" and self.predict_rule == "argmax_proba":
                raise self._bad("predict_rule 'argmax_proba' needs probabilities (post)")
            if self.post in ("exp", "isolation"):
                raise self._bad(f"post {self.post!r} is for regressors")
            _frozen(classes)
        else:
            if self.classes is not None or self.post in ("proba", "logistic", "softmax"):
                raise self._bad("a regressor has no classes or probabilities")
            if self.post == "exp" and self.predict_rule != "value":
                raise self._bad("post 'exp' is for regressors that predict a value")
            if self.predict_rule not in ("value", "isolation"):
                raise self._bad(f"predict_rule {self.predict_rule!r} is for classifiers")
            if self.flat and nt != 1:
                raise self._bad("a flat (1-D) regressor has exactly one target")
            if (self.predict_rule == "isolation") != (self.post == "isolation"):
                raise self._bad("predict_rule 'isolation' and post 'isolation' go together")
        _frozen(*(a for a in (self.tree_offsets, self.feature, self.threshold, self.left, self.right,
                              self.missing_left, self.value, self.tree_target, self.base_score, self.split,
                              self.cat_offset, self.cat_nwords, self.cat_bits, self.inf_refused)
                  if a is not None))
        return self


    def _check_nodes(self, off, feat, left, right, split, thr, val) -> None:
        """Every per-node rule and the tree structure, a run of whole trees at a time
        (:func:`tree_blocks`), so the temporaries stay small whatever the model's size. The
        error names the first offender of the first rule broken, as one pass per rule would."""
        sizes = np.diff(off)
        nf = int(self.n_features)

        def block(t0: int, t1: int) -> SimpleNamespace:
            lo, hi = int(off[t0]), int(off[t1])
            b = SimpleNamespace(lo=lo, hi=hi, l=left[lo:hi].astype(np.int64), r=right[lo:hi].astype(np.int64),
                                f=feat[lo:hi].astype(np.int64), thr=thr[lo:hi], val=val[lo:hi],
                                size=np.repeat(sizes[t0:t1], sizes[t0:t1]),
                                base=np.repeat(off[t0:t1] - lo, sizes[t0:t1]), roots=off[t0:t1] - lo)
            b.leaf = b.l < 0
            b.sp = None if split is None else split[lo:hi].astype(np.int64)
            b.member = np.zeros(hi - lo, bool) if split is None else ~b.leaf & (b.sp == SPLIT_MEMBER)
            return b

        def where(i: int) -> Tuple[int, int]:
            t = int(np.searchsorted(off, i, side="right")) - 1
            return t, i - int(off[t])

        def scan(rules, extra=None) -> None:
            found = [None] * len(rules)
            for t0, t1 in tree_blocks(off):
                b = block(t0, t1)
                if extra is not None:
                    extra(b)
                for k, (mask, what) in enumerate(rules):
                    if found[k] is None:
                        bad = np.flatnonzero(mask(b))
                        if bad.size:
                            i = b.lo + int(bad[0])
                            found[k] = self._bad(what(i, b), *where(i))
            for err in found:
                if err is not None:
                    raise err

        rules = [
            (lambda b: b.l < -1, lambda i, b: f"left child {left[i]} (a leaf has -1)"),
            (lambda b: b.leaf & (b.r != -1), lambda i, b: f"a leaf (left = -1) must have right = -1, got {right[i]}"),
            (lambda b: ~b.leaf & ((b.l >= b.size) | (b.r < 0) | (b.r >= b.size)),
             lambda i, b: f"child out of range: left {left[i]}, right {right[i]} in a tree of "
                       f"{sizes[where(i)[0]]} nodes"),
            (lambda b: ~b.leaf & ((b.f < 0) | (b.f >= nf)),
             lambda i, b: f"feature id {feat[i]} out of range [0, {self.n_features})"),
            (lambda b: ~b.leaf & (b.l == b.r), lambda i, b: f"both children are node {left[i]}"),
        ]
        if split is not None:
            rules.append((lambda b: ~b.leaf & ((b.sp < 0) | (b.sp > SPLIT_MEMBER)),
                          lambda i, b: f"unknown split kind {split[i]}"))
        rules += [(lambda b: ~b.leaf & ~b.member & np.isnan(b.thr), lambda i, b: "threshold is NaN"),
                  (lambda b: b.leaf & ~np.all(np.isfinite(b.val), axis=1), lambda i, b: "leaf value is NaN or infinite")]
        any_member = [False]
        scan(rules, lambda b: any_member.__setitem__(0, any_member[0] or bool(b.member.any())))
        if any_member[0]:
            owner = self.name
            if self.cat_offset is None or self.cat_nwords is None or self.cat_bits is None:
                raise self._bad("set-membership splits need cat_offset, cat_nwords and cat_bits")
            co = _ints_array("cat_offset", self.cat_offset, 1, owner)
            cw = _ints_array("cat_nwords", self.cat_nwords, 1, owner)
            bits = np.asarray(self.cat_bits)
            if bits.ndim != 1 or bits.dtype != np.uint32:
                raise self._bad(f"cat_bits must be 1-D uint32, got {bits.dtype} {bits.shape}")
            if co.shape[0] != off[-1] or cw.shape[0] != off[-1]:
                raise self._bad("cat_offset and cat_nwords need one entry per node")
            nw = bits.shape[0]

            def outside(b):
                o, w = co[b.lo:b.hi].astype(np.int64), cw[b.lo:b.hi].astype(np.int64)
                return b.member & ((o < 0) | (w < 1) | (w > nw) | (o > nw - w))

            scan([(outside, lambda i, b: f"category set [{int(co[i])}, {int(co[i]) + int(cw[i])}) outside "
                                      f"cat_bits of {nw} words")])

        # every node of a tree is reached exactly once from its root: no cycles,
        # no shared children, nothing unreachable
        def count_parents(b):
            inner = np.flatnonzero(~b.leaf)
            b.parents = np.bincount(np.concatenate([b.base[inner] + b.l[inner], b.base[inner] + b.r[inner]]),
                                    minlength=b.hi - b.lo)
            b.root = np.zeros(b.hi - b.lo, bool)
            b.root[b.roots] = True

        scan([(lambda b: b.root & (b.parents > 0), lambda i, b: "the root is some node's child (a cycle)"),
              (lambda b: ~b.root & (b.parents > 1), lambda i, b: f"node is the child of {b.parents[i - b.lo]} nodes"),
              (lambda b: ~b.root & (b.parents == 0), lambda i, b: "node is unreachable from the root")],
             count_parents)
        # with one parent per non-root node and no parent for roots, a tree of
        # k nodes has k - 1 edges; it is a tree iff every node is reachable,
        # which holds iff there is no cycle: walk down from the roots to check.
        for t0, t1 in tree_blocks(off):
            b = block(t0, t1)
            seen = np.zeros(b.hi - b.lo, dtype=bool)
            frontier = b.roots
            while frontier.size:
                seen[frontier] = True
                frontier = frontier[~b.leaf[frontier]]
                base = b.base[frontier]
                frontier = np.concatenate([base + b.l[frontier], base + b.r[frontier]])
                if frontier.size and seen[frontier].any():
                    raise self._bad("node is reached twice (a cycle)", *where(b.lo + int(frontier[seen[frontier]][0])))
            unseen = np.flatnonzero(~seen)
            if unseen.size:
                raise self._bad("node is unreachable from the root (a cycle)", *where(b.lo + int(unseen[0])))


# --------------------------------------------------------------------------- neural networks, k-means

MLP_HIDDEN = ("identity", "logistic", "tanh", "relu")
MLP_OUTPUTS = ("identity", "logistic", "softmax", "exp")
PRECISIONS = ("float64", "float32")


def _precision(owner: str, precision: str, *arrays: np.ndarray) -> None:
    if precision not in PRECISIONS:
        raise InvalidModelError(f"{owner}: unknown precision {precision!r}, expected one of {PRECISIONS}")
    if precision == "float32":
        for a in arrays:
            if not np.array_equal(a.astype(np.float32).astype(np.float64), a):
                raise InvalidModelError(f"{owner}: precision 'float32' needs float32 values, but some "
                                        f"parameters are not exactly representable in float32")


@dataclass(frozen=True)
class MLP:
    """A multi-layer perceptron (scikit-learn's MLPClassifier / MLPRegressor).

    Layer ``i`` computes ``a = f(a @ weights[i] + biases[i])`` with
    ``weights[i]`` of shape ``(n_in, n_out)`` (scikit-learn's ``coefs_``
    layout); ``f`` is ``activation`` on hidden layers and ``out_activation``
    on the last one (``"softmax"`` row-wise, ``"exp"`` for Poisson regressors).

    Classifiers: ``out_activation == "logistic"`` with one output column is
    binary (``predict_proba = [1 - p, p]``, label ``classes[p > 0.5]``);
    ``"softmax"`` is multiclass (label: first argmax); ``multilabel`` has one
    logistic column per label and ``predict`` returns the indicator matrix
    ``p > 0.5`` (``classes`` are the label indices).

    ``precision`` is the dtype the source computes in: scikit-learn computes in
    ``result_type(X, coefs_)``, so a model fitted on float64 data computes in
    float64 for any input, while ``"float32"`` (fitted on float32 data, or an
    ONNX graph with float weights) computes float32 input in float32 and
    float64 input in float64. Weights are stored as float64 either way
    (float32 values widen exactly).
    """

    weights: Tuple[np.ndarray, ...]       # (n_in, n_out) float64 per layer
    biases: Tuple[np.ndarray, ...]        # (n_out,) float64 per layer
    activation: str = "relu"
    out_activation: str = "identity"
    is_classifier: bool = False
    classes: Optional[np.ndarray] = None
    multilabel: bool = False
    flat: bool = False                    # regressor: predict returns 1-D
    precision: str = "float64"
    name: str = "MLP"

    @property
    def n_features(self) -> int:
        return int(self.weights[0].shape[0])

    @property
    def n_outputs(self) -> int:
        return int(self.weights[-1].shape[1])

    @property
    def n_targets(self) -> int:
        return self.n_outputs

    @property
    def n_layers(self) -> int:
        return len(self.weights)

    def methods(self) -> frozenset:
        """The scikit-learn methods this model has."""
        return frozenset({"predict", "predict_proba"} if self.is_classifier else {"predict"})

    def validate(self) -> "MLP":
        owner = self.name
        ws, bs = tuple(self.weights), tuple(self.biases)
        if len(ws) < 1 or len(ws) != len(bs):
            raise InvalidModelError(f"{owner}: needs one bias per weight matrix and at least one layer, "
                                    f"got {len(ws)} weight matrices and {len(bs)} biases")
        ws = tuple(_array(f"weights[{i}]", w, 2, owner) for i, w in enumerate(ws))
        bs = tuple(_array(f"biases[{i}]", b, 1, owner) for i, b in enumerate(bs))
        for i, (w, b) in enumerate(zip(ws, bs)):
            if w.shape[0] < 1 or w.shape[1] < 1:
                raise InvalidModelError(f"{owner}: weights[{i}] has an empty dimension {w.shape}")
            if b.shape[0] != w.shape[1]:
                raise InvalidModelError(f"{owner}: biases[{i}] has {b.shape[0]} values but weights[{i}] "
                                        f"has {w.shape[1]} columns")
            if i and w.shape[0] != ws[i - 1].shape[1]:
                raise InvalidModelError(f"{owner}: weights[{i}] expects {w.shape[0]} inputs but layer "
                                        f"{i - 1} outputs {ws[i - 1].shape[1]}")
        object.__setattr__(self, "weights", ws)
        object.__setattr__(self, "biases", bs)
        if self.activation not in MLP_HIDDEN:
            raise InvalidModelError(f"{owner}: unknown activation {self.activation!r}, expected one of {MLP_HIDDEN}")
        if self.out_activation not in MLP_OUTPUTS:
            raise InvalidModelError(f"{owner}: unknown out_activation {self.out_activation!r}, "
                                    f"expected one of {MLP_OUTPUTS}")
        _precision(owner, self.precision, *ws, *bs)
        k = ws[-1].shape[1]
        if self.is_classifier:
            if self.classes is None:
                raise InvalidModelError(f"{owner}: a classifier needs classes")
            classes = np.asarray(self.classes)
            if classes.ndim != 1 or len(np.unique(classes)) != classes.shape[0]:
                raise InvalidModelError(f"{owner}: classes must be 1-D and unique, got {classes!r}")
            n = classes.shape[0]
            if self.multilabel:
                ok, want = self.out_activation == "logistic" and k == n >= 1, f"{n} logistic outputs"
            elif self.out_activation == "softmax":
                ok, want = n >= 2 and k == n, f"{n} softmax outputs"
            elif self.out_activation == "logistic":
                ok, want = n == 2 and k == 1, "2 classes and 1 logistic output"
            else:
                ok, want = False, "a logistic or softmax output layer"
            if not ok:
                raise InvalidModelError(f"{owner}: {n} classes with out_activation {self.out_activation!r} "
                                        f"and {k} outputs; expected {want}")
            if self.flat:
                raise InvalidModelError(f"{owner}: flat applies to regressors only")
            _frozen(classes)
        else:
            if self.classes is not None or self.multilabel:
                raise InvalidModelError(f"{owner}: a regressor has no classes")
            if self.out_activation not in ("identity", "exp"):
                raise InvalidModelError(f"{owner}: a regressor's out_activation is 'identity' or 'exp', "
                                        f"got {self.out_activation!r}")
            if self.flat and k != 1:
                raise InvalidModelError(f"{owner}: a flat (1-D) regressor has exactly one output")
        _frozen(*ws, *bs)
        return self


@dataclass(frozen=True)
class Centroids:
    """Nearest-centroid assignment (scikit-learn's KMeans / MiniBatchKMeans).

    ``predict`` is the index of the nearest center, chosen like scikit-learn:
    the first minimum of ``||c||^2 - 2 x . c`` (``||x||^2`` is the same for
    every center and left out, as scikit-learn leaves it out), so exact ties go
    to the lowest index. ``transform`` is the matrix of Euclidean distances
    ``sqrt(max(||x||^2 - 2 x . c + ||c||^2, 0))``, computed in float64 (as
    scikit-learn's ``euclidean_distances`` upcasts float32).

    ``precision`` as for :class:`MLP`: ``"float32"`` centers (fitted on
    float32 data) assign float32 input in float32; ``"float64"`` assigns in
    float64 for any input.
    """

    centers: np.ndarray                   # (n_clusters, n_features) float64
    precision: str = "float64"
    name: str = "KMeans"

    is_classifier = False

    @property
    def n_features(self) -> int:
        return int(self.centers.shape[1])

    @property
    def n_clusters(self) -> int:
        return int(self.centers.shape[0])

    def methods(self) -> frozenset:
        """The scikit-learn methods this model has."""
        return frozenset({"predict", "transform"})

    def validate(self) -> "Centroids":
        c = _array("centers", self.centers, 2, self.name)
        if c.shape[0] < 1 or c.shape[1] < 1:
            raise InvalidModelError(f"{self.name}: centers has an empty dimension {c.shape}")
        _precision(self.name, self.precision, c)
        if np.any(np.abs(c) > 1e150 if self.precision == "float64" else np.abs(c) > 1e18):
            # ||c||^2 must stay finite in the precision that computes it
            raise InvalidModelError(f"{self.name}: centers are too large for squared distances in "
                                    f"{self.precision}")
        _frozen(c)
        return self


Step = Union[Scaler, Normalizer]
Estimator = Union[Linear, TreeEnsemble, KernelSVM, MLP, Centroids]
#: every estimator IR class; a new family adds itself here (and to ``Estimator``)
ESTIMATORS: Tuple[type, ...] = (Linear, TreeEnsemble, KernelSVM, MLP, Centroids)


@dataclass(frozen=True)
class Pipeline:
    """Preprocessing steps applied in order, then one estimator."""

    steps: Tuple[Step, ...]
    estimator: Estimator
    name: str = "Pipeline"

    @property
    def n_features(self) -> int:
        for s in self.steps:
            n = getattr(s, "n_features", None)
            if n is not None:
                return n
        return self.estimator.n_features

    def validate(self) -> "Pipeline":
        n = None
        for i, step in enumerate(self.steps):
            if not isinstance(step, (Scaler, Normalizer)):
                raise InvalidModelError(f"{self.name}: step {i} is {type(step).__name__}, not a preprocessing step")
            step.validate()
            m = getattr(step, "n_features", None)
            if m is not None:
                if n is not None and m != n:
                    raise InvalidModelError(
                        f"{self.name}: step {i} ({step.name}) expects {m} features but receives {n}")
                n = m
        self.estimator.validate()
        if n is not None and self.estimator.n_features != n:
            raise InvalidModelError(
                f"{self.name}: {self.estimator.name} expects {self.estimator.n_features} features "
                f"but the steps before it produce {n}")
        return self


Model = Union[Linear, TreeEnsemble, KernelSVM, MLP, Centroids, Pipeline]


def as_pipeline(model: Model) -> Pipeline:
    """Every model seen as a pipeline (possibly with no steps)."""
    if isinstance(model, Pipeline):
        return model
    return Pipeline(steps=(), estimator=model, name=model.name)


def replace(obj, **changes):
    """``dataclasses.replace`` re-exported for frontends."""
    return dataclasses.replace(obj, **changes)


from .ir_quant import QLinear, QMLP  # noqa: E402  (quantized families; ir_quant builds on this module)
from .ir_qtrees import QTrees  # noqa: E402  (lossless threshold-index trees)
from .ir_qsvm import QKernelSVM  # noqa: E402  (int8 support vectors)
ESTIMATORS += (QLinear, QMLP, QTrees, QKernelSVM)
