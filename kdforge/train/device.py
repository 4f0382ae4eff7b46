"""Which device a run uses: the config's `device`, checked against what the machine has."""

import torch

from kdforge.errors import UserError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device: 'cuda' was requested but this machine has no CUDA GPU; set device: cpu or auto.")
    return torch.device(name)
