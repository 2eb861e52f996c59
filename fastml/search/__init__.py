"""Vector search on fastml's kernels, with faiss's API.

Indexes: :class:`IndexFlatL2`, :class:`IndexFlatIP` (exact), :class:`IndexPQ`
(8- or 4-bit product quantization), :class:`IndexPQFastScan` (4-bit, "PQ<M>x4fs"),
:class:`IndexIVFFlat` and :class:`IndexIVFPQ` (inverted files, ``nprobe``),
:class:`IndexRefineFlat` (exact re-ranking) and :class:`IndexPreTransform` with
:class:`PCAMatrix`; :func:`index_factory` reads faiss's description strings
("PQ16", "PQ32x4fs", "IVF256,PQ16", "PCA64,IVF256,PQ16,RFlat", ...), and
:func:`write_index` / :func:`read_index` store indexes in a versioned,
memory-mappable file format that is validated on load.

Every index has ``train(x)``, ``add(x)``, ``add_with_ids(x, ids)``,
``search(x, k) -> (D, I)``, ``reconstruct(id)``, ``reset()`` and ``ntotal``;
distances are squared L2 (ascending) or inner products (descending), and
missing neighbours (k > ntotal) are id -1 with distance +-FLT_MAX, as in faiss.
"""
from ._common import METRIC_INNER_PRODUCT, METRIC_L2
from .flat import IndexFlat, IndexFlatIP, IndexFlatL2, knn
from .ivf import IndexIVF, IndexIVFFlat, IndexIVFPQ
from .factory import index_factory
from .io import read_index, write_index
from .kmeans import Kmeans
from .pq import IndexPQ, IndexPQFastScan, ProductQuantizer
from .refine import IndexPreTransform, IndexRefineFlat, PCAMatrix

__all__ = ["METRIC_L2", "METRIC_INNER_PRODUCT", "IndexFlat", "IndexFlatL2", "IndexFlatIP", "IndexPQ",
           "IndexPQFastScan", "ProductQuantizer", "IndexIVF", "IndexIVFFlat", "IndexIVFPQ", "IndexRefineFlat",
           "IndexPreTransform", "PCAMatrix", "Kmeans", "knn", "index_factory", "write_index", "read_index"]
