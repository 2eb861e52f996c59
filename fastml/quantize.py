"""Quantization: float IR -> quantized IR, with a measured report.

``quantize(model, "int8", calibration=None)`` returns ``(quantized IR, report)``:

* linear models and MLPs (:class:`~fastml.ir_quant.QLinear`,
  :class:`~fastml.ir_quant.QMLP`): int8 weights with one symmetric scale per
  output column; activations uint8 with a zero point, quantized per row as
  they arrive (dynamic), or with one range per layer taken from calibration
  rows (static: the minimum and maximum each layer's input reaches on them, as
  ONNX Runtime's MinMax calibrator takes them); int32 sums. Linear models by
  default quantize each row in two uint8 passes (``residual``, see below); MLPs in
  one. The native backend
  runs them on ``kernels/_int8.pyx`` (AVX-512 VNNI where the CPU has it); the
  onnxruntime backend runs the same float model through ONNX Runtime's own
  ``quantize_dynamic`` / ``quantize_static`` (QDQ), so the two can be compared.
* tree ensembles (:class:`~fastml.ir_qtrees.QTrees`): thresholds as per-feature
  indexes, rows binned to uint16 once (lossless: see :mod:`fastml.ir_qtrees`).
* kernel SVMs (:class:`~fastml.ir_qsvm.QKernelSVM`): int8 support vectors with
  one symmetric scale per vector, rows uint8 per row, only the cross term x.s
  quantized (lossy: see ``kernels/src/fm_qsvm.h``); sizes against the float64
  the float SVM kernel holds.

Residual activation pass (default for linear models)
----------------------------------------------------
One uint8 pass rounds each activation by up to s/2 (s = the row's range / 255):
on the benchmark's linear workload (LogisticRegression, 100 features, 10
near-tied classes) that is the larger share of the score error (rms 0.018
against 0.012 from the int8 weights; 98.64% label agreement with both, 99.07%
with the activations alone). With ``residual=True`` the kernel also quantizes
the rounding residual of each row, ``x ~ s (u - z) + s / 256 (v - 128)``, and
takes a second int32 dot product of ``v`` with the same int8 weights (same
weight loads, int8 weights unchanged): the activation error drops ~256x, the
score error is the weights' alone (max |score diff| 0.17 -> 0.06, agreement
98.64% -> 99.30% on the benchmark rows). It costs ~30% of the linear kernel's
time at batch 10,000 (still faster than ONNX Runtime int8 at every batch of the
benchmark) and doubles an MLP's int8 work (MLPs: off by default, opt in with
``residual=True``). ``residual=False`` gives the one-pass scheme.

Exact argmax for int8 linear models (opt-in)
--------------------------------------------
With ``quantize(..., exact_argmax=True)`` a :class:`~fastml.ir_quant.QLinear`
keeps its float64 coefficients next to the int8 ones (the default, ``False``,
is plain int8: 4x smaller than float32, no recheck). For every row the int8 kernel then bounds, from the
quantization steps, how far each int8 score can lie from the float kernel's:

    |f_c - y_c| <= E ||w_c||_1 + ||x^||_1 max_k |w_ck - w^_ck| + 1e-6 (...)

with E the row's largest activation rounding error (s/2 for a dynamic row of
scale s, plus float32 slack; measured per element for static ranges and with the
residual pass, where it is ~s/512), x^ the
dequantized row, w^ the int8 weights as scaled; the last term covers the
float32 epilogue and the float kernel's own rounding (derivation in
``kernels/src/fm_int8.h``). A row whose top int8 score minus its bound is
not above every other score plus its bound (binary: ``|y| <= bound``) could
change label: the kernel recomputes it from the input with the float
coefficients, with the float linear kernel's own loops, in the same C call.
So ``predict`` equals the float model's ``predict`` on every row, by
construction. ``tolerance=(rtol, atol)`` (e.g. ``ORT_TOLERANCE = (1e-2,
0.05)``, ONNX Runtime's quantization tests' tolerance; default ``None``:
labels only) also recomputes rows whose returned values could lie beyond
``atol + rtol |f|`` from the float model's: scores directly, softmax /
logistic probabilities through ``p / p^ in [e^-2B, e^2B]`` (B the row's
largest score bound). It is not the default: the bound is a worst case over
the rounding of every feature, about 5-10x the typical error at 64-100
features, so on the digits and benchmark workloads it rechecks (nearly) every
row's probabilities and the int8 model runs at float speed or slower. The
labels-only guard rechecks the rows near a tie (0.3-4% on digits, about 45% on
the benchmark's 10 near-tied classes). The report records the fraction of
rows recomputed. It is opt-in because on near-tied classes it costs the
int8 model its speed (the benchmark: ~50% of rows rechecked, 2x the plain
int8 time) and always its size. Cost: the float64
coefficients (8 bytes per weight, counted in ``bytes_quantized`` and shown as
``bytes_guard``: the int8 model is then larger than the float32 one; it is
faster, not smaller), and per row one pass over its uint8 codes plus O(n_targets)
work; rechecked rows cost one float row each. The guard lives in the native
kernel: the onnxruntime int8 backend and ``Predictor.save`` (ONNX Runtime's
own int8 graph) have no guard. Through ``Predictor``, ``quantize="int8"`` gets
the defaults (no guard); for the guard quantize with this function and pass
the IR to ``Predictor``.

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
    hold them: the float model in float32, the quantized one as stored
    (``bytes_guard``: the float64 coefficients an exact-argmax linear model keeps,
    included in ``bytes_quantized``). ``guard``: what the exact-argmax guard
    certifies ("off" without one); ``recheck_labels`` / ``recheck_values``:
    fraction of the rows whose ``predict`` / ``compared`` output the guard
    recomputed in float (``None`` without a guard or without rows).
    ``activation_passes``: 2 when the rows were quantized with the residual pass
    (codes and residual codes, linear and MLP), else 1.
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
    guard: str = "off"
    recheck_labels: Optional[float] = None
    recheck_values: Optional[float] = None
    bytes_guard: int = 0
    activation_passes: int = 1

    @property
    def size_ratio(self) -> float:
        return self.bytes_float / max(self.bytes_quantized, 1)

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["size_ratio"] = round(self.size_ratio, 2)
        return d

    def __str__(self) -> str:
        r = self.size_ratio
        size = (f"{self.bytes_float:,} -> {self.bytes_quantized:,} bytes "
                + (f"({r:.1f}x smaller)" if r >= 1 else f"({1 / r:.1f}x larger)"))
        if self.bytes_guard:
            size += f", of which {self.bytes_guard:,} the guard's float64 coefficients"
        guard = "" if self.guard == "off" else f"; guard: {self.guard}"
        if self.rows == 0:
            return f"{self.scheme} ({self.activations}): {size}; agreement not measured (no rows given){guard}"
        agree = "" if self.agreement is None else f"labels agree {self.agreement:.2%}, "
        if self.recheck_values is not None:
            guard += (f" (rows recomputed in float: {self.recheck_values:.2%} of {self.compared}"
                      + ("" if self.recheck_labels is None else f", {self.recheck_labels:.2%} of predict") + ")")
        return (f"{self.scheme} ({self.activations}): {agree}max |diff| {self.max_abs_diff:.3g}, mean |diff| "
                f"{self.mean_abs_diff:.3g} ({self.compared}, {self.rows:,} {self.data}); {size}{guard}")


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


def _quantize_linear(est: ir.Linear, ranges, exact_argmax: bool = False, tolerance=None,
                     residual: bool = True) -> QLinear:
    Q, scale = quantize_columns(est.coef.T)
    return QLinear(coef_q=np.ascontiguousarray(Q.T), coef_scale=scale, intercept=est.intercept,
                   is_classifier=est.is_classifier, classes=est.classes, proba=est.proba, flat=est.flat,
                   input_ranges=ranges, name=est.name,
                   float_coef=np.asarray(est.coef, dtype=np.float64) if exact_argmax else None,
                   tolerance=tolerance if exact_argmax else None, residual=residual)


def activation_description(est) -> str:
    """How a QLinear's / QMLP's activations are quantized, in words."""
    what = "uint8 activations, ranges from calibration" if est.input_ranges is not None \
        else "uint8 activations per row"
    return what + (", two passes (codes + residual codes)" if est.residual else ", one pass")


def _passes(est) -> int:
    return 2 if isinstance(est, (QLinear, QMLP, QKernelSVM)) and est.residual else 1


def guard_description(est) -> str:
    """What a quantized estimator's exact-argmax guard certifies ("off" without one)."""
    if not isinstance(est, QLinear) or est.float_coef is None:
        return "off"
    what = "labels equal the float model's" if est.is_classifier else "no labels (a regressor)"
    if est.tolerance is not None:
        what += f"; values within atol {est.tolerance[1]:g} + rtol {est.tolerance[0]:g} |float|"
    return what + " (uncertain rows recomputed in float)"


