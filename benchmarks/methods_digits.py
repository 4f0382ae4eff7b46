"""Distillation methods side by side on a deliberately hard digits setting.

The teacher (ResNet-32, trained with TOFD's auxiliary heads so that every method can use it)
sees the whole training split; each student (ResNet-8; JointRD's plain student has the
teacher's architecture, as the method requires) sees only a fraction of it, for a few epochs,
over several seeds. Printed: test accuracy mean and standard deviation per method, and the
difference from the CE-only student of the same architecture measured in the same run.
JointRD's plain student is also shown without its hybrid paths (the plain Dirac network alone).
The AdderNet rows (a plain-trained ANN and PKKD, whose CNN teacher trains alongside) use a
larger share of the training split: with 10% an AdderNet barely starts to learn.

Cross-task table (REFILLED's setting): the teacher learns 5 digit classes, the students 5 others
sharing 0%, 50% or 100% of them (drawn with the seed); student alone, RKD and REFILLED, the
student's test accuracy over its own classes.

    python benchmarks/methods_digits.py [--fraction 0.1] [--seeds 3] [--epochs 30] [--only methods|cross-task]
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import Subset

from kdforge.config import DataConfig, TrainConfig
from kdforge.train.data import batch_augmentation, build_data
from kdforge.train.methods import method_class
from kdforge.train.models import create_model
from kdforge.train.trainer import fit

# (row label, method, student, options); each row is compared with the "ce" row of its student
METHODS = [
    ("ce", "ce", "resnet8", {}), ("kd", "kd", "resnet8", {}), ("fitnet", "fitnet", "resnet8", {}),
    ("at", "at", "resnet8", {}), ("at (positions 1024)", "at", "resnet8", {"positions": 1024}), ("sp", "sp", "resnet8", {}),
    ("rkd", "rkd", "resnet8", {}), ("dml", "dml", "resnet8", {}), ("tofd", "tofd", "resnet8", {}),
    ("ce", "ce", "resnet32", {}), ("plain Dirac, no hybrid paths", "jointrd", "resnet32", {"dc": 0.0, "decay_fraction": 0.0}),
    ("jointrd", "jointrd", "resnet32", {}),
    ("ce (ANN)", "ce", "resnet20_adder", {}), ("pkkd (ANN)", "pkkd", "resnet20_adder", {}),
]
TEACHER = "resnet32"


def few_shot(data, fraction: float, seed: int):
    """The same bundle with a seeded `fraction` of the training split."""
    keep = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))[: int(len(data.train) * fraction)]
    return type(data)(Subset(data.train, keep.tolist()), data.val, data.test, data.num_classes, data.in_channels,
                      data.image_size, data.mean, data.std, data.class_names)


def train_teacher(data, epochs: int, folder: Path, method: str = "tofd_teacher"):
    torch.manual_seed(0)
    cls = method_class(method)
    example = torch.zeros(2, data.in_channels, data.image_size, data.image_size)
    teacher = cls(create_model(TEACHER, data.num_classes, data.in_channels), None, cls.Options(), example)
    name = f"teacher-{method}-{data.num_classes}-{data.classes}"
    result = fit(teacher, data, TrainConfig(epochs=epochs, batch_size=64, lr=0.1), folder / f"{abs(hash(name))}.pt", name,
                 torch.device("cpu"), 0, batch_augmentation(DataConfig()), description="teacher")
    return teacher.state_dict(), result.test_accuracy


def train_student(run: str, method: str, model: str, options: dict, data, teacher_state, epochs: int, seed: int,
                  folder: Path, teacher_classes: int | None = None) -> float:
    torch.manual_seed(seed)
    cls = method_class(method)
    example = torch.zeros(2, data.in_channels, data.image_size, data.image_size)
    teacher = create_model(TEACHER, teacher_classes or data.num_classes, data.in_channels) if cls.needs_teacher else None
    distiller = cls(create_model(model, data.num_classes, data.in_channels), teacher, cls.Options(**options), example)
    if cls.needs_teacher:
        distiller.load_teacher_state(teacher_state)
    cfg = TrainConfig(epochs=epochs, batch_size=32, lr=0.05)
    result = fit(distiller, data, cfg, folder / f"{run}.pt", run, torch.device("cpu"), seed,
                 batch_augmentation(DataConfig()), description=run)
    return result.test_accuracy


def methods_table(args, data, folder: Path) -> None:
    started = time.perf_counter()
    teacher_state, teacher_acc = train_teacher(data, args.teacher_epochs, folder)
    results = {}
    for label, method, model, options in METHODS:
        fraction = args.ann_fraction if model.endswith("_adder") else args.fraction
        results[label, model] = [
            100 * train_student(f"{label}-{model}-{seed}".replace(" ", "_").replace(",", ""), method, model, options,
                                few_shot(data, fraction, seed), teacher_state, args.epochs, seed, folder)
            for seed in range(args.seeds)
        ]
    print(f"digits, students on {args.fraction:.0%} of the training split ({int(len(data.train) * args.fraction)} images), "
          f"{args.epochs} epochs, {args.seeds} seeds; teacher {TEACHER} {teacher_acc * 100:.2f}% on the full split; "
          f"{time.perf_counter() - started:.0f} s")
    print("| method | student | train images | test acc. mean (%) | std | vs CE, same student (points) |\n"
          "|---|---|---:|---:|---:|---:|")
    for label, method, model, _ in METHODS:
        accs = results[label, model]
        baseline = statistics.mean(next(v for (lab, m), v in results.items() if m == model and lab.startswith("ce")))
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        images = int(len(data.train) * (args.ann_fraction if model.endswith("_adder") else args.fraction))
        print(f"| {label} | {model} | {images} | {statistics.mean(accs):.2f} | {spread:.2f} | {statistics.mean(accs) - baseline:+.2f} |")


CROSS_TASK = [("student alone", "ce"), ("rkd", "rkd"), ("refilled", "refilled")]


def cross_task_table(args, folder: Path) -> None:
    started = time.perf_counter()
    rows = {}
    for overlap in (0.0, 0.5, 1.0):
        cfg = DataConfig(overlap=overlap, task_classes=5)
        teacher_data, student_data = build_data(cfg, 0, "teacher"), build_data(cfg, 0, "student")
        teacher_state, _ = train_teacher(teacher_data, args.teacher_epochs, folder, method="ce")
        for label, method in CROSS_TASK:
            rows[label, overlap] = [
                100 * train_student(f"x-{method}-{overlap}-{seed}", method, "resnet8", {}, few_shot(student_data, args.fraction, seed),
                                    teacher_state, args.epochs, seed, folder, teacher_classes=teacher_data.num_classes)
                for seed in range(args.seeds)
            ]
    print(f"\ncross-task digits: teacher {TEACHER} on 5 classes, ResNet-8 students on 5 classes sharing 0/50/100% "
          f"(0, 2, 5 classes), {args.fraction:.0%} of their training split, {args.epochs} epochs, {args.seeds} seeds; "
          f"test accuracy over the student's classes, mean +- std; {time.perf_counter() - started:.0f} s")
    print("| method | overlap 0 | overlap 0.5 | overlap 1 |\n|---|---:|---:|---:|")
    for label, _ in CROSS_TASK:
        cells = [f"{statistics.mean(rows[label, o]):.2f} +- {statistics.stdev(rows[label, o]) if args.seeds > 1 else 0:.2f}"
                 for o in (0.0, 0.5, 1.0)]
        print(f"| {label} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--teacher-epochs", type=int, default=30)
    parser.add_argument("--ann-fraction", type=float, default=0.5, help="share of the training split for the AdderNet rows")
    parser.add_argument("--only", choices=("methods", "cross-task"), default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "methods"):
            methods_table(args, build_data(DataConfig(), seed=0), Path(tmp))
        if args.only in (None, "cross-task"):
            cross_task_table(args, Path(tmp))


if __name__ == "__main__":
    main()
