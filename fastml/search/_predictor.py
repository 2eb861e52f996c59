"""What ``fastml.Predictor(index)`` holds for a fastml.search index: the index
itself (backend "native") or its ONNX export on ONNX Runtime (backend
"onnxruntime", IndexPQ only); ``search`` is its one method."""
from __future__ import annotations

from fastml.errors import InvalidOptionError, MethodUnavailableError

from .index import Index


def is_index(model) -> bool:
    return isinstance(model, Index)


class IndexRunner:
    """The Predictor's backend for an index: ``search(xq, k)``; every other method raises
    :class:`fastml.errors.MethodUnavailableError`."""

    def __init__(self, index: Index, backend: str, n_threads):
        if backend in ("auto", "native"):
            self.name, self._run = "native", index
        elif backend == "onnxruntime":
            from .onnx_export import OrtSearch
            self.name, self._run = "onnxruntime", OrtSearch(index, n_threads=n_threads)
        else:
            raise InvalidOptionError(f"a search index runs on 'native' or 'onnxruntime', not {backend!r}")
        self.info = {"requested": backend, "backend": self.name, "index": type(index).__name__,
                     "ntotal": index.ntotal, "d": index.d}

    def search(self, xq, k: int):
        return self._run.search(xq, k)

    def __getattr__(self, method):
        if method.startswith("_"):
            raise AttributeError(method)
        raise MethodUnavailableError(f"a search index has no {method}; it answers search(xq, k)")
