"""Frontends and exporters: scikit-learn objects and ONNX graphs in, ONNX out.

``import_model(estimator)`` and ``from_onnx(model)`` build fastml's IR;
``to_onnx(estimator)`` writes ONNX through skl2onnx.
"""
from .sklearn_import import import_model
from . import sklearn_trees  # noqa: F401  (registers the tree frontends)
from . import gbm_import  # noqa: F401  (registers LightGBM and XGBoost; imports neither)
from . import sklearn_svm  # noqa: F401  (registers the kernel SVM frontends)
from . import sklearn_nn  # noqa: F401  (registers MLPs and k-means)
from .onnx_export import to_onnx


def from_onnx(model):
    """Read an ONNX model (ModelProto, bytes or path) into fastml's IR."""
    from .onnx_import import from_onnx as _from_onnx

    return _from_onnx(model)


__all__ = ["import_model", "from_onnx", "to_onnx"]
