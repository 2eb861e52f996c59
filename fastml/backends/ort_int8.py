"""ONNX Runtime's own int8 quantization of a quantized model, for comparison with the native
int8 kernel.

The float model the quantized IR stands for (``dequantized()``: weights
``scale * Q``) is written as a plain ONNX graph — the pipeline's steps, then
MatMul + Add per layer with its activation — because ONNX Runtime's quantizer
only quantizes MatMul / Gemm (skl2onnx writes linear models as
``LinearClassifier``, which it leaves in float). Then:

* dynamic IR (no ``input_ranges``), or no calibration rows:
  ``onnxruntime.quantization.quantize_dynamic`` — int8 weights per output
  channel, uint8 activations with one range per tensor and call
  (``DynamicQuantizeLinear``: the whole batch shares one scale, so a row's
  result depends on the rows it is called with);
* static IR with calibration rows: ``quantize_static`` in QDQ format over those
  rows (MinMax calibration, per-channel int8 weights, uint8 activations).

The graph outputs the model's values (scores for a linear model, the last
layer after its activation for an MLP); :class:`QuantizedHead` turns them into
labels and probabilities exactly as the native int8 runner does.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile

import numpy as np

from .. import ir
from .._validation import check_input, nonfinite_error
from ..errors import UnsupportedModelError
from ..ir_quant import QLinear, QMLP
from .native_int8 import QuantizedHead
from .ort import _import_ort, providers_for

log = logging.getLogger("fastml")

_ONNX_ACT = {"relu": "Relu", "tanh": "Tanh", "logistic": "Sigmoid", "exp": "Exp"}


def float_graph(model):
    """The float graph (input ``X``, output ``values``) of a quantized linear model or MLP."""
    from fastml.converters import onnx_export as ox

    _, _, helper, numpy_helper = ox._onnx()
    pipe = ir.as_pipeline(model)
    est = pipe.estimator
    dt = np.dtype(np.float32)
    if isinstance(est, QLinear):
        proto = ox.linear_scores_onnx(ir.Pipeline(steps=pipe.steps, estimator=est.dequantized()), dtype=dt)
        proto.graph.output[0].name = "values"
        proto.graph.node[-1].output[0] = "values"
        return proto
    if not isinstance(est, QMLP):
        raise UnsupportedModelError(f"no int8 ONNX graph for {type(est).__name__}")
    f = est.dequantized()
    nodes, inits, cur = [], [], "X"
    for i, step in enumerate(pipe.steps):
        out = f"step{i}_out"
        make = ox._scaler_nodes if isinstance(step, ir.Scaler) else (
            lambda s, x, y, d, p: ox._normalizer_nodes(s.norm, x, y, d, p))
        more, more_inits = make(step, cur, out, dt, f"step{i}_")
        nodes += more
        inits += more_inits
        cur = out
    for i, (W, b) in enumerate(zip(f.weights, f.biases)):
        inits += [numpy_helper.from_array(W.astype(np.float32), f"W{i}"),
                  numpy_helper.from_array(b.astype(np.float32), f"B{i}")]
        nodes += [helper.make_node("MatMul", [cur, f"W{i}"], [f"mm{i}"], name=f"matmul{i}"),
                  helper.make_node("Add", [f"mm{i}", f"B{i}"], [f"z{i}"], name=f"bias{i}")]
        cur = f"z{i}"
        act = est.activation if i < len(f.weights) - 1 else est.out_activation
        if act == "softmax":
            nodes.append(helper.make_node("Softmax", [cur], [f"a{i}"], axis=1, name=f"act{i}"))
            cur = f"a{i}"
        elif act != "identity":
            nodes.append(helper.make_node(_ONNX_ACT[act], [cur], [f"a{i}"], name=f"act{i}"))
            cur = f"a{i}"
    nodes.append(helper.make_node("Identity", [cur], ["values"], name="values"))
    t = ox._elem_type(dt)
    return ox._model(nodes, [helper.make_tensor_value_info("X", t, [None, pipe.n_features])],
                     [helper.make_tensor_value_info("values", t, [None, est.n_outputs])], inits,
                     {"": ox._OPSET}, f"{est.name}_values")


@contextlib.contextmanager
def _quiet():
    """onnxruntime.quantization logs advice on the root logger ('consider pre-processing')."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def ort_quantized(model, calibration=None) -> tuple:
    """(quantized ModelProto bytes, description) of ``model`` through onnxruntime.quantization."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)

    est = ir.as_pipeline(model).estimator
    static = est.input_ranges is not None and calibration is not None
    with tempfile.TemporaryDirectory(prefix="fastml-int8-") as d, _quiet():
        fp, qp = os.path.join(d, "float.onnx"), os.path.join(d, "int8.onnx")
        onnx.save(float_graph(model), fp)
        if static:
            rows = np.ascontiguousarray(calibration, dtype=np.float32)

            class Rows(CalibrationDataReader):
                def __init__(self):
                    self._it = iter(range(0, rows.shape[0], 256))

                def get_next(self):
                    i = next(self._it, None)
                    return None if i is None else {"X": rows[i:i + 256]}

            quantize_static(fp, qp, Rows(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=["MatMul"])
            how = (f"quantize_static (QDQ, MinMax over {rows.shape[0]} calibration rows, per-channel int8 "
                   "weights, uint8 activations)")
        else:
            quantize_dynamic(fp, qp, weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"])
            how = "quantize_dynamic (per-channel int8 weights, uint8 activations, one range per tensor and call)"
            if est.input_ranges is not None:
                log.warning("fastml: onnxruntime int8 without calibration rows: dynamic activations "
                            "(the native int8 model uses its calibrated ranges)")
        with open(qp, "rb") as f:
            return f.read(), how


class OrtInt8(QuantizedHead):
    """A QLinear / QMLP on ONNX Runtime, quantized by ONNX Runtime's own tools."""

    name = "onnxruntime"

    def __init__(self, model, *, n_threads: int, device: str = "cpu", max_rows: int | None = None,
                 calibration=None, **_):
        ort = _import_ort()
        pipe = ir.as_pipeline(model)
        self._head_init(pipe.estimator)
        self._owner, self._nf, self._max_rows = pipe.estimator.name, pipe.n_features, max_rows
        data, how = ort_quantized(model, calibration)
        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, int(n_threads))
        so.inter_op_num_threads = 1
        try:
            self._sess = ort.InferenceSession(data, so, providers=providers_for(device))
        except Exception as e:  # pragma: no cover - ORT refusing its own quantized graph
            raise UnsupportedModelError(f"onnxruntime cannot load its int8 graph: {e}") from e
        self.onnx_bytes = data
        self.info = {"providers": self._sess.get_providers(), "n_threads": so.intra_op_num_threads,
                     "graph": "fastml's MatMul/Add graph of the model, int8 by onnxruntime.quantization: " + how}

    def _values(self, X):
        X = check_input(X, self._nf, self._owner, max_rows=self._max_rows)
        err = nonfinite_error(X, self._owner)
        if err is not None:
            raise err
        out = self._sess.run(["values"], {"X": X.astype(np.float32, copy=False)})[0]
        return out.astype(np.float64)
