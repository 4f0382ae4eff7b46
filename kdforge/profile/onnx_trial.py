"""One ONNX Runtime run of a graph on zeros, in a child process that cannot take the machine: its
address space is capped and it is killed after `TRIAL_SECONDS`. It tells the shapes that shape
inference leaves open (data-dependent ops: Range, NonZero, a Resize or Expand fed by computed
values) and shows that timing the graph in kdforge's own process will neither exhaust memory nor
hang (a Loop whose trip count is 2^62, a ConstantOfShape of computed size).

Run as `python -m kdforge.profile.onnx_trial MODEL.onnx RESULT.json NAME CAP_BYTES` by `trial_run`;
the child caps its own address space first (a preexec_fn in the parent could deadlock, since the
parent runs thread pools).
"""

import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from kdforge.errors import UserError, printable

TRIAL_SECONDS = 30


class MalformedGraph(UserError):
    """A node of kdforge's own domain whose inputs break its contract: the file is at fault, not
    the runtime, so the command ends with this sentence instead of a table."""
_BASELINE_BYTES = 768 << 20  # the child's interpreter, NumPy, onnx and ONNX Runtime, before the graph


def zero_feeds(model: onnx.ModelProto) -> dict:
    """Zeros for every input of `model` at its declared element type and (fixed) shape."""
    from kdforge.export.onnx_file import feedable_inputs

    feeds = {}
    for value in feedable_inputs(model):
        tensor = value.type.tensor_type
        feeds[value.name] = np.zeros([d.dim_value for d in tensor.shape.dim], onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type))
    return feeds


def _child(model_path: str, result_path: str, shown: str) -> None:
    from kdforge.errors import UserError
    from kdforge.export.ort import model_session, run_feeds

    model = onnx.load(model_path, load_external_data=False)  # written by the parent from a checked graph
    try:
        session = model_session(model, shown)
        outputs = [o.name for o in session.get_outputs()]
        feeds = zero_feeds(model)
        start = time.perf_counter()
        values = run_feeds(session, feeds)
        result = {"shapes": {name: [list(v.shape), v.itemsize] for name, v in zip(outputs, values) if isinstance(v, np.ndarray)},
                  "seconds": time.perf_counter() - start}
    except UserError as e:  # kdforge's adder kernels refuse a node by name: the file breaks that node's contract
        result = {"user_error": str(e), "malformed": re.search(r"kdforge::\w+ node '", str(e)) is not None}
    except MemoryError:
        result = {"error": "it ran out of the memory it was given"}
    except Exception as e:  # noqa: BLE001 - reported to the parent, which words it
        result = {"error": " ".join(str(e).split())[:300] or type(e).__name__}
    Path(result_path).write_text(json.dumps(result))


def trial_run(model: onnx.ModelProto, outputs: list[str], path, max_bytes: int) -> dict:
    """{"shapes": {tensor name: (shape, itemsize)} of `outputs`, "seconds": the run's time} after
    one run on zeros in a capped child process; a UserError that says why if the graph needs more
    memory or time than it is given, or if ONNX Runtime cannot run it."""
    probe = onnx.ModelProto.FromString(model.SerializeToString())
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=name) for name in outputs if name not in known)
    cap = _BASELINE_BYTES + 3 * max_bytes
    shown = printable(str(path))
    with tempfile.TemporaryDirectory(prefix="kdforge-trial-") as folder:
        model_path, result_path = Path(folder) / "probe.onnx", Path(folder) / "result.json"
        model_path.write_bytes(probe.SerializeToString())
        command = [sys.executable, "-m", "kdforge.profile.onnx_trial", str(model_path), str(result_path), shown, str(cap)]
        try:
            child = subprocess.run(command, timeout=TRIAL_SECONDS, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        except subprocess.TimeoutExpired:
            raise UserError(f"{shown} takes more than {TRIAL_SECONDS} s to run once on zeros; kdforge does not time a "
                            f"graph that may never end.") from None
        if not result_path.is_file():
            ending = f"signal {-child.returncode}" if child.returncode < 0 else f"exit code {child.returncode}"
            raise UserError(f"{shown}: ONNX Runtime's run on zeros, in a child process capped at {cap >> 20:,} MiB, ended "
                            f"without a result ({ending}); raise --max-tensor-mib if the model needs more memory.")
        result = json.loads(result_path.read_text())
    error = result.get("user_error") or result.get("error")
    if error and re.search(r"alloc|memory", error, re.IGNORECASE):
        raise UserError(f"{shown}: one run on zeros needs more than the {cap >> 20:,} MiB it was given "
                        f"({printable(error).rstrip('.')}); raise --max-tensor-mib if you mean it.")
    if result.get("malformed"):
        raise MalformedGraph(result["user_error"])
    if "user_error" in result:
        raise UserError(result["user_error"])
    if error:
        raise UserError(f"ONNX Runtime cannot run {shown} on zeros: {printable(error).rstrip('.')}.")
    return {"shapes": {name: tuple(value) for name, value in result["shapes"].items()}, "seconds": result["seconds"]}


if __name__ == "__main__":
    cap = int(sys.argv[4])
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    _child(*sys.argv[1:4])
