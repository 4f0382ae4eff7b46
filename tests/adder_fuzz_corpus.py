"""A seeded corpus of adder-convolution nodes and inputs, valid and malformed, with the formula
every valid one must match and the words every malformed one's error must contain; for the float
node (kdforge::AdderConv2d) and, with `integer`, the INT8 node (kdforge::AdderConv2dInteger: uint8
inputs and a zero point that pads, int32 output, which must match exactly).

Run as a script, it drives the whole corpus through ONNX Runtime with a given native kernel
library and exits non-zero on any wrong answer: the AddressSanitizer test runs it that way, in a
process that preloads the sanitizer.

    python tests/adder_fuzz_corpus.py LIBRARY.so
"""

import sys

import numpy as np

CASES = 400
NODE = "fuzz_node"
_HUGE = 2**62


def reference(x: np.ndarray, w: np.ndarray, stride: tuple[int, int], pad: tuple[int, int], pad_value: int = 0) -> np.ndarray:
    """Y = -sum |Xpad - W| over each receptive field, in float64, straight from the definition;
    the padding holds `pad_value`."""
    (sh, sw), (ph, pw) = stride, pad
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=pad_value)
    n, o, kh, kw = x.shape[0], w.shape[0], w.shape[2], w.shape[3]
    ho, wo = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    y = np.zeros((n, o, ho, wo))
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, None, :, i * sh:i * sh + kh, j * sw:j * sw + kw]  # (N, 1, C, kh, kw)
            y[:, :, i, j] = -np.abs(patch - w[None].astype(np.float64)).sum(axis=(2, 3, 4))
    return y


def _valid(rng) -> dict:
    c, kh, kw = (int(v) for v in rng.integers(1, [5, 5, 5]))
    sh, sw, ph, pw = (int(v) for v in rng.integers([1, 1, 0, 0], [4, 4, 3, 3]))
    h = int(rng.integers(max(1, kh - 2 * ph), 10))
    w = int(rng.integers(max(1, kw - 2 * pw), 10))
    return {"x": [int(rng.integers(0, 4)), c, h, w], "w": [int(rng.integers(1, 6)), c, kh, kw],
            "strides": [sh, sw], "pads": [ph, pw, ph, pw], "error": None}


# Each mutation makes a valid case malformed; `error` is a regular expression its message must match.
def _mutations(case: dict, rng) -> list[tuple[str, dict]]:
    x, w, (sh, sw), pads = case["x"], case["w"], case["strides"], case["pads"]
    return [
        ("'strides'", {"strides": [0, sw]}),
        ("'strides'", {"strides": [sh, -int(rng.integers(1, 5))]}),
        ("'strides'", {"strides": [sh]}),
        ("'strides'", {"strides": [sh, sw, 1]}),
        ("'pads'", {"pads": [-1, pads[1], -1, pads[3]]}),
        ("'pads'", {"pads": pads[:2]}),
        ("symmetric", {"pads": [pads[0] + 1, pads[1], pads[2], pads[3]]}),
        ("channels", {"w": [w[0], w[1] + 1, w[2], w[3]]}),
        ("4-D", {"x": x[1:]}),
        ("4-D", {"x": x + [2]}),
        ("4-D", {"w": w[:3]}),
        ("empty", {"x": [x[0], 0, x[2], x[3]], "w": [w[0], 0, w[2], w[3]]}),
        ("empty", {"w": [w[0], w[1], 0, w[3]]}),
        ("padded", {"w": [w[0], w[1], x[2] + pads[0] + pads[2] + 1, w[3]]}),
        ("padded|index|too large", {"pads": [_HUGE, pads[1], _HUGE, pads[3]]}),
    ]


def cases(seed: int = 0, count: int = CASES, integer: bool = False) -> list[dict]:
    """`count` cases, about half malformed, each with the random input values it runs on (uint8
    and a zero point with `integer`)."""
    rng = np.random.default_rng(seed)
    corpus = []
    for index in range(count):
        case = _valid(rng)
        if rng.random() < 0.5:
            mutations = _mutations(case, rng)
            error, change = mutations[int(rng.integers(len(mutations)))]
            case = {**case, **change, "error": error}
        case["index"], case["integer"] = index, integer
        if integer:
            case["x_values"] = rng.integers(0, 256, case["x"], dtype=np.uint8)
            case["w_values"] = rng.integers(0, 256, case["w"], dtype=np.uint8)
            case["zero_point"] = int(rng.integers(0, 256))
        else:
            case["x_values"] = rng.standard_normal(case["x"]).astype(np.float32)
            case["w_values"] = rng.standard_normal(case["w"]).astype(np.float32)
        corpus.append(case)
    return corpus


