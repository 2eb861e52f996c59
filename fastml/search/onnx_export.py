"""ONNX export of PQ search: ``to_onnx(index)`` writes an IndexPQ / IndexPQFastScan
as standard ONNX operators, so the index runs under ONNX Runtime anywhere.

Graph (opset 13), inputs ``xq`` float32 (N, d) and ``k`` int64 (1,):

1. distance tables: ``Reshape(xq)`` to (N, M, 1, dsub) against the codebooks
   (1, M, ksub, dsub): ``Sub, Mul, ReduceSum`` (L2) or ``Mul, ReduceSum`` (inner
   product) -> (N, M, ksub);
2. code look-up, one sub-quantizer at a time (so no (N, ntotal, M) tensor):
   ``Gather(tables, m, axis=1)`` -> (N, ksub), ``Gather(that, codes[:, m], axis=1)``
   -> (N, ntotal), and one variadic ``Sum`` -> ADC distances (N, ntotal);
3. ``TopK(distances, k)`` (smallest for L2, largest for inner product), and
   ``Gather(ids, indices)`` -> outputs ``D`` float32 (N, k) and ``I`` int64 (N, k).

Results equal ``index.search`` up to float32 summation order (ties may order
differently). ``k`` must not exceed ``ntotal`` (TopK's rule). Memory per call is
about N x ntotal floats.
"""
from __future__ import annotations

import numpy as np

from fastml.errors import InputError, UnsupportedModelError
from ._common import METRIC_INNER_PRODUCT
from .pq import IndexPQ

OPSET = 13


def to_onnx(index, *, name: str = "fastml_pq_search"):
    """An ``onnx.ModelProto`` computing ``index.search(xq, k)`` for an IndexPQ.

    Raises
    ------
    fastml.errors.UnsupportedModelError
        For index kinds other than IndexPQ / IndexPQFastScan (IVF, flat, refine
        and pre-transform graphs are not written yet).
    fastml.errors.InputError
        For an untrained or empty index.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if not isinstance(index, IndexPQ):
        raise UnsupportedModelError(f"ONNX export covers IndexPQ / IndexPQFastScan, not {type(index).__name__}")
    if not index.is_trained or index.ntotal == 0:
        raise InputError("ONNX export needs a trained index holding vectors")
    M, ksub, dsub = index.pq.centroids.shape
    ip = index.metric_type == METRIC_INNER_PRODUCT
    ids = index._ids if index._ids is not None else np.arange(index.ntotal, dtype=np.int64)
    inits = [
        numpy_helper.from_array(index.pq.centroids.reshape(1, M, ksub, dsub).astype(np.float32), "codebooks"),
        numpy_helper.from_array(np.array([-1, M, 1, dsub], np.int64), "q_shape"),
        numpy_helper.from_array(np.array([3], np.int64), "axis3"),
        numpy_helper.from_array(ids.astype(np.int64), "ids"),
    ]
    nodes = [helper.make_node("Reshape", ["xq", "q_shape"], ["q4"])]
    if ip:
        nodes.append(helper.make_node("Mul", ["q4", "codebooks"], ["prod"]))
        nodes.append(helper.make_node("ReduceSum", ["prod", "axis3"], ["tables"], keepdims=0))
    else:
        nodes += [helper.make_node("Sub", ["q4", "codebooks"], ["diff"]),
                  helper.make_node("Mul", ["diff", "diff"], ["sq"]),
                  helper.make_node("ReduceSum", ["sq", "axis3"], ["tables"], keepdims=0)]
    parts = []
    for m in range(M):
        inits.append(numpy_helper.from_array(np.array(m, np.int64), f"m{m}"))
        inits.append(numpy_helper.from_array(index.codes[:, m].astype(np.int64), f"codes{m}"))
        nodes.append(helper.make_node("Gather", ["tables", f"m{m}"], [f"t{m}"], axis=1))
        nodes.append(helper.make_node("Gather", [f"t{m}", f"codes{m}"], [f"d{m}"], axis=1))
        parts.append(f"d{m}")
    nodes.append(helper.make_node("Sum", parts, ["dist"]))
    nodes.append(helper.make_node("TopK", ["dist", "k"], ["D", "rows"], axis=1, largest=int(ip), sorted=1))
    nodes.append(helper.make_node("Gather", ["ids", "rows"], ["I"], axis=0))
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("xq", TensorProto.FLOAT, ["N", index.d]),
         helper.make_tensor_value_info("k", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("D", TensorProto.FLOAT, ["N", "k"]),
         helper.make_tensor_value_info("I", TensorProto.INT64, ["N", "k"])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="fastml.search")
    model.ir_version = min(model.ir_version, 8)
    onnx.checker.check_model(model)
    return model


class OrtSearch:
    """An exported index on an ONNX Runtime session: ``search(xq, k) -> (D, I)``."""

    def __init__(self, index, *, n_threads=None, providers=("CPUExecutionProvider",)):
        import onnxruntime as ort
        so = ort.SessionOptions()
        if n_threads:
            so.intra_op_num_threads = int(n_threads)
        self.d, self.ntotal = index.d, index.ntotal
        self.session = ort.InferenceSession(to_onnx(index).SerializeToString(), so, providers=list(providers))

    def search(self, xq, k: int):
        from ._common import as_vectors, check_positive_int
        xq = as_vectors(xq, self.d, "search: x")
        k = check_positive_int(k, "k")
        if k > self.ntotal:
            raise InputError(f"the ONNX graph returns at most ntotal={self.ntotal} neighbours, asked k={k}")
        D, I = self.session.run(["D", "I"], {"xq": xq, "k": np.array([k], np.int64)})
        return D, I
