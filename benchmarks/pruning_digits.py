"""Pruned students on digits, one kdforge run: a ResNet-20 teacher cut to 0.3, 0.5 and 0.7 of its
MACs, one-shot and in 3 cuts (2 recovery epochs between them), recovered by KD from the unpruned
teacher and by cross-entropy alone, beside the unpruned ResNet-20 trained by KD (the reference).

Printed per student: test accuracy, the difference from the teacher's, MACs reached (kdforge's
count of deploy.pt), and ONNX Runtime's median latency at batch 1 (one thread) with its ratio to
the unpruned student's, all students timed in the profile stage's one interleaved measurement.
The header names the CPU's instructions (ONNX Runtime blocks channels by 8 with AVX2 and by 16
with AVX-512: `--round-to`).

    python benchmarks/pruning_digits.py [--epochs 15] [--round-to 8] [--run-dir runs/pruning_digits]
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

from kdforge.export.int8_cpu import instructions
from kdforge.profile.latency import cpu_model

BUDGETS = (0.3, 0.5, 0.7)


def config(run_dir: Path, epochs: int, round_to: int) -> dict:
    train = {"epochs": epochs, "batch_size": 64, "lr": 0.05, "schedule": "cosine"}
    kd = {"method": "kd", "options": {"temperature": 4.0, "alpha": 0.9}}
    students = [{"name": "unpruned_kd", "model": "resnet20", "train": train, **kd}]
    for budget in BUDGETS:
        for steps in (1, 3):
            for recovery, method in (("kd", kd), ("ce", {"method": "ce"})):
                students.append({"name": f"p{budget}_{'oneshot' if steps == 1 else 'steps3'}_{recovery}", "model": "resnet20",
                                 "train": train, **method,
                                 "prune": {"from": "teacher", "budget": {"macs": budget}, "steps": steps, "recovery_epochs": 2,
                                           "round_to": round_to}})
    return {"name": "pruning_digits", "seed": 0, "run_dir": str(run_dir), "data": {"name": "digits"},
            "teacher": {"model": "resnet20", "train": {**train, "epochs": 20, "lr": 0.1}},
            "students": students, "profile": {"threads": 1, "batch_size": 1, "warmup": 20}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--round-to", type=int, default=8)
    parser.add_argument("--run-dir", type=Path, default=Path("runs/pruning_digits"))
    args = parser.parse_args()
    args.run_dir.mkdir(parents=True, exist_ok=True)
    path = args.run_dir.parent / "pruning_digits.yaml"
    path.write_text(yaml.safe_dump(config(args.run_dir, args.epochs, args.round_to)))
    subprocess.run([sys.executable, "-m", "kdforge", "run", str(path)], check=True, stdout=subprocess.DEVNULL)

    def read(*parts):
        return json.loads(args.run_dir.joinpath(*parts).read_text())

    teacher = read("teacher", "metrics.json")["test_accuracy"]
    rows = {}
    for student in sorted(p.name for p in (args.run_dir / "students").iterdir()):
        profile = read("students", student, "profile.json")
        rows[student] = (read("students", student, "metrics.json")["test_accuracy"], profile["costs"]["totals"]["macs"],
                         profile["latency"]["onnxruntime"]["p50_ms"])
    accuracy, macs, latency = rows["unpruned_kd"]
    print(f"ResNet-20 on digits (1x8x8), teacher {teacher * 100:.2f}%; round_to {args.round_to}; {cpu_model()} ({instructions()}); "
          f"ONNX Runtime p50 at batch 1, one thread, interleaved in one profile stage")
    print("| student | test acc. (%) | vs teacher (points) | MACs | / unpruned | ORT p50 (ms) | / unpruned |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, (acc, m, ms) in rows.items():
        print(f"| {name} | {acc * 100:.2f} | {(acc - teacher) * 100:+.2f} | {m:,} | {m / macs:.3f} | {ms:.4f} | {ms / latency:.2f}x |")


if __name__ == "__main__":
    main()