def layer_case(case: dict) -> dict:
    """The case as a layer sees it (the torch op takes 2 pads, one per side pair): symmetric pads
    become 2; pads that cannot be written so become a list of another length, refused as such."""
    p = case["pads"]
    if len(p) == 4 and p[0] == p[2] and p[1] == p[3]:
        return {**case, "layer_pads": [p[0], p[1]]}
    return {**case, "layer_pads": p[:1], "error": "'pads'"}


def onnx_model(case: dict) -> bytes:
    """A one-node model: the adder node with the case's attributes, X and W (and the zero point)
    as inputs of any shape."""
    from onnx import TensorProto, helper

    names, op_type = (["x", "w", "z"], "AdderConv2dInteger") if case["integer"] else (["x", "w"], "AdderConv2d")
    in_type, out_type = (TensorProto.UINT8, TensorProto.INT32) if case["integer"] else (TensorProto.FLOAT, TensorProto.FLOAT)
    node = helper.make_node(op_type, names, ["y"], domain="kdforge", name=NODE,
                            strides=case["strides"], pads=case["pads"], plugin_namespace="kdforge")
    graph = helper.make_graph([node], "fuzz", [helper.make_tensor_value_info(name, in_type, None) for name in names],
                              [helper.make_tensor_value_info("y", out_type, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("kdforge", 1)])
    model.ir_version = 8
    return model.SerializeToString()


def feeds(case: dict) -> dict:
    """The model's inputs by name."""
    values = {"x": case["x_values"], "w": case["w_values"]}
    if case["integer"]:
        values["z"] = np.array(case["zero_point"], np.uint8)
    return values


def outcome(case: dict, run) -> str | None:
    """None where `run(case)` did what the case demands (matched the formula, or raised an error
    whose message fits); otherwise what went wrong."""
    import re

    try:
        y = run(case)
    except Exception as e:  # noqa: BLE001 - every kernel's error type is fair here; its words are checked
        if case["error"] is None:
            return f"case {case['index']}: valid case raised {type(e).__name__}: {e}"
        if not re.search(case["error"], str(e)):
            return f"case {case['index']}: error does not mention {case['error']!r}: {e}"
        return None
    if case["error"] is not None:
        return f"case {case['index']}: malformed case ({case['error']}) ran and returned shape {np.shape(y)}"
    expected = reference(case["x_values"], case["w_values"], case["strides"], case["pads"][:2], case.get("zero_point", 0))
    if np.shape(y) != expected.shape:
        return f"case {case['index']}: shape {np.shape(y)}, expected {expected.shape}"
    if case["integer"] and np.asarray(y).dtype != np.int32:
        return f"case {case['index']}: output of dtype {np.asarray(y).dtype}, expected int32"
    tolerance = 0.0 if case["integer"] else 1e-4 * max(1.0, float(np.abs(expected).max(initial=0.0)))
    if expected.size and float(np.abs(y - expected).max()) > tolerance:
        return f"case {case['index']}: max |diff| {np.abs(y - expected).max():.3g} > {tolerance:.3g}"
    return None


def native_runner(library: str):
    """run(case) through a raw ONNX Runtime session with `library` registered (no kdforge checks)."""
    import onnxruntime as ort

    def run(case):
        options = ort.SessionOptions()
        options.log_severity_level = 4
        options.register_custom_ops_library(library)
        sess = ort.InferenceSession(onnx_model(case), options, providers=["CPUExecutionProvider"])
        return sess.run(None, feeds(case))[0]
    return run


def main(library: str) -> int:
    wrong = 0
    for integer in (False, True):
        corpus = cases(integer=integer)
        failures = [f for f in (outcome(case, native_runner(library)) for case in corpus) if f]
        malformed = sum(case["error"] is not None for case in corpus)
        print(f"{'integer' if integer else 'float'}: {len(corpus)} cases ({len(corpus) - malformed} valid, {malformed} malformed): "
              f"{len(failures)} wrong")
        for failure in failures[:20]:
            print(failure)
        wrong += len(failures)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
