"""Verify: does the exported file compute what the PyTorch model computes, on the test split?

Max absolute difference of logits, top-1 agreement, and both accuracies. Beyond the config's
tolerances the stage fails with one sentence naming the model and the backend; every
artifact stays in place for inspection."""

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from kdforge.errors import UserError
from kdforge.export import ort as ort_backend


def verify_onnx(model: torch.nn.Module, onnx_path: Path, dataset, atol: float, min_agreement: float) -> dict:
    sess = ort_backend.session(onnx_path, threads=2)
    torch_logits, ort_logits, labels = [], [], []
    with torch.no_grad():
        for x, y in DataLoader(dataset, batch_size=128):
            torch_logits.append(model(x).numpy())
            ort_logits.append(ort_backend.run(sess, x.numpy()))
            labels.append(np.asarray(y))
    t, o, y = np.concatenate(torch_logits), np.concatenate(ort_logits), np.concatenate(labels)
    result = {
        "backend": "onnxruntime", "provider": sess.get_providers()[0], "samples": int(len(y)),
        "max_abs_diff": float(np.abs(t - o).max()),
        "top1_agreement": float((t.argmax(1) == o.argmax(1)).mean()),
        "accuracy_pytorch": float((t.argmax(1) == y).mean()), "accuracy_backend": float((o.argmax(1) == y).mean()),
        "atol": atol, "min_agreement": min_agreement,
    }
    result["passed"] = result["max_abs_diff"] <= atol and result["top1_agreement"] >= min_agreement
    return result


def require_passed(result: dict, name: str, folder: Path) -> None:
    if not result["passed"]:
        atol, min_agreement = result["atol"], result["min_agreement"]
        raise UserError(
            f"student '{name}' on onnxruntime differs from PyTorch (max |diff| {result['max_abs_diff']:.3g}, "
            f"top-1 agreement {result['top1_agreement']:.4f}) beyond verify.atol={atol} / verify.min_agreement={min_agreement}; "
            f"the files are kept in {folder}."
        )
