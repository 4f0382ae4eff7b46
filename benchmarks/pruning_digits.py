"""Pruned students on digits, one kdforge run: a ResNet-20 teacher cut to 0.3, 0.5 and 0.7 of its
MACs, one-shot and in 3 cuts (2 recovery epochs between them), recovered by KD from the unpruned
teacher and by cross-entropy alone (30 epochs at lr 0.01: fine-tuning the cut teacher, which kept
the one-shot half-MACs cut within a point of the teacher on seeds 0-4, where 15 epochs at 0.05
lost up to 1.1 points),
beside the unpruned ResNet-20 trained by KD from scratch (15 epochs at 0.05, the reference).

Printed per student: test accuracy, the difference from the teacher's, MACs reached (kdforge's
count of deploy.pt), and ONNX Runtime's median latency of each student's model.onnx at batch 1 and
at batch 64 (one thread) with its ratio to the unpruned student's, all files in one interleaved
measurement per batch size (kdforge/profile/latency.py): at 8x8 and batch 1 a call is a few tens
of microseconds, most of it ONNX Runtime's per-node overhead that no channel count changes.
The header names the CPU's instructions (ONNX Runtime blocks channels by 8 with AVX2 and by 16
with AVX-512: `--round-to`).

    python benchmarks/pruning_digits.py [--epochs 30] [--round-to 8] [--run-dir runs/pruning_digits]
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from kdforge.export import ort as ort_backend
from kdforge.export.int8_cpu import instructions
from kdforge.profile.latency import LatencySetup, call_timer, cpu_model, measure

BUDGETS = (0.3, 0.5, 0.7)


def config(run_dir: Path, epochs: int, round_to: int) -> dict:
    train = {"epochs": 15, "batch_size": 64, "lr": 0.05, "schedule": "cosine"}  # from scratch
    recovery = {**train, "epochs": epochs, "lr": 0.01}  # fine-tuning the cut teacher
    kd = {"method": "kd", "options": {"temperature": 4.0, "alpha": 0.9}}
    students = [{"name": "unpruned_kd", "model": "resnet20", "train": train, **kd}]
    for budget in BUDGETS:
        for steps in (1, 3):
            for loss, method in (("kd", kd), ("ce", {"method": "ce"})):
                students.append({"name": f"p{budget}_{'oneshot' if steps == 1 else 'steps3'}_{loss}", "model": "resnet20",
                                 "train": recovery, **method,
                                 "prune": {"from": "teacher", "budget": {"macs": budget}, "steps": steps, "recovery_epochs": 2,
                                           "round_to": round_to}})
    return {"name": "pruning_digits", "seed": 0, "run_dir": str(run_dir), "data": {"name": "digits"},
            "teacher": {"model": "resnet20", "train": {**train, "epochs": 20, "lr": 0.1}},
            "students": students, "profile": {"threads": 1, "batch_size": 1, "warmup": 20}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=30, help="recovery epochs of each pruned student (at lr 0.01)")
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
    students = sorted(p.name for p in (args.run_dir / "students").iterdir())
    rows = {s: (read("students", s, "metrics.json")["test_accuracy"], read("students", s, "profile.json")["costs"]["totals"]["macs"])
            for s in students}
    latency = timed({s: args.run_dir / "students" / s / "model.onnx" for s in students})
    macs = rows["unpruned_kd"][1]
    print(f"ResNet-20 on digits (1x8x8), teacher {teacher * 100:.2f}%; round_to {args.round_to}; {cpu_model()} ({instructions()}); "
          f"ONNX Runtime p50 of model.onnx, one thread, all files interleaved per batch size")
    print("| student | test acc. (%) | vs teacher (points) | MACs | / unpruned | batch 1 (ms) | / unpruned | batch 64 (ms) | / unpruned |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, (acc, m) in rows.items():
        cells = [f"{latency[b][name]:.4f} | {latency[b][name] / latency[b]['unpruned_kd']:.2f}x" for b in (1, 64)]
        print(f"| {name} | {acc * 100:.2f} | {(acc - teacher) * 100:+.2f} | {m:,} | {m / macs:.3f} | {' | '.join(cells)} |")


def timed(files: dict[str, Path]) -> dict[int, dict[str, float]]:
    """{batch: {name: ONNX Runtime's median ms per call}}, the files interleaved in one measurement per batch."""
    sessions = {name: ort_backend.session(path, 1) for name, path in files.items()}
    figures = {}
    for batch in (1, 64):
        x = np.random.default_rng(batch).standard_normal((batch, 1, 8, 8)).astype(np.float32)
        timers = {name: call_timer(lambda s=s: ort_backend.run(s, x)) for name, s in sessions.items()}
        figures[batch] = {name: f["p50_ms"] for name, f in measure(timers, LatencySetup(round_ms=20, settle_ms=5)).items()}
    return figures


if __name__ == "__main__":
    main()