def _quantize_mlp(est: ir.MLP, ranges, residual: bool = False) -> QMLP:
    qs = [quantize_columns(W) for W in est.weights]
    return QMLP(weights_q=tuple(q for q, _ in qs), weight_scales=tuple(s for _, s in qs), biases=est.biases,
                activation=est.activation, out_activation=est.out_activation, is_classifier=est.is_classifier,
                classes=est.classes, multilabel=est.multilabel, flat=est.flat, input_ranges=ranges,
                name=est.name, residual=residual)


def _param_bytes(est) -> Tuple[int, int]:
    """(float32 bytes of the float model's parameters, bytes of the quantized model's)."""
    if isinstance(est, (QTrees, QKernelSVM)):
        return est.param_bytes()
    if isinstance(est, QLinear):
        k, f = est.coef_q.shape
        return 4 * (k * f + k), k * f + 4 * 2 * k + _guard_bytes(est)
    if isinstance(est, QMLP):
        fl = sum(4 * (q.size + q.shape[1]) for q in est.weights_q)
        qu = sum(q.size + 4 * 2 * q.shape[1] for q in est.weights_q)
        return fl, qu
    raise UnsupportedModelError(f"no size rule for {type(est).__name__}")


def _guard_bytes(est) -> int:
    """The exact-argmax guard's float64 coefficients and intercept."""
    if not isinstance(est, QLinear) or est.float_coef is None:
        return 0
    k, f = est.coef_q.shape
    return 8 * (k * f + k)


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


