"""Device choice: cuda, then mps, then cpu, unless the user says otherwise."""

from __future__ import annotations

import torch

from .errors import InputError

DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Return a usable torch device for ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``."""
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("device 'cuda' requested but no CUDA GPU is available; use 'auto' or 'cpu'")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError("device 'mps' requested but Apple MPS is not available; use 'auto' or 'cpu'")
    if name.split(":")[0] not in DEVICES:
        raise InputError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    return torch.device(name)
