"""``write_index`` / ``read_index``: fastml.search's file format.

Layout (version 1), little-endian::

    offset 0   8 bytes   magic b"FMSEARCH"
    offset 8   uint32    format version (1)
    offset 12  uint32    header length H in bytes (at most 1 MiB)
    offset 16  H bytes   header: UTF-8 JSON
    then       arrays, each starting at a multiple of 64 bytes (so ``mmap=True``
               maps them in place, aligned for the kernels)

The header is ``{"index": NODE, "arrays": {name: {"dtype", "shape", "offset"}}}``;
a NODE is ``{"type", "d", "metric", "ntotal", "ids", "params", "arrays",
"children"}``: ``arrays`` maps the index's array roles (``centroids``,
``codes``, ``list_no``, ``xb``, ...) to names in the array table, ``ids`` names
the user ids (or is null: ids 0..ntotal-1), and ``children`` holds nested
nodes (an IVF's ``quantizer``, a refine's ``base_index``, a pre-transform's
``index``). dtypes are ``<f4``, ``<i8`` or ``|u1``.

Loading checks everything before any kernel can see it: magic, version, header
size and JSON shape, the type against a fixed registry (nothing is imported or
executed from the file), dtypes, that every array lies inside the file and
matches its declared shape, then each index's own rules (shapes against d, M,
nlist, ntotal; codes < 2**nbits; cell numbers < nlist; ids >= 0; finite
floats). Any failure raises :class:`fastml.errors.InvalidModelError`.
"""
from __future__ import annotations

import json
import mmap as _mmap
import os
import struct

import numpy as np

from fastml.errors import FastMLError, InvalidModelError
from ._common import METRICS, check_array
from .flat import IndexFlat, IndexFlatIP, IndexFlatL2
from .index import Index
from .ivf import IndexIVFFlat, IndexIVFPQ
from .pq import IndexPQ, IndexPQFastScan
from .refine import IndexPreTransform, IndexRefineFlat, PCAMatrix

MAGIC = b"FMSEARCH"
VERSION = 1
ALIGN = 64
MAX_HEADER = 1 << 20
MAX_DEPTH = 4
DTYPES = {"<f4": np.float32, "<i8": np.int64, "|u1": np.uint8}
_CHILDREN = {IndexIVFFlat: ("quantizer",), IndexIVFPQ: ("quantizer",), IndexRefineFlat: ("base_index",),
             IndexPreTransform: ("index",)}


def _node(index: Index, prefix: str, blobs: list) -> dict:
    params, arrays = index._state()
    names = {}
    for role, a in arrays.items():
        name = f"{prefix}{role}"
        names[role] = name
        blobs.append((name, np.ascontiguousarray(a)))
    ids = None
    if index._ids is not None:
        ids = f"{prefix}ids"
        blobs.append((ids, np.ascontiguousarray(index._ids, np.int64)))
    children = {c: _node(getattr(index, c), f"{prefix}{c}.", blobs) for c in _CHILDREN.get(type(index), ())}
    return {"type": type(index).__name__, "d": index.d, "metric": index.metric_type, "ntotal": index.ntotal,
            "ids": ids, "params": params, "arrays": names, "children": children}


def write_index(index: Index, path) -> None:
    """Write ``index`` to ``path`` (atomically: a temporary file renamed over it)."""
    if not isinstance(index, Index) or type(index).__name__ not in _TYPES:
        raise InvalidModelError(f"write_index: cannot write a {type(index).__name__}")
    blobs: list = []
    tree = _node(index, "", blobs)
    table = {}
    # offsets are relative to the start of the data area, which follows the header
    off = 0
    for name, a in blobs:
        table[name] = {"dtype": a.dtype.str, "shape": list(a.shape), "offset": off}
        off += (a.nbytes + ALIGN - 1) // ALIGN * ALIGN
    header = json.dumps({"index": tree, "arrays": table}, separators=(",", ":")).encode()
    data0 = (16 + len(header) + ALIGN - 1) // ALIGN * ALIGN
    path = os.fspath(path)
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        f.write(MAGIC + struct.pack("<II", VERSION, len(header)) + header)
        f.write(b"\0" * (data0 - 16 - len(header)))
        for name, a in blobs:
            f.write(a.tobytes())
            f.write(b"\0" * ((-a.nbytes) % ALIGN))
    os.replace(tmp, path)


