"""Where an exported file stops computing what PyTorch computes: the first layer whose output
diverges, found as Polygraphy does it (every node output marked as a graph output in a copy of
the file, one run) and compared with the PyTorch module that produced it.

Which module a tensor comes from is the exporter's own record: torch.onnx writes each node's
module path in its `pkg.torch.onnx.name_scopes` metadata, and a module's output is the last node
output inside its scope. ONNX Runtime's quantizer keeps the FP32 file's tensor names, so an INT8
file's tensors are mapped through model.onnx's records where its own nodes lost them. A layer
diverges where its relative error, max |diff| / max |PyTorch output|, reaches half the logits'
relative error: the first layer (in the file's order) that carries that much of the error the
verify stage saw.
"""

import ast
import copy
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

SCOPES = "pkg.torch.onnx.name_scopes"


def module_outputs(model: onnx.ModelProto) -> dict[str, str]:
    """{tensor name: module path} for the last output of each module's scope, in graph order."""
    last: dict[str, str] = {}
    for node in model.graph.node:
        props = {p.key: p.value for p in node.metadata_props}
        if SCOPES not in props or not node.output:
            continue
        try:
            scopes = ast.literal_eval(props[SCOPES])
        except (ValueError, SyntaxError):
            continue
        if isinstance(scopes, list):
            for scope in scopes[1:-1]:  # the module paths around the node; the last one is the node's own name
                last[str(scope)] = node.output[0]
    return {tensor: module for module, tensor in last.items()}


def _pytorch_outputs(model: nn.Module, images: torch.Tensor, paths: set[str]) -> dict[str, np.ndarray]:
    """Each module's output under one of `paths`, where a path names the module with a prefix dropped
    (a wrapper's attribute, as the FP16 file's Float16Student adds)."""
    modules = dict(model.named_modules())
    found, handles = {}, []
    for path in paths:
        parts = path.split(".")
        name = next((".".join(parts[i:]) for i in range(len(parts)) if ".".join(parts[i:]) in modules), None)
        if name:
            handles.append(modules[name].register_forward_hook(
                lambda _m, _i, out, path=path: found.__setitem__(path, out.detach().float().clone().numpy())
                if isinstance(out, torch.Tensor) else None))
    try:
        with torch.no_grad():
            logits = model(images).float().numpy()
    finally:
        for h in handles:
            h.remove()
    return {**found, "": logits}


def intermediate_values(graph: onnx.ModelProto, tensors: list[str], images: np.ndarray) -> dict[str, np.ndarray]:
    """Every graph output and each of `tensors` of `graph` run by ONNX Runtime on `images`, the
    tensors marked as outputs in a copy of the file."""
    from kdforge.export import ort as ort_backend

    graph = copy.deepcopy(graph)
    known = {o.name for o in graph.graph.output}
    graph.graph.output.extend(onnx.ValueInfoProto(name=t) for t in dict.fromkeys(tensors) if t not in known)
    with tempfile.TemporaryDirectory() as folder:
        marked = Path(folder) / "marked.onnx"
        onnx.save(graph, str(marked))
        session = ort_backend.session(marked, threads=2)
        outputs = session.run(None, {session.get_inputs()[0].name: images})
    return dict(zip([o.name for o in session.get_outputs()], outputs))


def first_divergence(path: Path, model: nn.Module, images: torch.Tensor, reference_file: Path | None = None) -> dict | None:
    """{layer, tensor, relative_error, logits_relative_error} of the first layer of `path` (run by
    ONNX Runtime) whose output diverges from `model`'s on `images`; None where no layer can be
    mapped or none diverges. `reference_file` (model.onnx) maps tensor names the file's nodes lost."""
    graph = onnx.load(str(path))
    names = module_outputs(graph)
    if reference_file is not None:
        names = {**module_outputs(onnx.load(str(reference_file))), **names}
    produced = [o for node in graph.graph.node for o in node.output if o in names]
    if not produced:
        return None
    wanted = _pytorch_outputs(model, images, {names[t] for t in produced})
    values = intermediate_values(graph, produced, images.numpy())

    def relative(a, b):
        return float(np.abs(a.astype(np.float32) - b).max() / max(float(np.abs(b).max()), 1e-12))

    logits_error = relative(values[graph.graph.output[0].name], wanted[""])
    for tensor in produced:
        module = names[tensor]
        ours, theirs = values.get(tensor), wanted.get(module)
        if ours is None or theirs is None or ours.shape != theirs.shape:
            continue
        error = relative(ours, theirs)
        if error >= logits_error / 2 and error > 0:
            return {"layer": module, "tensor": tensor, "relative_error": error, "logits_relative_error": logits_error}
    return None
