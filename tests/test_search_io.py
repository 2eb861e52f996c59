"""write_index / read_index: round trips of every index kind (plain and memory-mapped)
and one refusal per validation rule, each a typed InvalidModelError."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from test_search_reference import blobs

from fastml.errors import InvalidModelError
from fastml.search.factory import index_factory
from fastml.search.io import ALIGN, read_index, write_index

KINDS = ["Flat", "PQ8", "PQ8x4fs", "IVF8,Flat", "IVF8,PQ4", "IVF8,PQ8x4", "PCA16,IVF8,PQ4", "IVF8,PQ4,RFlat"]


@pytest.fixture(scope="module")
def x():
    return blobs(3000, 32)


@pytest.mark.parametrize("desc", KINDS)
@pytest.mark.parametrize("mmap", [False, True])
def test_round_trip(desc, mmap, x, tmp_path):
    idx = index_factory(32, desc)
    if hasattr(idx, "pq"):
        idx.pq.niter = 4
    idx.train(x)
    idx.add(x[:1000])
    idx.add_with_ids(x[1000:1500], np.arange(500) + 10_000) if "PCA" not in desc else idx.add(x[1000:1500])
    if hasattr(idx, "nprobe"):
        idx.nprobe = 3
    D, I = idx.search(x[2900:], 10)
    write_index(idx, tmp_path / "a.fmi")
    back = read_index(tmp_path / "a.fmi", mmap=mmap)
    assert type(back) is type(idx) and back.ntotal == idx.ntotal
    D2, I2 = back.search(x[2900:], 10)
    np.testing.assert_array_equal(I2, I)
    np.testing.assert_array_equal(D2, D)


@pytest.fixture(scope="module")
def pq_file(x, tmp_path_factory):
    idx = index_factory(32, "IVF8,PQ4")
    idx.pq.niter = 2
    idx.train(x)
    idx.add_with_ids(x[:500], np.arange(500))
    p = tmp_path_factory.mktemp("io") / "pq.fmi"
    write_index(idx, p)
    return p.read_bytes()


def _parts(blob: bytes):
    hlen = struct.unpack("<I", blob[12:16])[0]
    return json.loads(blob[16:16 + hlen]), (16 + hlen + ALIGN - 1) // ALIGN * ALIGN


def _with_header(blob: bytes, header: dict) -> bytes:
    """The same arrays behind a new header (re-aligned to where readers expect them)."""
    old, data0 = _parts(blob)
    h = json.dumps(header).encode()
    new0 = (16 + len(h) + ALIGN - 1) // ALIGN * ALIGN
    return blob[:8] + struct.pack("<II", 1, len(h)) + h + b"\0" * (new0 - 16 - len(h)) + blob[data0:]


def _array_bytes(blob: bytes, name: str):
    header, data0 = _parts(blob)
    return data0 + header["arrays"][name]["offset"]


def _refused(tmp_path, blob: bytes, match: str):
    p = tmp_path / "bad.fmi"
    p.write_bytes(blob)
    for mmap in (False, True):
        with pytest.raises(InvalidModelError, match=match):
            read_index(p, mmap=mmap)


def test_refuses_bad_magic_version_and_header(pq_file, tmp_path):
    _refused(tmp_path, b"NOTANIDX" + pq_file[8:], "not a fastml.search index")
    _refused(tmp_path, pq_file[:8] + struct.pack("<I", 2) + pq_file[12:], "version 2")
    _refused(tmp_path, pq_file[:12] + struct.pack("<I", 1 << 30) + pq_file[16:], "header length")
    _refused(tmp_path, pq_file[:16] + b"{{{" + pq_file[19:], "not valid JSON")
    _refused(tmp_path, pq_file[:10], "too short")


def test_refuses_truncated_arrays(pq_file, tmp_path):
    _refused(tmp_path, pq_file[:-200], "past the end")


def test_refuses_wrong_code_shape_or_dtype(pq_file, tmp_path):
    header, _ = _parts(pq_file)
    header["arrays"]["codes"]["shape"] = [499, 4]
    _refused(tmp_path, _with_header(pq_file, header), "codes: expected shape")
    header, _ = _parts(pq_file)
    header["arrays"]["codes"]["dtype"] = "<f8"
    _refused(tmp_path, _with_header(pq_file, header), "dtype")


def test_refuses_four_bit_codes_of_16_or_more(x, tmp_path):
    idx = index_factory(32, "PQ8x4")
    idx.train(x)
    idx.add(x[:100])
    write_index(idx, tmp_path / "a.fmi")
    blob = bytearray((tmp_path / "a.fmi").read_bytes())
    blob[_array_bytes(bytes(blob), "codes") + 5] = 16
    _refused(tmp_path, bytes(blob), "codes of 4 bits are < 16")


def test_refuses_list_numbers_out_of_range(pq_file, tmp_path):
    blob = bytearray(pq_file)
    at = _array_bytes(pq_file, "list_no") + 8 * 7
    blob[at:at + 8] = struct.pack("<q", 8)  # nlist = 8: cells 0..7
    _refused(tmp_path, bytes(blob), "cell numbers must be in")
    blob[at:at + 8] = struct.pack("<q", -1)
    _refused(tmp_path, bytes(blob), "cell numbers must be in")


def test_refuses_negative_ids_and_nan_codebooks(pq_file, tmp_path):
    blob = bytearray(pq_file)
    at = _array_bytes(pq_file, "ids")
    blob[at:at + 8] = struct.pack("<q", -5)
    _refused(tmp_path, bytes(blob), "negative ids")
    blob = bytearray(pq_file)
    at = _array_bytes(pq_file, "centroids")
    blob[at:at + 4] = struct.pack("<f", float("nan"))
    _refused(tmp_path, bytes(blob), "NaN or inf")


@pytest.mark.parametrize("edit,match", [
    (lambda h: h["index"].update(type="os.system"), "unknown index type"),
    (lambda h: h["index"].update(metric=7), "metric"),
    (lambda h: h["index"].update(d=-3), "d must be"),
    (lambda h: h["index"].update(ntotal=501), "expected shape"),
    (lambda h: h["index"]["params"].update(nlist=9), "quantizer holds"),
    (lambda h: h["index"]["params"].update(M=5), "multiple of M"),
    (lambda h: h["index"]["params"].update(nbits=3), "nbits"),
    (lambda h: h["index"]["params"].update(nprobe=0), "nprobe"),
    (lambda h: h["index"]["arrays"].update(codes="nope"), "does not hold"),
    (lambda h: h["index"]["children"].clear(), "missing nested index"),
    (lambda h: h["arrays"]["codes"].update(offset=3), "multiple of 64"),
    (lambda h: h["arrays"]["codes"].update(offset=1 << 40), "past the end"),
    (lambda h: h.update(extra=1), "exactly"),
])
def test_refuses_bad_header_fields(pq_file, tmp_path, edit, match):
    header, _ = _parts(pq_file)
    edit(header)
    _refused(tmp_path, _with_header(pq_file, header), match)


def test_fuzzed_bytes_never_crash(pq_file, tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "fuzz.fmi"
    for _ in range(60):
        blob = bytearray(pq_file)
        for at in rng.integers(0, len(blob), 4):
            blob[at] = int(rng.integers(256))
        p.write_bytes(bytes(blob))
        try:
            idx = read_index(p)
        except InvalidModelError:
            continue
        idx.search(np.zeros((2, 32), np.float32), 5)  # a file that loads must search safely
