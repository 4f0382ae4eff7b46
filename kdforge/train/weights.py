"""Weights out of checkpoint files: kdforge's own (the distiller's state under "model", the
student's keys prefixed "student.") or plain state dicts as other tools save them."""

from pathlib import Path
from typing import Callable

from kdforge.errors import UserError


def submodule_state(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if isinstance(k, str) and k.startswith(prefix)}


def network_weights(blob) -> dict:
    """The weights of the one network a checkpoint holds: a kdforge checkpoint's student, or the
    file's state dict itself."""
    weights = blob.get("model", blob) if isinstance(blob, dict) else blob
    if not isinstance(weights, dict):
        return {}
    return submodule_state(weights, "student.") or weights


def load_into(load: Callable[[dict], object], state, path: Path) -> None:
    """Calls `load(state)` (a load_state_dict), turning a mismatch into a sentence about `path`."""
    try:
        if not isinstance(state, dict):
            raise TypeError
        load(state)
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError):
        raise UserError(f"{path} holds weights of another architecture than the configured one; check the model name and model_args.") from None