def _bad(msg: str):
    raise InvalidModelError(f"read_index: {msg}")


def _int(v, what: str, lo: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        _bad(f"{what} must be an integer >= {lo}, got {v!r}")
    return v


def _arrays(buf, table, data0: int, size: int) -> dict:
    if not isinstance(table, dict):
        _bad("the array table is not an object")
    out = {}
    for name, spec in table.items():
        if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "offset"}:
            _bad(f"array {name!r}: expected dtype, shape and offset")
        if spec["dtype"] not in DTYPES:
            _bad(f"array {name!r}: dtype {spec['dtype']!r} is not one of {sorted(DTYPES)}")
        dt = np.dtype(DTYPES[spec["dtype"]])
        shape = spec["shape"]
        if not isinstance(shape, list) or len(shape) > 3:
            _bad(f"array {name!r}: bad shape {shape!r}")
        shape = tuple(_int(s, f"array {name!r} shape") for s in shape)
        off = _int(spec["offset"], f"array {name!r} offset")
        if off % ALIGN:
            _bad(f"array {name!r}: offset {off} is not a multiple of {ALIGN}")
        count = int(np.prod(shape, dtype=object))
        nbytes = count * dt.itemsize
        if data0 + off + nbytes > size:
            _bad(f"array {name!r}: {nbytes} bytes at offset {off} run past the end of the file ({size} bytes)")
        a = np.frombuffer(buf, dtype=dt, count=count, offset=data0 + off).reshape(shape)
        out[name] = a
    return out


def _build(node, arrays: dict, depth: int = 0) -> Index:
    if depth > MAX_DEPTH:
        _bad("indexes nested too deeply")
    if not isinstance(node, dict) or not {"type", "d", "metric", "ntotal", "ids", "params", "arrays",
                                          "children"} <= set(node):
        _bad("an index node lacks type, d, metric, ntotal, ids, params, arrays or children")
    kind = node["type"]
    if kind not in _TYPES:
        _bad(f"unknown index type {kind!r}")
    d, ntotal = _int(node["d"], "d", 1), _int(node["ntotal"], "ntotal")
    metric = node["metric"]
    if metric not in METRICS:
        _bad(f"metric {metric!r} is not 0 (inner product) or 1 (L2)")
    params, roles, children = node["params"], node["arrays"], node["children"]
    if not isinstance(params, dict) or not isinstance(roles, dict) or not isinstance(children, dict):
        _bad(f"{kind}: params, arrays and children must be objects")
    try:
        mine = {role: arrays[name] for role, name in roles.items()}
    except (KeyError, TypeError):
        _bad(f"{kind}: an array role names an array the file does not hold")
    kids = {}
    for c in _CHILDREN.get(_TYPES[kind].cls, ()):
        if c not in children:
            _bad(f"{kind}: missing nested index {c!r}")
        kids[c] = _build(children[c], arrays, depth + 1)
    index = _TYPES[kind].make(d, metric, params, kids, mine)
    index.ntotal = ntotal
    if node["ids"] is not None:
        if node["ids"] not in arrays:
            _bad(f"{kind}: ids name a missing array")
        ids = check_array(arrays[node["ids"]], "ids", np.int64, (ntotal,))
        if ntotal and ids.min() < 0:
            _bad(f"{kind}: negative ids")
        index._ids = ids
    index._load(params, mine)
    return index


