"""Backends, registered by name in one table.

A backend is constructed with ``(model, *, n_threads, ...)`` where ``model`` is
the IR (and, for ONNX Runtime, the ONNX graph or the source estimator), and
offers ``predict``, ``predict_proba`` and ``decision_function`` with
scikit-learn's shapes plus an ``info`` dict for ``Predictor.backend_info``.
"""
from __future__ import annotations

from typing import Dict

from ..errors import InvalidOptionError

BACKENDS: Dict[str, type] = {}


def register(name: str):
    def deco(cls):
        if name in BACKENDS:
            raise ValueError(f"backend {name!r} is already registered")
        BACKENDS[name] = cls
        return cls

    return deco


def get_backend(name: str) -> type:
    from importlib import import_module

    if name not in BACKENDS:
        module = {"native": "native", "onnxruntime": "ort"}.get(name)
        if module is not None:
            import_module(f"{__name__}.{module}")
    try:
        return BACKENDS[name]
    except KeyError:
        raise InvalidOptionError(f"unknown backend {name!r}; choose 'auto', 'native' or 'onnxruntime'") from None
