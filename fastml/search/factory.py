"""``index_factory(d, "...")``: faiss's description strings for the indexes
fastml.search has.

Grammar (comma-separated, as faiss): an optional ``PCA<d_out>``; then
``Flat``, ``PQ<M>`` / ``PQ<M>x<nbits>`` / ``PQ<M>x4fs``, or ``IVF<nlist>``
followed by ``Flat`` or ``PQ<M>[x<nbits>]``; then an optional ``RFlat`` (or
``Refine(Flat)``). Examples: "Flat", "PQ16", "PQ32x4fs", "IVF256,Flat",
"IVF256,PQ16", "PCA64,IVF256,PQ16", "IVF1024,PQ16,RFlat".
"""
from __future__ import annotations

import re

from fastml.errors import InputError
from ._common import METRIC_L2, check_metric, check_positive_int
from .flat import IndexFlat
from .ivf import IndexIVFFlat, IndexIVFPQ
from .pq import IndexPQ, IndexPQFastScan
from .refine import IndexPreTransform, IndexRefineFlat, PCAMatrix

_PQ = re.compile(r"^PQ(\d+)(?:x(\d+))?(fs)?$")


def _pq(tok: str):
    m = _PQ.match(tok)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2) or 8), bool(m.group(3))


def index_factory(d: int, description: str, metric=METRIC_L2):
    """Build an (untrained) index from a faiss description string.

    Raises
    ------
    fastml.errors.InputError
        For a string this factory does not know (the message names the part), or
        parameters the index refuses (d not a multiple of M, nbits not 4 or 8, ...).
    """
    d = check_positive_int(d, "d")
    metric = check_metric(metric)
    if not isinstance(description, str):
        raise InputError(f"index_factory: the description must be a string, got {type(description).__name__}")
    toks = [t.strip() for t in description.split(",")]
    refine = False
    if toks and toks[-1] in ("RFlat", "Refine(Flat)"):
        refine = True
        toks = toks[:-1]
    pca = None
    if toks and toks[0].startswith("PCA"):
        m = re.match(r"^PCA(\d+)$", toks[0])
        if not m:
            raise InputError(f"index_factory: cannot read {toks[0]!r} (expected PCA<d_out>)")
        pca = PCAMatrix(d, int(m.group(1)))
        toks = toks[1:]
    di = pca.d_out if pca else d
    if toks == ["Flat"]:
        index = IndexFlat(di, metric)
    elif len(toks) == 1 and _pq(toks[0]):
        M, nbits, fs = _pq(toks[0])
        index = (IndexPQFastScan if fs else IndexPQ)(di, M, nbits, metric)
    elif len(toks) == 2 and re.match(r"^IVF\d+$", toks[0]):
        nlist = int(toks[0][3:])
        quantizer = IndexFlat(di, metric)
        if toks[1] == "Flat":
            index = IndexIVFFlat(quantizer, di, nlist, metric)
        elif _pq(toks[1]) and not _pq(toks[1])[2]:
            M, nbits, _ = _pq(toks[1])
            index = IndexIVFPQ(quantizer, di, nlist, M, nbits, metric)
        else:
            raise InputError(f"index_factory: cannot read {toks[1]!r} after {toks[0]} (expected Flat or PQ<M>[x<nbits>])")
    else:
        raise InputError(f"index_factory: cannot read {description!r}; known forms: Flat, PQ<M>[x<nbits>][fs], "
                         "IVF<nlist>,Flat, IVF<nlist>,PQ<M>[x<nbits>], with an optional PCA<n>, prefix and ,RFlat suffix")
    if pca is not None:
        index = IndexPreTransform(pca, index)
    if refine:
        index = IndexRefineFlat(index)
    return index
