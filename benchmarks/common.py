"""What every benchmark script shares: the machine's description, timing, JSON output, tables."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's processor string elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_description(device: torch.device) -> dict[str, Any]:
    """The facts a reader needs to judge a timing: CPU, cores, torch threads, device, load, versions."""
    description: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "torch": torch.__version__,
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        description["gpu"] = torch.cuda.get_device_name(device)
    return description


def set_threads(threads: int | None) -> None:
    """Use ``threads`` intra-op threads here and in child processes (``None``: torch's default).

    On a loaded CPU, fewer threads than cores avoid OpenMP's stalls when a thread is descheduled.
    """
    if threads is not None:
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(
    calls: dict[str, Callable[[], object]],
    device: torch.device,
    repeats: int,
    warmup: int = 2,
    min_repeat_s: float = 0.02,
) -> dict[str, float]:
    """Median wall time of one call of each function, warm-up excluded (LeanRL style).

    The functions are timed in turns within every repeat, so that a change of the machine's
    load during the measurement affects all of them alike and their ratios stay meaningful.
    A repeat times as many back-to-back calls as fill ``min_repeat_s`` (at least one), so that
    sub-millisecond calls are not dominated by the timer.
    """
    inner: dict[str, int] = {}
    for name, call in calls.items():
        for _ in range(warmup):
            call()
        synchronize(device)
        start = time.perf_counter()
        call()
        synchronize(device)
        inner[name] = max(1, int(min_repeat_s / max(time.perf_counter() - start, 1e-9)))
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            synchronize(device)
            start = time.perf_counter()
            for _ in range(inner[name]):
                call()
            synchronize(device)
            samples[name].append((time.perf_counter() - start) / inner[name])
    return {name: statistics.median(values) for name, values in samples.items()}


def write_json(path: str | Path, machine: dict[str, Any], records: Sequence[dict[str, Any]]) -> None:
    """``{"machine": {...}, "records": [one object per measured case]}``."""
    Path(path).write_text(json.dumps({"machine": machine, "records": list(records)}, indent=2) + "\n")


def format_table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """A Markdown table (pastes into docs/benchmarks.md as it is)."""
    cells = [[str(cell) for cell in row] for row in [header, *rows]]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    lines = [
        "| " + " | ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) + " |" for row in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (width + 1) + ":" for width in widths) + "|")
    return "\n".join(lines)


def format_machine(machine: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in machine.items())
