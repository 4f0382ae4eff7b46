"""The YAML schema of a kdforge run, validated with pydantic.

Every section forbids unknown keys, so a misspelt key is caught; every error is turned into
one sentence that names the file and the key (`students[1].options.temperature`). Method
options are validated by the method's own `Options` model, model names against the registry.
"""

from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, PositiveInt, PrivateAttr, StrictInt, ValidationError, field_validator,
                      model_validator)

from kdforge.errors import UserError, printable, printable_name
from kdforge.export.int8_cpu import CALIBRATORS, CPU_TARGETS
from kdforge.safe_files import load_yaml, read_text


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainConfig(Section):
    epochs: int = Field(30, ge=0, description="0: a teacher given its weights is evaluated, not trained")
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    nesterov: bool = False
    schedule: Literal["cosine", "step"] = "cosine"
    milestones: list[int] = Field(default_factory=list, description="epochs at which a step schedule multiplies lr by gamma")
    gamma: float = Field(0.1, gt=0, le=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    amp: Literal["off", "bf16", "fp16"] = Field("off", description="mixed precision: autocast to bf16 or fp16 (fp16 on GPUs)")
    channels_last: bool = Field(False, description="NHWC memory format for convolutions")
    checkpoint_minutes: float = Field(10.0, ge=0, description=(
        "also save the full training state mid-epoch this often (checked at each read of the losses, every log_every steps; "
        "0: at every read)"))
    log_every: int = Field(50, ge=1, description="steps between reads of the losses on the device: progress, metrics.jsonl, "
                           "the non-finite check and the time-based checkpoint happen there")
    compile: bool = Field(False, description="run the distiller under torch.compile")
    threads: Union[Literal["all", "auto"], PositiveInt] = Field("all", description=(
        "CPU training's intra-op threads: all, one per core of the process's CPU set; N; both fixed, so runs are "
        "bitwise reproducible. auto: the cores the rest of the machine leaves free, re-counted every second, which "
        "keeps a shared machine fast but lets results differ in their last digits with the load "
        "(kdforge/train/threads.py)"))


class AugmentConfig(Section):
    crop_padding: int = Field(4, ge=0)
    hflip: bool = True


class DataConfig(Section):
    name: Literal["digits", "cifar10", "cifar100", "folder", "webdataset"] = "digits"
    root: Optional[Path] = None
    val_fraction: float = Field(0.1, ge=0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0, lt=0.5, description="digits only: the held-out test share")
    image_size: int = Field(224, ge=8, description="folder and webdataset data: the training crop size")
    augment: Optional[AugmentConfig] = None
    num_workers: Optional[int] = Field(None, ge=0, description="training loader worker processes (default: image folders "
                                       "one per core, in-memory data sets none)")
    backend: Literal["torch", "dali"] = Field("torch", description="folder and webdataset data: the training loader, "
                                              "PyTorch worker processes or NVIDIA DALI (nvJPEG on a GPU)")
    teacher_classes: Optional[list[int]] = Field(None, description="cross-task: the classes the teacher learns")
    student_classes: Optional[list[int]] = Field(None, description="cross-task: the classes the students learn")
    overlap: Optional[float] = Field(None, ge=0, le=1, description="cross-task: draw both class sets with this share in common")
    task_classes: Optional[int] = Field(None, ge=2, description="with overlap: classes per task (default half the data set's)")

    @model_validator(mode="after")
    def _root_and_augment(self):
        if self.name != "digits" and self.root is None:
            raise ValueError(f"data set '{self.name}' reads from a local folder; set data.root")
        if self.backend == "dali" and self.name not in ("folder", "webdataset"):
            raise ValueError(f"data.backend dali decodes image files; data set '{self.name}' is held in memory, use backend torch")
        if self.overlap is not None and (self.teacher_classes or self.student_classes):
            raise ValueError("give either data.overlap or explicit class lists, not both")
        if self.augment is None:  # digits are not mirror-symmetric and only 8 pixels wide
            self.augment = AugmentConfig(crop_padding=1, hflip=False) if self.name == "digits" else AugmentConfig()
        return self


def _check_model(name: str) -> str:
    from kdforge.train.models import list_models
    from kdforge.train.models.factory import check_factory, is_factory

    if is_factory(name):
        try:
            return check_factory(name)
        except UserError as e:
            raise ValueError(str(e).rstrip(".")) from None
    if name not in list_models():
        raise ValueError(f"unknown model '{name}'; `kdforge models` lists the known ones, or name a factory "
                         f"package.module:function")
    return name


def _existing_file(path):
    if path is not None and not path.is_file():
        raise ValueError(f"file {path} does not exist")
    return path


ModelName = Annotated[str, AfterValidator(_check_model)]
ExistingFile = Annotated[Optional[Path], AfterValidator(_existing_file)]


class ModelSection(Section):
    """What a teacher and a student have alike: the network and where its weights and features are."""
    model: ModelName = Field(description="a registered model (`kdforge models`) or a factory package.module:function "
                             "(timm:NAME for timm.create_model)")
    model_args: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the model's builder")
    weights: ExistingFile = Field(None, description="start from this state dict (.pt/.pth as torch.save wrote it, or "
                                  ".safetensors); a classifier of another class count is replaced")
    stages: Optional[list[str]] = Field(None, min_length=1, description="a factory model's stage outputs, as module paths "
                                        "(default: found from one forward pass)")
    classifier: Optional[str] = Field(None, description="a factory model's final nn.Linear, as a module path (default: "
                                      "the last nn.Linear giving the output)")
    output: Optional[Union[StrictInt, str]] = Field(None, description=(
        "where a factory model's forward returns its logits: a dict key, an attribute or a tuple index (default: the "
        "tensor it returns, else a `logits` key or attribute, else a tuple's first item)"))
    family: Optional[Literal["adder", "binary"]] = Field(None, description=(
        "turn every convolution but the first into an adder (AdderNet) or 1-bit (XNOR) layer; an adder conversion keeps "
        "grouped, dilated, biased and non-square convolutions, which the adder node does not take"))

    @model_validator(mode="after")
    def _structure_of_factories_only(self):
        from kdforge.train.models.factory import is_factory

        if (self.stages or self.classifier or self.output is not None) and not is_factory(self.model):
            raise ValueError(f"stages, classifier and output describe a factory model; '{self.model}' is a registered "
                             f"model, which kdforge knows")
        return self


class TeacherConfig(ModelSection):
    train: TrainConfig = Field(default_factory=TrainConfig)
    checkpoint: ExistingFile = Field(None, description="use this trained teacher instead of training one")

    @model_validator(mode="after")
    def _trained_somehow(self):
        if self.train.epochs == 0 and self.weights is None and self.checkpoint is None:
            raise ValueError("a teacher trained for 0 epochs needs its weights (key 'weights' or 'checkpoint')")
        return self


class QatConfig(Section):
    """Quantization-aware distillation of an INT8 student after its distillation (kdforge/train/qat.py)."""
    epochs: int = Field(ge=1, description="epochs of fine-tuning through fake quantization in the export's integer scheme")
    lr: float = Field(gt=0, description="its learning rate (cosine schedule; the student's other train settings)")
    ranges: Literal["calibrated", "learned"] = Field("calibrated", description=(
        "the layers' input ranges: calibrated (MinMax, recalibrated every epoch; the export calibrates its own) or "
        "learned (started where the layer's output moves least, trained with the weights, and taken by the INT8 "
        "export); CNN and binary students"))


class PruneBudget(Section):
    """What the pruned student may cost, as a share of the unpruned model's kdforge counts or estimate."""
    macs: Optional[float] = Field(None, gt=0, lt=1, description="its MACs, as a share of the unpruned model's")
    params: Optional[float] = Field(None, gt=0, lt=1, description="its parameters, as a share of the unpruned model's")
    latency: Optional[float] = Field(None, gt=0, lt=1, description=(
        "its estimated latency on `target` (at profile.precision), as a share of the unpruned model's"))
    target: Optional[str] = Field(None, description="the target of a latency budget: a catalogued GPU or cpu")

    @model_validator(mode="after")
    def _one_measure(self):
        from kdforge.profile.targets import TARGET_NAMES

        if sum(v is not None for v in (self.macs, self.params, self.latency)) != 1:
            raise ValueError("a prune budget names one measure: macs, params or latency, each a share between 0 and 1")
        if (self.latency is None) != (self.target is None):
            raise ValueError("a latency budget names its target, and only a latency budget does")
        if self.target is not None and self.target not in TARGET_NAMES:
            raise ValueError(f"unknown target '{self.target}'; known: {', '.join(TARGET_NAMES)}")
        return self

    @property
    def measure(self) -> str:
        return next(name for name in ("macs", "params", "latency") if getattr(self, name) is not None)

    @property
    def share(self) -> float:
        return getattr(self, self.measure)


class PruneConfig(Section):
    """Structural pruning of a trained model into the student, recovered by the student's method (kdforge/train/prune.py)."""
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    source: Literal["teacher", "weights"] = Field(alias="from", description=(
        "the trained model that is cut: the pipeline's teacher (the student names the teacher's model), or the "
        "student's own `weights` file"))
    budget: PruneBudget
    importance: Literal["magnitude", "bn_scale", "taylor"] = Field("magnitude", description=(
        "how channels are ranked within a layer: L2 norm of their weights, their batch norm's |gamma|, or first-order "
        "Taylor (|w dL/dw| on a batch of training images)"))
    keep: list[str] = Field(default_factory=list, description=(
        "module paths whose output width stays (the classifier's outputs always stay), e.g. the stem"))
    steps: int = Field(1, ge=1, le=10, description=(
        "cuts to reach the budget: 1 is one-shot; N cuts to budget^(k/N), each but the last followed by recovery_epochs "
        "of the student's training"))
    recovery_epochs: int = Field(2, ge=1, description="epochs of the student's method after each cut but the last")
    round_to: int = Field(8, ge=1, le=64, description=(
        "pruned channel counts are multiples of this (CPU kernels block channels by 8 with AVX2 and 16 with AVX-512; odd "
        "counts ran slower than the uncut model); 1 for any count"))


class StudentConfig(ModelSection):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    method: str
    options: dict[str, Any] = Field(default_factory=dict)
    train: TrainConfig = Field(default_factory=TrainConfig)
    deploy: Optional[list[str]] = Field(None, description=(
        "what the student ships, entries of the artifact registry (kdforge/export/artifacts/, `kdforge export --list`): "
        "fp32 (model.onnx, always), fp16, int8, tensorrt, openvino, ...; default [fp32]"))
    precision: Optional[Literal["fp32", "fp16", "int8"]] = Field(None, description=(
        "the narrowest precision the student ships, read from `deploy`; `precision: int8` alone is the older spelling of "
        "deploy: [fp32, int8]"))
    qat: Optional[QatConfig] = Field(None, description=(
        "INT8 students: fine-tune through fake quantization after distillation, against the FP32 student and its teacher; "
        "the INT8 files are then exported from the fine-tuned student"))
    prune: Optional[PruneConfig] = Field(None, description=(
        "cut a trained model to a cost budget, channels and filters removed, then train it by the student's method"))
    _notices: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _resolve_deploy(self):
        from kdforge.train.models.families import ADDER, CNN, family_of_section

        if self.precision is not None and self.deploy is None:
            self._notices.append(f"student '{self.name}': precision: {self.precision} is now written "
                                 f"deploy: [fp32{', ' + self.precision if self.precision != 'fp32' else ''}]; read as that")
        self.set_deploy([*(self.deploy or []), *([self.precision] if self.precision else [])])
        if self.qat is not None and self.precision != "int8":
            raise ValueError(f"qat fine-tunes an INT8 student; student '{self.name}' ships {self.precision} "
                             f"(add int8 to its deploy list, or drop qat)")
        if self.prune is not None and family_of_section(self.model, None) is not CNN:
            raise ValueError(f"student '{self.name}' prunes {self.model}, a {family_of_section(self.model, None).name} network; "
                             f"pruning cuts CNNs: name the CNN as its model and its family as `family:` (the CNN is cut, "
                             f"then turned into its twin)")
        if self.prune is not None and self.prune.source == "weights" and self.weights is None:
            raise ValueError(f"student '{self.name}' prunes its own weights (prune.from: weights) but names no weights file")
        if self.qat is not None and self.qat.ranges == "learned" and family_of_section(self.model, self.family) is ADDER:
            raise ValueError(f"student '{self.name}' is an AdderNet, whose INT8 input ranges are calibrated with its "
                             f"weights' (one scale for both); set its qat.ranges to calibrated")
        return self

    def set_deploy(self, requested: list[str]) -> None:
        """Resolves `requested` against the artifact registry into `deploy`, refusing in one sentence
        what this student's family cannot ship, and sets `precision` to the narrowest it ships."""
        from kdforge.export.artifacts import artifact, deploy_names
        from kdforge.train.models.families import family_of_section

        names = deploy_names(requested)
        family = family_of_section(self.model, self.family)
        for name in names:
            refusal = artifact(name).refusal(family)
            if refusal:
                raise ValueError(f"student '{self.name}' cannot deploy {name}: {refusal}")
        self.deploy = list(names)
        self.precision = max((artifact(n).precision for n in names), key=("fp32", "fp16", "int8").index)

    @field_validator("train")
    @classmethod
    def _trains(cls, train):
        if train.epochs == 0:
            raise ValueError("a student trains for 1 epoch or more")
        return train

    @field_validator("method")
    @classmethod
    def _known_method(cls, name):
        from kdforge.train.methods import list_methods

        if name not in list_methods():
            raise ValueError(f"unknown method '{name}'; `kdforge methods` lists the known ones")
        return name


class ExportConfig(Section):
    opset: int = Field(18, ge=18, description="ONNX opset of the exported files: torch's exporter writes 18 and converts "
                       "upwards only")
    portable: bool = Field(False, description="standard ONNX operators only (adder layers too): any runtime, slowly")
    tensorrt: bool = Field(False, description="the older spelling of `tensorrt` in every student's deploy list")
    fp16: bool = Field(False, description="the older spelling of `fp16` in the deploy list of every student with a TensorRT "
                       "engine that can ship fp16 (the engine takes the student's narrowest precision)")
    calibration_images: int = Field(256, ge=1, description="training images that calibrate an INT8 student's activation ranges")
    calibration: Literal[CALIBRATORS] = Field("minmax", description=(
        "how those images set each activation's range: ONNX Runtime's MinMax, Percentile (99.999%) or Entropy calibrator"))
    int8_max_float_macs: float = Field(0.10, ge=0, le=1, description=(
        "where no integer scheme of the target passes the INT8 gate on the validation split, the most sensitive layers "
        "stay float one at a time while they carry at most this share of the MACs (kdforge/export/int8_search.py)"))
    int8_cpu: Literal[("auto",) + CPU_TARGETS] = Field("auto", description=(
        "the CPU that will run a CNN or binary student's INT8 file, whose integer types follow its instructions "
        "(kdforge/export/int8_cpu.py): x86-vnni U8S8, x86-avx2 U8S8 with 7-bit weights, arm64(-dotprod) S8S8; "
        "auto: this machine's"))

    @field_validator("opset")
    @classmethod
    def _opset_onnx_knows(cls, opset):
        import onnx

        if opset > onnx.defs.onnx_opset_version():
            raise ValueError(f"this onnx package knows opsets up to {onnx.defs.onnx_opset_version()}")
        return opset


class VerifyConfig(Section):
    atol: float = Field(1e-3, gt=0, description="largest tolerated |ONNX Runtime - PyTorch| over all logits")
    min_agreement: float = Field(0.99, ge=0, le=1, description="smallest tolerated top-1 agreement")
    int8_min_agreement: float = Field(0.97, ge=0, le=1, description="smallest tolerated top-1 agreement of an INT8 file with PyTorch")
    int8_max_accuracy_drop: float = Field(0.02, ge=0, le=1, description="largest tolerated test-accuracy loss of an INT8 file")
    int8_reference_atol: float = Field(0.1, gt=0, description=(
        "largest tolerated |ONNX Runtime - PyTorch| over all logits of an INT8 AdderNet against its PyTorch integer twin "
        "(an input on a rounding boundary may quantize one step apart in the two)"))
    fp16_atol: float = Field(0.1, gt=0, description="largest tolerated |ONNX Runtime fp16 - PyTorch fp32| over all logits")


def _check_target(name: str) -> str:
    from kdforge.profile.targets import TARGET_NAMES

    if name not in TARGET_NAMES:
        raise ValueError(f"unknown target '{name}'; the targets are {', '.join(TARGET_NAMES)}")
    return name


class ProfileConfig(Section):
    threads: int = Field(1, ge=1)
    warmup: int = Field(10, ge=0, description="warm-up calls before timing (fewer when they outlast ten rounds)")
    rounds: int = Field(20, ge=5, description="timed rounds, interleaved across the report's models, backends and batch sizes")
    round_ms: float = Field(1.0, gt=0, le=10_000, description="the least duration of one subject's round (ms)")
    max_rounds: int = Field(40, ge=5, description="rounds at most, for a figure whose rounds disagree")
    tolerance: float = Field(0.10, gt=0, lt=1, description="how far (a share of the median) the median's 95% confidence "
                             "interval may reach before a figure is re-measured and then marked unstable")
    batch_size: int = Field(1, ge=1)
    sweep: list[int] = Field(default_factory=lambda: [1, 4, 16, 64], description="batch sizes of the throughput sweep")
    targets: list[Annotated[str, AfterValidator(_check_target)]] = Field(
        default_factory=list, description="devices to estimate each student's latency on (roofline), e.g. [h100, orin]")
    precision: Literal["fp32", "fp16", "bf16", "int8"] = Field("fp16", description="the precision of those estimates")
    input_on_device: bool = Field(False, description="GPU estimates: the input is already on the GPU, so a query copies "
                                  "nothing to it (kdforge/profile/gpu_query.py)")
    cuda_graph: bool = Field(True, description="GPU estimates: the engine's kernels replay from one CUDA graph; false "
                             "launches each on its own")

    @model_validator(mode="before")
    @classmethod
    def _runs_replaced(cls, raw):
        if isinstance(raw, dict) and "runs" in raw:
            raise ValueError("'runs' is gone: latency is timed in interleaved rounds calibrated by duration; "
                             "set profile.rounds and profile.round_ms instead")
        return raw

    @model_validator(mode="after")
    def _max_rounds_covers_rounds(self):
        if self.max_rounds < self.rounds:
            raise ValueError(f"max_rounds ({self.max_rounds}) must be at least rounds ({self.rounds})")
        return self

    def latency_setup(self, seed: int = 0):
        from kdforge.profile.latency import LatencySetup

        # with thread pools (more than 1 thread), a pause before each round lets the previous subject's
        # pools stop spinning, or the next subject would be timed sharing the cores with them
        return LatencySetup(self.warmup, self.rounds, self.round_ms, self.max_rounds, self.tolerance, seed,
                            settle_ms=0.0 if self.threads == 1 else 5.0)

    def deployment(self):
        from kdforge.profile.gpu_query import Deployment

        return Deployment(input_on_device=self.input_on_device, cuda_graph=self.cuda_graph)


class Config(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = 0
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    run_dir: Optional[Path] = None
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: Optional[TeacherConfig] = Field(None, description="required when a student's method learns from a teacher")
    students: list[StudentConfig] = Field(min_length=1)
    export: ExportConfig = Field(default_factory=ExportConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    profile: ProfileConfig = Field(default_factory=ProfileConfig)
    _notices: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _unique_student_names(self):
        names = [s.name for s in self.students]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"student names must be unique; '{dupes[0]}' appears more than once")
        return self

    @model_validator(mode="after")
    def _older_export_spellings(self):
        """export.tensorrt and export.fp16 still work, each with a notice, as entries of every student's deploy list."""
        from kdforge.train.models.families import family_of_section

        if self.export.tensorrt:
            self._notices.append("export.tensorrt: true is now `tensorrt` in a student's deploy list; read as that for every student")
        if self.export.fp16:
            self._notices.append("export.fp16: true is now `fp16` in a student's deploy list; read as that for every student "
                                 "with a TensorRT engine that can ship fp16")
        for s in self.students:
            extra = ["tensorrt"] if self.export.tensorrt else []
            if self.export.fp16 and "tensorrt" in s.deploy + extra and not family_of_section(s.model, s.family).refusal("fp16"):
                extra.append("fp16")
            if extra:
                s.set_deploy(s.deploy + extra)
        return self

    @model_validator(mode="after")
    def _pruned_teachers_model(self):
        for s in self.students:
            if s.prune is not None and s.prune.source == "teacher" and (
                    self.teacher is None or (s.model, s.model_args) != (self.teacher.model, self.teacher.model_args)):
                wanted = f"the teacher's model ({self.teacher.model})" if self.teacher else "a teacher section"
                raise ValueError(f"student '{s.name}' prunes the teacher (prune.from: teacher), so it needs {wanted} as "
                                 f"its model, with the same model_args")
        return self

    def notices(self) -> list[str]:
        """One line per older spelling the config used, which kdforge read as its newer one."""
        return self._notices + [n for s in self.students for n in s._notices]

    def resolved_run_dir(self) -> Path:
        return self.run_dir if self.run_dir is not None else Path("runs") / self.name


def _key_path(loc) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _describe(error: dict, prefix: str = "") -> str:
    key = prefix + _key_path(error["loc"])
    kind, msg = error["type"], error["msg"]
    if kind == "extra_forbidden":
        return f"key '{key}' is not a known setting (misspelt?)"
    if kind == "missing":
        return f"key '{key}' is required"
    msg = msg.removeprefix("Value error, ")
    return f"key '{key}': {msg}" if key else msg


def parse_config(raw: Any, source: str = "config") -> Config:
    if not isinstance(raw, dict):
        raise UserError(f"{source}: the top level must be a mapping of settings.")
    try:
        cfg = Config(**raw)
    except ValidationError as e:
        raise UserError(f"{source}: {_describe(e.errors()[0])}.") from None
    _validate_method_options(cfg, source)
    _require_teacher(cfg, source)
    _teacher_trained_as_its_students_need(cfg, source)
    return cfg


def _require_teacher(cfg: Config, source: str) -> None:
    from kdforge.train.methods import method_class, uses_teacher

    for i, student in enumerate(cfg.students):
        if cfg.teacher is None and uses_teacher(student):
            raise UserError(f"{source}: key 'teacher' is required: students[{i}] uses method '{student.method}', which learns from a teacher"
                            f"{' with these options' if method_class(student.method).teacher_by_options() else ''}.")


def _teacher_trained_as_its_students_need(cfg: Config, source: str) -> None:
    """A method whose teacher the teacher stage trains its own way (TOFD's, with auxiliary heads)
    cannot use a teacher given trained: those parts would be untrained."""
    from kdforge.train.methods import Distiller, method_class, teacher_method, uses_teacher

    t = cfg.teacher
    if t is None or (t.checkpoint is None and t.train.epochs > 0) or teacher_method(cfg) == Distiller.teacher_method:
        return
    i, student = next((i, s) for i, s in enumerate(cfg.students)
                      if uses_teacher(s) and method_class(s.method).teacher_method != Distiller.teacher_method)
    given = "teacher.checkpoint" if t.checkpoint is not None else "teacher.weights with teacher.train.epochs: 0"
    raise UserError(f"{source}: students[{i}] uses method '{student.method}', whose teacher the teacher stage trains with "
                    f"{teacher_method(cfg)} (its own parts, such as auxiliary heads), and {given} gives one trained without "
                    f"them; set teacher.train.epochs above 0 to fine-tune it from teacher.weights.")


def _validate_method_options(cfg: Config, source: str) -> None:
    """Each method checks its own options; defaults are filled in so that they count in fingerprints."""
    from kdforge.train.methods import method_class

    for i, student in enumerate(cfg.students):
        try:
            student.options = method_class(student.method).Options(**student.options).model_dump()
        except ValidationError as e:
            raise UserError(f"{source}: {_describe(e.errors()[0], prefix=f'students[{i}].options.')}.") from None


def apply_override(raw: dict, assignment: str) -> None:
    """`key.sub=value` sets raw[key][sub] to value parsed as YAML (`export.tensorrt=true`)."""
    shown = printable_name(assignment)
    key, sep, value = assignment.partition("=")
    parts = key.split(".")
    if not sep or not all(parts):
        raise UserError(f"--set {shown}: write it as key=value, e.g. --set export.tensorrt=true.")
    *parents, leaf = parts
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"--set {shown}: '{printable(part)}' is not a section of the config.")
    node[leaf] = load_yaml(value, f"--set {shown}")


CONFIG_MAX_BYTES = 1 << 20  # a config is a few KiB


def load_config(path: Path, overrides: tuple[str, ...] = ()) -> Config:
    path = Path(path)
    raw = load_yaml(read_text(path, "config file", CONFIG_MAX_BYTES), printable(str(path)))
    if isinstance(raw, dict):
        for assignment in overrides:
            apply_override(raw, assignment)
    return parse_config(raw, printable(str(path)))
