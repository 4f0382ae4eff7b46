"""Property-based fuzzing (Hypothesis) of every reader of files from outside (tests/fuzz_targets.py):
mutated bytes of valid files, and structured edits of ONNX graphs, must end in a result or a
UserError. `make test` runs a short, derandomised budget (KDFORGE_FUZZ_EXAMPLES, default 25 per
target); `make fuzz` a long random one. A crash is written to tests/fuzz_regressions/TARGET/ and
the test fails; commit the file with the fix: every file there is replayed by
test_the_regressions_stay_fixed."""

import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzz_targets

EXAMPLES = int(os.environ.get("KDFORGE_FUZZ_EXAMPLES", "25"))
REGRESSIONS = Path(__file__).parent / "fuzz_regressions"
SEEDS = fuzz_targets.seeds()
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="KDFORGE_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=list(HealthCheck), database=None)

pytestmark = pytest.mark.timeout(600)


def _check(target: str, data: bytes) -> None:
    crash = fuzz_targets.run(target, data)
    if crash:
        folder = REGRESSIONS / target
        folder.mkdir(parents=True, exist_ok=True)
        kept = folder / f"{hashlib.sha256(data).hexdigest()[:16]}.bin"
        kept.write_bytes(data)
        pytest.fail(f"{target} crashed on {kept}: {crash}")


@st.composite
def _mutated(draw, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 8))):
        kind, at = draw(st.integers(0, 4)), draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == 0 and data:
            data[at] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0x01, data[at] ^ (1 << draw(st.integers(0, 7)))]))
        elif kind == 1:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == 2:
            del data[at:at + draw(st.integers(1, 64))]
        elif kind == 3:
            data[at:at] = data[at:at + draw(st.integers(1, 256))] * draw(st.integers(2, 8))
        else:
            del data[at:]
    return bytes(data)


@pytest.mark.parametrize("target", sorted(fuzz_targets.TARGETS))
def test_mutated_files_end_in_a_result_or_one_sentence(target):
    @FUZZ
    @given(_mutated(SEEDS[target]))
    def property_(data):
        _check(target, data)
    property_()


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 64), st.integers(0, 1 << 20)), min_size=1, max_size=6))
def test_edited_onnx_graphs_end_in_a_result_or_one_sentence(edits):
    _check("onnx", fuzz_targets.onnx_variants(SEEDS["onnx"][0], edits))


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                         st.sampled_from(["classes", "splits", "train", "test", "url", "nsamples", "labels", "x"]), inner,
                         max_size=4), max_leaves=30)


@FUZZ
@given(_JSON)
def test_any_json_as_a_shard_index_ends_in_a_result_or_one_sentence(value):
    import json

    _check("shard_index", json.dumps(value).encode())


def _kept() -> list[tuple[str, Path]]:
    return [(folder.name, path) for folder in sorted(REGRESSIONS.iterdir()) if folder.name in fuzz_targets.TARGETS
            for path in sorted(folder.iterdir())] if REGRESSIONS.is_dir() else []


@pytest.mark.parametrize("target,path", _kept(), ids=[f"{t}/{p.name}" for t, p in _kept()])
def test_the_regressions_stay_fixed(target, path):
    assert fuzz_targets.run(target, path.read_bytes()) is None
