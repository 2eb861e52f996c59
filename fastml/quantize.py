"""Quantization: float IR -> quantized IR, with a measured report.

``quantize(model, "int8", calibration=None)`` returns ``(quantized IR, report)``:

* linear models and MLPs (:class:`~fastml.ir_quant.QLinear`,
  :class:`~fastml.ir_quant.QMLP`): int8 weights with one symmetric scale per
  output column; activations uint8 with a zero point, quantized per row as
  they arrive (dynamic), or with one range per layer taken from calibration
  rows (static: the minimum and maximum each layer's input reaches on them, as
  ONNX Runtime's MinMax calibrator takes them); int32 sums. The native backend
  runs them on ``kernels/_int8.pyx`` (AVX-512 VNNI where the CPU has it); the
  onnxruntime backend runs the same float model through ONNX Runtime's own
  ``quantize_dynamic`` / ``quantize_static`` (QDQ), so the two can be compared.
* tree ensembles (:class:`~fastml.ir_qtrees.QTrees`): thresholds as per-feature
  indexes, rows binned to uint16 once (lossless: see :mod:`fastml.ir_qtrees`).
* kernel SVMs (:class:`~fastml.ir_qsvm.QKernelSVM`): int8 support vectors with
  one symmetric scale per vector, rows uint8 per row, only the cross term x.s
  quantized (lossy: see ``kernels/src/fm_qsvm.h``); sizes against the float64
  the float SVM kernel holds.

Every quantized model carries a :class:`QuantizationReport`: agreement of
labels with the float model, max and mean absolute difference of its
probabilities (or scores, or values), parameter bytes before and after. It is
measured on rows, never assumed: on the calibration rows when given (or any
rows passed to :func:`measure`), else only the sizes are known.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import numpy as np

from . import ir
from .errors import InputError, InvalidOptionError, UnsupportedModelError
from .ir_qsvm import QKernelSVM, quantize_svm
from .ir_qtrees import QTrees, quantize_trees
from .ir_quant import QUANTIZED, QLinear, QMLP

SCHEMES = ("int8", "int8-static")


@dataclass(frozen=True)
class QuantizationReport:
    """What quantization changed, measured.

    ``agreement``: fraction of rows whose label (classifiers: the argmax) equals
    the float model's; ``max_abs_diff`` / ``mean_abs_diff``: over every entry of
    ``compared`` (``predict_proba``, ``decision_function`` or ``predict``);
    ``None`` where no rows were given. Sizes are the parameters as the kernels
    hold them: the float model in float32, the quantized one as stored.
    """

    scheme: str
    activations: str
    compared: str
    rows: int
    data: str
    agreement: Optional[float]
    max_abs_diff: Optional[float]
    mean_abs_diff: Optional[float]
    bytes_float: int
    bytes_quantized: int

    @property
    def size_ratio(self) -> float:
        return self.bytes_float / max(self.bytes_quantized, 1)

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["size_ratio"] = round(self.size_ratio, 2)
        return d

    def __str__(self) -> str:
        size = f"{self.bytes_float:,} -> {self.bytes_quantized:,} bytes ({self.size_ratio:.1f}x smaller)"
        if self.rows == 0:
            return f"{self.scheme} ({self.activations}): {size}; agreement not measured (no rows given)"
        agree = "" if self.agreement is None else f"labels agree {self.agreement:.2%}, "
        return (f"{self.scheme} ({self.activations}): {agree}max |diff| {self.max_abs_diff:.3g}, mean |diff| "
                f"{self.mean_abs_diff:.3g} ({self.compared}, {self.rows:,} {self.data}); {size}")


# --------------------------------------------------------------------------- weights

def quantize_columns(W: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``W`` (n_in, n_out) as int8 ``Q`` in [-127, 127] and float64 ``scale`` per column, symmetric:
    ``scale = max |W[:, j]| / 127`` (1 for an all-zero column), ``Q = rint(W / scale)``."""
    W = np.asarray(W, dtype=np.float64)
    amax = np.abs(W).max(axis=0)
    scale = np.where(amax > 0, amax / 127.0, 1.0)
    Q = np.clip(np.rint(W / scale), -127, 127).astype(np.int8)
    return Q, scale


def _steps_apply(pipe: ir.Pipeline, X: np.ndarray) -> np.ndarray:
    from .backends.native import STEP_COMPILERS

    Z = np.array(X, dtype=np.float64)
    for step in pipe.steps:
        Z = STEP_COMPILERS[type(step)](step)(Z)
    return Z


