"""Typed errors raised by fastml.

Every error fastml raises on purpose derives from :class:`FastMLError`, and
also from the builtin that scikit-learn would raise in the same situation
(``ValueError`` for bad input, ``TypeError`` for unsupported models), so
existing ``except ValueError`` handlers keep working.
"""


class FastMLError(Exception):
    """Base class of every error fastml raises on purpose."""


class InputError(FastMLError, ValueError):
    """The input array cannot be used with this model (shape, dtype, NaN/inf)."""


class InvalidModelError(FastMLError, ValueError):
    """A model is malformed: inconsistent shapes, out-of-range ids, bad attributes."""


class UnsupportedModelError(FastMLError, TypeError):
    """A model, estimator or ONNX operator that fastml cannot run (yet)."""


class BackendUnavailableError(FastMLError, RuntimeError):
    """A requested backend or device is not available on this machine."""


class NotFittedError(InvalidModelError, AttributeError):
    """The estimator passed to fastml has not been fitted (a ValueError and an
    AttributeError, like scikit-learn's NotFittedError)."""


class InvalidOptionError(FastMLError, ValueError):
    """An unknown option value: a backend or device name fastml does not know."""


class MethodUnavailableError(FastMLError, AttributeError):
    """The model has no such method (``predict_proba`` of a LinearSVC, say)."""
