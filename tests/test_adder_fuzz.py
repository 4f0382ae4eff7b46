"""The adder op's entry points under a seeded fuzz corpus (adder_fuzz_corpus.py): every valid
node matches the definition, every malformed one raises an error that says what is wrong, and
the native ONNX Runtime kernel built with AddressSanitizer reports nothing on the whole corpus."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import adder_fuzz_corpus as corpus
from kdforge.errors import UserError
from kdforge.export import ort as ort_backend
from kdforge.nn.adder_op import adder_conv2d

CORPUS = corpus.cases()
KINDS = {kind: corpus.cases(kind=kind) for kind in ("float", "integer", "qlinear")}


def _failures(run, cases=CORPUS) -> list[str]:
    return [f for f in (corpus.outcome(case, run) for case in cases) if f]


def test_the_corpus_is_half_malformed_and_covers_every_mutation():
    malformed = [c for c in CORPUS if c["error"]]
    assert len(CORPUS) == corpus.CASES and 0.4 < len(malformed) / len(CORPUS) < 0.6
    assert {c["error"] for c in malformed} == {e for e, _ in corpus._mutations(corpus._valid(np.random.default_rng(0)), np.random.default_rng(0))}


@pytest.fixture(scope="module")
def native_library():
    library = ort_backend.native_library()
    if library is None:
        pytest.skip("no C compiler here: the native kernel cannot be built")
    return str(library)


@pytest.mark.parametrize("kind", KINDS)
def test_native_kernel_alone_validates_every_node(native_library, kind):
    """A raw ONNX Runtime session (no kdforge checks before it): the C kernel's own checks."""
    assert _failures(corpus.native_runner(native_library), KINDS[kind]) == []


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("kernel", ["native", "python"])
def test_kdforge_sessions_turn_every_malformed_node_into_a_user_error(tmp_path, kernel, native_library, kind):
    """Through kdforge's session helper: malformed files are UserErrors naming the node, whether
    the loader or the kernel catches them."""
    cases = KINDS[kind]
    cases = cases[::4] if kernel == "python" else cases  # the Python operator is slower to set up

    def run(case):
        path = tmp_path / f"case{case['index']}.onnx"
        path.write_bytes(corpus.onnx_model(case))
        sess = ort_backend.session(path, adder_kernel=kernel)
        return ort_backend.run_feeds(sess, corpus.feeds(case))[0]

    def user_errors_only(case):
        try:
            return run(case)
        except UserError:
            raise
        except Exception as e:
            raise AssertionError(f"not a UserError: {type(e).__name__}: {e}") from None

    assert _failures(user_errors_only, cases) == []


@pytest.mark.parametrize("kernel", ["native", "python"])
def test_a_kernel_error_at_run_time_is_one_user_error(tmp_path, native_library, kernel):
    """The weight an initializer, as in an exported student; the image has the wrong channel count."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(corpus.onnx_model({"strides": [1, 1], "pads": [1, 1, 1, 1]}))
    model.graph.initializer.append(numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w"))
    del model.graph.input[1]
    onnx.save(model, tmp_path / "one.onnx")
    sess = ort_backend.session(tmp_path / "one.onnx", adder_kernel=kernel)
    assert ort_backend.run(sess, np.ones((2, 3, 5, 5), np.float32)).shape == (2, 4, 5, 5)
    with pytest.raises(UserError, match=f"node '{corpus.NODE}'.*has 3 input channels but input X has 2"):
        ort_backend.run(sess, np.ones((2, 2, 5, 5), np.float32))


def test_torch_op_validates_every_layer():
    def run(case):
        x, w = torch.from_numpy(case["x_values"]), torch.from_numpy(case["w_values"])
        return adder_conv2d(x, w, case["strides"], case["layer_pads"], 0.0).numpy()

    assert _failures(run, [corpus.layer_case(c) for c in CORPUS]) == []


def test_triton_launch_refuses_malformed_layers_before_launching():
    pytest.importorskip("triton")
    from kdforge.nn import adder_triton

    refused = 0
    for case in map(corpus.layer_case, CORPUS):
        if case["error"] is None:
            continue
        x, w = torch.from_numpy(case["x_values"]), torch.from_numpy(case["w_values"])
        with pytest.raises(ValueError, match=case["error"]):
            adder_triton.forward(x, w, case["strides"], case["layer_pads"])
        refused += 1
    assert refused > 150
    with pytest.raises(ValueError, match="index"):  # fits int64, not the kernels' int32 indexing
        adder_triton.forward(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1), [1, 1], [2**31, 0])


def _asan_runtime() -> str | None:
    """What to preload: the sanitizer's runtime, then libstdc++ (ONNX Runtime throws C++
    exceptions, and the sanitizer's __cxa_throw interceptor needs the real one loaded early)."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        return None
    found = [subprocess.run([compiler, f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
             for name in ("libasan.so", "libstdc++.so.6")]
    return " ".join(found) if all(os.path.isabs(f) and Path(f).exists() for f in found) else None


def _run_under_asan(runtime: str, code: list[str]):
    env = {**os.environ, "LD_PRELOAD": runtime, "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:exitcode=99",
           "PYTHONPATH": str(Path(__file__).parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, *code], capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def asan(tmp_path_factory):
    """(sanitizer runtime, a way to build with it); skips where the compiler has no AddressSanitizer."""
    runtime = _asan_runtime()
    if runtime is None:
        pytest.skip("this C compiler has no AddressSanitizer runtime (libasan)")
    compiler = shutil.which("gcc") or shutil.which("cc")
    folder = tmp_path_factory.mktemp("asan")

    def build(source: Path, name: str) -> Path:
        out = folder / name
        flags = [f for f in ort_backend.NATIVE_FLAGS if f not in ort_backend.FAST_MATH]
        built = subprocess.run([compiler, *flags, "-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer",
                                "-o", str(out), str(source)], capture_output=True, text=True)
        assert built.returncode == 0, built.stderr
        return out
    return runtime, build, folder


def test_the_sanitizer_harness_catches_an_out_of_bounds_write(asan):
    """The harness itself: a library that writes past a buffer must be reported, or a clean report
    below would prove nothing."""
    runtime, build, folder = asan
    source = folder / "overflow.c"
    source.write_text("#include <stdlib.h>\nint poke(int i) { int* a = malloc(4 * sizeof(int)); a[i] = 1; int r = a[0]; free(a); return r; }\n")
    library = build(source, "overflow.so")
    out = _run_under_asan(runtime, ["-c", f"import ctypes; ctypes.CDLL(r'{library}').poke(4)"])
    assert out.returncode == 99 and "heap-buffer-overflow" in out.stderr, out.stderr[-2000:]


def test_native_kernel_under_address_sanitizer_on_the_whole_corpus(asan):
    runtime, build, _ = asan
    library = build(ort_backend.NATIVE_SOURCE, "adder_ort_op_asan.so")
    out = _run_under_asan(runtime, [str(Path(corpus.__file__)), str(library)])
    assert "AddressSanitizer" not in out.stderr, out.stderr[-4000:]
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    for kind in KINDS:
        assert f"{kind}: {corpus.CASES} cases" in out.stdout, out.stdout
    assert out.stdout.count(": 0 wrong") == len(KINDS), out.stdout
