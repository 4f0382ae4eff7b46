"""The interface of a deployable artifact and the registry of them (kdforge.export.artifacts).

An entry says what it is (its key, its file, the precision it ships, the runtime that runs it),
which students it applies to (`refusal`), how it is built (`build`), opened and run (`open`),
verified against PyTorch (`verify`: by default the policy of its precision) and timed (`timers`:
by default one call of what `open` returns, in kdforge.profile.latency's interleaved rounds)."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np

from kdforge.errors import UserError
from kdforge.train.models.families import Family

PRECISIONS = ("fp32", "fp16", "int8")  # from the widest; a student's precision is the narrowest it ships


@dataclass
class Built:
    """What building one artifact wrote: its files, its facts for the export stage's record, and a
    phrase for the stage's log line."""
    paths: list[Path]
    metrics: dict = field(default_factory=dict)
    summary: str = ""


@dataclass
class Runner:
    """A callable from a batch of images (float32, N x C x H x W) to logits, and what runs it."""
    run: Callable[[np.ndarray], np.ndarray]
    info: dict

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.run(images)


@dataclass
class ExportJob:
    """One student's deployment: the model as it ships, where its files go and what building and
    verifying them read. What a caller lacks (`kdforge export` has no data) stays None, and an
    entry that needs it says so in one sentence."""
    model: object  # the deployed torch module
    folder: Path
    input_shape: tuple  # one image, (C, H, W)
    deploy: tuple[str, ...]
    family: Family
    export: object  # kdforge.config.ExportConfig
    verify: object = None  # kdforge.config.VerifyConfig
    stem: str = "model"
    calibration: Callable[[], object] | None = None  # () -> training images (N, C, H, W) that calibrate an INT8 file
    validation: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None  # () -> (images, labels) judging one
    test: object = None  # verify's images: the test split
    largest_batch: int = 128  # the largest batch verify and profile feed an engine
    cache: dict = field(default_factory=dict)  # work entries share (the INT8 AdderNet's PyTorch twin)
    input_ranges: dict = field(default_factory=dict)  # {layer path: [rmin, rmax]} learned in QAT (qat.ranges: learned)

    def path(self, suffix: str) -> Path:
        return self.folder / f"{self.stem}{suffix}"

    @property
    def precision(self) -> str:
        """The narrowest precision the student ships, which the report and a TensorRT engine take as its own."""
        return max((artifact(name).precision for name in self.deploy), key=PRECISIONS.index)

    def range_overrides(self, images: np.ndarray):
        """prepared file -> the ONNX Runtime overrides that set the learned input ranges on it."""
        from kdforge.export.int8_ranges import range_overrides

        return lambda prepared: range_overrides(prepared, self.model, images, self.input_ranges)

    def example(self, batch: int = 2):
        import torch

        return torch.zeros((batch, *self.input_shape))

    def calibration_images(self, needed_by: str):
        if self.calibration is None:
            raise UserError(f"{needed_by} is calibrated on training images, which only `kdforge run` has; deploy it from a config.")
        return self.calibration()


class Artifact:
    """One deployable file and the runtime that runs it; subclass, set the class attributes, and
    decorate with @register_artifact."""
    name: ClassVar[str]  # the one key: `deploy`, verify.json, profile.json, the report and `kdforge export --deploy`
    suffix: ClassVar[str]  # its file: <stem><suffix> in the student's folder
    precision: ClassVar[str] = "fp32"
    runtime: ClassVar[str]  # the report's name of what runs it
    aliases: ClassVar[tuple[str, ...]] = ()  # other names `deploy` takes for it
    needs: ClassVar[tuple[str, ...]] = ()  # entries whose files it reads: deployed with it, built before it
    locates_divergence: ClassVar[bool] = False  # a failing file gets its first diverging layer named (standard ONNX)

    @property
    def label(self) -> str:
        """The report's column name."""
        return self.runtime if self.precision == "fp32" else f"{self.runtime} {self.precision}"

    def refusal(self, family: Family) -> str | None:
        """Why a student of `family` cannot ship this, or None."""
        return family.refusal(self.precision)

    def path(self, job: ExportJob) -> Path:
        return job.path(self.suffix)

    def build(self, job: ExportJob) -> Built | None:
        """Writes the file; None where it is another entry's (`needs`)."""
        raise NotImplementedError

    def open(self, path: Path, threads: int) -> Runner:
        raise NotImplementedError

    def shipped_precision(self, job: ExportJob) -> str:
        """The precision its file computes in, whose verify policy it meets."""
        return self.precision

    def verify(self, job: ExportJob, run: Runner) -> dict[str, dict]:
        """verify.json's entries: an INT8 file by top-1 agreement and accuracy lost, others by logits too."""
        from kdforge.export.verify import verify_backend, verify_int8

        v, precision = job.verify, self.shipped_precision(job)
        if precision == "int8":
            return {self.name: verify_int8(job.model, run, job.test, v.int8_min_agreement, v.int8_max_accuracy_drop, self.name)}
        atol, key = (v.fp16_atol, "verify.fp16_atol") if precision == "fp16" else (v.atol, "verify.atol")
        return {self.name: verify_backend(job.model, run, job.test, atol, v.min_agreement, self.name, atol_key=key)}

    def timers(self, path: Path, input_shape: tuple, threads: int) -> tuple[Callable[[int], dict], dict]:
        """(batch -> {figure name: timer}, what runs them) for kdforge.profile.latency.measure."""
        from kdforge.profile.latency import call_timer, example_input

        run = self.open(path, threads)

        def make(batch: int) -> dict:
            x = example_input((batch, *input_shape))
            return {self.name: call_timer(lambda: run(x))}
        return make, {**run.info, "threads": threads}

    def graph(self, path: Path) -> Path:
        """The ONNX file whose graph decides its speed: students whose graphs are identical share one figure."""
        return path


_REGISTRY: dict[str, Artifact] = {}


def register_artifact(cls: type[Artifact]) -> type[Artifact]:
    entry = cls()
    taken = {alias: e.name for e in _REGISTRY.values() for alias in (e.name, *e.aliases)}
    clash = next((n for n in (entry.name, *entry.aliases) if n in taken and taken[n] != entry.name), None)
    if clash:
        raise ValueError(f"artifact name '{clash}' is taken by '{taken[clash]}'")
    _REGISTRY[entry.name] = entry
    return cls


def registered() -> list[Artifact]:
    return list(_REGISTRY.values())


def artifact(name: str) -> Artifact:
    for entry in _REGISTRY.values():
        if name == entry.name or name in entry.aliases:
            return entry
    known = ", ".join(e.name + (f" ({'/'.join(e.aliases)})" if e.aliases else "") for e in _REGISTRY.values())
    raise ValueError(f"'{name}' is not a deployable artifact; they are {known}")


def _depth(entry: Artifact) -> int:
    return 1 + max((_depth(artifact(n)) for n in entry.needs), default=-1)


def deploy_names(requested) -> tuple[str, ...]:
    """The entries a `deploy` list names (aliases resolved), with the FP32 file every other is made
    from and what each needs, in build order: an entry after those it reads."""
    names, pending = [], ["onnxruntime", *requested]
    while pending:
        entry = artifact(pending.pop(0))
        if entry.name not in names:
            names.append(entry.name)
            pending += list(entry.needs)
    order = list(_REGISTRY)
    return tuple(sorted(names, key=lambda n: (_depth(artifact(n)), order.index(n))))
