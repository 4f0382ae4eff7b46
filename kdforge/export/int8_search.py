"""Accuracy-aware INT8 for CNN and binary students: the export stage's way to an INT8 file that
keeps its accuracy.

1. Each integer scheme of the target CPU, fastest first (kdforge.export.int8_cpu.CANDIDATES), is
   quantized and judged against the FP32 file on the validation split by the verify stage's INT8
   gate (top-1 agreement and accuracy drop); the first that passes ships.
2. Otherwise, with the fastest scheme, a sensitivity pass leaves each MAC-carrying layer alone in
   float and measures the logits' mean squared error to FP32 on the calibration images; the layers
   whose float copy helps most stay float one at a time until the gate holds, as long as the float
   layers carry at most `export.int8_max_float_macs` of the MACs; then each earlier float layer that
   the gate does without goes back to INT8. Past that limit the search stops
   with one sentence naming the most sensitive layers, the last file kept for inspection.

Every file is judged by its exact quantized arithmetic: with graph optimisations off, ONNX
Runtime runs each DequantizeLinear, float operator and QuantizeLinear as written, which is what
every candidate computes on its own target (none saturates there), so the choice does not depend
on the machine that exports. The verify stage then runs the file on this host's integer kernels.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from kdforge.errors import UserError
from kdforge.export.int8_cpu import CANDIDATES, IntegerScheme
from kdforge.export.quantize import RangeOverrides, no_overrides, prepared_for_quantization, quantize_prepared

MAC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class Prepared:
    """A file ready for ONNX Runtime's quantizer and the activation ranges every try of it takes."""
    path: Path
    overrides: dict


@dataclass(frozen=True)
class Gate:
    min_agreement: float
    max_accuracy_drop: float

    def judge(self, reference: np.ndarray, logits: np.ndarray, labels: np.ndarray) -> dict:
        agreement = float((reference.argmax(1) == logits.argmax(1)).mean())
        drop = float((reference.argmax(1) == labels).mean() - (logits.argmax(1) == labels).mean())
        return {"top1_agreement": agreement, "accuracy_drop": drop,
                "passed": agreement >= self.min_agreement and drop <= self.max_accuracy_drop}


def _exact_logits(path: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads, options.log_severity_level = 2, 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: images[i:i + 128]})[0] for i in range(0, len(images), 128)])


def mac_shares(prepared: Path) -> dict[str, float]:
    """Each MAC-carrying node of the prepared graph and its share of the graph's MACs."""
    from kdforge.profile.onnx_counts import count_onnx

    layers = [layer for layer in count_onnx(onnx.load(str(prepared)))["layers"] if layer["op"] in MAC_OPS and layer["macs"]]
    total = sum(layer["macs"] for layer in layers)
    return {layer["layer"]: layer["macs"] / total for layer in layers}


def search_int8(fp32_path: Path, int8_path: Path, target: str, calibration: str, calibration_images: np.ndarray,
                val_images: np.ndarray, val_labels: np.ndarray, gate: Gate, max_float_macs: float,
                log=print, range_overrides: RangeOverrides = no_overrides) -> dict:
    """Writes the INT8 file to `int8_path` and returns how it was found: the scheme, each try's
    verdict on the validation split, the sensitivity ranking where it ran and the float layers.
    Every try takes the activation ranges `range_overrides` sets (quantize_int8's)."""
    reference = _exact_logits(fp32_path, val_images)
    tries = []
    with prepared_for_quantization(fp32_path, Path(int8_path).parent) as prepared:
        prepared = Prepared(prepared, range_overrides(prepared))
        for scheme in CANDIDATES[target]:
            tries.append(_try(prepared, int8_path, calibration_images, scheme, calibration, (), val_images, reference,
                              val_labels, gate))
            if tries[-1]["passed"]:
                return {"scheme": scheme.name, "tries": tries, "float_layers": [], "sensitivity": []}
        scheme = CANDIDATES[target][0]
        shares = mac_shares(prepared.path)
        log(f"  INT8 misses the gate on the validation split with every {target} scheme; ranking {len(shares)} layers "
            f"by their sensitivity")
        ranking = _sensitivity(prepared, int8_path, calibration_images, scheme, calibration, shares)
        floated: list[str] = []
        for row in ranking:
            if sum(shares[n] for n in floated) + row["mac_share"] > max_float_macs:
                break
            floated.append(row["layer"])
            tries.append(_try(prepared, int8_path, calibration_images, scheme, calibration, tuple(floated), val_images,
                              reference, val_labels, gate))
            log(f"  {row['layer']} in float ({row['mac_share']:.1%} of the MACs): top-1 agreement "
                f"{tries[-1]['top1_agreement']:.2%}, accuracy drop {tries[-1]['accuracy_drop'] * 100:.2f} points")
            if tries[-1]["passed"]:
                floated = _needed(floated, lambda kept: _try(prepared, int8_path, calibration_images, scheme, calibration,
                                                             tuple(kept), val_images, reference, val_labels, gate), tries)
                return {"scheme": scheme.name, "tries": tries, "sensitivity": ranking,
                        "float_layers": [{"layer": n, "mac_share": shares[n]} for n in floated]}
    worst = ", ".join(f"{r['layer']} ({r['mac_share']:.1%} of the MACs, logit MSE {r['mse_alone_float']:.3g} with it "
                      f"alone in float)" for r in ranking[:3])
    raise UserError(
        f"{Path(int8_path).name} misses the INT8 gate on the validation split (top-1 agreement "
        f"{tries[-1]['top1_agreement']:.2%}, accuracy drop {tries[-1]['accuracy_drop'] * 100:.2f} points) with "
        f"{len(floated)} layer(s) in float, and the next would pass export.int8_max_float_macs={max_float_macs}; the "
        f"most sensitive layers are {worst}; the file is kept in {Path(int8_path).parent}.")


def _needed(floated: list[str], attempt, tries: list[dict]) -> list[str]:
    """`floated` less each earlier layer whose return to INT8 still passes the gate (a layer floated
    before the one that made the difference may not be needed); the file left is the last passing one."""
    kept = list(floated)
    for layer in floated[:-1]:
        tries.append(attempt([n for n in kept if n != layer]))
        if tries[-1]["passed"]:
            kept.remove(layer)
    if not tries[-1]["passed"]:
        tries.append(attempt(kept))
    return kept


def _try(prepared, int8_path, images, scheme: IntegerScheme, calibration, floated, val_images, reference, labels,
         gate: Gate) -> dict:
    quantize_prepared(prepared.path, int8_path, images, scheme, calibration, floated, prepared.overrides)
    verdict = gate.judge(reference, _exact_logits(int8_path, val_images), labels)
    return {"scheme": scheme.name, "float_layers": list(floated), **verdict}


def _sensitivity(prepared, int8_path, images, scheme: IntegerScheme, calibration, shares: dict[str, float]) -> list[dict]:
    """The layers, most sensitive first: the logit MSE to FP32 on the calibration images of the file
    in which each alone stays float (lowest first), ties to the cheaper layer."""
    reference = _exact_logits(prepared.path, images)
    scratch = Path(int8_path).with_name(".sensitivity.onnx")
    rows = []
    try:
        for layer, share in shares.items():
            quantize_prepared(prepared.path, scratch, images, scheme, calibration, (layer,), prepared.overrides)
            rows.append({"layer": layer, "mac_share": share,
                         "mse_alone_float": float(np.mean((_exact_logits(scratch, images) - reference) ** 2))})
    finally:
        scratch.unlink(missing_ok=True)
    return sorted(rows, key=lambda r: (r["mse_alone_float"], r["mac_share"]))
