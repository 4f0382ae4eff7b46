"""Latency figures: the statistics of interleaved rounds, the machine-state correction, re-measuring
and the unstable mark, the profile keys' effects, tie-aware Pareto fronts, and which deployed graphs
count as identical. Timers here are simulated machines (a clock that a neighbour's load slows), so
the tests are exact and fast; nothing is timed for real."""

import numpy as np
import onnx
import pytest
import torch
from onnx import helper

from kdforge.config import ProfileConfig
from kdforge.errors import UserError
from kdforge.profile import latency
from kdforge.profile.identity import onnx_digest, torch_digest
from kdforge.profile.plots import pareto_front


class Machine:
    """A simulated CPU: every call of a subject costs its base time x the machine's slowdown at that
    moment; `slow(t)` says how much slower than usual the machine runs at simulated time t (s)."""

    def __init__(self, slow=lambda t: 1.0, jitter: float = 0.0, seed: int = 0):
        self.now, self.slow, self.jitter, self.calls = 0.0, slow, jitter, {}
        self.rng = np.random.default_rng(seed)

    def timer(self, name: str, base_s: float):
        def call() -> float:
            self.calls[name] = self.calls.get(name, 0) + 1
            spent = base_s * self.slow(self.now) * (1 + self.jitter * self.rng.random())
            self.now += spent
            return spent
        return call


def _setup(**settings) -> latency.LatencySetup:
    return ProfileConfig(**{"warmup": 2, "rounds": 9, "round_ms": 1.0, "max_rounds": 30, **settings}).latency_setup()


def test_the_median_interval_covers_the_true_median_at_least_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    for n in (6, 9, 15, 20, 40):
        low, high = latency.median_interval(n)
        assert 0 <= low < high <= n - 1
        samples = np.sort(rng.exponential(size=(4000, n)), axis=1)  # skewed, like latencies; median ln 2
        covered = ((samples[:, low] <= np.log(2)) & (np.log(2) <= samples[:, high])).mean()
        assert 0.95 <= covered <= 0.995, (n, covered)


def test_summary_is_the_median_of_round_medians_with_its_interval():
    rounds = [[1e-3, 2e-3, 1e-3]] * 4 + [[3e-3, 3e-3, 3e-3]] * 3  # round medians 1 ms (x4) and 3 ms (x3)
    figure = latency.summarize(rounds, tolerance=0.1)
    assert figure["p50_ms"] == pytest.approx(1.0) and figure["rounds"] == 7 and figure["calls"] == 21
    assert figure["ci_low_ms"] <= 1.0 <= figure["ci_high_ms"] == pytest.approx(3.0)
    assert not figure["stable"]  # rounds of 1 and 3 ms: the median is not known to ±10%
    assert figure["p90_ms"] == pytest.approx(3.0)  # the tail pools every call


def test_two_identical_models_agree_although_a_neighbour_slows_the_machine_for_a_long_stretch():
    machine = Machine(slow=lambda t: 1.8 if 0.02 < t < 0.05 else 1.0, jitter=0.02)
    timers = {name: machine.timer(name, 30e-6) for name in ("ce", "kd")}
    timers |= {f"other{i}": machine.timer(f"other{i}", (i + 1) * 100e-6) for i in range(6)}
    figures = latency.measure(timers, _setup())
    assert figures["ce"]["p50_ms"] == pytest.approx(figures["kd"]["p50_ms"], rel=0.03)
    assert figures["ce"]["p50_ms"] == pytest.approx(0.030, rel=0.05)  # the slow stretch cancels out
    assert all(f["stable"] for f in figures.values())


def test_one_after_the_other_the_same_slow_stretch_would_have_split_them():
    """What kdforge did before: each model timed in one burst. Kept as the reason for the interleaving."""
    machine = Machine(slow=lambda t: 1.8 if t > 0.009 else 1.0)
    first, second = machine.timer("ce", 30e-6), machine.timer("kd", 30e-6)
    bursts = [np.median([t() for _ in range(300)]) for t in (first, second)]
    assert bursts[1] / bursts[0] == pytest.approx(1.8, rel=0.05)


