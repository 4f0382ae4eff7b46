"""The stage functions. Each reads what earlier stages wrote in the run directory, writes its
own artifacts atomically and returns a `StageResult`; the runner records it in the manifest.
The work itself lives in train/, export/ and profile/: a stage only wires it to files."""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from kdforge import atomic
from kdforge.config import Config, StudentConfig
from kdforge.errors import UserError, printable, printable_name
from kdforge.export.strip import load_deployed, save_deployed, strip, training_parameters
from kdforge.export.verify import VERIFY_BATCH, compare_counts, require_passed
from kdforge.nn.widths import layer_widths, resize
from kdforge.pipeline.graph import Unit
from kdforge.pipeline.manifest import Manifest
from kdforge.profile import estimates, latency
from kdforge.profile.counts import count_costs
from kdforge.profile.energy import SOURCE as ENERGY_SOURCE
from kdforge.profile.report import student_row, write_report
from kdforge.profile.targets import target
from kdforge.results import ExportRecord, ProfileRecord, VerifyRecord, read_record
from kdforge.safe_files import read_json
from kdforge.train import distributed
from kdforge.train.data import DataBundle, batch_augmentation, build_data, loader_workers
from kdforge.train.device import resolve_device
from kdforge.train.evaluation import generalized_accuracy
from kdforge.train.methods import method_class, teacher_method, uses_teacher
from kdforge.train.models.build import build_network, convert_family
from kdforge.train.models.families import ADDER, family_of_model
from kdforge.train.trainer import accuracy, fit, predict, seed_everything
from kdforge.train.weights import load_into, network_weights
from kdforge.untrusted import load_torch


@dataclass
class StageResult:
    outputs: list[Path]
    metrics: dict
    summary: str


@dataclass
class StageContext:
    cfg: Config
    run_dir: Path
    unit: Unit
    manifest: Manifest
    cache: dict = field(default_factory=dict)

    @property
    def student(self) -> StudentConfig:
        return next(s for s in self.cfg.students if s.name == self.unit.student)

    @property
    def student_dir(self) -> Path:
        return self.run_dir / "students" / self.unit.student

    def data(self, task: str = "student") -> DataBundle:
        """The data of the students, or with task="teacher" the teacher's (they differ when cross-task)."""
        key = f"data/{task}"
        if key not in self.cache:
            self.cache[key] = build_data(self.cfg.data, self.cfg.seed, task)
        return self.cache[key]

    def device(self) -> torch.device:
        return resolve_device(self.cfg.device)

    def metrics(self, key: str) -> dict:
        return self.manifest.units[key]["metrics"]


def _input_shape(data: DataBundle, batch: int) -> tuple[int, int, int, int]:
    return (batch, data.in_channels, data.image_size, data.image_size)


def run_data(ctx: StageContext) -> StageResult:
    data = ctx.data()
    summary = data.summary()
    path = ctx.run_dir / "data" / "summary.json"
    atomic.write_json(path, {"name": ctx.cfg.data.name, **summary, "teacher_classes": ctx.data("teacher").classes})
    return StageResult([path], summary, (
        f"{ctx.cfg.data.name}: {summary['train']}/{summary['val']}/{summary['test']} train/val/test images, "
        f"{summary['num_classes']} classes, {summary['in_channels']}x{summary['image_size']}x{summary['image_size']}"
    ))


def _example(data: DataBundle) -> torch.Tensor:
    return torch.zeros(_input_shape(data, 2))


def _network(ctx: StageContext, section, task: str, with_weights: bool) -> tuple[torch.nn.Module, list[str]]:
    data = ctx.data(task)
    return build_network(section, data.num_classes, data.in_channels, data.image_size, with_weights)


def _noted(summary: str, notes: list[str]) -> str:
    return summary + "".join(f"; {note}" for note in notes)


