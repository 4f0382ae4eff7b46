"""Verify: does each exported file or engine compute what the PyTorch model computes, on the test split?

Per backend: max absolute difference of logits, top-1 agreement, and both accuracies. Beyond
the config's tolerances the stage fails with one sentence naming the model and the backend;
every artifact stays in place for inspection. The counts of the file and of the PyTorch model
are compared too (DESIGN.md: counting is one truth)."""

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from kdforge.errors import UserError

VERIFY_BATCH = 128  # images per call of a backend; TensorRT engines are built to take it


def verify_backend(model: torch.nn.Module, run: Callable[[np.ndarray], np.ndarray], dataset, atol: float,
                   min_agreement: float, backend: str, atol_key: str = "verify.atol") -> dict:
    """`atol_key` names the config key of `atol` in the error a failure gets."""
    torch_logits, backend_logits, labels = [], [], []
    with torch.no_grad():
        for x, y in DataLoader(dataset, batch_size=VERIFY_BATCH):
            torch_logits.append(model(x).numpy())
            backend_logits.append(run(x.numpy()))
            labels.append(np.asarray(y))
    t, b, y = np.concatenate(torch_logits), np.concatenate(backend_logits), np.concatenate(labels)
    result = {
        "backend": backend, "samples": int(len(y)),
        "max_abs_diff": float(np.abs(t - b).max()),
        "top1_agreement": float((t.argmax(1) == b.argmax(1)).mean()),
        "accuracy_pytorch": float((t.argmax(1) == y).mean()), "accuracy_backend": float((b.argmax(1) == y).mean()),
        "atol": atol, "atol_key": atol_key, "min_agreement": min_agreement,
    }
    result["accuracy_drop"] = result["accuracy_pytorch"] - result["accuracy_backend"]
    result["passed"] = result["max_abs_diff"] <= atol and result["top1_agreement"] >= min_agreement
    return result


def compare_counts(model: torch.nn.Module, input_shape: tuple, onnx_path: Path) -> dict:
    """Conv, linear and adder MACs of the deployed model (torch.export) and of its ONNX file (its
    own graph), which must agree exactly: batch norm is folded in the file, so those MACs do not
    move. A portable file spells each adder layer in standard ops, so there they cannot agree."""
    import onnx

    from kdforge.profile.counts import count_costs, macs_by_kind
    from kdforge.profile.onnx_counts import count_onnx

    pytorch = macs_by_kind(count_costs(model, input_shape))
    exported = macs_by_kind(count_onnx(onnx.load(str(onnx_path)), batch=input_shape[0]))
    result = {"pytorch": pytorch, "onnx": exported, "agree": pytorch == exported, "note": ""}
    if not result["agree"] and pytorch["adder"] and not exported["adder"]:
        result["note"] = "portable ONNX spells adder layers in standard ops: MACs not comparable"
    elif not result["agree"]:
        raise RuntimeError(f"the MACs of {onnx_path} {exported} differ from its deploy.pt's {pytorch}; one of kdforge's counters is wrong")
    return result


def verify_int8(model: torch.nn.Module, run: Callable[[np.ndarray], np.ndarray], dataset, min_agreement: float,
                max_accuracy_drop: float, backend: str = "onnxruntime-int8") -> dict:
    """An INT8 file against the FP32 PyTorch model: judged by top-1 agreement and the accuracy it
    loses, not by logit differences, which quantization makes large by design."""
    result = verify_backend(model, run, dataset, float("inf"), min_agreement, backend)
    result.update(atol=None, max_accuracy_drop=max_accuracy_drop)
    result["passed"] = result["top1_agreement"] >= min_agreement and result["accuracy_drop"] <= max_accuracy_drop
    return result


def _where(result: dict) -> str:
    found = result.get("first_divergence")
    if not found:
        return ""
    return (f"; the first layer to diverge is {found['layer']} (tensor {found['tensor']}, relative error "
            f"{found['relative_error']:.3g} against the logits' {found['logits_relative_error']:.3g})")


def require_passed(result: dict, name: str, folder: Path) -> None:
    if not result["passed"] and "max_accuracy_drop" in result:
        other_cpu = result.get("cpu", {}).get("note")
        raise UserError(
            f"student '{name}' in INT8 agrees with PyTorch on {result['top1_agreement']:.2%} of the test images "
            f"(verify.int8_min_agreement={result['min_agreement']}) and loses {result['accuracy_drop'] * 100:.2f} points of "
            f"accuracy (verify.int8_max_accuracy_drop={result['max_accuracy_drop']}){'; ' + other_cpu if other_cpu else ''}"
            f"{_where(result)}; the files are kept in {folder}."
        )
    if not result["passed"]:
        raise UserError(
            f"student '{name}' on {result['backend']} differs from PyTorch (max |diff| {result['max_abs_diff']:.3g}, "
            f"top-1 agreement {result['top1_agreement']:.4f}) beyond {result.get('atol_key', 'verify.atol')}={result['atol']} / "
            f"verify.min_agreement={result['min_agreement']}{_where(result)}; the files are kept in {folder}."
        )
