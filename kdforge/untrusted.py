"""Loading files that may come from anyone without running anything they contain.

Checkpoints, deploy files and data pickles are pickles, and an unrestricted unpickler calls
whatever functions a file names. Everything kdforge reads goes through the two loaders here:

- `load_torch`: `torch.load(weights_only=True)`, which rebuilds tensors, containers, numbers and
  strings only. NumPy arrays are admitted too (kdforge's training checkpoints hold NumPy's RNG
  state); an array is rebuilt by NumPy's own constructor and its elements by the same restricted
  unpickler, so that admits no code either.
- `load_numpy_pickle`: a plain pickle (the CIFAR python folders) read by an unpickler that admits
  NumPy arrays and nothing else.

- `load_exported_program`: a torch.export archive (.pt2). torch.export.load unpickles some of an
  archive's payloads without restriction (pickled weights and constants, and custom objects), so
  every pickled payload is first loaded with weights_only=True and custom objects are refused;
  what torch then loads is only what that check admitted.

A file that names any other global is refused with a UserError naming the file and the global.
"""

import io
import json
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from kdforge.errors import UserError

# NumPy 2 pickles name numpy._core, NumPy 1 pickles numpy.core; both spellings are admitted.
_NUMPY_GLOBALS = {
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}
_TORCH_SAFE_NUMPY = [(np._core.multiarray._reconstruct, f"{m}.{n}") for m, n in _NUMPY_GLOBALS if n == "_reconstruct"]
_TORCH_SAFE_NUMPY += [np.ndarray, np.dtype]
_TORCH_SAFE_NUMPY += [type(np.dtype(t)) for t in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
                                                  np.uint32, np.uint64, np.float16, np.float32, np.float64)]


def _refused(path: Path, what: str, name: str) -> UserError:
    return UserError(f"{what} {path} asks to load the Python object '{name}', which can run code; kdforge loads only "
                     f"tensors, arrays and plain data, so use a file saved from a state_dict.")


def load_torch(path: Path, what: str):
    """The contents of a torch.save file, without executing anything from it."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_TORCH_SAFE_NUMPY):
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist; run the stage that writes it first or fix the path.") from None
    except IsADirectoryError:
        raise UserError(f"{what} {path} is a folder, not a PyTorch checkpoint file.") from None
    except pickle.UnpicklingError as e:
        culprit = re.search(r"GLOBAL ([\w.]+)", str(e))
        if culprit:
            raise _refused(path, what, culprit.group(1)) from None
        raise UserError(f"{what} {path} is not a readable PyTorch checkpoint; it may be corrupt or half-written.") from None
    except Exception:  # a truncated zip, a foreign format, a torch version mismatch
        raise UserError(f"{what} {path} is not a readable PyTorch checkpoint; it may be corrupt or half-written.") from None


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"GLOBAL {module}.{name}")


def load_numpy_pickle(path: Path, what: str):
    """A plain pickle of containers, bytes, numbers and NumPy arrays (as the CIFAR folders hold)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as e:
        culprit = re.search(r"GLOBAL ([\w.]+)", str(e))
        if culprit:
            raise _refused(path, what, culprit.group(1)) from None
        raise UserError(f"{what}: {path} is not a readable pickle file; it may be corrupt.") from None
    except Exception as e:  # a truncated or foreign file
        raise UserError(f"{what}: {path} is not a readable pickle file ({type(e).__name__}).") from None


def _pt2_pickles(archive: zipfile.ZipFile, path: Path):
    """The members of a .pt2 archive that torch.export.load would unpickle; a UserError for custom
    objects, which it unpickles with no restriction possible."""
    names = archive.namelist()
    yield from (name for name in names if name.endswith(".pt"))  # sample inputs; the whole artifact in the older format
    for config_name in (n for n in names if n.endswith("_weights_config.json") or n.endswith("_constants_config.json")):
        folder = config_name.rsplit("/", 1)[0]
        for fqn, meta in json.loads(archive.read(config_name)).get("config", {}).items():
            path_name = str(meta.get("path_name", ""))
            if config_name.endswith("_constants_config.json") and not path_name.startswith("tensor"):
                raise UserError(f"torch.export archive {path} holds a custom object '{fqn}', which loads by unrestricted "
                                f"unpickling; kdforge does not load it.")
            if meta.get("use_pickle"):
                yield f"{folder}/{path_name}"


def load_exported_program(path: Path):
    """A torch.export program from a .pt2 file, loaded after its pickled payloads pass weights_only."""
    path = Path(path)
    unreadable = UserError(f"{path} is not a readable torch.export archive (.pt2).")
    try:
        with zipfile.ZipFile(path) as archive:
            for member in _pt2_pickles(archive, path):
                try:
                    torch.load(io.BytesIO(archive.read(member)), map_location="cpu", weights_only=True)
                except pickle.UnpicklingError as e:
                    culprit = re.search(r"GLOBAL ([\w.]+)", str(e))
                    if culprit:
                        raise _refused(path, "torch.export archive", culprit.group(1)) from None
                    raise unreadable from None
                except Exception:  # noqa: BLE001 - a damaged payload
                    raise unreadable from None
    except (zipfile.BadZipFile, KeyError, ValueError, OSError):
        raise unreadable from None
    try:
        return torch.export.load(path)
    except Exception as e:  # noqa: BLE001 - a damaged or foreign archive
        raise UserError(f"{path} is not a readable torch.export archive (.pt2): {type(e).__name__}.") from None