_ACT = {"identity": lambda a: a, "relu": lambda a: np.maximum(a, 0), "tanh": np.tanh,
        "logistic": lambda a: 1.0 / (1.0 + np.exp(-a))}


def _input_ranges(pipe: ir.Pipeline, X: np.ndarray) -> np.ndarray:
    """[min, max] of each layer's input over the calibration rows, computed by the float model."""
    est = pipe.estimator
    A = _steps_apply(pipe, X)
    if isinstance(est, ir.Linear):
        return np.array([[A.min(), A.max()]])
    ranges = []
    for i, (W, b) in enumerate(zip(est.weights, est.biases)):
        ranges.append([A.min(), A.max()])
        if i < len(est.weights) - 1:
            with np.errstate(over="ignore"):
                A = _ACT[est.activation](A @ W + b)
    return np.array(ranges, dtype=np.float64)


def _quantize_linear(est: ir.Linear, ranges) -> QLinear:
    Q, scale = quantize_columns(est.coef.T)
    return QLinear(coef_q=np.ascontiguousarray(Q.T), coef_scale=scale, intercept=est.intercept,
                   is_classifier=est.is_classifier, classes=est.classes, proba=est.proba, flat=est.flat,
                   input_ranges=ranges, name=est.name)


def _quantize_mlp(est: ir.MLP, ranges) -> QMLP:
    qs = [quantize_columns(W) for W in est.weights]
    return QMLP(weights_q=tuple(q for q, _ in qs), weight_scales=tuple(s for _, s in qs), biases=est.biases,
                activation=est.activation, out_activation=est.out_activation, is_classifier=est.is_classifier,
                classes=est.classes, multilabel=est.multilabel, flat=est.flat, input_ranges=ranges,
                name=est.name)


def _param_bytes(est) -> Tuple[int, int]:
    """(float32 bytes of the float model's parameters, bytes of the quantized model's)."""
    if isinstance(est, (QTrees, QKernelSVM)):
        return est.param_bytes()
    if isinstance(est, QLinear):
        k, f = est.coef_q.shape
        return 4 * (k * f + k), k * f + 4 * 2 * k
    if isinstance(est, QMLP):
        fl = sum(4 * (q.size + q.shape[1]) for q in est.weights_q)
        qu = sum(q.size + 4 * 2 * q.shape[1] for q in est.weights_q)
        return fl, qu
    raise UnsupportedModelError(f"no size rule for {type(est).__name__}")


# --------------------------------------------------------------------------- public

def _as_ir(model):
    if isinstance(model, ir.ESTIMATORS + (ir.Pipeline,)):
        return model.validate()
    ir_ = getattr(model, "ir", None)  # a Predictor
    if ir_ is not None:
        return ir_
    from fastml.converters import import_model

    return import_model(model)


def _rows(X, n_features: int, what: str, finite: bool = True) -> np.ndarray:
    from ._validation import check_input

    X = check_input(X, n_features, what)
    if finite and not np.all(np.isfinite(X)):
        raise InputError(f"{what}: rows contain NaN or infinity")
    return X