def run_teacher(ctx: StageContext) -> StageResult:
    t, data = ctx.cfg.teacher, ctx.data("teacher")
    folder = ctx.run_dir / "teacher"
    method = method_class(teacher_method(ctx.cfg))
    seed_everything(ctx.cfg.seed)  # the initial weights are the seed's, in every process
    network, notes = _network(ctx, t, "teacher", with_weights=t.checkpoint is None)
    distiller = method(network, None, method.Options(), _example(data))
    if t.checkpoint is not None or t.train.epochs == 0:  # a trained teacher: evaluated as it is
        if t.checkpoint is not None:
            weights = network_weights(load_torch(t.checkpoint, "teacher.checkpoint"))
            load_into(distiller.student.load_state_dict, weights, t.checkpoint)
        logits, labels = predict(distiller.student, data.test, torch.device("cpu"))
        if distributed.is_main():
            atomic.save_torch(folder / "checkpoint.pt", {"fingerprint": ctx.unit.fingerprint, "complete": True, "model": distiller.state_dict()})
        metrics = {"test_accuracy": accuracy(logits, labels), "source": str(t.checkpoint or t.weights)}
    else:
        result = fit(distiller, data, t.train, folder / "checkpoint.pt", ctx.unit.fingerprint, ctx.device(),
                     ctx.cfg.seed, batch_augmentation(ctx.cfg.data), description=f"teacher {t.model}",
                     workers=loader_workers(ctx.cfg.data), backend=ctx.cfg.data.backend)
        metrics = _train_metrics(result)
    if distributed.is_main():
        atomic.write_json(folder / "metrics.json", metrics)
    return StageResult([folder / "checkpoint.pt", folder / "metrics.json"], metrics, _noted(
        f"{t.model} ({method.method_name}): test accuracy {metrics['test_accuracy'] * 100:.2f}%{_resumed(metrics)}", notes))


def _train_metrics(result) -> dict:
    return {"val_accuracy": result.val_accuracy, "test_accuracy": result.test_accuracy, "epochs": len(result.history),
            "resumed_from_epoch": result.resumed_from_epoch, "resumed_from_step": result.resumed_from_step,
            "train_seconds": result.seconds, "history": result.history}


def _resumed(metrics: dict) -> str:
    epoch, step = metrics.get("resumed_from_epoch", 0), metrics.get("resumed_from_step", 0)
    if step:
        return f" (resumed at epoch {epoch + 1}, step {step + 1})"
    return f" (resumed at epoch {epoch + 1})" if epoch else ""


def _distiller_state(path: Path, what: str):
    """The whole distiller's state from a kdforge training checkpoint (None if the file holds none)."""
    blob = load_torch(path, what)
    return blob.get("model") if isinstance(blob, dict) else None


def build_distiller(ctx: StageContext, for_training: bool):
    """The student's distiller and the log lines of how its network was built; `for_training`
    starts the student from its weights (a pruned student: cut from them) and the teacher from the
    teacher stage's checkpoint, else (strip) both come from the student's checkpoint."""
    s = ctx.student
    seed_everything(ctx.cfg.seed)  # the initial weights are the seed's, in every process
    if s.prune is None:
        student, notes = _network(ctx, s, "student", with_weights=for_training)
        return _distiller(ctx, student, teacher_weights=for_training), notes
    # a pruned student: its CNN is cut (or rebuilt at the cut's widths), then turned into its family's twin
    cnn, notes = _network(ctx, s.model_copy(update={"family": None}), "student", with_weights=for_training)
    if for_training:
        cnn, note = _cut(ctx, cnn)
        notes.append(note)
    else:
        cnn = _resized(cnn, ctx.student_dir / WIDTHS_FILE)
    notes += convert_family(cnn, s.family)
    return _distiller(ctx, cnn, teacher_weights=for_training), notes


def _distiller(ctx: StageContext, student: torch.nn.Module, teacher_weights: bool):
    s = ctx.student
    cls = method_class(s.method)
    with_teacher = uses_teacher(s)
    teacher = _network(ctx, ctx.cfg.teacher, "teacher", with_weights=False)[0] if with_teacher else None
    distiller = cls(student, teacher, cls.Options(**s.options), _example(ctx.data()))
    if with_teacher and teacher_weights:
        path = ctx.run_dir / "teacher" / "checkpoint.pt"
        load_into(distiller.load_teacher_state, _distiller_state(path, "teacher checkpoint"), path)
    return distiller


