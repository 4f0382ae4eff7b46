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
The native kernel runs the file's nodes as they are; the Python operator's copy is rewritten in
memory, never on disk.

Files come from anyone, so every adder node is checked when a session opens (two inputs,
`strides` and `pads` as kdforge.nn.adder_geometry demands, a 4-D weight initializer where there
is one), and both kernels check the tensors' shapes again at every run. A malformed node, and
any error ONNX Runtime raises while running, is a UserError naming the node.
"""

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
import weakref
from pathlib import Path

import numpy as np
import onnx

from kdforge.errors import UserError

try:
    import onnxruntime as ort
except ImportError:  # kdforge names the two builds as extras: they install the same module and conflict
    raise UserError("ONNX Runtime is not installed; install kdforge with pip install 'kdforge[cpu]', or 'kdforge[gpu]' "
                    "on a CUDA machine (onnxruntime-gpu).") from None
from kdforge.export.onnx_file import load_model
from kdforge.nn.adder_geometry import AdderGeometryError, node_attributes

ADDER_DOMAIN, ADDER_OP, INTEGER_OP, QLINEAR_OP = "kdforge", "AdderConv2d", "AdderConv2dInteger", "QLinearAdderConv2d"
_INPUTS = {ADDER_OP: ("X", "W"), INTEGER_OP: ("X", "W", "x_zero_point"),
           QLINEAR_OP: ("X", "W", "x_zero_point", "multiplier", "bias", "y_zero_point")}
_CONTRIB_DOMAIN = "ai.onnx.contrib"
_CONTRIB_OPS = {ADDER_OP: "KdforgeAdderConv2d", INTEGER_OP: "KdforgeAdderConv2dInteger", QLINEAR_OP: "KdforgeQLinearAdderConv2d"}
_SCALAR_ATTRS = ("stride_h", "stride_w", "pad_top", "pad_left", "pad_bottom", "pad_right")
_registered = False
# onnxruntime-extensions turns an exception inside a Python operator into std::terminate, which
# aborts the process. The operator therefore never raises: it leaves its error here (per thread:
# ONNX Runtime runs the nodes of a sequential session on the calling thread), returns an empty
# tensor, and `run` raises the error once the session returns or fails on that tensor.
_python_op_errors = threading.local()
_adder_threads = weakref.WeakKeyDictionary()  # session -> (set the calling thread's adder kernel threads, count)


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

        def parked(op_type, compute, output=np.float32, extra=()):
            """A Python operator that never raises (see _python_op_errors); `extra` names the
            attributes it passes after the inputs."""
            def kernel(*inputs, **attrs):
                where = f"kdforge::{op_type} node '{attrs['node_name']}'"
                try:
                    geometry = node_attributes([attrs[k] for k in _SCALAR_ATTRS[:2]], [attrs[k] for k in _SCALAR_ATTRS[2:]], where)
                    return compute(*inputs, *(attrs[k] for k in extra), geometry, where)
                except Exception as e:
                    _python_op_errors.error = e
                    return np.zeros((0,), output)
            return kernel

        def adder(x, w, geometry, where):
            sh, sw, ph, pw = geometry
            return adder_conv2d_forward(x, w, (sh, sw), (ph, pw), where)

        def integer_adder(x, w, zero_point, geometry, where):
            """Exact through the float kernel: integer terms <= 255, sums below 2^24 (checked)."""
            if np.size(zero_point) != 1:
                raise AdderGeometryError(f"{where}: input x_zero_point must be one value, it has shape {np.shape(zero_point)}")
            if w.ndim == 4 and w[0].size > 2**24 // 255:
                raise AdderGeometryError(f"{where}: a receptive field of {w[0].size} values is beyond the Python operator's exact range")
            z = np.float32(np.ravel(zero_point)[0])
            return np.rint(adder(x.astype(np.float32) - z, w.astype(np.float32) - z, geometry, where)).astype(np.int32)

        def qlinear_adder(x, w, zero_point, multiplier, bias, y_zero_point, relu, geometry, where):
            """The fused node's requantization in numpy float32, in the contract's order."""
            sums = integer_adder(x, w, zero_point, geometry, where).astype(np.float32)
            o = sums.shape[1]
            if multiplier.size != o or bias.size != o or np.size(y_zero_point) != 1:
                raise AdderGeometryError(f"{where}: inputs multiplier and bias must hold one value per filter ({o}) and "
                                         f"y_zero_point one: got {multiplier.size}, {bias.size} and {np.size(y_zero_point)}")
            if not (np.isfinite(multiplier).all() and np.isfinite(bias).all()):
                raise AdderGeometryError(f"{where}: inputs multiplier and bias must be finite")
            v = sums * multiplier.astype(np.float32).reshape(1, o, 1, 1)
            v = v + bias.astype(np.float32).reshape(1, o, 1, 1)
            if relu not in (0, 1):
                raise AdderGeometryError(f"{where}: attribute 'relu' must be 0 or 1, got {relu}")
            if relu:
                v = np.maximum(v, np.float32(0))
            return np.clip(np.rint(v) + np.float32(np.ravel(y_zero_point)[0]), 0, 255).astype(np.uint8)

        attrs = {"node_name": PyCustomOpDef.dt_string, **{name: PyCustomOpDef.dt_int64 for name in _SCALAR_ATTRS}}
        onnx_op(op_type=_CONTRIB_OPS[ADDER_OP], inputs=[PyCustomOpDef.dt_float] * 2, outputs=[PyCustomOpDef.dt_float],
                attrs=attrs)(parked(ADDER_OP, adder))
        onnx_op(op_type=_CONTRIB_OPS[INTEGER_OP], inputs=[PyCustomOpDef.dt_uint8] * 3, outputs=[PyCustomOpDef.dt_int32],
                attrs=attrs)(parked(INTEGER_OP, integer_adder, np.int32))
        uint8, single = PyCustomOpDef.dt_uint8, PyCustomOpDef.dt_float
        onnx_op(op_type=_CONTRIB_OPS[QLINEAR_OP], inputs=[uint8, uint8, uint8, single, single, uint8], outputs=[uint8],
                attrs={**attrs, "relu": PyCustomOpDef.dt_int64})(parked(QLINEAR_OP, qlinear_adder, np.uint8, ("relu",)))
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


NATIVE_SOURCE = Path(__file__).with_name("adder_ort_op.c")
# -ffast-math's parts spelled out: given -ffast-math itself, GCC 12 links crtfastmath.o into the
# shared library, whose constructor turns on flush-to-zero and denormals-are-zero for the whole
# process that loads it (measured: after the first adder session, numpy's and PyTorch's subnormals
# became 0, and hypothesis refused to run in that process)
FAST_MATH = ("-fno-math-errno", "-fno-trapping-math", "-fno-signed-zeros", "-fassociative-math", "-freciprocal-math",
             "-ffinite-math-only")
NATIVE_FLAGS = ("-O3", "-march=native", *FAST_MATH, "-ffp-contract=off", "-fopenmp", "-shared", "-fPIC", "-Wl,-z,nodelete")


def native_library() -> Path | None:
    """The compiled native kernel library, built on first use; None where no C compiler works."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    source = NATIVE_SOURCE.read_bytes()
    flags = list(NATIVE_FLAGS)
    key = hashlib.sha256(source + " ".join([compiler, *flags]).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("KDFORGE_CACHE", Path.home() / ".cache" / "kdforge"))
    library = cache / f"adder_ort_op-{key}.so"
    if library.is_file():
        return library
    cache.mkdir(parents=True, exist_ok=True)
    tmp = library.with_name(f".{library.name}.{os.getpid()}")
    try:
        built = subprocess.run([compiler, *flags, "-o", str(tmp), str(NATIVE_SOURCE)], capture_output=True)
    except OSError:  # $CC names no runnable program
        return None
    if built.returncode != 0:
        tmp.unlink(missing_ok=True)
        return None
    os.replace(tmp, library)
    return library


