"""The latency figures of one report's students, measured together: every (backend, deployed graph,
batch size) is one subject of kdforge.profile.latency's interleaved rounds, and students whose
graphs are identical (kdforge.profile.identity) share one subject and so one figure."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from kdforge.profile import latency
from kdforge.profile.identity import onnx_digest, torch_digest


@dataclass
class DeployedStudent:
    """What one student ships: its eager module and its deployed files by artifact name
    ("onnxruntime", "onnxruntime-int8", "tensorrt", ...: entries of kdforge.export.artifacts, the keys of verify.json)."""
    name: str
    model: object
    input_shape: tuple  # one image: (C, H, W)
    files: dict[str, Path]


@dataclass
class _Backend:
    """One (artifact, graph) of the report: how to make its timers at a batch size, and who shares it."""
    make_timers: Callable[[int], dict]
    info: dict
    students: list = field(default_factory=list)


def _pytorch_backend(model, input_shape, threads: int) -> _Backend:
    return _Backend(lambda batch: {"pytorch": latency.pytorch_timer(model, (batch, *input_shape))},
                    {"backend": "pytorch-eager", "device": "cpu", "threads": threads})


def _artifact_backend(name: str, path: Path, input_shape, threads: int) -> _Backend:
    from kdforge.export.artifacts import artifact

    return _Backend(*artifact(name).timers(path, input_shape, threads))


def _backends(students: list[DeployedStudent], threads: int) -> tuple[dict, dict]:
    """The distinct (artifact, digest) pairs, and per student its digest for each."""
    from kdforge.export.artifacts import artifact
    from kdforge.export.onnx_file import load_model  # external data refused: a file may come from anyone

    distinct, of_student = {}, {}
    for s in students:
        digests = {"pytorch": torch_digest(s.model, (1, *s.input_shape))}
        if ("pytorch", digests["pytorch"]) not in distinct:
            distinct[("pytorch", digests["pytorch"])] = _pytorch_backend(s.model, s.input_shape, threads)
        distinct[("pytorch", digests["pytorch"])].students.append(s.name)
        for name, path in s.files.items():
            digests[name] = digest = onnx_digest(load_model(artifact(name).graph(path)))
            if (name, digest) not in distinct:
                distinct[(name, digest)] = _artifact_backend(name, path, s.input_shape, threads)
            distinct[(name, digest)].students.append(s.name)
        of_student[s.name] = digests
    return distinct, of_student


def time_students(students: list[DeployedStudent], batch: int, sweep: list[int], threads: int,
                  setup: latency.LatencySetup) -> dict[str, dict]:
    """Per student: "latency" (backend -> figure at `batch`, with the digest of the graph timed and
    the students sharing it) and "sweep" (backend -> a figure per batch size of `sweep`)."""
    distinct, of_student = _backends(students, threads)
    batches = sorted({batch, *sweep})
    timers, figures_of = {}, {}  # figures_of: (artifact, digest) -> the figure names its timers give
    for key, backend in distinct.items():
        for b in batches:
            made = backend.make_timers(b)
            figures_of[key] = list(made)
            timers.update({(name, key[1], b): timer for name, timer in made.items()})
    with latency.torch_threads(threads):
        figures = latency.measure(timers, setup)
    results = {}
    for s in students:
        lat, swept = {}, {}
        for timed, digest in of_student[s.name].items():
            shared = distinct[(timed, digest)]
            others = [n for n in shared.students if n != s.name]
            for figure in figures_of[(timed, digest)]:
                lat[figure] = {**shared.info, "batch": batch, **figures[(figure, digest, batch)], "graph": digest,
                               "shared_with": others}
                swept[figure] = [{"batch": b, **_sweep_point(figures[(figure, digest, b)], b)} for b in sweep]
        results[s.name] = {"latency": lat, "sweep": swept}
    return results


def _sweep_point(figure: dict, batch: int) -> dict:
    return {key: figure[key] for key in ("p50_ms", "ci_low_ms", "ci_high_ms", "p90_ms", "stable", "rounds")} | {
        "images_per_s": batch / (figure["p50_ms"] / 1e3)}
