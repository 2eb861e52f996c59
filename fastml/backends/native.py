"""The native backend: IR -> compiled plan -> fastml's own kernels.

Preprocessing steps run as the same numpy operations scikit-learn performs, in
the same order and dtype (so a float32 pipeline rounds exactly where
scikit-learn rounds); the estimator runs on a compiled kernel. One class per
model family (``RUNNERS``); they share input checking and the steps.
"""
from __future__ import annotations

from typing import Callable, List

import numpy as np

from .. import ir
from .._validation import check_input, nonfinite_error
from ..errors import InputError, MethodUnavailableError, UnsupportedModelError
from ..kernels import _linear, _svm, _trees
from ..kernels import _dense
from . import register
from ._tree_plan import build_plan

Step = Callable[[np.ndarray], np.ndarray]


def _scaler(step: ir.Scaler) -> Step:
    params = {np.dtype(np.float64): (step.offset, step.scale)}
    params[np.dtype(np.float32)] = (
        (step.offset.astype(np.float32), step.scale.astype(np.float32)) if step.cast_params
        else params[np.dtype(np.float64)])

    def sub_div(X):
        off, sc = params[X.dtype]
        X -= off
        X /= sc
        return X

    def sub_mul(X):
        off, sc = params[X.dtype]
        X -= off
        X *= sc
        return X

    def mul_add(X):
        off, sc = params[X.dtype]
        X *= sc
        X += off
        return X

    return {"sub_div": sub_div, "sub_mul": sub_mul, "mul_add": mul_add}[step.mode]


def _normalizer(step: ir.Normalizer) -> Step:
    def norms_of(X):
        if step.norm == "l1":
            return np.sum(np.abs(X), axis=1)
        if step.norm == "l2":
            return np.sqrt(np.einsum("ij,ij->i", X, X))
        return np.max(np.abs(X), axis=1)

    def normalize(X):
        norms = norms_of(X)
        norms[norms < 10 * np.finfo(norms.dtype).eps] = 1.0  # scikit-learn's zero handling
        X /= norms[:, None]
        return X

    return normalize


STEP_COMPILERS = {ir.Scaler: _scaler, ir.Normalizer: _normalizer}

_PROBA_KIND = {
    ("softmax", False): _linear.SOFTMAX,
    ("logistic", True): _linear.LOGISTIC_BINARY,
    ("logistic", False): _linear.LOGISTIC_OVR,
    ("modified_huber", True): _linear.MHUBER_BINARY,
    ("modified_huber", False): _linear.MHUBER_OVR,
}


class _Native:
    """What every family shares: the pipeline's steps and the slow input path."""

    name = "native"

    def __init__(self, model: ir.Model, *, n_threads: int, max_rows: int | None = None):
        pipe = ir.as_pipeline(model)
        self.model = model
        self._owner = pipe.estimator.name
        self._steps: List[Step] = [STEP_COMPILERS[type(s)](s) for s in pipe.steps]
        self._nf = pipe.n_features
        self._nt = max(1, int(n_threads))
        self._max_rows = max_rows
        self._direct = not self._steps and max_rows is None
        # what the input may hold before the steps run: scikit-learn's scalers pass NaN
        # and refuse inf, a Normalizer refuses both; a linear model refuses both
        est = pipe.estimator
        steps_pass_nan = all(isinstance(s, ir.Scaler) for s in pipe.steps)
        self._pre_nan = bool(getattr(est, "allow_nan", False)) and steps_pass_nan
        self._pre_inf = bool(getattr(est, "allow_inf", False)) and not pipe.steps

    def _prepare(self, X):
        """(X checked, X after the steps): the second is a copy when there are steps.
        Non-finite values the pipeline refuses are refused before the steps run (as
        scikit-learn validates first), so no step warns about them."""
        X = Z = check_input(X, self._nf, self._owner, max_rows=self._max_rows)
        if self._steps:
            if not self._pre_nan and np.isnan(X).any():
                raise InputError(f"{self._owner}: Input X contains NaN.")
            if not self._pre_inf and np.isinf(X).any():
                raise InputError(f"{self._owner}: Input X contains infinity or a value too large for "
                                 f"dtype('{X.dtype}').")
            Z = X.copy()  # never write into the caller's array
            for step in self._steps:
                Z = step(Z)
        return X, Z

    @staticmethod
    def _rows(X) -> int:
        return X.shape[0] if type(X) is np.ndarray and X.ndim == 2 else 0

    def _run(self, X, out, kind):
        """Run ``self._k`` (a kernel whose ``run`` returns -1 for a layout it cannot take and
        1 for non-finite input or output) on X, converting X and applying the steps first
        when needed."""
        Z = X
        status = self._k.run(X, out, kind, self._nt) if self._direct and type(X) is np.ndarray else -1
        if status < 0:
            X, Z = self._prepare(X)
            if out.shape[0] != X.shape[0]:
                out = np.empty((X.shape[0],) + out.shape[1:], dtype=out.dtype)
            status = self._k.run(Z, out, kind, self._nt)
        if status > 0:
            # judge the caller's X first (a Normalizer turns inf into NaN), then what the
            # steps made of it (a scaler can overflow float32, which scikit-learn refuses too)
            err = nonfinite_error(X, self._owner)
            if err is None and Z is not X:
                err = nonfinite_error(Z, self._owner)
            if err is not None:
                raise err
        return out