def _adder_nodes(model: onnx.ModelProto):
    return [n for n in model.graph.node if n.domain == ADDER_DOMAIN and n.op_type in _INPUTS]


def _node_lists(node) -> tuple[list, list]:
    """The node's `strides` and `pads`, ONNX's defaults where absent."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    return attrs.get("strides", [1, 1]), attrs.get("pads", [0, 0, 0, 0])


def check_adder_nodes(model: onnx.ModelProto, path) -> int:
    """Checks every adder node of a loaded file before any kernel sees it; returns how many."""
    nodes = _adder_nodes(model)
    initializers = {init.name: init for init in model.graph.initializer}
    for node in nodes:
        where, inputs = f"{path}: kdforge::{node.op_type} node '{node.name}'", _INPUTS[node.op_type]
        try:
            if len(node.input) != len(inputs) or len(node.output) != 1:
                raise AdderGeometryError(f"{where} must have {len(inputs)} inputs ({', '.join(inputs)}) and 1 output, "
                                         f"it has {len(node.input)} and {len(node.output)}")
            node_attributes(*_node_lists(node), where)
            weight = initializers.get(node.input[1])
            if weight is not None and (len(weight.dims) != 4 or min(weight.dims) < 1):
                raise AdderGeometryError(f"{where}: weight W must be a non-empty 4-D tensor (O, C, kh, kw), got shape {list(weight.dims)}")
        except AdderGeometryError as e:
            raise UserError(f"{e}; the file is malformed, re-export the model.") from None
    return len(nodes)


def rewrite_adder_nodes(model: onnx.ModelProto) -> int:
    """kdforge::<adder node> -> ai.onnx.contrib::Kdforge<adder node> in place; returns how many."""
    nodes = _adder_nodes(model)
    for node in nodes:
        strides, pads = _node_lists(node)
        relu = next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "relu"), 0)
        del node.attribute[:]
        node.attribute.extend(onnx.helper.make_attribute(k, int(v)) for k, v in zip(_SCALAR_ATTRS, [*strides, *pads]))
        if node.op_type == QLINEAR_OP:
            node.attribute.append(onnx.helper.make_attribute("relu", relu if isinstance(relu, int) else -1))
        node.attribute.append(onnx.helper.make_attribute("node_name", node.name))
        node.domain, node.op_type = _CONTRIB_DOMAIN, _CONTRIB_OPS[node.op_type]
    if nodes:
        kept = [o for o in model.opset_import if o.domain != ADDER_DOMAIN]
        del model.opset_import[:]
        model.opset_import.extend(kept + [onnx.helper.make_opsetid(_CONTRIB_DOMAIN, 1)])
    return len(nodes)


def session(path: Path, threads: int = 1, adder_kernel: str = "auto") -> ort.InferenceSession:
    """A session on CPU (and CUDA first where onnxruntime-gpu has it), `threads` intra-op threads,
    with the kdforge adder kernel registered when the file has adder nodes: `adder_kernel` is
    "native", "python" or "auto" (native where a C compiler exists)."""
    return model_session(load_model(path), path, threads, adder_kernel)


def model_session(model: onnx.ModelProto, path, threads: int = 1, adder_kernel: str = "auto") -> ort.InferenceSession:
    """`session` for a graph already in memory (`path` names it in errors); `model` may be changed."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # idle threads stop spinning when a run returns: another session, or another process, gets the
    # cores at once (measured: an AdderNet run straight after a CNN session's took 2x its time,
    # for 30-50 ms, while the CNN session's threads spun; the CNN's own latency did not move)
    options.add_session_config_entry("session.force_spinning_stop", "1")
    options.log_severity_level = 4  # errors reach the caller as exceptions; ORT's own log lines would repeat them
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    set_threads = None
    if check_adder_nodes(model, path):
        providers = ["CPUExecutionProvider"]  # both adder kernels run on the CPU
        # the kernels bring their own threads (OpenMP, numba); ORT's pool spinning between nodes
        # would take their cores (measured: the INT8 adder layer 2.3x slower with spinning on)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        library = native_library() if adder_kernel in ("auto", "native") else None
        if adder_kernel == "native" and library is None:
            raise UserError("the native adder kernel needs a C compiler (cc or $CC) with OpenMP; install one or use adder_kernel='python'.")
        if library is not None:
            options.register_custom_ops_library(str(library))
            set_threads = ctypes.CDLL(str(library)).kdforge_adder_set_threads  # the handle ORT opened: one OpenMP state
        else:
            rewrite_adder_nodes(model)
            options.register_custom_ops_library(_register_adder_kernel())
            import numba

            set_threads = lambda n: numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))  # noqa: E731
    try:
        sess = ort.InferenceSession(model.SerializeToString(), options, providers=providers)
    except Exception as e:  # ORT's own message names the node or op it cannot run
        reason = _reason(e)
        why = ("the file needs an operator or feature this ONNX Runtime lacks (kdforge's exports use standard operators and "
               "kdforge's own)" if _LACKS.search(reason) else "ONNX Runtime rejects the graph as it is")
        raise UserError(f"ONNX Runtime cannot open {path}: {reason}; {why}.") from None
    if set_threads is not None:
        _adder_threads[sess] = (set_threads, threads)
    return sess


