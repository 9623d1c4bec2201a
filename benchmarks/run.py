"""``make bench``: run the pytest-benchmark suites and print ratios against the anchors.

Every benchmark records ``extra_info["role"]``: ``ours`` (snapstate), ``anchor`` (what users
would use instead, e.g. LangGraph's saver) or ``limit`` (the machine's ceiling, e.g. raw
sqlite3 or raw msgspec + lz4). For each group this prints every benchmark's median and its
ratio to the group's anchor (>1 means faster than the anchor), then the extra measurements,
and writes ``docs/bench-per-step.png``: each saver's cost per step against the step number.

    python -m benchmarks.run [pytest args...]       # e.g. -k storage

The JSON lands in ``.benchmarks/latest.json`` and the tables in ``.benchmarks/latest.md``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / ".benchmarks"
CHART = ROOT / "docs" / "bench-per-step.png"


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"Python {platform.python_version()}"]
    for name in (
        "snapstate",
        "langgraph",
        "langgraph-checkpoint",
        "langgraph-checkpoint-sqlite",
        "langgraph-checkpoint-postgres",
        "msgspec",
        "lz4",
    ):
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            pass
    from snapstate import codec

    parts.append(f"codec {codec.IMPL}")
    return ", ".join(parts)


def _machine(data: dict[str, Any]) -> str:
    m = data.get("machine_info", {})
    cpu = m.get("cpu", {}).get("brand_raw") or m.get("processor") or platform.processor()
    return f"{cpu}, {os.cpu_count()} cores, {m.get('system', platform.system())}"


def tables(data: dict[str, Any]) -> str:
    groups: dict[str, list[dict[str, Any]]] = {}
    for b in data["benchmarks"]:
        groups.setdefault(b.get("group") or b["name"], []).append(b)
    lines = [
        f"Machine: {_machine(data)}. Versions: {_versions()}.",
        "Command: `make bench`. Medians of each benchmark's rounds; ratio = anchor median / "
        "this median (higher is better for us; the anchor is 1.00).",
        "",
    ]
    for group, items in groups.items():
        anchor = next((b for b in items if b["extra_info"].get("role") == "anchor"), None)
        lines.append(f"### {group}")
        lines.append("")
        lines.append("| benchmark | role | median | vs anchor |")
        lines.append("| --- | --- | ---: | ---: |")
        for b in sorted(items, key=lambda b: b["stats"]["median"]):
            med = b["stats"]["median"]
            ratio = f"{anchor['stats']['median'] / med:.2f}x" if anchor else "-"
            lines.append(
                f"| {b['name']} | {b['extra_info'].get('role', '-')} | {_fmt_time(med)} | {ratio} |"
            )
        extras = [
            (b["name"], k, v)
            for b in items
            for k, v in sorted(b["extra_info"].items())
            if k not in ("role", "kind", "series_ms") and isinstance(v, (int, float))
        ]
        if extras:
            lines.append("")
            for name, k, v in extras:
                lines.append(
                    f"- {name}: {k} = {v:,.3f}"
                    if isinstance(v, float)
                    else f"- {name}: {k} = {v:,}"
                )
        lines.append("")
    return "\n".join(lines)


def _fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds * 1e6:.1f} µs"


def chart(data: dict[str, Any], path: Path = CHART) -> Path | None:
    """Per-step cost against step number, one line per saver that recorded a series."""
    series = [
        (b["name"], b["extra_info"]["series_ms"], b["extra_info"].get("role"))
        for b in data["benchmarks"]
        if b["extra_info"].get("series_ms")
    ]
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5), dpi=110)
    for name, values, role in series:
        label = name.split("[", 1)[-1].rstrip("]")
        style = "-" if role == "ours" else "--"
        # A rolling median of 5 steps keeps scheduler noise from hiding the trend.
        smooth = [
            sorted(values[max(0, i - 2) : i + 3])[len(values[max(0, i - 2) : i + 3]) // 2]
            for i in range(len(values))
        ]
        ax.plot(range(1, len(values) + 1), smooth, style, label=label, linewidth=1.6)
    ax.set_xlabel("step (chat turn)")
    ax.set_ylabel("checkpoint cost per step (ms, put + put_writes)")
    ax.set_yscale("log")
    ax.set_title("Checkpoint cost per step as a chat thread grows")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    import pytest

    OUT.mkdir(exist_ok=True)
    json_path = OUT / "latest.json"
    args = [
        str(ROOT / "benchmarks"),
        "-q",
        "-p",
        "no:cacheprovider",
        f"--benchmark-json={json_path}",
        "--benchmark-columns=median,min,max,rounds",
        "--benchmark-sort=name",
        *(argv if argv is not None else sys.argv[1:]),
    ]
    code = pytest.main(args)
    if code != 0 or not json_path.exists():
        return int(code) or 1
    data = json.loads(json_path.read_text())
    text = tables(data)
    (OUT / "latest.md").write_text(text)
    print("\n" + text)
    png = chart(data)
    if png is not None:
        print(f"chart: {png.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