PRUNING_IMAGES = 64  # training images that trace the graph and give Taylor importance its gradients
WIDTHS_FILE = "widths.json"  # a pruned student's layer widths, which strip rebuilds its network with


def _cut(ctx: StageContext, network: torch.nn.Module) -> tuple[torch.nn.Module, str]:
    """The student's network cut to its prune budget (kdforge.train.prune) from the teacher stage's
    weights or its own weights file (which `network` holds), in prune.steps cuts with recovery
    training between them; its widths go to widths.json."""
    from kdforge.train.prune import prune_in_steps

    s, data, p = ctx.student, ctx.data(), ctx.student.prune
    if p.source == "teacher":
        path = ctx.run_dir / "teacher" / "checkpoint.pt"
        load_into(network.load_state_dict, network_weights(_distiller_state(path, "teacher checkpoint")), path)
    modules = dict(network.named_modules())
    missing = [k for k in p.keep if k not in modules]
    if missing:
        raise UserError(f"student '{s.name}': prune.keep names {printable_name(missing[0])}, which its model does not have; "
                        f"name module paths such as {', '.join(list(modules)[1:4])}.")
    images = torch.stack([data.train[i][0] for i in range(min(PRUNING_IMAGES, len(data.train)))])
    labels = torch.tensor([data.train[i][1] for i in range(len(images))])

    def recover(model: torch.nn.Module, step: int) -> torch.nn.Module:
        distiller = _distiller(ctx, model, teacher_weights=True)
        checkpoint = ctx.student_dir / "prune" / f"step{step}" / "checkpoint.pt"
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        fit(distiller, data, s.train.model_copy(update={"epochs": p.recovery_epochs}), checkpoint, ctx.unit.fingerprint,
            ctx.device(), ctx.cfg.seed, batch_augmentation(ctx.cfg.data), description=f"{s.name} (after cut {step}/{p.steps})",
            workers=loader_workers(ctx.cfg.data), backend=ctx.cfg.data.backend)
        return distiller.student.cpu()

    def kept(model: torch.nn.Module) -> list[torch.nn.Module]:
        return [model.fc, *(model.get_submodule(k) for k in p.keep)]

    b, cost = p.budget, _budget_measure(ctx, images[:1].shape)
    try:
        pruned = prune_in_steps(network, images, labels, cost, b.share, p.importance, kept, p.round_to, p.steps, recover)
    except ValueError as e:
        raise UserError(f"student '{s.name}' cannot be pruned to prune.budget.{b.measure}={b.share}: {e}.") from None
    if distributed.is_main():
        atomic.write_json(ctx.student_dir / WIDTHS_FILE, layer_widths(pruned.model, network))
    steps = "one cut" if p.steps == 1 else f"{p.steps} cuts"
    return pruned.model, (f"pruned from the {p.source} ({p.importance}, {steps}) to {pruned.cost:.3f} of its {cost.name} "
                          f"(budget {b.share}): {pruned.cost_before:,.6g} -> {pruned.cost_after:,.6g}")


def _budget_measure(ctx: StageContext, input_shape: tuple[int, ...]):
    """What the student's prune budget counts (kdforge.train.prune.budget_measure)."""
    from kdforge.train.prune import budget_measure

    b = ctx.student.prune.budget
    return budget_measure(b.measure, tuple(input_shape), b.target, ctx.cfg.profile.precision)


def _resized(network: torch.nn.Module, path: Path) -> torch.nn.Module:
    """`network` at the widths the distill stage cut it to (kdforge.nn.widths)."""
    try:
        return resize(network, read_json(path, "pruned widths"))
    except ValueError as e:
        raise UserError(f"{printable(str(path))} does not give this student's pruned widths ({e}); re-run the distill stage.") from None


