"""Where the tensors live: CUDA when there is a GPU, else the CPU."""

from __future__ import annotations

import torch


def pick_device(device: str | None = None) -> torch.device:
    """CUDA when available (or when asked for), else CPU. Raises ValueError for an unusable name."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).split(":")[0] not in ("cpu", "cuda"):
        raise ValueError(f"Unknown device '{device}'; use 'auto', 'cpu' or 'cuda'.")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"Device '{device}' was asked for but no CUDA GPU is visible; use --device cpu."
        )
    try:
        return torch.device(device)
    except RuntimeError:
        raise ValueError(f"Unknown device '{device}'; use 'auto', 'cpu' or 'cuda'.") from None


def device_label(device: torch.device) -> str:
    """Human-readable device name: the GPU model, or 'CPU (n threads)'."""
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)}"
    return f"CPU ({torch.get_num_threads()} threads)"
