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


Step = Union[Scaler, Normalizer]
Estimator = Linear


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


Model = Union[Linear, Pipeline]


def as_pipeline(model: Model) -> Pipeline:
    """Every model seen as a pipeline (possibly with no steps)."""
    if isinstance(model, Pipeline):
        return model
    return Pipeline(steps=(), estimator=model, name=model.name)


def replace(obj, **changes):
    """``dataclasses.replace`` re-exported for frontends."""
    return dataclasses.replace(obj, **changes)
