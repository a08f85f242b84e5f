"""Latency of one exported-policy call (B = 1, one thread), as on a robot computer.

GenPO, TruDi and the Gaussian actor at their recipes' default network sizes (randomly initialized:
the weights do not change the cost) with Isaac-Ant's sizes, o = 60 and d = 8, exported by
``diffrl.deploy.export`` and run by onnxruntime and by TorchScript, zero noise. Medians over
repeats, warm-up excluded. Example::

    python benchmarks/deploy_latency.py
"""

from __future__ import annotations

import argparse
import os
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from common import format_machine, format_table, machine_description, median_seconds, set_threads

from diffrl.deploy.export import deployable_policy, export_onnx, export_torchscript
from diffrl.modules.denoising_chain import DenoisingChain
from diffrl.modules.gaussian_actor import GaussianActor
from diffrl.modules.genpo_actor import GenPOActor
from diffrl.modules.genpo_flow import GenPOFlow
from diffrl.modules.trudi_actor import TruDiActor

OBS_DIM, ACTION_DIM = 60, 8  # Isaac-Ant


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    set_threads(1)
    actors = {
        "GenPO, velocity MLP [400, 200, 100], N = 5": GenPOActor(GenPOFlow(ACTION_DIM, OBS_DIM)),
        "TruDi, [256, 256], K = 5": TruDiActor(DenoisingChain(ACTION_DIM, OBS_DIM, parameterization="mean")),
        "Gaussian PPO, [400, 200, 100]": GaussianActor(ACTION_DIM, OBS_DIM),
    }
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    rows = []
    with tempfile.TemporaryDirectory() as directory, torch.no_grad():
        for name, actor in actors.items():
            policy = deployable_policy(actor)
            onnx_path, script_path = Path(directory) / f"{len(rows)}.onnx", Path(directory) / f"{len(rows)}.pt"
            export_onnx(policy, onnx_path)
            export_torchscript(policy, script_path)
            session = onnxruntime.InferenceSession(os.fspath(onnx_path), options, providers=["CPUExecutionProvider"])
            feed = {
                "observation": np.zeros((1, OBS_DIM), np.float32),
                "noise": np.zeros((1, policy.noise_dim), np.float32),
            }
            scripted = torch.jit.load(os.fspath(script_path))
            observation, noise = torch.zeros(1, OBS_DIM), torch.zeros(1, policy.noise_dim)
            seconds = median_seconds(
                {"onnx": partial(session.run, None, feed), "torchscript": partial(scripted, observation, noise)},
                torch.device("cpu"),
                repeats=args.repeats,
                warmup=20,
            )
            rows.append([name, f"{1e3 * seconds['onnx']:.2f} ms", f"{1e3 * seconds['torchscript']:.2f} ms"])
    print(format_machine(machine_description(torch.device("cpu"))))
    print(format_table(rows, ["policy", "onnxruntime", "TorchScript"]))


if __name__ == "__main__":
    main()
