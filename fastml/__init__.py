"""fastml: run trained classical ML models as fast as the hardware allows."""
import os as _os

# OpenMP threads that spin between parallel regions steal the core from whatever
# else runs there, and a batch then waits on a descheduled thread (10x slower
# on a busy 2-core machine). Sleeping workers cost microseconds per batch call;
# batch-1 calls never start threads. Set before the kernels load libgomp; an
# explicit user setting wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# ...but a short spin (libgomp: ~10k iterations, microseconds) before sleeping: back-to-back
# batch calls then find their threads awake (RandomForest, 100 rows, 2 threads: 227 -> ~110 us)
# while an idle process still gives the cores back at once.
_os.environ.setdefault("GOMP_SPINCOUNT", "10000")
from . import errors, ir
from .errors import (BackendUnavailableError, FastMLError, InputError, InvalidModelError, InvalidOptionError,
                     MethodUnavailableError, NotFittedError, UnsupportedModelError)
from .predictor import Predictor
from .quantize import quantize  # noqa: E402  (the function; fastml.quantize.measure rides on it)

__version__ = "0.1.0"

__all__ = ["Predictor", "quantize", "ir", "errors", "FastMLError", "InputError", "InvalidModelError",
           "UnsupportedModelError", "BackendUnavailableError", "MethodUnavailableError", "InvalidOptionError",
           "NotFittedError", "__version__"]