def run_distill(ctx: StageContext) -> StageResult:
    s = ctx.student
    distiller, notes = build_distiller(ctx, for_training=True)
    result = fit(distiller, ctx.data(), s.train, ctx.student_dir / "checkpoint.pt", ctx.unit.fingerprint, ctx.device(),
                 ctx.cfg.seed, batch_augmentation(ctx.cfg.data), description=f"{s.name} ({s.method})",
                 workers=loader_workers(ctx.cfg.data), backend=ctx.cfg.data.backend)
    metrics = _train_metrics(result)
    summary = f"{s.model} via {s.method}: test accuracy {metrics['test_accuracy'] * 100:.2f}%{_resumed(metrics)}"
    data, teacher_data = ctx.data(), ctx.data("teacher")
    if data.classes is not None and teacher_data.classes is not None:
        old = [i for i, c in enumerate(data.classes) if c in teacher_data.classes]
        metrics.update(generalized_accuracy(*predict(distiller.student, data.test, ctx.device()), old))
        summary += f", old/new classes {metrics['accuracy_old'] * 100:.1f}/{metrics['accuracy_new'] * 100:.1f}%"
    if distributed.is_main():
        atomic.write_json(ctx.student_dir / "metrics.json", metrics)
    outputs = [ctx.student_dir / "checkpoint.pt", ctx.student_dir / "metrics.json"]
    return StageResult(outputs + ([ctx.student_dir / WIDTHS_FILE] if s.prune is not None else []), metrics, _noted(summary, notes))


def run_strip(ctx: StageContext) -> StageResult:
    s, data = ctx.student, ctx.data()
    distiller, _ = build_distiller(ctx, for_training=False)
    checkpoint = ctx.student_dir / "checkpoint.pt"
    load_into(distiller.load_state_dict, _distiller_state(checkpoint, "student checkpoint"), checkpoint)
    probed = data.val if len(data.val) else data.train  # data.val_fraction: 0
    probe = torch.stack([probed[i][0] for i in range(min(16, len(probed)))])
    deployed = strip(distiller, probe)
    spec = {"model": s.model, "model_args": s.model_args, "family": s.family, "stages": s.stages, "classifier": s.classifier,
            "output": s.output, "num_classes": data.num_classes, "in_channels": data.in_channels,
            "image_size": data.image_size, "method": s.method, "student": s.name, "transforms": list(distiller.deploy_transforms)}
    metrics = {"params_training": training_parameters(distiller), "params_deployed": sum(p.numel() for p in deployed.parameters()),
               "dropped": list(distiller.training_only)}
    if s.prune is not None:  # the pruned layers' widths, which rebuild it from the architecture (kdforge.nn.widths)
        unpruned = _network(ctx, s, "student", with_weights=False)[0]
        spec["widths"] = read_json(ctx.student_dir / WIDTHS_FILE, "pruned widths")  # of its CNN, which a twin is built from
        b = s.prune.budget
        cost = _budget_measure(ctx, probe[:1].shape)
        metrics["pruned"] = {"measure": cost.name, "budget": b.share, "reached": cost.exact(deployed) / cost.exact(unpruned)}
    path = ctx.student_dir / "deploy.pt"
    save_deployed(path, deployed, spec)
    return StageResult([path], metrics, f"{metrics['params_training']:,} training parameters -> {metrics['params_deployed']:,} deployed")


