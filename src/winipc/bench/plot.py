"""``winipc bench --plot FILE.png``: throughput against unit size, drawn from the document.

One panel per placement; in each, one line per scenario measured on throughput: MB/s
(10**6 B/s, log scale: the curve spans three decades from 64 B to 4 MiB units) against
the unit size (log scale). winipc's scenarios are solid lines, the peers dashed, the
memcpy limit a thick dotted black line. Needs matplotlib (``winipc[bench]``); it is
imported only here, with the non-interactive Agg backend.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

_MISSING = "matplotlib is not installed (pip install 'winipc[bench]')"


def unavailable() -> str | None:
    """Why a plot cannot be drawn here, or None when it can."""
    try:
        importlib.import_module("matplotlib")
    except ImportError:
        return _MISSING
    return None


def size_label(size: int) -> str:
    """64 B, 16 KiB, 4 MiB..."""
    if size >= 1024 * 1024:
        return f"{size // (1024 * 1024)} MiB"
    return f"{size // 1024} KiB" if size >= 1024 else f"{size} B"


def curves(doc: dict[str, Any]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """placement -> scenario -> [(unit size, MB/s)], sorted by size, from ``doc``.

    Scenarios without throughput figures (not measured, or unavailable here) are left out.
    """
    out: dict[str, dict[str, list[tuple[int, float]]]] = {
        p["name"]: {} for p in doc["placements"]
    }
    for r in doc["results"]:
        if r["kind"] != "throughput" or "rate" not in r["figures"]:
            continue
        points = out.setdefault(r["placement"], {}).setdefault(r["scenario"], [])
        points.append((int(r["size"]), float(r["figures"]["rate"]["value"])))
    for by_scenario in out.values():
        for points in by_scenario.values():
            points.sort()
    return out


def draw(doc: dict[str, Any], path: Path) -> None:
    """Draw the throughput curves of ``doc`` into the PNG file ``path``.

    Raises:
        RuntimeError: matplotlib is not installed.
        OSError: the file cannot be written.
    """
    try:
        mpl = importlib.import_module("matplotlib")
    except ImportError:
        raise RuntimeError(_MISSING) from None
    mpl.use("Agg")
    plt = importlib.import_module("matplotlib.pyplot")
    data = curves(doc)
    info = {s["name"]: s for s in doc["scenarios"]}
    order = [s["name"] for s in doc["scenarios"] if s["selected"]]
    names = [n for n in order if any(n in by_sc for by_sc in data.values())]
    sizes = sorted({size for by_sc in data.values() for pts in by_sc.values() for size, _ in pts})
    colors = plt.get_cmap("tab20")
    panels = list(data) or ["(nothing measured)"]
    fig, axes = plt.subplots(
        1, len(panels), figsize=(6.5 * len(panels) + 3, 6), sharey=True, squeeze=False
    )
    for ax, placement in zip(axes[0], panels, strict=True):
        for i, name in enumerate(names):
            points = data.get(placement, {}).get(name)
            if not points:
                continue
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            if info[name].get("limit"):
                ax.plot(xs, ys, "k:", linewidth=2.5, label=f"{name} (limit)")
            elif info[name]["peer"]:
                ax.plot(xs, ys, "--", marker="s", markersize=3, color=colors(i % 20),
                        label=f"{name} (peer)")
            else:
                ax.plot(xs, ys, "-", marker="o", markersize=4, linewidth=2,
                        color=colors(i % 20), label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        if sizes:
            ax.set_xticks(sizes, [size_label(s) for s in sizes])
        ax.minorticks_off()
        ax.set_xlabel("unit size")
        ax.set_title(placement)
        ax.grid(True, which="major", alpha=0.3)
    axes[0][0].set_ylabel("throughput, MB/s (10^6 B/s)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    fig.legend(handles, labels, loc="center right", fontsize="small")
    fig.suptitle(f"winipc bench ({doc['mode']}, {doc['started']}): throughput by unit size")
    fig.tight_layout(rect=(0, 0, 1 - 2.8 / fig.get_figwidth(), 1))
    try:
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
