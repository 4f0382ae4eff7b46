"""Loading files that may come from anyone without running anything they contain.

Checkpoints, deploy files and data pickles are pickles, and an unrestricted unpickler calls
whatever functions a file names. Everything kdforge reads goes through the two loaders here:

- `load_torch`: `torch.load(weights_only=True)`, which rebuilds tensors, containers, numbers and
  strings only. NumPy arrays are admitted too (kdforge's training checkpoints hold NumPy's RNG
  state); an array is rebuilt by NumPy's own constructor and its elements by the same restricted
  unpickler, so that admits no code either.
- `load_numpy_pickle`: a plain pickle (the CIFAR python folders) read by an unpickler that admits
  NumPy arrays and nothing else.

A file that names any other global is refused with a UserError naming the file and the global.
"""

import pickle
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from kdforge.errors import UserError, printable
from kdforge.safe_files import open_regular

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


# torch.save stores its records uncompressed; a compressed record is inflated whole before torch
# compares it with the size the file declares, so a few MB can claim gigabytes.
MAX_COMPRESSED_RECORDS_BYTES = 256 << 20


def _check_records(f, path: Path, what: str) -> None:
    try:
        if not zipfile.is_zipfile(f):
            return  # the legacy format: torch reads each storage's declared size from the file itself
        with zipfile.ZipFile(f) as archive:
            inflated = sum(i.file_size for i in archive.infolist() if i.compress_type != zipfile.ZIP_STORED)
    except Exception:  # noqa: BLE001 - zipfile raises BadZipFile, NotImplementedError, ValueError, ... on damage
        raise UserError(f"{what} {printable(str(path))} is not a readable PyTorch checkpoint; it may be corrupt or "
                        f"half-written.") from None
    if inflated > MAX_COMPRESSED_RECORDS_BYTES:
        raise UserError(f"{what} {printable(str(path))} holds compressed records that inflate to {inflated:,} bytes; "
                        f"torch.save writes none, so it is not loaded.")


def load_torch(path: Path, what: str):
    """The contents of a torch.save file, without executing anything from it."""
    path = Path(path)
    with open_regular(path, what) as f:
        _check_records(f, path, what)
        f.seek(0)
        try:
            # torch warns (on stderr) about odd pickle protocols and the like: the file's problem, said below if fatal
            with torch.serialization.safe_globals(_TORCH_SAFE_NUMPY), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return torch.load(f, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            culprit = re.search(r"GLOBAL ([\w.]+)", str(e))
            if culprit:
                raise _refused(path, what, culprit.group(1)) from None
            raise UserError(f"{what} {printable(str(path))} is not a readable PyTorch checkpoint; it may be corrupt or "
                            f"half-written.") from None
        except Exception:  # a truncated zip, a foreign format, a torch version mismatch
            raise UserError(f"{what} {printable(str(path))} is not a readable PyTorch checkpoint; it may be corrupt or "
                            f"half-written.") from None


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"GLOBAL {module}.{name}")


def load_numpy_pickle(path: Path, what: str):
    """A plain pickle of containers, bytes, numbers and NumPy arrays (as the CIFAR folders hold)."""
    path = Path(path)
    try:
        with open_regular(path, what) as f:
            return _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except UserError:
        raise
    except pickle.UnpicklingError as e:
        culprit = re.search(r"GLOBAL ([\w.]+)", str(e))
        if culprit:
            raise _refused(path, what, culprit.group(1)) from None
        raise UserError(f"{what}: {path} is not a readable pickle file; it may be corrupt.") from None
    except Exception as e:  # a truncated or foreign file
        raise UserError(f"{what}: {path} is not a readable pickle file ({type(e).__name__}).") from None
