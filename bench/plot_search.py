"""Recall@10 vs queries/s of fastml.search and faiss from a ``bench/test_bench_search.py`` run.

    python bench/plot_search.py bench/results/search.json [--out bench/results/search_recall_qps.png]
                                [--small docs/search_recall_qps.png]

Reads pytest-benchmark's JSON: every batch-1,000 row of the search groups gives one
point (``extra_info["recall_at_10"]``, ``extra_info["queries_per_s"]``); the IVF rows
also carry their library's ``nprobe`` x ``k_factor`` sweep (``extra_info["sweep"]``),
drawn as the recall / queries-per-second frontier (the fastest setting at each
recall) with every swept point behind it. ``--small`` also writes a compact copy
(a few tens of KB) for the README.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

COLORS = {"fastml": "tab:blue", "faiss": "tab:orange", "scikit-learn": "tab:green"}
MARKERS = {"exact L2": "s", "PQ16x8": "^", "PQ32x4fs": "D"}


def load(path: str):
    """(points, sweeps): points [(group, contender, recall, qps, extra_info)] of the 2-thread rows,
    sweeps {contender: [(recall, qps, nprobe, k_factor)]}."""
    doc = json.loads(Path(path).read_text())
    points, sweeps = [], {}
    for b in doc["benchmarks"]:
        e = b.get("extra_info") or {}
        if e.get("batch") != 1000 or "recall_at_10" not in e or e.get("threads") != 2:
            continue
        qps = e.get("queries_per_s") or 1000 / b["stats"]["median"]
        group = b["group"].split(",  k=")[0].split(", k=")[0]
        points.append((group, e["contender"], e["recall_at_10"], qps, e))
        if "sweep" in e:
            sweeps[e["contender"]] = [(p["recall_at_10"], p["queries_per_s"], p["nprobe"], p["k_factor"])
                                      for p in e["sweep"]]
    return points, sweeps


def frontier(pts):
    """Points no other point beats on both recall and queries/s, by recall."""
    best, out = -1.0, []
    for r, q, *_ in sorted(pts, key=lambda p: (-p[0], -p[1])):
        if q > best:
            out.append((r, q))
            best = q
    return sorted(out)


def plot(points, sweeps, out: str, *, small: bool = False) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0) if small else (8, 5))
    for lib, pts in sorted(sweeps.items()):
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=8, color=COLORS.get(lib), alpha=0.3, lw=0)
        f = frontier(pts)
        ax.plot([p[0] for p in f], [p[1] for p in f], "-", color=COLORS.get(lib), lw=1.5,
                label=f"{lib} IVF1024,PQ16+RFlat (nprobe x k_factor sweep)")
    for group, lib, rec, qps, e in points:
        if "IVF" in group:
            ax.plot(rec, qps, "o", color=COLORS.get(lib), ms=7, mec="black", mew=0.8)
            ax.annotate(f"nprobe {e.get('nprobe')}, k_factor {e.get('k_factor'):g}", (rec, qps),
                        textcoords="offset points", xytext=(-8, 8 if lib == "fastml" else -14),
                        ha="right", fontsize=7, color=COLORS.get(lib))
            continue
        ax.plot(rec, qps, MARKERS.get(group, "o"), color=COLORS.get(lib, "gray"), ms=7, mec="black", mew=0.5,
                label=f"{lib} {group}")
    ax.axvline(0.9, color="gray", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("recall@10")
    ax.set_ylabel("queries/s (1,000 queries, 2 threads)")
    ax.set_title("200,000 x 128 make_blobs(centers=2000, std=7), k=10", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6.5 if small else 8, loc="lower left")
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90 if small else 120)
    plt.close(fig)
    if small:
        _quantize(out)


def _quantize(path: str) -> None:
    """Cut a PNG to a 128-colour palette (about a third of the bytes) when Pillow is present."""
    try:
        from PIL import Image
    except ImportError:
        return
    Image.open(path).convert("RGB").quantize(128).save(path, optimize=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json")
    ap.add_argument("--out", default="bench/results/search_recall_qps.png")
    ap.add_argument("--small", default=None, help="also write a compact copy here (e.g. docs/search_recall_qps.png)")
    a = ap.parse_args(argv)
    points, sweeps = load(a.json)
    if not points:
        raise SystemExit(f"{a.json}: no batch-1,000 search rows with recall_at_10")
    plot(points, sweeps, a.out)
    print(f"wrote {a.out}")
    if a.small:
        plot(points, sweeps, a.small, small=True)
        print(f"wrote {a.small} ({Path(a.small).stat().st_size // 1024} KB)")
    for group, lib, rec, qps, e in sorted(points, key=lambda p: (p[0], p[1])):
        extra = f"  nprobe {e['nprobe']}, k_factor {e['k_factor']:g}" if "nprobe" in e else ""
        print(f"{group:38s} {lib:13s} recall@10 {rec:.3f}  {qps:10,.0f} queries/s{extra}")


if __name__ == "__main__":
    main()