def run_qat(ctx: StageContext) -> StageResult:
    """Quantization-aware distillation of the stripped student (kdforge.train.qat) into deploy.qat.pt,
    which the export, verify and profile stages then read."""
    from kdforge.export.int8_cpu import SCHEMES, target_of
    from kdforge.train.qat import QuantizationAwareDistiller

    s = ctx.student
    model, spec = load_deployed(ctx.student_dir / "deploy.pt", s)
    scheme = SCHEMES[target_of(ctx.cfg.export.int8_cpu)]
    how = "uint8 SAD, the integer adder node's" if family_of_model(model) is ADDER else f"{scheme.name} for {scheme.target}"
    learn = s.qat.ranges == "learned"
    if learn and family_of_model(model) is ADDER:
        raise UserError(f"student '{s.name}' is an AdderNet, whose INT8 input ranges are calibrated with its weights' "
                        f"(one scale for both); set its qat.ranges to calibrated.")
    distiller = QuantizationAwareDistiller(model, _trained_teacher(ctx), scheme, _calibration_images(ctx), learn)
    train = s.train.model_copy(update={"epochs": s.qat.epochs, "lr": s.qat.lr, "schedule": "cosine"})
    checkpoint = ctx.student_dir / "qat" / "checkpoint.pt"  # its own folder: metrics.jsonl and tensorboard/ beside it
    checkpoint.parent.mkdir(exist_ok=True)
    result = fit(distiller, ctx.data(), train, checkpoint, ctx.unit.fingerprint, ctx.device(),
                 ctx.cfg.seed, batch_augmentation(ctx.cfg.data), description=f"{s.name} (qat)",
                 workers=loader_workers(ctx.cfg.data), backend=ctx.cfg.data.backend)
    path = ctx.student_dir / "deploy.qat.pt"
    spec = {k: v for k, v in spec.items() if k != "int8_input_ranges"}
    save_deployed(path, distiller.deployable(), {**spec, **({"int8_input_ranges": distiller.input_ranges()} if learn else {})})
    before = accuracy(*predict(distiller.fp32, ctx.data().test, ctx.device()))
    metrics = {**_train_metrics(result), "fake_quantization": how, "ranges": s.qat.ranges, "teacher": distiller.teacher is not None,
               "fp32_test_accuracy_before": before}
    summary = (f"{s.qat.epochs} epoch(s) through fake quantization ({how}): emulated INT8 test accuracy "
               f"{metrics['test_accuracy'] * 100:.2f}% (FP32 before QAT {before * 100:.2f}%){_resumed(metrics)}")
    return StageResult([checkpoint, path], metrics, summary)


def _trained_teacher(ctx: StageContext):
    """The teacher the student learned from (the distiller's, as its checkpoint holds it), or None
    where it trained without one or the teacher classifies another class set."""
    distiller, _ = build_distiller(ctx, for_training=False)
    if distiller.teacher is None:
        return None
    checkpoint = ctx.student_dir / "checkpoint.pt"
    load_into(distiller.load_state_dict, _distiller_state(checkpoint, "student checkpoint"), checkpoint)
    teacher, data = distiller.teacher.eval(), ctx.data()
    with torch.no_grad():
        classes = teacher(torch.stack([data.train[0][0]])).shape[-1]
    return teacher if classes == data.num_classes and ctx.data("teacher").classes == data.classes else None


def _deployed_path(ctx: StageContext, student: StudentConfig | None = None) -> Path:
    """The student as it ships: its quantization-aware fine-tuning where it has one, else the strip stage's."""
    s = student or ctx.student
    folder = ctx.run_dir / "students" / s.name
    return folder / ("deploy.qat.pt" if s.qat is not None else "deploy.pt")


def _job(ctx: StageContext, student: StudentConfig | None = None):
    """The student's deployment (kdforge.export.artifacts.ExportJob): its deployed model, folder and deploy entries."""
    from kdforge.export.artifacts import ExportJob

    s = student or ctx.student
    model, spec = load_deployed(_deployed_path(ctx, s), s)
    data = ctx.data()
    return ExportJob(model=model, folder=ctx.run_dir / "students" / s.name,
                     input_shape=(spec["in_channels"], spec["image_size"], spec["image_size"]), deploy=tuple(s.deploy),
                     family=family_of_model(model), export=ctx.cfg.export, verify=ctx.cfg.verify,
                     calibration=lambda: _calibration_images(ctx), validation=lambda: _int8_validation(ctx),
                     test=data.test, largest_batch=_largest_batch(ctx), input_ranges=spec.get("int8_input_ranges", {}))