#: ONNX Runtime's quantization tests' (rtol, atol): a value tolerance the guard can certify
#: (``quantize(..., tolerance=ORT_TOLERANCE)``; not the default, see the module docstring)
ORT_TOLERANCE = (1e-2, 0.05)
_DEFAULT = object()


def _tolerance(exact_argmax, tolerance):
    if not isinstance(exact_argmax, (bool, np.bool_)):
        raise InvalidOptionError(f"exact_argmax must be True or False, got {exact_argmax!r}")
    if tolerance is _DEFAULT:  # labels only: the value certificate rechecks too many rows to be the default
        return None
    if tolerance is None:
        return None
    if not exact_argmax:
        raise InvalidOptionError("tolerance needs exact_argmax=True (the guard recomputes rows with the float "
                                 "coefficients, which exact_argmax=False drops)")
    try:
        rtol, atol = (float(v) for v in tolerance)
    except (TypeError, ValueError):
        raise InvalidOptionError(f"tolerance must be (rtol, atol), got {tolerance!r}") from None
    if not (np.isfinite(rtol) and np.isfinite(atol) and rtol >= 0 and atol >= 0):
        raise InvalidOptionError(f"tolerance (rtol, atol) must be finite and >= 0, got {tolerance!r}")
    return rtol, atol