def quantize(model, scheme: str = "int8", *, calibration=None, n_threads: int = 1):
    """Quantize a model: ``(quantized IR, QuantizationReport)``.

    Parameters
    ----------
    model : fitted scikit-learn estimator or Pipeline, fastml IR, or a Predictor
    scheme : {"int8", "int8-static"}
        ``"int8"``: activations quantized per row as they arrive (dynamic);
        ``"int8-static"``: one range per layer from ``calibration`` (cheaper per
        row, but values outside the calibration range are clamped: on held-out
        rows it agrees less with the float model than ``"int8"``).
    calibration : array-like (n_rows, n_features), optional
        Rows like the ones the model will see: the report is measured on them
        (and ``"int8-static"`` takes its ranges from them).
    n_threads : int
        Threads for measuring the report.

    Raises
    ------
    InvalidOptionError
        An unknown scheme, "int8-static" without calibration rows, or for a kernel SVM.
    UnsupportedModelError
        A model family with no quantized form (k-means).
    """
    if scheme not in SCHEMES:
        raise InvalidOptionError(f"unknown quantization {scheme!r}; choose one of {SCHEMES}")
    model_ir = _as_ir(model)
    pipe = ir.as_pipeline(model_ir)
    est = pipe.estimator
    trees = isinstance(est, ir.TreeEnsemble)  # trees take NaN and inf rows
    X = None if calibration is None else _rows(calibration, pipe.n_features, "calibration", finite=not trees)
    if type(est) in QUANTIZED:
        static = scheme == "int8-static"
        if static and X is None:
            raise InvalidOptionError("int8-static quantization needs calibration rows (calibration=X)")
        ranges = _input_ranges(pipe, X) if static else None
        qest = (_quantize_linear if isinstance(est, ir.Linear) else _quantize_mlp)(est, ranges)
        activations = ("uint8 activations, ranges from calibration" if static
                       else "uint8 activations per row")
    elif trees:
        qest = quantize_trees(est)
        activations = "inputs binned to uint16 threshold indexes (lossless)"
    elif isinstance(est, ir.KernelSVM):
        if scheme != "int8":  # rows are quantized per row: there is no static range to calibrate
            raise InvalidOptionError(f"{est.name}: kernel SVMs quantize with \"int8\" only, not {scheme!r}")
        qest = quantize_svm(est)
        activations = "int8 support vectors, uint8 rows per row (cross term only)"
    else:
        raise UnsupportedModelError(f"{est.name}: no quantized form of {type(est).__name__} "
                                    f"(fastml quantizes linear models, MLPs, tree ensembles and kernel SVMs)")
    qest.validate()
    qmodel = ir.Pipeline(steps=pipe.steps, estimator=qest, name=pipe.name).validate() \
        if isinstance(model_ir, ir.Pipeline) else qest
    if X is None:
        report = _sizes_only(qest, scheme, activations)
    else:
        report = measure(model_ir, qmodel, X, n_threads=n_threads, data="calibration rows", scheme=scheme,
                         activations=activations)
    return qmodel, report


def _sizes_only(qest, scheme: str, activations: str) -> QuantizationReport:
    fb, qb = _param_bytes(qest)
    return QuantizationReport(scheme=scheme, activations=activations, compared="-", rows=0, data="-",
                              agreement=None, max_abs_diff=None, mean_abs_diff=None, bytes_float=fb,
                              bytes_quantized=qb)


def _compared(est) -> str:
    m = est.methods()
    if "predict_proba" in m:
        return "predict_proba"
    return "decision_function" if "decision_function" in m else "predict"


def measure(float_model, quantized_model, X, *, n_threads: int = 1, data: str = "rows",
            scheme: str = "int8", activations: str = "") -> QuantizationReport:
    """A :class:`QuantizationReport` of ``quantized_model`` against ``float_model`` on rows ``X``,
    both run on the native backend. Either may be IR or a Predictor."""
    from .backends import get_backend

    f_ir, q_ir = _as_ir(float_model), _as_ir(quantized_model)
    pipe = ir.as_pipeline(q_ir)
    X = _rows(X, pipe.n_features, "measure", finite=not isinstance(pipe.estimator, QTrees))
    native = get_backend("native")
    f_run, q_run = native(f_ir, n_threads=n_threads), native(q_ir, n_threads=n_threads)
    est = pipe.estimator
    what = _compared(est)
    a = np.asarray(getattr(f_run, what)(X), dtype=np.float64)
    b = np.asarray(getattr(q_run, what)(X), dtype=np.float64)
    diff = np.abs(a - b)
    agreement = None
    if est.is_classifier:
        same = np.asarray(f_run.predict(X)) == np.asarray(q_run.predict(X))
        agreement = float(np.mean(same.all(axis=1) if same.ndim == 2 else same))  # multilabel: every label
    fb, qb = _param_bytes(est)
    return QuantizationReport(scheme=scheme, activations=activations or "-", compared=what, rows=int(X.shape[0]),
                              data=data, agreement=agreement, max_abs_diff=float(diff.max()),
                              mean_abs_diff=float(diff.mean()), bytes_float=fb, bytes_quantized=qb)


def quantized_backend(name: str, model) -> Optional[Any]:
    """The backend factory for a quantized model on backend ``name`` (None for float models,
    and for the native backend, whose table already holds the int8 runners)."""
    if model is None or name != "onnxruntime":
        return None
    est = ir.as_pipeline(model).estimator
    if isinstance(est, (QLinear, QMLP)):
        from .backends.ort_int8 import OrtInt8

        return OrtInt8
    return None


# ``fastml.quantize`` is this function (the package exports it); these make
# ``fastml.quantize.measure(...)`` and ``fastml.quantize.QuantizationReport`` work as well
quantize.measure = measure
quantize.QuantizationReport = QuantizationReport