class LinearNative(_Native):
    """A linear model (optionally behind preprocessing steps) on the linear kernel."""

    def __init__(self, model: ir.Model, *, n_threads: int, max_rows: int | None = None):
        super().__init__(model, n_threads=n_threads, max_rows=max_rows)
        est = ir.as_pipeline(model).estimator
        self._k = _linear.LinearKernel(est.coef, est.intercept)
        self._classes = est.classes
        binary = est.is_classifier and est.n_targets == 1
        self._score_cols = est.n_targets
        self._flat_scores = binary or est.flat
        self._is_classifier = est.is_classifier
        self._proba_kind = _PROBA_KIND.get((est.proba, binary))
        if est.proba != "none" and self._proba_kind is None:
            raise UnsupportedModelError(f"the native backend has no kernel for {est.proba!r} "
                                        f"probabilities of a {'binary' if binary else 'multiclass'} model")
        self._proba_cols = 2 if binary else est.n_targets
        self.info = {"kernel": "linear (float64 accumulation)", "n_threads": self._nt}

    # ------------------------------------------------------------------ public
    def _scores(self, X):
        n = self._rows(X)
        shape = (n,) if self._flat_scores else (n, self._score_cols)
        return self._run(X, np.empty(shape), _linear.SCORES)

    def decision_function(self, X):
        if not self._is_classifier:
            raise MethodUnavailableError(f"{self._owner} is a regressor and has no decision_function")
        return self._scores(X)

    def predict(self, X):
        if not self._is_classifier:
            return self._scores(X)
        idx = self._run(X, np.empty(self._rows(X), dtype=np.intp), _linear.ARGMAX)
        return self._classes.take(idx)

    def predict_proba(self, X):
        if self._proba_kind is None:
            raise MethodUnavailableError(f"{self._owner} has no predict_proba")
        return self._run(X, np.empty((self._rows(X), self._proba_cols)), self._proba_kind)


def _inf_in(Z: np.ndarray, columns: np.ndarray, cmp_dtype) -> bool:
    """Whether a column of ``columns`` (bool mask) holds +-inf as the comparison sees it."""
    with np.errstate(over="ignore"):
        sub = np.asarray(Z)[:, columns]
        return bool(np.isinf(sub.astype(cmp_dtype) if cmp_dtype is not None else sub).any())


_POSTS = {"proba": _trees.POST_NONE, "logistic": _trees.POST_SIGMOID, "softmax": _trees.POST_SOFTMAX}


