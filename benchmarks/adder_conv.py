"""Adder convolution: kdforge's op against the public reference formulation and F.conv2d.

The reference (written here as the baseline, after the AdderNet paper's public code) unfolds
the input, broadcasts the difference against every filter and sums |.|, materialising an
(out_channels x in_channels*k*k x N*H*W) tensor; its backward does the same for both gradients.

Each figure is measured in a fresh child process: time is the median of repeated runs after
warm-up; peak memory is the rise of the process's peak RSS over its level before the run
(Linux clear_refs; glibc told to return every large block, so freed memory is not reused
silently). Printed: time ratios (reference / kdforge, kdforge / conv2d) and the memory ratio
(kdforge / reference), for forward and for forward+backward.

    python benchmarks/adder_conv.py [--quick]
"""

import argparse
import json
import os
import platform
import subprocess
import sys

RESNET20 = [(64, 16, 32), (64, 32, 16), (64, 64, 8)]
RESNET18 = [(8, 64, 56), (8, 128, 28), (8, 256, 14), (8, 512, 7)]

CHILD = r"""
import gc, json, math, statistics, sys, time
import torch, torch.nn.functional as F
from kdforge.nn.adder_op import adder_conv2d

impl, mode, n, c, h = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])

def reference(x, w):
    o = w.shape[0]
    cols = F.unfold(x, 3, padding=1)                       # (N, C*9, L)
    n_, k, l = cols.shape
    cols = cols.permute(1, 2, 0).reshape(k, l * n_)        # (C*9, L*N)
    w_col = w.view(o, -1)
    diff = w_col.unsqueeze(2) - cols.unsqueeze(0)          # (O, C*9, L*N): the big one
    return -diff.abs().sum(1).view(o, l, n_).permute(2, 0, 1).reshape(n_, o, x.shape[2], x.shape[3]), (cols, w_col)

def reference_backward(cols, w_col, grad):
    o = w_col.shape[0]
    g = grad.reshape(grad.shape[0], o, -1).permute(1, 2, 0).reshape(o, -1)   # (O, L*N)
    diff = cols.unsqueeze(0) - w_col.unsqueeze(2)
    grad_w = (diff * g.unsqueeze(1)).sum(2)
    grad_w = grad_w / grad_w.norm().clamp(min=1e-12) * math.sqrt(w_col.numel()) * 0.2
    grad_cols = (-diff.clamp(-1, 1) * g.unsqueeze(1)).sum(0)
    return grad_w, grad_cols

torch.manual_seed(0)
x, w = torch.randn(n, c, h, h), torch.randn(c, c, 3, 3)
grad = torch.randn(n, c, h, h)

def run():
    if impl == "reference":
        y, (cols, w_col) = reference(x, w)
        if mode == "fwd+bwd":
            gw, gc = reference_backward(cols, w_col, grad)
            F.fold(gc.view(gc.shape[0], -1, n).permute(2, 0, 1), (h, h), 3, padding=1)
    elif impl == "kdforge":
        if mode == "fwd+bwd":
            xr, wr = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
            adder_conv2d(xr, wr, [1, 1], [1, 1], 0.2).backward(grad)
        else:
            with torch.no_grad():
                adder_conv2d(x, w, [1, 1], [1, 1], 0.2)
    else:
        if mode == "fwd+bwd":
            xr, wr = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
            F.conv2d(xr, wr, padding=1).backward(grad)
        else:
            with torch.no_grad():
                F.conv2d(x, w, padding=1)

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

run()
gc.collect()
before = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
run()
peak = status("VmHWM:") - before
times, budget = [], time.perf_counter() + 3.0
while len(times) < 3 or (time.perf_counter() < budget and len(times) < 20):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
print(json.dumps({"seconds": statistics.median(times), "peak_bytes": max(peak, 0)}))
"""


def measure(impl: str, mode: str, shape) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    out = subprocess.run([sys.executable, "-c", CHILD, impl, mode, *map(str, shape)], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="ResNet-20 shapes only")
    args = parser.parse_args()
    shapes = [("ResNet-20", s) for s in RESNET20] + ([] if args.quick else [("ResNet-18", s) for s in RESNET18])
    import torch

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    header = (f"{'net':9s} {'N x C x HxW':16s} {'mode':8s} {'ref ms':>9s} {'ours ms':>9s} {'conv ms':>8s} {'ref/ours':>9s} "
              f"{'ours/conv':>9s} {'mem ours/ref':>13s} {'ref MiB':>8s} {'ours MiB':>9s}")
    print(header)
    for net, (n, c, h) in shapes:
        for mode in ("fwd", "fwd+bwd"):
            r = {impl: measure(impl, mode, (n, c, h)) for impl in ("reference", "kdforge", "conv2d")}
            ref, ours, conv = (r[k]["seconds"] * 1e3 for k in ("reference", "kdforge", "conv2d"))
            mem_ref, mem_ours = r["reference"]["peak_bytes"], r["kdforge"]["peak_bytes"]
            print(f"{net:9s} {f'{n}x{c}x{h}x{h}':16s} {mode:8s} {ref:9.1f} {ours:9.1f} {conv:8.1f} {ref / ours:9.1f} {ours / conv:9.2f} "
                  f"{mem_ours / max(mem_ref, 1):13.4f} {mem_ref / 2**20:8.1f} {mem_ours / 2**20:9.1f}", flush=True)


if __name__ == "__main__":
    main()
