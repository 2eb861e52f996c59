"""fastml: run trained classical ML models as fast as the hardware allows."""
from . import errors, ir
from .errors import (BackendUnavailableError, FastMLError, InputError, InvalidModelError,
                     MethodUnavailableError, NotFittedError, UnsupportedModelError)
from .predictor import Predictor

__version__ = "0.1.0"

__all__ = ["Predictor", "ir", "errors", "FastMLError", "InputError", "InvalidModelError",
           "UnsupportedModelError", "BackendUnavailableError", "MethodUnavailableError",
           "NotFittedError", "__version__"]