def test_cycles_where_the_whole_machine_ran_slow_are_corrected_when_there_are_enough_subjects():
    def slow_every_other(period_s):  # the machine 1.6x slower for a stretch of about 4 cycles, then not
        return lambda t: 1.6 if int(t / period_s) % 2 else 1.0

    many = Machine(slow=slow_every_other(30e-3))  # a cycle of 7 subjects takes ~7 ms
    figures = latency.measure({f"m{i}": many.timer(f"m{i}", 50e-6) for i in range(latency.STATE_SUBJECTS + 1)}, _setup())
    assert all(f["stable"] and f["rounds"] == 9 for f in figures.values())
    assert all(f["p50_ms"] == pytest.approx(0.050, rel=0.05) for f in figures.values())
    few = Machine(slow=slow_every_other(8e-3))  # a cycle of 2 subjects takes ~2 ms
    figures = latency.measure({f"m{i}": few.timer(f"m{i}", 50e-6) for i in range(2)}, _setup())
    assert not any(f["stable"] for f in figures.values())  # nothing to judge the machine's state by


def test_an_unstable_figure_gets_more_rounds_up_to_max_rounds_and_is_marked():
    machine = Machine(jitter=1.0)  # each call anywhere between 1x and 2x: round medians disagree
    figures = latency.measure({"noisy": machine.timer("noisy", 1e-3)}, _setup(round_ms=0.5, max_rounds=12))
    assert figures["noisy"]["rounds"] == 12 and not figures["noisy"]["stable"]
    assert "unstable" in latency.figure_text(figures["noisy"])
    steady = latency.measure({"steady": Machine().timer("steady", 1e-3)}, _setup(round_ms=0.5, max_rounds=12))["steady"]
    assert steady["rounds"] == 9 and steady["stable"] and latency.figure_text(steady) == "1.000 ±0%"


def test_every_profile_timing_key_has_its_effect():
    def run(**settings):
        machine = Machine(jitter=0.3, seed=1)
        figure = latency.measure({"m": machine.timer("m", 100e-6)}, _setup(**settings))["m"]
        return figure, machine.calls["m"]

    base, _ = run()
    assert base["rounds"] == 9 and run(rounds=5)[0]["rounds"] == 5
    assert run(round_ms=4.0)[0]["calls"] == 4 * base["calls"]
    for warmup in (2, 10):  # warm-up calls are made, not timed; so is the call that opens each round of a short model
        figure, calls = run(warmup=warmup, round_ms=5.0)
        assert calls - figure["calls"] == warmup + figure["rounds"]
    assert run(tolerance=0.01, max_rounds=11)[0]["rounds"] == 11  # a stricter tolerance re-measures
    with pytest.raises(ValueError, match="'runs' is gone"):
        ProfileConfig(runs=200)
    with pytest.raises(ValueError, match="max_rounds"):
        ProfileConfig(rounds=10, max_rounds=6)


def test_latencies_within_the_noise_are_tied_on_the_pareto_front():
    figures = [{"p50_ms": p, "ci_low_ms": p * 0.99, "ci_high_ms": p * 1.01} for p in (1.00, 1.04, 2.0)]
    accuracy = [0.90, 0.95, 0.97]
    intervals = [latency.noise_interval(f, tolerance=0.10) for f in figures]
    tied = lambda i, j: intervals[i][0] <= intervals[j][1] and intervals[j][0] <= intervals[i][1]  # noqa: E731
    points = [(f["p50_ms"], a) for f, a in zip(figures, accuracy)]
    assert pareto_front(points) == [0, 1, 2]  # 4% faster counts when every difference counts
    assert pareto_front(points, tied) == [1, 2]  # within 10%: tied, and the more accurate one wins
    wide = [*figures[:2], {**figures[2], "ci_low_ms": 0.9}]  # the slowest one's rounds reach down to the others
    intervals = [latency.noise_interval(f, tolerance=0.10) for f in wide]
    assert pareto_front(points, tied) == [2]  # it cannot be told from them, and it is the most accurate


def _conv_model(weight_seed: int, stride: int = 1, name: str = "conv", opset: int = 18) -> onnx.ModelProto:
    weight = np.random.default_rng(weight_seed).standard_normal((4, 1, 3, 3)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["c"], name=name, strides=[stride, stride], pads=[1, 1, 1, 1])
    reshape = helper.make_node("Reshape", ["c", "shape"], ["y"], name=f"{name}_flat")
    graph = helper.make_graph(
        [node, reshape], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", None])],
        [onnx.numpy_helper.from_array(weight, "w"), onnx.numpy_helper.from_array(np.array([0, -1]), "shape")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], doc_string=f"export {weight_seed}")


