"""Weights out of checkpoint files: kdforge's own (the distiller's state under "model", the
student's keys prefixed "student.") or plain state dicts as other tools save them (torch.save'd,
bare or under "model" / "state_dict", or .safetensors)."""

from pathlib import Path
from typing import Callable

from kdforge.errors import UserError, printable, reason


def submodule_state(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if isinstance(k, str) and k.startswith(prefix)}


def network_weights(blob) -> dict:
    """The weights of the one network a checkpoint holds: a kdforge checkpoint's student, or the
    file's state dict itself."""
    weights = blob.get("model", blob.get("state_dict", blob)) if isinstance(blob, dict) else blob
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


def read_state_dict(path: Path, what: str) -> dict:
    """The tensors of a weights file: .safetensors (which holds nothing but tensors) or a torch.save
    file through the safe loader."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load

        from kdforge.safe_files import read_bytes

        try:
            return load(read_bytes(path, what, 64 << 30))
        except UserError:
            raise
        except Exception:  # noqa: BLE001 - safetensors' errors have no common type
            raise UserError(f"{what} {printable(str(path))} is not a readable safetensors file.") from None
    from kdforge.untrusted import load_torch

    state = network_weights(load_torch(path, what))
    if not state or not all(isinstance(k, str) for k in state):
        raise UserError(f"{what} {printable(str(path))} holds no state dict (a mapping of parameter names to tensors).")
    return state


def load_named(module, state: dict, path: Path, what: str) -> None:
    """Loads `state` into `module`, a UserError naming the keys that are missing, unexpected or of
    another shape."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
                  if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = [f"{label} {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''} ({len(keys)})"
                for label, keys in (("missing", missing), ("unexpected", unexpected), ("of another shape", mismatched)) if keys]
    if problems:
        raise UserError(f"{what} {printable(str(path))} does not fit the model: {printable('; '.join(problems))}; check the "
                        f"model and model_args.")
    try:
        module.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError, AttributeError) as e:  # an entry that is no tensor
        raise UserError(f"{what} {printable(str(path))} does not fit the model ({reason(e)}).") from None