def quantize(model, scheme: str = "int8", *, calibration=None, n_threads: int = 1, exact_argmax: bool = False,
             tolerance=_DEFAULT, residual: Optional[bool] = None):
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
    exact_argmax : bool
        Linear models: keep the float64 coefficients so that the native int8 kernel
        recomputes in float every row whose label could differ from the float model's
        (see "Exact argmax" above). ``False`` (default): plain int8 (4x smaller than float32).
        Other families ignore it.
    tolerance : (rtol, atol) or None
        Linear models with ``exact_argmax``: also recompute rows whose returned values
        (scores, probabilities) could lie beyond ``atol + rtol |float|`` (e.g.
        ``ORT_TOLERANCE``); default ``None``: labels only.
    residual : bool or None
        Linear models and MLPs: quantize each row in two uint8 passes, codes and residual
        codes (see "Residual activation pass" above). ``None`` (default): on for linear
        models, off for MLPs. Other families ignore it.

    Raises
    ------
    InvalidOptionError
        An unknown scheme, "int8-static" without calibration rows, or for a kernel SVM;
        ``exact_argmax`` or ``residual`` not a bool (or None); a bad ``tolerance``, or one
        with ``exact_argmax=False``.
    UnsupportedModelError
        A model family with no quantized form (k-means).
    """
    if scheme not in SCHEMES:
        raise InvalidOptionError(f"unknown quantization {scheme!r}; choose one of {SCHEMES}")
    tol = _tolerance(exact_argmax, tolerance)
    if residual is not None and not isinstance(residual, (bool, np.bool_)):
        raise InvalidOptionError(f"residual must be True, False or None, got {residual!r}")
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
        linear = isinstance(est, ir.Linear)
        two = linear if residual is None else bool(residual)
        qest = (_quantize_linear(est, ranges, bool(exact_argmax), tol, two) if linear
                else _quantize_mlp(est, ranges, two))
        activations = activation_description(qest)
    elif trees:
        qest = quantize_trees(est)
        activations = "inputs binned to uint16 threshold indexes (lossless)"
    elif isinstance(est, ir.KernelSVM):
        if scheme != "int8":  # rows are quantized per row: there is no static range to calibrate
            raise InvalidOptionError(f"{est.name}: kernel SVMs quantize with \"int8\" only, not {scheme!r}")
        # the rows the model will see, after the pipeline's steps, choose among the rounding
        # variants and whether rows take a second (residual) pass
        qest = quantize_svm(est, calibration=None if X is None else _steps_apply(pipe, X))
        activations = (f"int8{' x2 (vectors + residual panel)' if qest.sv_lo is not None else ''} support vectors, "
                       f"uint8 rows per row in {'two passes' if qest.residual else 'one pass'} (cross term only)")
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
                              bytes_quantized=qb, guard=guard_description(qest), bytes_guard=_guard_bytes(qest),
                              activation_passes=_passes(qest))


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
    n = int(X.shape[0])
    recheck = getattr(q_run, "rechecked", None)
    r_values = recheck(X, what) if recheck is not None else None
    r_labels = recheck(X, "predict") if recheck is not None and est.is_classifier else None
    if not activations and isinstance(est, (QLinear, QMLP)):
        activations = activation_description(est)
    return QuantizationReport(scheme=scheme, activations=activations or "-", compared=what, rows=n,
                              data=data, agreement=agreement, max_abs_diff=float(diff.max()),
                              mean_abs_diff=float(diff.mean()), bytes_float=fb, bytes_quantized=qb,
                              guard=guard_description(est), bytes_guard=_guard_bytes(est),
                              recheck_labels=None if r_labels is None else r_labels / n,
                              recheck_values=None if r_values is None else r_values / n,
                              activation_passes=_passes(est))


def quantized_onnx(model, ort_backend=None) -> Optional[bytes]:
    """The int8 ONNX graph of a quantized model (IR): ONNX Runtime's own quantization of it, the
    graph the onnxruntime int8 backend runs (input ``X``, output ``values``: scores of a linear
    model, the last layer after its activation for an MLP; no exact-argmax guard). ``None``
    for float models. ``ort_backend``: that backend where one exists (its graph is reused:
    a static model's QDQ graph needs the calibration rows it was built with).

    Raises
    ------
    UnsupportedModelError
        Quantized trees and kernel SVMs (no ONNX encoding of their quantized form), and an
        "int8-static" model without its onnxruntime backend.
    BackendUnavailableError
        onnxruntime.quantization is not installed.
    """
    if model is None:
        return None
    est = ir.as_pipeline(model).estimator
    if isinstance(est, (QTrees, QKernelSVM)):
        raise UnsupportedModelError(
            f"{est.name}: the {type(est).__name__} quantized form has no ONNX representation (ONNX has no "
            "operator for its uint16-binned trees / uint8-row SVM kernel); save the float model instead: "
            "fastml.Predictor(estimator).save(path)")
    if not isinstance(est, (QLinear, QMLP)):
        return None
    data = getattr(ort_backend, "onnx_bytes", None)
    if data is not None:
        return data
    if est.input_ranges is not None:
        raise UnsupportedModelError(
            f"{est.name}: an int8-static model's ONNX graph is ONNX Runtime's quantize_static over the "
            "calibration rows, which fastml does not keep; create the Predictor with backend='auto' or "
            "'onnxruntime' (and calibration=X) to save it")
    from .backends.ort_int8 import ort_quantized
    from .errors import BackendUnavailableError

    try:
        return ort_quantized(model)[0]
    except ImportError as e:
        raise BackendUnavailableError(f"saving an int8 model needs onnxruntime.quantization: {e}") from None


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