# what ONNX Runtime says when it lacks something a well-formed file uses (an operator, a domain, an opset, a type)
_LACKS = re.compile(r"not a registered function/op|opset|not supported|unsupported|not implemented|NOT_IMPLEMENTED|"
                    r"Could not find an implementation", re.IGNORECASE)


def _reason(error: Exception) -> str:
    """ONNX Runtime's message without its code prefix, on one line."""
    text = " ".join((str(error).strip() or type(error).__name__).split())
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : (Fatal error: )?", "", text)
    # kdforge's kernel names its node itself; ORT's wrapper around that would say it twice
    text = re.sub(r"^Non-zero status code returned while running \w+ node\. Name:'[^']*' Status Message: (?=kdforge::)", "", text)
    return text.rstrip(".")


def run_feeds(sess: ort.InferenceSession, feeds: dict) -> list:
    """sess.run(None, feeds), where an error inside a kernel (ONNX Runtime raises it as an
    exception; the Python operator leaves it aside) is a UserError naming the node."""
    _python_op_errors.error = None
    if sess in _adder_threads:
        set_threads, threads = _adder_threads[sess]
        set_threads(threads)
    try:
        outputs = sess.run(None, feeds)
    except Exception as e:
        error = _python_op_errors.error or e
    else:
        error = _python_op_errors.error
    if error is not None:
        _python_op_errors.error = None
        raise UserError(f"ONNX Runtime failed to run the model: {_reason(error)}.")
    return outputs


def run(sess: ort.InferenceSession, images: np.ndarray) -> np.ndarray:
    """The session's first output for a batch of images (see run_feeds)."""
    return run_feeds(sess, {sess.get_inputs()[0].name: np.ascontiguousarray(images, dtype=np.float32)})[0]