def run_export(ctx: StageContext) -> StageResult:
    """Builds every artifact the student deploys, in the registry's order."""
    from kdforge.export.artifacts import artifact

    job = _job(ctx)
    outputs, metrics, parts = [], {}, []
    for name in job.deploy:
        built = artifact(name).build(job)
        if built is not None:
            outputs += built.paths
            metrics.update(built.metrics)
            parts.append(built.summary)
    record = ExportRecord.model_validate(metrics).model_dump(exclude_unset=True)
    return StageResult(list(dict.fromkeys(outputs)), record, "; ".join(p for p in parts if p))


def _largest_batch(ctx: StageContext) -> int:
    """The largest batch the verify and profile stages feed an engine."""
    p = ctx.cfg.profile
    return max(VERIFY_BATCH, p.batch_size, *p.sweep)


def _calibration_images(ctx: StageContext) -> torch.Tensor:
    train = ctx.data().train
    return torch.stack([train[i][0] for i in range(min(ctx.cfg.export.calibration_images, len(train)))])


def _int8_validation(ctx: StageContext) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels an INT8 file is judged on while it is searched: the validation split,
    or with data.val_fraction: 0 the calibration images' share of the training split."""
    data = ctx.data()
    judged = data.val if len(data.val) else data.train
    count = len(judged) if len(data.val) else min(ctx.cfg.export.calibration_images, len(judged))
    images = torch.stack([judged[i][0] for i in range(count)]).numpy()
    return images, np.array([int(judged[i][1]) for i in range(count)])


def run_verify(ctx: StageContext) -> StageResult:
    """Each deployed artifact against PyTorch on the test split, by its entry's policy."""
    from kdforge.export.artifacts import artifact

    job = _job(ctx)
    results = {}
    for name in job.deploy:
        entry = artifact(name)
        results.update(entry.verify(job, entry.open(entry.path(job), threads=2)))
    _locate_divergence(job, results)
    counts = compare_counts(job.model, _input_shape(ctx.data(), 1), job.path(".onnx"))
    path = job.folder / "verify.json"
    atomic.write_json(path, VerifyRecord.from_json({**results, "counts": counts}).to_json())
    for result in results.values():
        require_passed(result, ctx.unit.student, job.folder)
    summary = "; ".join(f"{name} vs PyTorch: max |diff| {r['max_abs_diff']:.2e}, top-1 agreement {r['top1_agreement'] * 100:.2f}%, "
                        f"accuracy {r['accuracy_backend'] * 100:.2f}%" for name, r in results.items())
    summary += f"; MACs ONNX = PyTorch ({sum(counts['onnx'].values()):,})" if counts["agree"] else f"; {counts['note']}"
    notes = [r["cpu"]["note"] for r in results.values() if r.get("cpu", {}).get("note")]
    return StageResult([path], {**results, "counts": counts}, _noted(summary, notes))


def _locate_divergence(job, results: dict) -> None:
    """For each standard ONNX file that missed its tolerance, the first layer whose output diverges
    from PyTorch's (kdforge.export.divergence), into its result."""
    from kdforge.export.artifacts import artifact, registered
    from kdforge.export.divergence import first_divergence

    images = torch.stack([job.test[i][0] for i in range(min(64, len(job.test)))])
    entries = {e.name for e in registered()}
    for name, result in results.items():
        entry = artifact(name) if name in entries else None
        if not result["passed"] and entry is not None and entry.locates_divergence:
            result["first_divergence"] = first_divergence(entry.path(job), job.model, images, job.path(".onnx"))


def _deployed_students(ctx: StageContext) -> list:
    from kdforge.export.artifacts import artifact
    from kdforge.profile.students import DeployedStudent

    deployed = []
    for s in ctx.cfg.students:
        job = _job(ctx, s)
        files = {name: artifact(name).path(job) for name in job.deploy}
        deployed.append(DeployedStudent(s.name, job.model, job.input_shape, files))
    return deployed