class ForestNative(_Native):
    """A tree ensemble (optionally behind preprocessing steps) on the tree kernel."""

    def __init__(self, model: ir.Model, *, n_threads: int, max_rows: int | None = None):
        super().__init__(model, n_threads=n_threads, max_rows=max_rows)
        est = ir.as_pipeline(model).estimator
        self._setup(est, build_plan(est))

    def _setup(self, est: ir.TreeEnsemble, plan) -> None:
        """What every tree runner derives from the ensemble and its compiled plan."""
        self._est = est
        self._plan = plan
        self._k = self._plan.kernel
        self._T = est.n_targets
        self._methods = est.methods()
        self._classes = est.classes
        self._scan = not (est.allow_nan and est.allow_inf) or est.inf_refused is not None
        # (output width, column of the raw score, kernel transform) of predict_proba
        self._proba = None
        if "predict_proba" in self._methods:
            self._proba = ((2, 1, _trees.POST_LOGISTIC2) if est.post == "logistic" and self._T == 1
                           else (self._T, 0, _POSTS[est.post]))
        self._cmp_dtype = np.dtype(np.float32) if est.compare == "float32" else None
        deep = self._plan.max_depth > _trees.LOCKSTEP_MAX
        self.info = {"kernel": f"trees: {est.n_trees} trees, {est.n_nodes} nodes, max depth "
                               f"{self._plan.max_depth}; "
                               + ("rows walk each tree to its leaf (trees deeper than "
                                  f"{_trees.LOCKSTEP_MAX} levels)" if deep else
                                  "single rows walk 16 trees in lockstep; batches walk each tree "
                                  "with 8 rows in lockstep (2 x 16 rows in AVX-512 lanes for "
                                  "float32 input where the CPU has AVX-512)"),
                     "compare": est.compare, "n_threads": self._nt,
                     # live: the plan's arrays built on first use so far (nodes32, nodes64, local_id)
                     "plan_built": plan.built}

    def _refusal(self, found: int, Z: np.ndarray):
        est = self._est
        if found & 1 and not est.allow_nan:
            return InputError(f"{self._owner}: Input X contains NaN.")
        if found & 2 and (not est.allow_inf or (est.inf_refused is not None and _inf_in(Z, est.inf_refused,
                                                                                      self._cmp_dtype))):
            dtype = self._cmp_dtype or Z.dtype
            return InputError(f"{self._owner}: Input X contains infinity or a value too large for "
                              f"dtype('{dtype}').")
        return None

    def _raw(self, X, width: int, col: int = 0, leaves: bool = False, post: int = 0):
        """(raw scores, or probabilities with ``post``, in ``out[:, col:col+T]`` of an (n, width)
        array; leaves or None)."""
        n = self._rows(X)
        out = np.empty((n, width))
        lv = np.empty((n, self._k.n_trees), dtype=np.int32) if leaves else None
        status = self._k.run(X, out, col, lv, self._nt, self._scan, post) if self._direct else -1
        if status < 0:
            X, Z = self._prepare(X)
            if out.shape[0] != X.shape[0]:
                out = np.empty((X.shape[0], width))
                lv = np.empty((X.shape[0], self._k.n_trees), dtype=np.int32) if leaves else None
            status = self._k.run(Z, out, col, lv, self._nt, self._scan, post)
        else:
            Z = X
        if status > 0:
            err = self._refusal(status, Z)
            if err is not None:
                raise err
            self._k.run(Z, out, col, lv, self._nt, False, post)
        return out, lv

    def _need(self, method: str) -> None:
        if method not in self._methods:
            what = " is a regressor and" if method == "decision_function" and not self._est.is_classifier else ""
            raise MethodUnavailableError(f"{self._owner}{what} has no {method}")

    # ------------------------------------------------------------------ public
    def raw(self, X) -> np.ndarray:
        """``base + sum of leaf values`` (averaged for forests): (n, n_targets)."""
        return self._raw(X, self._T)[0]

    def apply(self, X) -> np.ndarray:
        _, lv = self._raw(X, self._T, leaves=True)
        return self._plan.local_id.take(lv).astype(np.int64, copy=False)

    def predict_proba(self, X) -> np.ndarray:
        if self._proba is None:
            self._need("predict_proba")
        width, col, post = self._proba
        return self._raw(X, width, col, post=post)[0]

    def score_samples(self, X) -> np.ndarray:
        self._need("score_samples")
        raw = self.raw(X)[:, 0]
        return -(2.0 ** (-(raw / self._est.post_params[0])))

    def decision_function(self, X) -> np.ndarray:
        self._need("decision_function")
        if self._est.post == "isolation":
            return self.score_samples(X) - self._est.post_params[1]
        raw = self.raw(X)
        return raw.reshape(-1) if self._T == 1 else raw

    def predict(self, X) -> np.ndarray:
        rule = self._est.predict_rule
        if rule == "value":
            raw = self.raw(X)
            if self._est.post == "exp":  # the inverse of a log link (poisson, gamma)
                np.exp(raw, out=raw)
            return raw.reshape(-1) if self._est.flat else raw
        if rule == "isolation":
            return np.where(self.decision_function(X) < 0, -1, 1)
        if rule in ("ge0", "gt0"):
            s = self.raw(X)[:, 0]
            return self._classes.take((s >= 0) if rule == "ge0" else (s > 0))
        scores = self.predict_proba(X) if rule == "argmax_proba" else self.raw(X)
        return self._classes.take(scores.argmax(axis=1))


