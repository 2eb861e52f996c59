"""Export to ONNX through skl2onnx, with fastml's conventions.

Classifiers are exported without ZipMap (plain tensors out), and
``raw_scores=True`` gives the graph whose second output is the decision
function instead of probabilities.
"""
from __future__ import annotations

import numpy as np

from fastml.errors import UnsupportedModelError


def _final_estimator(est):
    steps = getattr(est, "steps", None)
    return _final_estimator(steps[-1][1]) if steps else est


def to_onnx(estimator, *, n_features: int | None = None, dtype=np.float32, raw_scores: bool = False,
            target_opset: int | None = None):
    """Convert a fitted scikit-learn estimator or pipeline to an ``onnx.ModelProto``.

    Parameters
    ----------
    estimator : fitted scikit-learn estimator or Pipeline
    n_features : int, optional
        Number of input columns; defaults to ``estimator.n_features_in_``.
    dtype : np.float32 or np.float64
        Input tensor type of the graph (skl2onnx writes plain-op graphs for float64).
    raw_scores : bool
        Classifiers: output decision scores instead of probabilities.
    target_opset : int, optional
        Passed to skl2onnx.
    """
    try:
        import skl2onnx
        from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType
    except ImportError as e:  # pragma: no cover - skl2onnx is a declared dependency
        raise UnsupportedModelError("exporting scikit-learn models needs skl2onnx") from e
    n = n_features if n_features is not None else getattr(estimator, "n_features_in_", None)
    if n is None:
        raise UnsupportedModelError(f"{type(estimator).__name__}: pass n_features= (no n_features_in_)")
    tensor = {np.dtype(np.float32): FloatTensorType, np.dtype(np.float64): DoubleTensorType}.get(np.dtype(dtype))
    if tensor is None:
        raise UnsupportedModelError(f"ONNX export supports float32 and float64 inputs, not {np.dtype(dtype)}")
    final = _final_estimator(estimator)
    is_classifier = hasattr(final, "classes_")
    # raw_scores is always passed explicitly: with no option at all for the final
    # classifier, skl2onnx 1.20 fails on Pipeline(..., LinearSVC()).
    wanted = {"zipmap": False, "raw_scores": bool(raw_scores)}
    kwargs = dict(initial_types=[("X", tensor([None, int(n)]))], target_opset=target_opset)
    while True:
        options = {id(final): wanted} if is_classifier and wanted else None
        try:
            return skl2onnx.convert_sklearn(estimator, options=options, **kwargs)
        except NameError as e:
            # skl2onnx refuses options a converter does not declare (LinearSVC has
            # no zipmap, say); drop the option it names and try again.
            unknown = [k for k in wanted if f"Option '{k}'" in str(e)]
            if not unknown:
                raise UnsupportedModelError(f"skl2onnx cannot convert {type(estimator).__name__}: {e}") from e
            wanted = {k: v for k, v in wanted.items() if k not in unknown}
        except Exception as e:
            raise UnsupportedModelError(f"skl2onnx cannot convert {type(estimator).__name__}: {e}") from e