def run_profile(ctx: StageContext) -> StageResult:
    """Every student's latency in one interleaved measurement (kdforge.profile.students), then the
    costs of each distinct module, which its students share."""
    from kdforge.profile.students import time_students

    p = ctx.cfg.profile
    students = _deployed_students(ctx)
    timed = time_students(students, p.batch_size, p.sweep, p.threads, p.latency_setup(ctx.cfg.seed))
    environment, costs_of, paths = latency.environment(), {}, []
    for s in students:
        digest = timed[s.name]["latency"]["pytorch"]["graph"]  # identical modules: identical counts
        if digest not in costs_of:
            costs_of[digest] = count_costs(s.model, (1, *s.input_shape))
        costs = costs_of[digest]
        profile = {"costs": costs, **timed[s.name], "environment": environment,
                   "estimates": {name: estimates.estimate(costs, target(name, p.threads), p.precision, p.deployment())
                                 for name in p.targets}}
        paths.append(ctx.run_dir / "students" / s.name / "profile.json")
        atomic.write_json(paths[-1], ProfileRecord.model_validate(profile).model_dump(exclude_unset=True))
    figures = [f for t in timed.values() for f in t["latency"].values()]
    graphs = {t["latency"]["onnxruntime"]["graph"] for t in timed.values()}
    unstable = sorted({s for s, t in timed.items() for f in t["latency"].values() if not f["stable"]})
    ort = [t["latency"]["onnxruntime"]["p50_ms"] for t in timed.values()]
    return StageResult(paths, {"students": len(students), "distinct_onnx_graphs": len(graphs), "unstable": unstable}, (
        f"{len(students)} students, {len(graphs)} distinct ONNX graphs; ONNX Runtime p50 {min(ort):.3f} to {max(ort):.3f} ms "
        f"(batch {p.batch_size}, {p.threads} thread(s), {figures[0]['rounds']} interleaved rounds)"
        f"{'; unstable: ' + ', '.join(unstable) if unstable else ''}"
    ))


def run_report(ctx: StageContext) -> StageResult:
    rows, environment, layers = [], None, {}
    for s in ctx.cfg.students:
        folder = ctx.run_dir / "students" / s.name
        profile = read_record(folder / "profile.json", ProfileRecord.model_validate)
        environment = profile.environment
        layers[s.name] = profile.costs["layers"]
        rows.append(student_row(s.name, s, ctx.metrics(f"distill/{s.name}"), ctx.metrics(f"strip/{s.name}"),
                                read_record(folder / "verify.json", VerifyRecord.from_json), profile,
                                ExportRecord.model_validate(ctx.metrics(f"export/{s.name}"))))
    p = ctx.cfg.profile
    teacher = ctx.cfg.teacher
    context = {
        "name": ctx.cfg.name, "data": ctx.cfg.data.name, "teacher_model": teacher.model if teacher else None,
        "teacher_accuracy": ctx.metrics("teacher")["test_accuracy"] if teacher else None, "environment": environment,
        "latency_setup": {"batch_size": p.batch_size, "threads": p.threads, "method": p.latency_setup().sentence(),
                          "tolerance": p.tolerance},
        "targets": list(p.targets), "precision": p.precision,
        "energy_source": ENERGY_SOURCE,
    }
    histories = {f"teacher ({teacher.model})": ctx.metrics("teacher").get("history")} if teacher else {}
    histories.update({s.name: ctx.metrics(f"distill/{s.name}").get("history") for s in ctx.cfg.students})
    paths = write_report(ctx.run_dir / "report", rows, context, layers, {k: v for k, v in histories.items() if v})
    best = max(rows, key=lambda r: r["test_accuracy"])
    summary = f"{len(rows)} students; best {best['student']} at {best['test_accuracy'] * 100:.2f}%; {paths[0]}"
    return StageResult(paths, {"students": len(rows)}, summary)


STAGE_FUNCTIONS = {
    "data": run_data, "teacher": run_teacher, "distill": run_distill, "strip": run_strip, "qat": run_qat,
    "export": run_export, "verify": run_verify, "profile": run_profile, "report": run_report,
}