class SVMNative(_Native):
    """A kernel SVM (optionally behind preprocessing steps) on the SVM kernel."""

    def __init__(self, model: ir.Model, *, n_threads: int, max_rows: int | None = None):
        super().__init__(model, n_threads=n_threads, max_rows=max_rows)
        est = ir.as_pipeline(model).estimator
        self._k = _svm.SVMKernel(est.support_vectors, est.dual_coef, est.intercept, self._counts(est),
                                 est.kernel, est.gamma, est.coef0, int(est.degree), est.prob_a, est.prob_b)
        self._setup(est)
        how = ("folded into one float64 weight vector per pair" if est.kernel == "linear" else
               "8x16 tiles of float64 dot products fused with the kernel function and the dual-coefficient sums")
        self.info = {"kernel": f"svm {est.kernel}: {how}",
                     "n_support_vectors": est.n_sv, "n_threads": self._nt}

    @staticmethod
    def _counts(est) -> list:
        """Support vectors per class as the kernels take them (one row of coefficients: [n_sv])."""
        return est.n_support if est.is_classifier else [est.n_sv]

    def _setup(self, est) -> None:
        """What every SVM runner derives from the model (the float and int8 kernels share their
        output kinds, from kernels/_svm_decl.pxd)."""
        self._est, self._methods, self._classes = est, est.methods(), est.classes
        k = est.n_classes
        # decision_function: libsvm's pair values (negated for a binary classifier, as
        # scikit-learn does), or scikit-learn's one-vs-rest scores
        if not est.is_classifier or k == 2:
            self._decision = (_svm.NEG if k == 2 else _svm.RAW, None)
        else:
            self._decision = (_svm.OVR, k) if est.decision_shape == "ovr" else (_svm.RAW, est.n_pairs)
        self._predict = _svm.TIES if est.break_ties and est.decision_shape == "ovr" and k > 2 else _svm.VOTE

    def _need(self, method: str) -> None:
        if method not in self._methods:
            what = " is a regressor and" if method == "decision_function" else ""
            raise MethodUnavailableError(f"{self._owner}{what} has no {method}")

    def _raw(self, X) -> np.ndarray:
        return self._run(X, np.empty(self._rows(X)), _svm.RAW)

    def decision_function(self, X) -> np.ndarray:
        self._need("decision_function")
        kind, cols = self._decision
        return self._run(X, np.empty(self._rows(X)) if cols is None else np.empty((self._rows(X), cols)), kind)

    def predict(self, X) -> np.ndarray:
        kind = self._est.kind
        if kind == "regressor":
            return self._raw(X)
        if kind == "one_class":
            return np.where(self._raw(X) > 0, 1, -1)
        return self._classes.take(self._run(X, np.empty(self._rows(X), dtype=np.intp), self._predict))

    def predict_proba(self, X) -> np.ndarray:
        self._need("predict_proba")
        return self._run(X, np.empty((self._rows(X), self._est.n_classes)), _svm.PROBA)

    def score_samples(self, X) -> np.ndarray:
        self._need("score_samples")
        return self._raw(X) + self._est.offset


class _DenseNative(_Native):
    """What the MLP and k-means runners share with the linear one: the fast path for arrays in
    kernel layout, the slow path through the input checks and steps, and the refusal of NaN /
    inf the kernel reports."""

    _run = LinearNative._run


