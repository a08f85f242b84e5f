"""Integrity of a TorchRL checkpoint's tensor files, checked before anything is loaded."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch


def verify_tensor_files(checkpoint: Path) -> None:
    """Every tensor file under ``checkpoint`` has the size its ``meta.json`` says.

    TorchRL's checkpoint keeps no checksums, and tensordict maps a truncated tensor file by
    zero-filling it to the expected size (on disk too): a damaged checkpoint would load silently
    as different weights. A :class:`ValueError` names the first bad file.
    """
    for meta_path in Path(checkpoint).rglob("meta.json"):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"unreadable checkpoint file {meta_path}: {error}") from error
        for key, entry in meta.items():
            if not (isinstance(entry, dict) and "shape" in entry and "dtype" in entry):
                continue
            tensor_path = meta_path.parent / f"{key}.memmap"
            dtype = getattr(torch, str(entry["dtype"]).removeprefix("torch."))
            expected = math.prod(entry["shape"]) * dtype.itemsize
            if expected == 0:  # an empty tensor has no file
                continue
            size = tensor_path.stat().st_size if tensor_path.exists() else None
            if size != expected:
                raise ValueError(
                    f"corrupted checkpoint: {tensor_path} has {size if size is not None else 'no'} bytes, "
                    f"{expected} expected ({entry['dtype']} {entry['shape']})"
                )
