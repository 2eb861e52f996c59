"""Turn a pytest-benchmark JSON into a markdown table and a bar plot.

Usage::

    python bench/report.py [bench/results/latest.json] [--out-dir bench/results]

Per group (one workload at one batch size): each contender's median, its ratio
to the group's ONNX Runtime reference (< 1 means faster than ONNX Runtime) and,
where ``extra_info`` has ``bytes``, GB/s and the fraction of the group's
copy-bandwidth reference. References are found generically:

* ONNX Runtime: ``extra_info["role"] == "reference"``, or a contender named
  "onnxruntime ..." / "ORT ...";
* copy bandwidth: ``extra_info["role"] == "copy"``, or a contender whose name
  contains "copy" (e.g. "numpy copyto").

A row is compared with the reference that runs on the same number of threads,
else with the group's fastest reference. Writes ``report.md`` and
``report.png`` to the output folder and prints the markdown.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cores, cpu_model, package_versions  # noqa: E402

HERE = Path(__file__).resolve().parent
PACKAGES = ("numpy", "onnxruntime", "scikit-learn", "fastml")
_ORT_NAME = re.compile(r"^(onnx\s*runtime|ort)\b", re.IGNORECASE)


# ---------------------------------------------------------------------- reading
def _row(b: dict) -> dict:
    extra = b.get("extra_info") or {}
    name = extra.get("contender") or b.get("param") or b["name"]
    role = extra.get("role")
    if role is None and _ORT_NAME.match(str(name)):
        role = "reference"
    if role is None and "copy" in str(name).lower():
        role = "copy"
    return {"group": b.get("group") or b["name"], "contender": str(name), "threads": extra.get("threads"),
            "bytes": extra.get("bytes"), "role": role, "median": float(b["stats"]["median"]),
            "rounds": int(b["stats"].get("rounds", 0)), "backend": extra.get("backend")}


def _natural(s: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def load(path: Path) -> tuple[dict, Dict[str, List[dict]]]:
    data = json.loads(Path(path).read_text())
    groups: Dict[str, List[dict]] = {}
    for b in data.get("benchmarks", []):
        r = _row(b)
        groups.setdefault(r["group"], []).append(r)
    for rows in groups.values():
        rows.sort(key=lambda r: r["median"])
        _compare(rows)
    # Cold-start groups after the steady-state ones; otherwise natural order (batch 1 < 100 < 10000).
    order = sorted(groups, key=lambda g: (g.lower().startswith("cold"), _natural(g)))
    return data, {g: groups[g] for g in order}


def _gbs(r: dict) -> Optional[float]:
    return r["bytes"] / r["median"] / 1e9 if r["bytes"] and r["median"] > 0 else None


def _pick(refs: List[dict], threads, key) -> Optional[dict]:
    """The reference on the same thread count, else the best one."""
    same = [r for r in refs if threads is not None and r["threads"] == threads]
    pool = same or refs
    return min(pool, key=key) if pool else None


def _compare(rows: List[dict]) -> None:
    ort = [r for r in rows if r["role"] == "reference"]
    copy = [r for r in rows if r["role"] == "copy" and _gbs(r)]
    for r in rows:
        r["gbs"] = _gbs(r)
        ref = _pick(ort, r["threads"], key=lambda x: x["median"])
        r["ratio"] = r["median"] / ref["median"] if ref else None
        r["ratio_to"] = ref
        cref = _pick(copy, r["threads"], key=lambda x: -_gbs(x))
        r["copy_frac"] = r["gbs"] / _gbs(cref) if cref and r["gbs"] else None
        r["copy_to"] = cref


# ---------------------------------------------------------------------- environment
def header(data: dict) -> str:
    """Date of the run, CPU, cores, versions: as recorded by bench/conftest.py at run time, else now."""
    mi = data.get("machine_info") or {}
    when = data.get("datetime")
    try:
        when = _dt.datetime.fromisoformat(when).strftime("%Y-%m-%d %H:%M UTC") if when else None
    except ValueError:
        pass
    when = when or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cpu = mi.get("cpu_model") or (mi.get("cpu") or {}).get("brand_raw") or cpu_model()
    n_cores = mi.get("cores") or cores()
    versions = {**package_versions(), **(mi.get("package_versions") or {})}
    vers = ", ".join(f"{k} {versions[k]}" for k in PACKAGES if k in versions)
    return f"{when} · {cpu} · {n_cores} cores · {vers}"


# ---------------------------------------------------------------------- formatting
def fmt_time(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.3g} µs"
    if s < 1:
        return f"{s * 1e3:.3g} ms"
    return f"{s:.3g} s"


def _threads(t) -> str:
    return "–" if t is None else str(t)


def _ref_label(r: Optional[dict]) -> str:
    return f"{r['contender']} {r['threads']}t" if r and r["threads"] is not None else (r["contender"] if r else "")


def markdown(data: dict, groups: Dict[str, List[dict]]) -> str:
    lines = ["# fastml benchmarks", "", header(data), "",
             "Median per call. *vs ORT* = median / ONNX Runtime's median on the same thread count, else the fastest ONNX Runtime row "
             "(< 1: faster than ONNX Runtime). *GB/s* = bytes a call must move / median; "
             "*of copy* = that as a fraction of the group's copy bandwidth.", ""]
    for g, rows in groups.items():
        has_bytes = any(r["gbs"] for r in rows)
        has_copy = any(r["copy_frac"] for r in rows)
        cols = ["contender", "threads", "median", "vs ORT"] + (["GB/s"] if has_bytes else []) + \
               (["of copy"] if has_copy else []) + ["rounds"]
        lines += [f"## {g}", "", "| " + " | ".join(cols) + " |", "|" + "|".join(
            "---" if c == "contender" else "---:" for c in cols) + "|"]
        for r in rows:
            name = r["contender"] + (f" (→ {r['backend']})" if r["backend"] else "")
            if r["role"] == "reference":
                ratio = "1 (ref)" if r["ratio_to"] is r else f"{r['ratio']:.2f}"
            else:
                ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "–"
            cells = [name, _threads(r["threads"]), fmt_time(r["median"]), ratio]
            if has_bytes:
                cells.append(f"{r['gbs']:.3g}" if r["gbs"] else "–")
            if has_copy:
                cells.append(f"{r['copy_frac']:.2f}" if r["copy_frac"] is not None else "–")
            cells.append(str(r["rounds"]))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------- plot
COLORS = {"fastml": "#1f77b4", "reference": "#d62728", "copy": "#7f7f7f", "other": "#bcbd22"}
LEGEND = {"fastml": "fastml", "reference": "ONNX Runtime (reference)", "copy": "copy bandwidth",
          "other": "other peers"}


def _kind(r: dict) -> str:
    if r["role"] in ("reference", "copy"):
        return r["role"]
    return "fastml" if r["contender"].lower().startswith("fastml") else "other"


def plot(data: dict, groups: Dict[str, List[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(groups)
    ncols = 1 if n == 1 else 2
    nrows = math.ceil(n / ncols)
    heights = [max(len(rows) for rows in list(groups.values())[i * ncols:(i + 1) * ncols]) for i in range(nrows)]
    fig, axes = plt.subplots(nrows, ncols, figsize=(8 * ncols, sum(0.38 * h + 1.1 for h in heights) + 0.8),
                             squeeze=False, gridspec_kw={"height_ratios": heights})
    for ax, (g, rows) in zip(axes.flat, groups.items()):
        rows = rows[::-1]  # fastest on top
        y = range(len(rows))
        labels = [f"{r['contender']}" + (f" {r['threads']}t" if r["threads"] is not None else "") for r in rows]
        ax.barh(y, [r["median"] for r in rows], color=[COLORS[_kind(r)] for r in rows])
        ax.set_xscale("log")
        ax.set_yticks(list(y), labels, fontsize=9)
        lo = min(r["median"] for r in rows)
        hi = max(r["median"] for r in rows)
        ax.set_xlim(lo / 3, hi * 6)
        for i, r in enumerate(rows):
            text = fmt_time(r["median"])
            if r["ratio"] is not None and r["role"] != "reference":
                text += f"  ({r['ratio']:.2f}× ORT)"
            ax.text(r["median"] * 1.08, i, text, va="center", fontsize=8)
        ax.set_title(g, fontsize=10, loc="left")
        ax.set_xlabel("median time per call (log scale)", fontsize=8)
        ax.grid(axis="x", which="major", alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    from matplotlib.patches import Patch

    kinds = [k for k in COLORS if any(_kind(r) == k for rows in groups.values() for r in rows)]
    fig.legend(handles=[Patch(color=COLORS[k], label=LEGEND[k]) for k in kinds], loc="lower center",
               ncol=len(kinds), fontsize=8, frameon=False)
    fig.suptitle(header(data), fontsize=9)
    fig.tight_layout(rect=(0, 0.03, 1, 0.98))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------- CLI
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", nargs="?", default=str(HERE / "results" / "latest.json"),
                    help="pytest-benchmark JSON (--benchmark-json); default bench/results/latest.json")
    ap.add_argument("--out-dir", default=None, help="where report.md and report.png go (default bench/results)")
    args = ap.parse_args(argv)
    src = Path(args.json)
    if not src.is_file():
        ap.error(f"{src}: no such file; run pytest bench/ --benchmark-only --benchmark-json={src} first")
    data, groups = load(src)
    if not groups:
        ap.error(f"{src}: no benchmarks in this file")
    out = Path(args.out_dir) if args.out_dir else HERE / "results"
    out.mkdir(parents=True, exist_ok=True)
    md = markdown(data, groups)
    (out / "report.md").write_text(md + "\n")
    plot(data, groups, out / "report.png")
    print(md)
    print(f"\nwrote {out / 'report.md'} and {out / 'report.png'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