class MLPNative(_DenseNative):
    """A multi-layer perceptron (optionally behind preprocessing steps) on the dense kernel."""

    def __init__(self, model: ir.Model, *, n_threads: int, max_rows: int | None = None):
        super().__init__(model, n_threads=n_threads, max_rows=max_rows)
        est = ir.as_pipeline(model).estimator
        self._est = est
        self._k = _dense.MLPKernel(list(est.weights), list(est.biases), est.activation,
                                   est.out_activation, est.precision == "float32")
        self._K = est.n_outputs
        self._classes = est.classes
        self._binary = est.is_classifier and not est.multilabel and est.n_outputs == 1
        sizes = " -> ".join(str(w.shape[0]) for w in est.weights) + f" -> {self._K}"
        self.info = {"kernel": f"dense: MLP {sizes}, {est.activation}; 8-row x 2-vector register "
                               f"blocks, a GEMV for single rows",
                     "precision": ("float32 for float32 input, else float64" if est.precision == "float32"
                                   else "float64"),
                     "n_threads": self._nt}

    def predict_proba(self, X):
        if not self._est.is_classifier:
            raise MethodUnavailableError(f"{self._owner} is a regressor and has no predict_proba")
        n = self._rows(X)
        if self._binary:
            return self._run(X, np.empty((n, 2)), _dense.BINARY)
        return self._run(X, np.empty((n, self._K)), _dense.VALUES)

    def predict(self, X):
        n = self._rows(X)
        est = self._est
        if est.is_classifier and not est.multilabel:
            return self._classes.take(self._run(X, np.empty(n, dtype=np.intp), _dense.ARGMAX))
        values = self._run(X, np.empty((n, self._K)), _dense.VALUES)
        if est.multilabel:  # scikit-learn's LabelBinarizer: p > 0.5, as int
            return (values > 0.5).astype(int)
        return values.reshape(-1) if est.flat else values


class KMeansNative(_DenseNative):
    """Nearest-centroid assignment and distances (optionally behind preprocessing steps)."""

    def __init__(self, model: ir.Model, *, n_threads: int, max_rows: int | None = None):
        super().__init__(model, n_threads=n_threads, max_rows=max_rows)
        est = ir.as_pipeline(model).estimator
        self._f32 = est.precision == "float32"
        self._k = _dense.KMeansKernel(est.centers, self._f32)
        self._K = est.n_clusters
        self.info = {"kernel": f"dense: {est.n_clusters} centers x {est.n_features} features, "
                               "first argmin of ||c||^2 - 2 x.c (8-row x 2-vector register blocks)",
                     "precision": ("float32 for float32 input, else float64" if self._f32 else "float64")
                     + "; transform in float64",
                     "n_threads": self._nt}

    def predict(self, X):
        return self._run(X, np.empty(self._rows(X), dtype=np.int32), _dense.LABELS)

    def transform(self, X):
        out = self._run(X, np.empty((self._rows(X), self._K)), _dense.DISTANCES)
        # scikit-learn returns float32 distances for float32 input and centers (only a
        # float32 array stays float32 through the input checks)
        f32 = self._f32 and isinstance(X, np.ndarray) and X.dtype == np.float32
        return out.astype(np.float32) if f32 else out


RUNNERS = {ir.Linear: LinearNative, ir.TreeEnsemble: ForestNative, ir.KernelSVM: SVMNative,
           ir.MLP: MLPNative, ir.Centroids: KMeansNative}


@register("native")
def NativeBackend(model: ir.Model, *, n_threads: int, max_rows: int | None = None, **_):
    """The native backend for ``model``: the runner of its estimator's family."""
    est = ir.as_pipeline(model).estimator
    runner = RUNNERS.get(type(est))
    if runner is None:
        raise UnsupportedModelError(f"the native backend cannot run {type(est).__name__} yet")
    return runner(model, n_threads=n_threads, max_rows=max_rows)


from . import native_int8  # noqa: E402,F401  (the int8 runners register themselves in RUNNERS)
from . import native_qtrees  # noqa: E402,F401  (so does the quantized-trees runner)
from . import native_qsvm  # noqa: E402,F401  (and the int8 kernel-SVM runner)
