"""A seeded corpus of adder-convolution nodes and inputs, valid and malformed, with the formula
every valid one must match and the words every malformed one's error must contain, for each
`kind` of node: "float" (kdforge::AdderConv2d), "integer" (kdforge::AdderConv2dInteger: uint8
inputs and a zero point that pads, int32 output, which must match exactly) and "qlinear"
(kdforge::QLinearAdderConv2d: the integer sums requantized to uint8 by per-filter multipliers and
biases, optionally through a ReLU, exactly as the contract's float32 arithmetic says). A quarter
of the valid cases have 8-20 channels and rows of 16-40 pixels, so that the kernels' vector paths
(8-channel, 16-pixel blocks) run as well as their scalar tails.

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


def requantized(sums: np.ndarray, multiplier: np.ndarray, bias: np.ndarray, y_zero_point: int, relu: bool) -> np.ndarray:
    """The fused node's output from its int32 sums, straight from the contract: float32 product,
    then float32 sum, ReLU, round half to even, zero point, saturation to uint8."""
    shape = (1, -1, 1, 1)
    v = sums.astype(np.float32) * multiplier.astype(np.float32).reshape(shape)
    v = v + bias.astype(np.float32).reshape(shape)
    if relu:
        v = np.maximum(v, np.float32(0))
    return np.clip(np.rint(v).astype(np.float64) + y_zero_point, 0, 255).astype(np.uint8)


def _valid(rng) -> dict:
    c, kh, kw = (int(v) for v in rng.integers(1, [5, 5, 5]))
    sh, sw, ph, pw = (int(v) for v in rng.integers([1, 1, 0, 0], [4, 4, 3, 3]))
    wide = rng.random() < 0.25
    if wide:
        c = int(rng.integers(8, 21))
    h = int(rng.integers(max(1, kh - 2 * ph), 10))
    w = int(rng.integers(max(16, kw - 2 * pw), 41)) if wide else int(rng.integers(max(1, kw - 2 * pw), 10))
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


def _requantization(case: dict, rng) -> dict:
    """The fused node's extra inputs: per-filter multipliers over six orders of magnitude (some
    negative), biases, an output zero point and relu; a third of the cases with multiplier 1/2
    and bias 0, so that odd sums land exactly half-way and round to even."""
    filters = case["w"][0]
    if rng.random() < 1 / 3:
        multiplier, bias = np.full(filters, 0.5, np.float32), np.zeros(filters, np.float32)
    else:
        multiplier = (rng.choice([-1, 1], filters) * 10.0 ** rng.uniform(-5, 1, filters)).astype(np.float32)
        bias = rng.uniform(-300, 300, filters).astype(np.float32)
    return {"multiplier": multiplier, "bias": bias, "y_zero_point": int(rng.integers(0, 256)), "relu": int(rng.integers(0, 2))}


def _qlinear_mutations(case: dict, rng) -> list[tuple[str, dict]]:
    filters = case["w"][0]
    return [
        ("multiplier and bias", {"multiplier": np.ones(filters + 1, np.float32)}),
        ("multiplier and bias", {"bias": np.ones(max(filters - 1, 0), np.float32)}),
        ("finite", {"bias": np.full(filters, np.nan, np.float32)}),
        ("finite", {"multiplier": np.full(filters, np.inf, np.float32)}),
        ("'relu'", {"relu": int(rng.choice([2, -1]))}),
    ]


def cases(seed: int = 0, count: int = CASES, kind: str = "float") -> list[dict]:
    """`count` cases of one kind of node, about half malformed, each with the random input values
    it runs on (uint8 and a zero point for the integer kinds, the requantization for qlinear)."""
    rng = np.random.default_rng(seed)
    corpus = []
    for index in range(count):
        case = _valid(rng)
        if kind == "qlinear":
            case.update(_requantization(case, rng))
        if rng.random() < 0.5:
            mutations = _mutations(case, rng) + (_qlinear_mutations(case, rng) if kind == "qlinear" else [])
            error, change = mutations[int(rng.integers(len(mutations)))]
            case = {**case, **change, "error": error}
        case["index"], case["kind"] = index, kind
        if kind != "float":
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


_NODES = {  # kind: (op_type, {input: type}, output type)
    "float": ("AdderConv2d", {"x": "FLOAT", "w": "FLOAT"}, "FLOAT"),
    "integer": ("AdderConv2dInteger", {"x": "UINT8", "w": "UINT8", "z": "UINT8"}, "INT32"),
    "qlinear": ("QLinearAdderConv2d", {"x": "UINT8", "w": "UINT8", "z": "UINT8", "m": "FLOAT", "b": "FLOAT", "yz": "UINT8"}, "UINT8"),
}


def onnx_model(case: dict) -> bytes:
    """A one-node model: the adder node with the case's attributes, all its inputs graph inputs
    of any shape."""
    from onnx import TensorProto, helper

    op_type, inputs, output = _NODES[case.get("kind", "float")]
    extra = {"relu": case["relu"]} if op_type == "QLinearAdderConv2d" else {}
    node = helper.make_node(op_type, list(inputs), ["y"], domain="kdforge", name=NODE,
                            strides=case["strides"], pads=case["pads"], plugin_namespace="kdforge", **extra)
    graph = helper.make_graph([node], "fuzz", [helper.make_tensor_value_info(n, getattr(TensorProto, t), None) for n, t in inputs.items()],
                              [helper.make_tensor_value_info("y", getattr(TensorProto, output), None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("kdforge", 1)])
    model.ir_version = 8
    return model.SerializeToString()


def feeds(case: dict) -> dict:
    """The model's inputs by name."""
    values = {"x": case["x_values"], "w": case["w_values"]}
    if case.get("kind", "float") != "float":
        values["z"] = np.array(case["zero_point"], np.uint8)
    if case.get("kind") == "qlinear":
        values.update(m=case["multiplier"], b=case["bias"], yz=np.array(case["y_zero_point"], np.uint8))
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
    kind = case.get("kind", "float")
    expected = reference(case["x_values"], case["w_values"], case["strides"], case["pads"][:2], case.get("zero_point", 0))
    if kind == "qlinear":
        expected = requantized(expected.astype(np.int32), case["multiplier"], case["bias"], case["y_zero_point"], case["relu"])
    if np.shape(y) != expected.shape:
        return f"case {case['index']}: shape {np.shape(y)}, expected {expected.shape}"
    dtype = {"float": np.float32, "integer": np.int32, "qlinear": np.uint8}[kind]
    if np.asarray(y).dtype != dtype:
        return f"case {case['index']}: output of dtype {np.asarray(y).dtype}, expected {np.dtype(dtype).name}"
    tolerance = 1e-4 * max(1.0, float(np.abs(expected).max(initial=0.0))) if kind == "float" else 0.0
    if expected.size and float(np.abs(y.astype(np.float64) - expected).max()) > tolerance:
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
    for kind in _NODES:
        corpus = cases(kind=kind)
        failures = [f for f in (outcome(case, native_runner(library)) for case in corpus) if f]
        malformed = sum(case["error"] is not None for case in corpus)
        print(f"{kind}: {len(corpus)} cases ({len(corpus) - malformed} valid, {malformed} malformed): "
              f"{len(failures)} wrong")
        for failure in failures[:20]:
            print(failure)
        wrong += len(failures)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
