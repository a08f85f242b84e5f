"""What a video frame of an Isaac Lab task costs: ``NewtonFrameRenderer.render`` against an env step.

The evaluation draws env 0's first episode of each mode with Newton's OpenGL viewer, one frame every
second step (``diffrl.deploy.evaluation``). On a machine without a GPU the frame is rasterized in
software (Mesa's llvmpipe through EGL), so it can cost more than the step it shows. This times both in
one process, alternated in rounds of ``--steps`` each, and reports the medians over rounds (the first
round, which compiles Warp kernels and shaders, is left out).

    python benchmarks/render_cost.py --task Isaac-Ant --num-envs 10 --size 320 240
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import format_machine, machine_description, set_threads

from diffrl.envs.isaaclab import make_isaaclab_env
from diffrl.envs.newton_rendering import NewtonFrameRenderer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="Isaac-Ant")
    parser.add_argument("--num-envs", type=int, default=10, help="the evaluation's default episodes per mode")
    parser.add_argument("--size", type=int, nargs=2, default=(320, 240), metavar=("WIDTH", "HEIGHT"))
    parser.add_argument("--steps", type=int, default=20, help="steps (and frames) per round")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds, after one untimed")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    set_threads(args.threads)
    print(format_machine(machine_description(torch.device("cpu"))))
    env = make_isaaclab_env(args.task, args.num_envs, device="cpu")
    step_ms, frame_ms = [], []
    try:
        with NewtonFrameRenderer(*args.size) as renderer:
            td = env.reset()
            for _ in range(args.rounds + 1):
                start = time.perf_counter()
                for _ in range(args.steps):
                    td["action"] = torch.zeros(env.action_spec.shape)
                    td = env.step(td)["next"]
                step_ms.append(1e3 * (time.perf_counter() - start) / args.steps)
                start = time.perf_counter()
                for _ in range(args.steps):
                    renderer.render()
                frame_ms.append(1e3 * (time.perf_counter() - start) / args.steps)
    finally:
        env.close()
    ratios = [frame / step for frame, step in zip(frame_ms[1:], step_ms[1:], strict=True)]
    width, height = args.size
    print(
        f"{args.task}, {args.num_envs} envs: step {statistics.median(step_ms[1:]):.1f} ms, "
        f"{width}x{height} frame {statistics.median(frame_ms[1:]):.1f} ms, "
        f"frame / step {statistics.median(ratios):.2f} (median of {args.rounds} rounds of {args.steps})"
    )


if __name__ == "__main__":
    main()
