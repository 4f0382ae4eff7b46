"""ONNX Runtime sessions for exported students, with the kdforge::AdderConv2d kernel registered.

Imports no torch: an inference process that runs kdforge's ONNX files needs onnxruntime and
numpy, plus a C compiler or onnxruntime-extensions for adder models.

How the adder node runs, and why. The PyPI onnxruntime wheel ships no C/C++ headers, so the
usual custom-op library cannot be built against it. Two kernels, best first:
- native (adder_ort_op.c): a C custom-op library that declares the few pieces of ONNX Runtime's
  stable C ABI it uses, compiled once per machine with the system C compiler (OpenMP, -O3) into
  a cache folder. It runs the kdforge node as it is and is as fast as the numba kernel or
  faster; this is the default wherever `cc` exists.
- python: onnxruntime-extensions (PyPI) runs Python-defined operators in the fixed domain
  ai.onnx.contrib with scalar attributes, so the node is rewritten to that form in memory and
  runs the numba kernel (kdforge.nn.adder_cpu). No compiler needed, exact, but the extension
  copies each output tensor element by element (about 0.1 us per element here), which
  dominates at large batches: the fallback where no compiler is found.
Either way the file on disk is untouched: attributes the kernels read (scalar stride/pad) are
added to the nodes in memory at load time.
"""

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from kdforge.errors import UserError

ADDER_DOMAIN, ADDER_OP = "kdforge", "AdderConv2d"
_CONTRIB_DOMAIN, _CONTRIB_OP = "ai.onnx.contrib", "KdforgeAdderConv2d"
_SCALAR_ATTRS = ("stride_h", "stride_w", "pad_top", "pad_left", "pad_bottom", "pad_right")
_registered = False


def _register_adder_kernel() -> str:
    """Defines the Python operator once per process; returns the extensions library path."""
    global _registered
    try:
        PyCustomOpDef, get_library_path, onnx_op = _import_extensions()
    except ImportError:
        raise UserError("this ONNX file has kdforge::AdderConv2d nodes; install onnxruntime-extensions to run them "
                        "in ONNX Runtime, or export with export.portable: true.") from None
    if not _registered:
        from kdforge.nn.adder_cpu import adder_conv2d_forward

        @onnx_op(op_type=_CONTRIB_OP, inputs=[PyCustomOpDef.dt_float, PyCustomOpDef.dt_float], outputs=[PyCustomOpDef.dt_float],
                 attrs={name: PyCustomOpDef.dt_int64 for name in _SCALAR_ATTRS})
        def _adder(x, w, **attrs):
            if attrs["pad_top"] != attrs["pad_bottom"] or attrs["pad_left"] != attrs["pad_right"]:
                raise ValueError("kdforge AdderConv2d supports symmetric padding only")
            return adder_conv2d_forward(x, w, (attrs["stride_h"], attrs["stride_w"]), (attrs["pad_top"], attrs["pad_left"]))

        _registered = True
    return get_library_path()


def _import_extensions():
    """onnxruntime-extensions imports torch whenever it can (for a Whisper converter kdforge does
    not use; the import is optional there). An inference process should not load torch for it,
    so torch is hidden during that one import unless the process already has it."""
    hide = "torch" not in sys.modules
    if hide:
        sys.modules["torch"] = None  # makes `import torch` raise ImportError
    try:
        from onnxruntime_extensions import PyCustomOpDef, get_library_path, onnx_op
    finally:
        if hide:
            del sys.modules["torch"]
    return PyCustomOpDef, get_library_path, onnx_op


_NATIVE_SOURCE = Path(__file__).with_name("adder_ort_op.c")


