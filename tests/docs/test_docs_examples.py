"""The user scripts in the docs run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"


def python_blocks(markdown: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown.read_text(), flags=re.DOTALL)


@pytest.mark.parametrize("page", ["genpo.md", "trudi.md", "trudi_ppo.md"])
def test_user_script_runs(page, capsys):
    blocks = python_blocks(DOCS / page)
    assert blocks, f"docs/{page} has no python example"
    for block in blocks:
        exec(compile(block, f"docs/{page}", "exec"), {"__name__": "__docs__"})
    printed = capsys.readouterr().out
    assert printed.count("reward/step") == 3  # one line per collected batch


def test_training_parts_script_runs(capsys):
    (block,) = python_blocks(DOCS / "training.md")
    exec(compile(block, "docs/training.md", "exec"), {"__name__": "__docs__"})
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["ppo", "genpo"]
    assert all("3 iterations" in line for line in lines)


@pytest.mark.parametrize(("page", "diagnostic"), [("dppo.md", "chain KL "), ("fpo.md", "|ratio - 1| ")])
def test_loss_script_runs(page, diagnostic, capsys):
    (block,) = python_blocks(DOCS / page)
    exec(compile(block, f"docs/{page}", "exec"), {"__name__": "__docs__"})
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["epoch 0", "epoch 1", "epoch 2"]
    assert float(lines[0].split(diagnostic)[1].split(",")[0]) == 0.0  # the first step is at the rollout policy
