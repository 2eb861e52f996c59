"""Quantized model IR: the int8 forms of linear models and MLPs.

Built by :func:`fastml.quantize.quantize` from the float IR of :mod:`fastml.ir`,
and run by the native backend's int8 kernel (``kernels/_int8.pyx``) or, through
an ONNX graph quantized by ONNX Runtime's own tools, by the onnxruntime backend.

The scheme (see ``kernels/src/fm_int8.h``): weights are int8 in [-127, 127]
with one float scale per output column (symmetric, ``W ~ scale * Q``);
activations are uint8 with a scale and a zero point, chosen per row from the
row's range (dynamic) or fixed per layer from calibration data
(``input_ranges``: the ``[lo, hi]`` each layer's input is clamped to); sums
of products are exact int32. With ``residual`` (the default of
:class:`QLinear`, off for :class:`QMLP`) each row is quantized in two uint8
passes, its codes ``u`` and the codes ``v`` of their rounding residual,
``x ~ s (u - z) + s / 256 (v - 128)``: two int32 dot products against the same
int8 weights, activation rounding ~256x smaller, weights unchanged.
``dequantized()`` gives the float IR whose weights are exactly ``scale * Q``
(what the int8 model approximates apart from its activation rounding).

A :class:`QLinear` may also hold its float coefficients (``float_coef``, the
float64 ones it was quantized from): then the native int8 kernel bounds each
row's score error and recomputes in float the rows whose label (and, with
``tolerance``, whose values) could differ from the float model's (see
:mod:`fastml.quantize`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from . import ir
from .errors import InvalidModelError

#: the kernel's int32 sums hold 255 * 127 * n_inputs for fewer inputs than this
MAX_INPUTS = 66000


def _int8_matrix(name: str, q, owner: str) -> np.ndarray:
    a = np.asarray(q)
    if a.ndim != 2 or a.dtype != np.int8:
        raise InvalidModelError(f"{owner}: {name} must be a 2-D int8 array, got {a.dtype} {a.shape}")
    if np.any(a == -128):
        raise InvalidModelError(f"{owner}: {name} holds -128; symmetric int8 weights lie in [-127, 127]")
    return a


def _scales(name: str, s, n: int, owner: str) -> np.ndarray:
    a = np.asarray(s)
    if a.shape != (n,) or a.dtype != np.float64 or not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise InvalidModelError(f"{owner}: {name} must be {n} finite float64 values > 0, got {a.dtype} {a.shape}")
    return a


def _flag(name: str, v, owner: str) -> None:
    if not isinstance(v, (bool, np.bool_)):
        raise InvalidModelError(f"{owner}: {name} must be True or False, got {v!r}")


def _ranges(r, n_layers: int, owner: str) -> Optional[np.ndarray]:
    if r is None:
        return None
    a = np.asarray(r)
    if a.shape != (n_layers, 2) or a.dtype != np.float64 or not np.all(np.isfinite(a)) \
            or np.any(a[:, 0] > a[:, 1]):
        raise InvalidModelError(f"{owner}: input_ranges must be finite float64 [lo, hi] rows (lo <= hi), "
                                f"one per layer: shape ({n_layers}, 2), got {a.dtype} {a.shape}")
    return a


@dataclass(frozen=True)
class QLinear:
    """A linear model with int8 coefficients: ``coef ~ coef_scale[:, None] * coef_q``.

    Everything else (classes, ``proba``, ``flat``) means what it means in
    :class:`fastml.ir.Linear`. ``float_coef`` (the float64 coefficients) turns on the
    exact-argmax guard; ``tolerance = (rtol, atol)`` (needs ``float_coef``) also certifies
    the values returned. ``residual`` (default True): rows are quantized in two uint8
    passes (see the module docstring); False: one pass.
    """

    coef_q: np.ndarray                    # (n_targets, n_features) int8
    coef_scale: np.ndarray                # (n_targets,) float64 > 0
    intercept: np.ndarray                 # (n_targets,) float64
    is_classifier: bool
    classes: Optional[np.ndarray] = None
    proba: str = "none"
    flat: bool = False
    input_ranges: Optional[np.ndarray] = None  # (1, 2) static activation range, or None: per row
    name: str = "Linear"
    float_coef: Optional[np.ndarray] = None    # (n_targets, n_features) float64: the guard's recheck, or None
    tolerance: Optional[Tuple[float, float]] = None  # (rtol, atol) the guard certifies values within, or None
    residual: bool = True                      # activations in two uint8 passes (codes + residual codes)

    @property
    def n_features(self) -> int:
        return int(self.coef_q.shape[1])

    @property
    def n_targets(self) -> int:
        return int(self.coef_q.shape[0])

    def methods(self) -> frozenset:
        return ir.linear_methods(self.is_classifier, self.proba)

    def dequantized(self) -> ir.Linear:
        """The float model with coefficients ``coef_scale * coef_q``."""
        coef = np.asarray(self.coef_scale, dtype=np.float64)[:, None] * np.asarray(self.coef_q, dtype=np.float64)
        return ir.Linear(coef=coef, intercept=np.asarray(self.intercept), is_classifier=self.is_classifier,
                         classes=self.classes, proba=self.proba, flat=self.flat, name=self.name)

    def validate(self) -> "QLinear":
        q = _int8_matrix("coef_q", self.coef_q, self.name)
        s = _scales("coef_scale", self.coef_scale, q.shape[0], self.name)
        if q.shape[1] >= MAX_INPUTS:
            raise InvalidModelError(f"{self.name}: {q.shape[1]} features; the int8 kernel takes fewer than {MAX_INPUTS}")
        self.dequantized().validate()  # intercept, classes, proba and flat rules
        _flag("residual", self.residual, self.name)
        r = _ranges(self.input_ranges, 1, self.name)
        fc = None
        if self.float_coef is not None:
            fc = np.asarray(self.float_coef)
            if fc.shape != q.shape or fc.dtype != np.float64 or not np.all(np.isfinite(fc)):
                raise InvalidModelError(f"{self.name}: float_coef must be finite float64 of shape {q.shape} "
                                        f"(the coefficients the int8 ones approximate), got {fc.dtype} {fc.shape}")
        if self.tolerance is not None:
            t = self.tolerance
            ok = isinstance(t, tuple) and len(t) == 2 and all(
                isinstance(v, (int, float)) and np.isfinite(v) and v >= 0 for v in t)
            if not ok:
                raise InvalidModelError(f"{self.name}: tolerance must be a tuple (rtol, atol) of finite "
                                        f"numbers >= 0, got {t!r}")
            if fc is None:
                raise InvalidModelError(f"{self.name}: tolerance needs float_coef (the guard recomputes "
                                        "rows with the float coefficients)")
        ir._frozen(*(a for a in (q, s, r, fc) if a is not None))
        return self


@dataclass(frozen=True)
class QMLP:
    """A multi-layer perceptron with int8 weights: layer ``i`` computes
    ``f(a @ (weights_q[i] * weight_scales[i]) + biases[i])``, with activations
    rounded to uint8 before each layer (with ``residual``: in two uint8 passes, codes and
    residual codes; off by default: it doubles the int8 work). Fields as in
    :class:`fastml.ir.MLP`."""

    weights_q: Tuple[np.ndarray, ...]     # (n_in, n_out) int8 per layer
    weight_scales: Tuple[np.ndarray, ...]  # (n_out,) float64 > 0 per layer
    biases: Tuple[np.ndarray, ...]        # (n_out,) float64 per layer
    activation: str = "relu"
    out_activation: str = "identity"
    is_classifier: bool = False
    classes: Optional[np.ndarray] = None
    multilabel: bool = False
    flat: bool = False
    input_ranges: Optional[np.ndarray] = None  # (n_layers, 2) static activation ranges, or None
    name: str = "MLP"
    residual: bool = False                     # every layer's input rows in two uint8 passes

    @property
    def n_features(self) -> int:
        return int(self.weights_q[0].shape[0])

    @property
    def n_outputs(self) -> int:
        return int(self.weights_q[-1].shape[1])

    n_targets = n_outputs

    @property
    def n_layers(self) -> int:
        return len(self.weights_q)

    def methods(self) -> frozenset:
        return frozenset({"predict", "predict_proba"} if self.is_classifier else {"predict"})

    def dequantized(self) -> ir.MLP:
        """The float model with weights ``weights_q * weight_scales``."""
        ws = tuple(np.asarray(q, dtype=np.float64) * np.asarray(s, dtype=np.float64)
                   for q, s in zip(self.weights_q, self.weight_scales))
        return ir.MLP(weights=ws, biases=tuple(self.biases), activation=self.activation,
                      out_activation=self.out_activation, is_classifier=self.is_classifier,
                      classes=self.classes, multilabel=self.multilabel, flat=self.flat, name=self.name)

    def validate(self) -> "QMLP":
        qs, ss = tuple(self.weights_q), tuple(self.weight_scales)
        if len(qs) != len(ss):
            raise InvalidModelError(f"{self.name}: {len(qs)} weight matrices but {len(ss)} scale arrays")
        qs = tuple(_int8_matrix(f"weights_q[{i}]", q, self.name) for i, q in enumerate(qs))
        ss = tuple(_scales(f"weight_scales[{i}]", s, q.shape[1], self.name) for i, (q, s) in enumerate(zip(qs, ss)))
        if any(q.shape[0] >= MAX_INPUTS for q in qs):
            raise InvalidModelError(f"{self.name}: a layer has {max(q.shape[0] for q in qs)} inputs; the int8 "
                                    f"kernel takes fewer than {MAX_INPUTS}")
        object.__setattr__(self, "weights_q", qs)
        object.__setattr__(self, "weight_scales", ss)
        self.dequantized().validate()  # shapes, biases, activations, classes
        object.__setattr__(self, "biases", tuple(self.biases))
        _flag("residual", self.residual, self.name)
        r = _ranges(self.input_ranges, len(qs), self.name)
        ir._frozen(*qs, *ss, *(a for a in (r,) if a is not None))
        return self


#: the quantized estimator families, by the float family they come from
QUANTIZED = {ir.Linear: QLinear, ir.MLP: QMLP}
