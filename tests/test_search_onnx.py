"""ONNX export of PQ search (run on ONNX Runtime) and Predictor(index).search."""
from __future__ import annotations

import numpy as np
import pytest
from test_search_reference import blobs

import fastml
import fastml.search as fs
from fastml.errors import InputError, MethodUnavailableError, UnsupportedModelError

ort = pytest.importorskip("onnxruntime")
from fastml.search.onnx_export import OrtSearch, to_onnx  # noqa: E402


@pytest.fixture(scope="module", params=[(fs.METRIC_L2, 8), (fs.METRIC_INNER_PRODUCT, 8), (fs.METRIC_L2, 4)])
def index(request):
    metric, nbits = request.param
    x = blobs(3000, 32)
    idx = fs.IndexPQ(32, 8, nbits, metric)
    idx.pq.niter = 4
    idx.train(x)
    idx.add_with_ids(x[:2000], np.arange(2000) * 3 + 1)
    return idx, x[2900:]


def test_onnx_graph_equals_native_search(index):
    idx, xq = index
    model = to_onnx(idx)
    ops = {n.op_type for n in model.graph.node}
    assert ops <= {"Reshape", "Sub", "Mul", "ReduceSum", "Gather", "Sum", "TopK"}
    D, I = idx.search(xq, 10)
    D2, I2 = OrtSearch(idx).search(xq, 10)
    # float32 sums in another order: distances within rounding, ids equal but for near-ties
    np.testing.assert_allclose(D2, D, rtol=1e-5, atol=1e-3)
    assert (I2 == I).mean() > 0.99


def test_onnx_export_refuses_what_it_cannot_write(index):
    idx, xq = index
    with pytest.raises(UnsupportedModelError):
        to_onnx(fs.IndexFlatL2(4))
    with pytest.raises(InputError, match="trained"):
        to_onnx(fs.IndexPQ(32, 8))
    with pytest.raises(InputError, match="at most ntotal"):
        OrtSearch(idx).search(xq, idx.ntotal + 1)


@pytest.mark.parametrize("backend", ["native", "onnxruntime"])
def test_predictor_search(index, backend):
    idx, xq = index
    p = fastml.Predictor(idx, backend=backend)
    assert p.backend == backend and p.backend_info["index"] == "IndexPQ"
    D, I = p.search(xq, 5)
    D0, I0 = idx.search(xq, 5)
    np.testing.assert_allclose(D, D0, rtol=1e-5, atol=1e-3)
    assert (I == I0).mean() > 0.99
    with pytest.raises(MethodUnavailableError, match="search"):
        p.predict(xq)


def test_predictor_search_unavailable_for_other_models():
    from sklearn.linear_model import LinearRegression
    X = np.random.default_rng(0).standard_normal((20, 3))
    p = fastml.Predictor(LinearRegression().fit(X, X[:, 0]), backend="native")
    with pytest.raises(MethodUnavailableError, match="search needs a fastml.search index"):
        p.search(X, 1)
