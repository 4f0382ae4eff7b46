"""Verify: does each exported file or engine compute what the PyTorch model computes, on the test split?

Per backend: max absolute difference of logits, top-1 agreement, and both accuracies. Beyond
the config's tolerances the stage fails with one sentence naming the model and the backend;
every artifact stays in place for inspection."""

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from kdforge.errors import UserError


def verify_backend(model: torch.nn.Module, run: Callable[[np.ndarray], np.ndarray], dataset, atol: float,
                   min_agreement: float, backend: str) -> dict:
    torch_logits, backend_logits, labels = [], [], []
    with torch.no_grad():
        for x, y in DataLoader(dataset, batch_size=128):
            torch_logits.append(model(x).numpy())
            backend_logits.append(run(x.numpy()))
            labels.append(np.asarray(y))
    t, b, y = np.concatenate(torch_logits), np.concatenate(backend_logits), np.concatenate(labels)
    result = {
        "backend": backend, "samples": int(len(y)),
        "max_abs_diff": float(np.abs(t - b).max()),
        "top1_agreement": float((t.argmax(1) == b.argmax(1)).mean()),
        "accuracy_pytorch": float((t.argmax(1) == y).mean()), "accuracy_backend": float((b.argmax(1) == y).mean()),
        "atol": atol, "min_agreement": min_agreement,
    }
    result["passed"] = result["max_abs_diff"] <= atol and result["top1_agreement"] >= min_agreement
    return result


def require_passed(result: dict, name: str, folder: Path) -> None:
    if not result["passed"]:
        raise UserError(
            f"student '{name}' on {result['backend']} differs from PyTorch (max |diff| {result['max_abs_diff']:.3g}, "
            f"top-1 agreement {result['top1_agreement']:.4f}) beyond verify.atol={result['atol']} / "
            f"verify.min_agreement={result['min_agreement']}; the files are kept in {folder}."
        )