def native_library() -> Path | None:
    """The compiled native kernel library, built on first use; None where no C compiler works."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    source = _NATIVE_SOURCE.read_bytes()
    flags = ["-O3", "-march=native", "-ffast-math", "-fopenmp", "-shared", "-fPIC", "-Wl,-z,nodelete"]
    key = hashlib.sha256(source + " ".join([compiler, *flags]).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("KDFORGE_CACHE", Path.home() / ".cache" / "kdforge"))
    library = cache / f"adder_ort_op-{key}.so"
    if library.is_file():
        return library
    cache.mkdir(parents=True, exist_ok=True)
    tmp = library.with_name(f".{library.name}.{os.getpid()}")
    try:
        built = subprocess.run([compiler, *flags, "-o", str(tmp), str(_NATIVE_SOURCE)], capture_output=True)
    except OSError:  # $CC names no runnable program
        return None
    if built.returncode != 0:
        tmp.unlink(missing_ok=True)
        return None
    os.replace(tmp, library)
    return library


def _adder_nodes(model: onnx.ModelProto):
    return [n for n in model.graph.node if n.domain == ADDER_DOMAIN and n.op_type == ADDER_OP]


def add_scalar_attributes(model: onnx.ModelProto) -> int:
    """Adds stride_h, stride_w, pad_h, pad_w beside each adder node's lists, for the native kernel."""
    nodes = _adder_nodes(model)
    for node in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        (sh, sw), pads = attrs.get("strides", [1, 1]), attrs.get("pads", [0, 0, 0, 0])
        if pads[0] != pads[2] or pads[1] != pads[3]:
            raise UserError(f"adder node '{node.name}' has asymmetric pads {pads}; kdforge's kernels take symmetric padding.")
        node.attribute.extend(onnx.helper.make_attribute(k, int(v)) for k, v in
                              (("stride_h", sh), ("stride_w", sw), ("pad_h", pads[0]), ("pad_w", pads[1])))
    return len(nodes)


def rewrite_adder_nodes(model: onnx.ModelProto) -> int:
    """kdforge::AdderConv2d -> ai.onnx.contrib::KdforgeAdderConv2d in place; returns how many."""
    nodes = _adder_nodes(model)
    for node in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        values = [*attrs.get("strides", [1, 1]), *attrs.get("pads", [0, 0, 0, 0])]
        del node.attribute[:]
        node.attribute.extend(onnx.helper.make_attribute(k, int(v)) for k, v in zip(_SCALAR_ATTRS, values))
        node.domain, node.op_type = _CONTRIB_DOMAIN, _CONTRIB_OP
    if nodes:
        kept = [o for o in model.opset_import if o.domain != ADDER_DOMAIN]
        del model.opset_import[:]
        model.opset_import.extend(kept + [onnx.helper.make_opsetid(_CONTRIB_DOMAIN, 1)])
    return len(nodes)


def session(path: Path, threads: int = 1, adder_kernel: str = "auto") -> ort.InferenceSession:
    """A session on CPU (and CUDA first where onnxruntime-gpu has it), `threads` intra-op threads,
    with the kdforge adder kernel registered when the file has adder nodes: `adder_kernel` is
    "native", "python" or "auto" (native where a C compiler exists)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    try:
        model = onnx.load(os.fspath(path))
    except Exception:
        raise UserError(f"{path} is not a readable ONNX file.") from None
    if _adder_nodes(model):
        providers = ["CPUExecutionProvider"]  # both adder kernels run on the CPU
        library = native_library() if adder_kernel in ("auto", "native") else None
        if adder_kernel == "native" and library is None:
            raise UserError("the native adder kernel needs a C compiler (cc or $CC) with OpenMP; install one or use adder_kernel='python'.")
        if library is not None:
            add_scalar_attributes(model)
            options.register_custom_ops_library(str(library))
        else:
            rewrite_adder_nodes(model)
            options.register_custom_ops_library(_register_adder_kernel())
    try:
        return ort.InferenceSession(model.SerializeToString(), options, providers=providers)
    except Exception as e:  # ORT's own message names the node or op it cannot run
        reason = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : (Fatal error: )?", "", (str(e).strip() or type(e).__name__).splitlines()[0])
        raise UserError(f"ONNX Runtime cannot open {path}: {reason.rstrip('.')}; the file needs an operator or "
                        f"feature this ONNX Runtime lacks (kdforge's exports use standard operators and kdforge's own).") from None


def run(sess: ort.InferenceSession, images: np.ndarray) -> np.ndarray:
    return sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(images, dtype=np.float32)})[0]
