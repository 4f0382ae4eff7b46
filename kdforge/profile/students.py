"""The latency figures of one report's students, measured together: every (backend, deployed graph,
batch size) is one subject of kdforge.profile.latency's interleaved rounds, and students whose
graphs are identical (kdforge.profile.identity) share one subject and so one figure."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from kdforge.profile import latency
from kdforge.profile.identity import onnx_digest, torch_digest


@dataclass
class DeployedStudent:
    """What one student ships: its eager module, its ONNX files by backend name
    ("onnxruntime", "onnxruntime-int8", ...: the keys of verify.json), and its TensorRT engine where built."""
    name: str
    model: object
    input_shape: tuple  # one image: (C, H, W)
    onnx_files: dict[str, Path]
    engine: Optional[Path] = None


@dataclass
class _Backend:
    """One (backend, graph) of the report: how to make its timers at a batch size, and who shares it."""
    make_timers: Callable[[int], dict]
    info: dict
    students: list = field(default_factory=list)


def _onnx_backend(name: str, path: Path, input_shape, threads: int) -> _Backend:
    from kdforge.export import ort as ort_backend

    session = ort_backend.session(path, threads=threads)
    return _Backend(lambda batch: {name: latency.onnxruntime_timer(session, (batch, *input_shape))},
                    {"backend": "onnxruntime", "provider": session.get_providers()[0], "threads": threads})


def _pytorch_backend(model, input_shape, threads: int) -> _Backend:
    return _Backend(lambda batch: {"pytorch": latency.pytorch_timer(model, (batch, *input_shape))},
                    {"backend": "pytorch-eager", "device": "cpu", "threads": threads})


def _tensorrt_backend(engine: Path, input_shape) -> _Backend:
    from kdforge.export.tensorrt import engine_runner, engine_timers

    run = engine_runner(engine)
    return _Backend(lambda batch: engine_timers(run, (batch, *input_shape)), {"backend": "tensorrt"})


_TIMED_BY = {"tensorrt_gpu": "tensorrt"}  # figures that come from another backend's timers


def _backend(name: str, s: DeployedStudent, threads: int) -> _Backend:
    if name == "pytorch":
        return _pytorch_backend(s.model, s.input_shape, threads)
    if name == "tensorrt":
        return _tensorrt_backend(s.engine, s.input_shape)
    return _onnx_backend(name, s.onnx_files[name], s.input_shape, threads)


def _backends(students: list[DeployedStudent], threads: int) -> tuple[dict, dict]:
    """The distinct (backend, digest) pairs, and per student its digest for each backend."""
    from kdforge.export.onnx_file import load_model  # external data refused: a file may come from anyone

    distinct, of_student = {}, {}
    for s in students:
        digests = {}
        digests["pytorch"] = torch_digest(s.model, (1, *s.input_shape))
        for backend, path in s.onnx_files.items():
            digests[backend] = onnx_digest(load_model(path))
        if s.engine is not None:  # an engine is its ONNX graph compiled: the same graph, the same engine
            digests["tensorrt"] = digests["tensorrt_gpu"] = digests["onnxruntime"]
        for backend, digest in digests.items():
            key = (_TIMED_BY.get(backend, backend), digest)
            if key not in distinct:
                distinct[key] = _backend(key[0], s, threads)
            if s.name not in distinct[key].students:
                distinct[key].students.append(s.name)
        of_student[s.name] = digests
    return distinct, of_student


def time_students(students: list[DeployedStudent], batch: int, sweep: list[int], threads: int,
                  setup: latency.LatencySetup) -> dict[str, dict]:
    """Per student: "latency" (backend -> figure at `batch`, with the digest of the graph timed and
    the students sharing it) and "sweep" (backend -> a figure per batch size of `sweep`)."""
    distinct, of_student = _backends(students, threads)
    batches = sorted({batch, *sweep})
    timers = {}
    for (_, digest), backend in distinct.items():
        for b in batches:
            timers.update({(name, digest, b): timer for name, timer in backend.make_timers(b).items()})
    with latency.torch_threads(threads):
        figures = latency.measure(timers, setup)
    results = {}
    for s in students:
        lat, swept = {}, {}
        for backend, digest in of_student[s.name].items():
            shared = distinct[(_TIMED_BY.get(backend, backend), digest)]
            others = [n for n in shared.students if n != s.name]
            lat[backend] = {**shared.info, "batch": batch, **figures[(backend, digest, batch)], "graph": digest,
                            "shared_with": others}
            swept[backend] = [{"batch": b, **_sweep_point(figures[(backend, digest, b)], b)} for b in sweep]
        results[s.name] = {"latency": lat, "sweep": swept}
    return results


def _sweep_point(figure: dict, batch: int) -> dict:
    return {key: figure[key] for key in ("p50_ms", "ci_low_ms", "ci_high_ms", "p90_ms", "stable", "rounds")} | {
        "images_per_s": batch / (figure["p50_ms"] / 1e3)}