def test_graphs_that_differ_only_in_weights_and_names_are_identical():
    assert onnx_digest(_conv_model(0)) == onnx_digest(_conv_model(1, name="other_name"))
    assert onnx_digest(_conv_model(0)) != onnx_digest(_conv_model(0, stride=2))
    assert onnx_digest(_conv_model(0)) != onnx_digest(_conv_model(0, opset=17))
    reshaped = _conv_model(0)
    reshaped.graph.initializer[1].CopyFrom(onnx.numpy_helper.from_array(np.array([-1, 4]), "shape"))
    assert onnx_digest(reshaped) != onnx_digest(_conv_model(0))  # a shape is structure, not a weight


def test_modules_that_differ_only_in_weights_are_identical():
    from kdforge.train.models import create_model

    torch.manual_seed(0)
    a, b = create_model("resnet8", 10, 1), create_model("resnet8", 10, 1)
    assert not torch.equal(a.fc.weight, b.fc.weight)
    assert torch_digest(a, (1, 1, 8, 8)) == torch_digest(b, (1, 1, 8, 8))
    assert torch_digest(a, (1, 1, 8, 8)) != torch_digest(create_model("resnet8", 5, 1), (1, 1, 8, 8))
    assert torch_digest(a, (1, 1, 8, 8)) != torch_digest(a, (1, 1, 16, 16))


def test_kdforge_profile_rejects_too_few_rounds(tmp_path):
    from conftest import kdforge_cli

    out = kdforge_cli("profile", tmp_path / "any.onnx", "--rounds", "2")
    assert out.returncode == 2 and "--rounds" in out.stderr and "Traceback" not in out.stderr


def test_adder_kernels_run_on_the_sessions_thread_count(tmp_path):
    """The native adder kernel's OpenMP threads follow the session's intra-op threads (it took every
    core before, so an AdderNet timed 'on 1 thread' was not)."""
    import ctypes

    from kdforge.export import ort as ort_backend
    from kdforge.export.onnx_export import export_onnx
    from kdforge.train.models import create_model

    if ort_backend.native_library() is None:
        pytest.skip("no C compiler: the native kernel is not built")
    export_onnx(create_model("resnet8_adder", 10, 1).eval(), torch.zeros(1, 1, 8, 8), tmp_path / "a.onnx", 18)
    gomp = ctypes.CDLL("libgomp.so.1")
    x = np.zeros((1, 1, 8, 8), np.float32)
    for threads in (1, 2):
        ort_backend.run(ort_backend.session(tmp_path / "a.onnx", threads=threads), x)
        assert gomp.omp_get_max_threads() == threads
    with pytest.raises(UserError):
        ort_backend.session(tmp_path / "missing.onnx")


def test_a_report_times_each_distinct_graph_once_and_its_students_share_the_figure(tmp_path, monkeypatch):
    """time_students on three exported students, two of one architecture with different weights; an
    engine is faked (no TensorRT here) to show the TensorRT figures follow the same sharing."""
    import kdforge.export.tensorrt as tensorrt
    from kdforge.export.onnx_export import export_onnx
    from kdforge.profile.students import DeployedStudent, time_students
    from kdforge.train.models import create_model

    engine_calls = []
    monkeypatch.setattr(tensorrt, "engine_runner", lambda path: engine_calls.append(path))
    monkeypatch.setattr(tensorrt, "engine_timers", lambda run, shape: {
        "tensorrt": latency.call_timer(lambda: None), "tensorrt_gpu": latency.call_timer(lambda: None)})
    students = []
    for seed, (name, arch) in enumerate([("ce", "resnet8"), ("kd", "resnet8"), ("wide", "resnet20")]):
        torch.manual_seed(seed)
        model = create_model(arch, 10, 1).eval()
        export_onnx(model, torch.zeros(1, 1, 8, 8), tmp_path / f"{name}.onnx", 18)
        students.append(DeployedStudent(name, model, (1, 8, 8), {"onnxruntime": tmp_path / f"{name}.onnx",
                                                                 "tensorrt": tmp_path / f"{name}.engine"}))
    timed = time_students(students, batch=1, sweep=[1, 2], threads=1, setup=_setup(rounds=5, max_rounds=5))
    for backend in ("onnxruntime", "pytorch", "tensorrt", "tensorrt_gpu"):
        ce, kd, wide = (timed[s]["latency"][backend] for s in ("ce", "kd", "wide"))
        assert ce == {**kd, "shared_with": ["kd"]} and kd["shared_with"] == ["ce"] and wide["shared_with"] == []
        assert ce["graph"] != wide["graph"] and ce["p50_ms"] > 0 and ce["batch"] == 1
        assert [p["batch"] for p in timed["wide"]["sweep"][backend]] == [1, 2]
    assert len(engine_calls) == 2  # one engine loaded per distinct graph
