"""How far apart the latency figures of identical students land: the old method (each student timed
in one burst, one after the other) against kdforge's interleaved rounds, side by side in one run.

It reads a finished run directory (by default the demo's), groups its students by deployed graph
(kdforge/profile/identity.py: same operators, shapes and attributes, weights aside) and times every
student on its own, for ONNX Runtime and for PyTorch, by both methods, `--repeats` times over.
Printed per group of identical students and backend: the spread, max/min of the members' figures
(1.00 = they agree); then the time each method took. Sharing one figure per graph (what the
profile stage does) makes the spread 1.00 by construction, so it is left out here: this measures
what the interleaving alone brings.

    python benchmarks/latency_spread.py [runs/digits_demo] [--repeats 3]
"""

import argparse
import time
from pathlib import Path

import numpy as np

from kdforge.export import ort as ort_backend
from kdforge.export.strip import load_deployed
from kdforge.profile import latency
from kdforge.profile.identity import onnx_digest


def bursts(timers: dict, warmup: int = 20, runs: int = 200) -> dict:
    """kdforge before issue 18: per subject, warm-up calls then `runs` timed calls; the median."""
    figures = {}
    for name, timer in timers.items():
        for _ in range(warmup):
            timer()
        figures[name] = float(np.median([timer() for _ in range(runs)])) * 1e3
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", nargs="?", type=Path, default=Path("runs/digits_demo"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    timers, groups = {}, {}
    for folder in sorted((args.run_dir / "students").iterdir()):
        model, spec = load_deployed(folder / "deploy.pt")
        shape = (1, spec["in_channels"], spec["image_size"], spec["image_size"])
        session = ort_backend.session(folder / "model.onnx", threads=1)
        timers[("onnxruntime", folder.name)] = latency.onnxruntime_timer(session, shape)
        timers[("pytorch", folder.name)] = latency.pytorch_timer(model, shape)
        groups.setdefault(onnx_digest(ort_backend.load_model(folder / "model.onnx")), []).append(folder.name)
    groups = [members for members in groups.values() if len(members) > 1]
    print(f"{latency.cpu_model()}, 1 thread; {len(timers) // 2} students, groups of identical graphs: "
          + "; ".join(", ".join(g) for g in groups))
    print("| repeat | group | backend | spread, one burst each (max/min) | spread, interleaved rounds (max/min) |")
    print("|---:|---|---|---:|---:|")
    seconds = {"bursts": 0.0, "interleaved": 0.0}
    with latency.torch_threads(1):
        for repeat in range(args.repeats):
            started = time.perf_counter()
            old = bursts(timers)
            seconds["bursts"] += time.perf_counter() - started
            started = time.perf_counter()
            new = {key: f["p50_ms"] for key, f in latency.measure(timers, latency.LatencySetup()).items()}
            seconds["interleaved"] += time.perf_counter() - started
            for members in groups:
                for backend in ("onnxruntime", "pytorch"):
                    spread = [max(f[(backend, m)] for m in members) / min(f[(backend, m)] for m in members) for f in (old, new)]
                    print(f"| {repeat + 1} | {members[0]} +{len(members) - 1} | {backend} | {spread[0]:.2f} | {spread[1]:.2f} |")
    print(f"time per repeat: bursts {seconds['bursts'] / args.repeats:.1f} s, "
          f"interleaved {seconds['interleaved'] / args.repeats:.1f} s")


if __name__ == "__main__":
    main()
