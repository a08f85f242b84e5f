"""Does ``torch.compile`` speed up GenPO's sampler? Eager against compiled, timed in turns.

The sampler is ``GenPOFlow.forward`` (N = 5 steps, 2N velocity passes) at Isaac-Ant sizes
(d = 8 actions, 60 observations, [400, 200, 100] Mish), without gradients, as in collection.
Reports the compile time, the medians of both and the largest difference of their outputs.

    python benchmarks/compile_cost.py --threads 1                   # batch 256 and 4096
    python benchmarks/compile_cost.py --quick --json compile.json   # batch 256
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import torch
from common import format_machine, format_table, machine_description, median_seconds, set_threads, write_json

from diffrl.modules.genpo_flow import GenPOFlow

ACTION_DIM, OBS_DIM, HIDDEN = 8, 60, (400, 200, 100)


def measure(batch: int, repeats: int, device: torch.device) -> dict[str, Any]:
    torch.manual_seed(0)
    flow = GenPOFlow(ACTION_DIM, OBS_DIM, num_steps=5, hidden_sizes=HIDDEN).to(device)
    noise = torch.randn(batch, 2 * ACTION_DIM, device=device)
    observation = torch.randn(batch, OBS_DIM, device=device)
    compiled = torch.compile(flow.forward)
    with torch.no_grad():
        start = time.perf_counter()
        compiled(noise, observation)
        compile_s = time.perf_counter() - start
        difference = (compiled(noise, observation) - flow(noise, observation)).abs().max().item()
        seconds = median_seconds(
            {"eager": lambda: flow(noise, observation), "compiled": lambda: compiled(noise, observation)},
            device,
            repeats,
        )
    return {
        "policy": "genpo",
        "operation": "sample",
        "batch": batch,
        "eager_s": seconds["eager"],
        "compiled_s": seconds["compiled"],
        "speedup": seconds["eager"] / seconds["compiled"],
        "compile_s": compile_s,
        "max_abs_difference": difference,
    }


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="batch 256 only, fewer repeats")
    parser.add_argument("--json", metavar="PATH", help="write the records as JSON")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    device = torch.device(args.device)
    machine = machine_description(device)
    batches, repeats = ((256,), 7) if args.quick else ((256, 4096), 15)
    records = [measure(batch, repeats, device) for batch in batches]
    print(format_machine(machine))
    rows = [
        (
            r["batch"],
            f"{r['eager_s'] * 1e3:.2f}",
            f"{r['compiled_s'] * 1e3:.2f}",
            f"{r['speedup']:.2f}",
            f"{r['compile_s']:.0f}",
            f"{r['max_abs_difference']:.1e}",
        )
        for r in records
    ]
    print(format_table(rows, ("batch", "eager ms", "compiled ms", "speedup", "compile s", "max |Δ|")))
    if args.json:
        write_json(args.json, machine, records)
    return records


if __name__ == "__main__":
    main()