def read_index(path, *, mmap: bool = False) -> Index:
    """Read an index written by :func:`write_index`.

    Parameters
    ----------
    path : str or os.PathLike
    mmap : bool
        Map the file read-only instead of reading it: stored vectors and codes stay
        in the page cache (derived scan layouts are still built in memory).

    Raises
    ------
    fastml.errors.InvalidModelError
        For anything malformed (see the module docstring); never a crash.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 16:
            _bad(f"{path}: {size} bytes is too short for a fastml.search index")
        if mmap:
            buf = _mmap.mmap(f.fileno(), 0, access=_mmap.ACCESS_READ)
        else:
            buf = f.read()
    head = bytes(buf[:16])
    if head[:8] != MAGIC:
        _bad(f"{path} is not a fastml.search index (magic {head[:8]!r})")
    version, hlen = struct.unpack("<II", head[8:16])
    if version != VERSION:
        _bad(f"format version {version}; this fastml reads version {VERSION}")
    if hlen > MAX_HEADER or 16 + hlen > size:
        _bad(f"header length {hlen} does not fit the file ({size} bytes)")
    try:
        header = json.loads(bytes(buf[16:16 + hlen]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        _bad(f"the header is not valid JSON: {e}")
    if not isinstance(header, dict) or set(header) != {"index", "arrays"}:
        _bad("the header must hold exactly 'index' and 'arrays'")
    data0 = (16 + hlen + ALIGN - 1) // ALIGN * ALIGN
    arrays = _arrays(buf, header["arrays"], data0, size)
    try:
        return _build(header["index"], arrays)
    except FastMLError as e:
        if isinstance(e, InvalidModelError):
            raise
        raise InvalidModelError(f"read_index: {e}") from None
    except (TypeError, ValueError, KeyError, OverflowError) as e:
        raise InvalidModelError(f"read_index: malformed parameters: {e}") from None


# ---------------------------------------------------------------- constructors by type
def _p(params, key, default=None):
    v = params.get(key, default)
    if v is None:
        _bad(f"missing parameter {key!r}")
    return v


class _Maker:
    def __init__(self, cls, make):
        self.cls, self.make_ = cls, make

    def make(self, d, metric, params, kids, arrays):
        return self.make_(d, metric, params, kids, arrays)


def _pca(d, metric, params, kids, arrays):
    if "pca_A" not in arrays:
        _bad("IndexPreTransform: missing pca_A")
    A = arrays["pca_A"]
    if A.ndim != 2:
        _bad("pca_A must be 2-D")
    return IndexPreTransform(PCAMatrix(d, A.shape[0]), kids["index"])


_TYPES = {
    "IndexFlat": _Maker(IndexFlat, lambda d, m, p, k, a: IndexFlat(d, m)),
    "IndexFlatL2": _Maker(IndexFlatL2, lambda d, m, p, k, a: IndexFlatL2(d)),
    "IndexFlatIP": _Maker(IndexFlatIP, lambda d, m, p, k, a: IndexFlatIP(d)),
    "IndexPQ": _Maker(IndexPQ, lambda d, m, p, k, a: IndexPQ(d, _p(p, "M"), _p(p, "nbits"), m)),
    "IndexPQFastScan": _Maker(IndexPQFastScan, lambda d, m, p, k, a: IndexPQFastScan(d, _p(p, "M"), 4, m)),
    "IndexIVFFlat": _Maker(IndexIVFFlat, lambda d, m, p, k, a: IndexIVFFlat(k["quantizer"], d, _p(p, "nlist"), m)),
    "IndexIVFPQ": _Maker(IndexIVFPQ, lambda d, m, p, k, a: IndexIVFPQ(k["quantizer"], d, _p(p, "nlist"),
                                                                       _p(p, "M"), _p(p, "nbits"), m)),
    "IndexRefineFlat": _Maker(IndexRefineFlat, lambda d, m, p, k, a: IndexRefineFlat(k["base_index"])),
    "IndexPreTransform": _Maker(IndexPreTransform, _pca),
}
