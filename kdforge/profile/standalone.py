"""`kdforge profile FILE`: the cost table of one deploy.pt or .onnx file, outside a pipeline."""

from pathlib import Path

import numpy as np

from kdforge.errors import UserError
from kdforge.profile import latency


def _table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _layer_table(layers: list[dict]) -> str:
    lines = [f"{'layer':40s} {'kind':12s} {'MACs':>14s} {'mul':>14s} {'add':>14s} {'elements':>10s}"]
    for c in layers:
        lines.append(f"{c['layer'][:40]:40s} {c['kind']:12s} {c['macs']:>14,} {c['mul']:>14,} {c['add']:>14,} {c['elements']:>10,}")
    return "\n".join(lines)


def profile_file(path: Path, threads: int = 1, layers: bool = False, warmup: int = 10, runs: int = 50) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist; give a deploy.pt or a .onnx file.")
    if path.suffix == ".onnx":
        return _profile_onnx(path, threads, warmup, runs)
    if path.suffix == ".pt":
        return _profile_deployed(path, threads, layers, warmup, runs)
    raise UserError(f"{path}: kdforge profiles deploy.pt files and .onnx files, not '{path.suffix}'.")


def _profile_deployed(path: Path, threads: int, layers: bool, warmup: int, runs: int) -> dict:
    from kdforge.export.strip import load_deployed
    from kdforge.profile.counts import count_costs

    model, spec = load_deployed(path)
    shape = (1, spec["in_channels"], spec["image_size"], spec["image_size"])
    costs = count_costs(model, shape)
    lat = latency.pytorch_latency(model, shape, threads, warmup, runs)
    t = costs["totals"]
    table = _table([
        ("model", f"{spec['model']} ({spec.get('method', '?')})"), ("input", "x".join(map(str, shape))),
        ("parameters", f"{t['params']:,} ({t['param_bytes'] / 1024:,.1f} KiB)"),
        ("MACs", f"{t['macs']:,} (1 MAC = 1 mul + 1 add; adder MAC = 2 add)"),
        ("multiplications", f"{t['mul']:,}"), ("additions", f"{t['add']:,}"),
        ("norm / element-wise", f"{t['norm_elements']:,} / {t['elementwise_elements']:,} elements (not in the totals)"),
        ("peak activations", f"{t['peak_activation_bytes'] / 1024:,.1f} KiB"),
        ("PyTorch CPU latency", f"p50 {lat['p50_ms']:.3f} ms, p90 {lat['p90_ms']:.3f} ms ({threads} thread(s))"),
    ])
    if layers:
        table += "\n\n" + _layer_table(costs["layers"])
    return {"table": table, "costs": costs, "latency": {"pytorch": lat}, "environment": latency.environment()}


def _profile_onnx(path: Path, threads: int, warmup: int, runs: int) -> dict:
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception:
        raise UserError(f"{path} is not a readable ONNX file.") from None
    params = int(sum(np.prod(init.dims) for init in model.graph.initializer))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    shape = tuple(d.dim_value if d.dim_value > 0 else 1 for d in dims)
    lat = latency.onnxruntime_latency(path, shape, threads, warmup, runs)
    table = _table([
        ("file", str(path)), ("input", "x".join(map(str, shape))), ("parameters", f"{params:,}"),
        ("ONNX Runtime latency", f"p50 {lat['p50_ms']:.3f} ms, p90 {lat['p90_ms']:.3f} ms ({threads} thread(s), {lat['provider']})"),
    ])
    return {"table": table, "params": params, "latency": {"onnxruntime": lat}, "environment": latency.environment()}
