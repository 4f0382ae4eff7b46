"""Per-layer latency on a named target (targets.py), estimated with a roofline model from the
layer counts (counts.py, onnx_counts.py) and the elements each layer reads and writes.

Each layer takes max(compute time, memory time):
- convolutions and linear layers (matrix products included) run on tensor cores at the chosen
  precision: 2 x MACs / the target's dense peak; so do binary layers, which kdforge exports as
  standard convolutions of +-1 values (no 1-bit kernel is assumed);
- adder layers run on CUDA cores, since no tensor core computes |x - w|: one adder MAC is two
  add instructions (the subtraction, then the accumulation with |.| as a free operand modifier),
  issued at one per lane per cycle (packed half2 doubles it at fp16/bf16);
- normalisation and element-wise layers are bandwidth-bound: no compute term;
- memory time is (inputs + weights + outputs) x bytes per element of the precision / bandwidth.

What it leaves out, so read it as a lower bound on an ideal engine, never as a measurement:
kernel launch overhead (microseconds per layer, which dominates small models at batch 1), layer
fusion (which removes the memory traffic of fused element-wise layers), caches that keep a small
model's activations on chip, occupancy and tile quantisation on small layers, and clocks below
peak under power limits.
"""

from kdforge.profile.targets import Target

BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}
PRECISIONS = tuple(BYTES)
ADDER_INSTRUCTIONS_PER_MAC = 2


def layer_seconds(layer: dict, target: Target, precision: str) -> tuple[float, str]:
    """(seconds, "compute" or "memory") for one layer of a cost table."""
    memory = layer.get("traffic", 0) * BYTES[precision] / (target.bandwidth_gbs * 1e9)
    if layer["kind"] in ("conv", "linear", "binary"):
        compute = 2 * layer["macs"] / target.matmul_ops_per_s(precision)
    elif layer["kind"] == "adder":
        compute = ADDER_INSTRUCTIONS_PER_MAC * layer["macs"] / target.scalar_instructions_per_s(precision)
    else:
        compute = 0.0
    return (compute, "compute") if compute >= memory else (memory, "memory")


def estimate(costs: dict, target: Target, precision: str) -> dict:
    """The model's estimated latency on `target`: total, compute- and memory-bound shares, per layer."""
    layers = []
    for layer in costs["layers"]:
        seconds, bound = layer_seconds(layer, target, precision)
        layers.append({"layer": layer["layer"], "kind": layer["kind"], "ms": seconds * 1e3, "bound": bound})
    total = sum(l["ms"] for l in layers)
    return {
        "target": target.name, "description": target.description, "precision": precision, "total_ms": total,
        "gpu_name_contains": target.gpu_name_contains,
        "compute_bound_ms": sum(l["ms"] for l in layers if l["bound"] == "compute"),
        "memory_bound_ms": sum(l["ms"] for l in layers if l["bound"] == "memory"),
        "layers": layers, "source": target.source,
        "method": "roofline estimate (sum of per-layer max(compute, memory) times; no launch overhead, fusion or caches)",
    }
