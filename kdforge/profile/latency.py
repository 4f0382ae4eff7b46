"""Latency figures a user can compare: every model (and backend, and batch size) of one report is
timed in several rounds, interleaved, so that a noisy moment on a shared machine spreads over all
of them instead of landing on whichever model was being timed.

The method (as pyperf and Google Benchmark do it, and trtexec's duration-based runs):
- warm-up calls first (at most `warmup`, and no longer than ten rounds once the first call, which
  pays lazy initialisation, is done); their times calibrate how many calls fill a round;
- then `rounds` rounds; in each, every subject in a shuffled order (seeded) runs for at least
  `round_ms`, each call timed on its own with a monotonic clock, after one untimed call that
  brings its code and weights back into the caches the previous subject used (calls under 10 ms);
- a cycle gives every subject one round; with enough subjects, each round is divided by its
  cycle's machine state (how much slower than usual the other subjects ran in that cycle): a
  neighbour's load that slows the whole machine for a while then cancels out of the comparison;
- a subject's figure is the median over rounds of each round's median call; its spread is a 95%
  confidence interval of that median from the order statistics of the round medians
  (distribution-free: the machine's noise only ever adds time, in bursts, so it is far from
  normal); p90/p99/mean pool every timed call, uncorrected;
- while a subject's interval reaches further than `tolerance` x its median from it, every subject
  gets one more interleaved round, up to `max_rounds`; one still wider is marked unstable.
Many short rounds beat a few long ones. Measured on a 2-vCPU cloud machine whose neighbours slow
a core by 1.5-1.8x for anything from 10 ms to 10 s at a time: 20 rounds of 1 ms left 7-11 of 40
subjects wider than ±10% where 15 rounds of 5 ms, in the same time, left 37-38. Such a machine
moves every figure of a report together (the ratios hold), not each alone."""

import math
import os
import platform
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Hashable

import numpy as np

Timer = Callable[[], float]
"""Runs one inference to completion and returns how long it took, in seconds."""


@dataclass(frozen=True)
class LatencySetup:
    warmup: int = 10
    rounds: int = 20
    round_ms: float = 1.0
    max_rounds: int = 40
    tolerance: float = 0.10
    seed: int = 0
    settle_ms: float = 0.0  # a pause before each round, so thread pools the previous subject left spinning go idle

    def sentence(self) -> str:
        return (f"the median over {self.rounds} rounds interleaved across every model, backend and batch size "
                f"of the report, each round at least {self.round_ms:g} ms of calls timed one by one (its median call), "
                f"after up to {self.warmup} warm-up calls, and (with {STATE_SUBJECTS + 1} or more subjects) divided by how "
                f"much slower than usual the other subjects ran in the same cycle of rounds; '±' is half the width of the median's 95% confidence "
                f"interval (order statistics of the rounds), relative; a figure whose interval reaches beyond ±"
                f"{self.tolerance:.0%} gets more rounds (up to {self.max_rounds}) and is marked unstable if it stays so")


def call_timer(fn: Callable[[], object]) -> Timer:
    def timed() -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    return timed


def _warm_up(timer: Timer, setup: LatencySetup) -> float:
    """Runs the warm-up calls and returns the estimated time of one call."""
    times = [timer()]
    budget = 10 * setup.round_ms / 1e3
    while len(times) < max(setup.warmup, 2) and sum(times[1:]) < budget:
        times.append(timer())
    return float(np.median(times[1:]))


@dataclass
class _Subject:
    timer: Timer
    calls_per_round: int
    rewarm: bool
    rounds: list  # per round, the times of its calls in seconds

    def run_round(self, settle_s: float) -> None:
        if settle_s:
            time.sleep(settle_s)
        if self.rewarm:
            self.timer()
        self.rounds.append([self.timer() for _ in range(self.calls_per_round)])


def median_interval(n: int, confidence: float = 0.95) -> tuple[int, int]:
    """Ranks (0-based, in sorted order) of a distribution-free confidence interval of the median of n
    samples: the innermost symmetric pair whose binomial coverage still reaches `confidence` (the
    whole range where n is too small for that)."""
    from scipy.stats import binom

    k = 0  # the interval (sorted[k], sorted[n-1-k]) covers the median with probability 1 - 2 P(Binomial(n, 1/2) <= k)
    while k + 1 < n - k - 2 and binom.cdf(k + 1, n, 0.5) <= (1 - confidence) / 2:
        k += 1
    return k, n - 1 - k


def summarize(rounds: list[list[float]], tolerance: float, states: np.ndarray | None = None) -> dict:
    """The figure of one subject from its rounds of call times (seconds), in milliseconds: the
    median of the round medians (each divided by its cycle's machine state where `states` are
    given) and that median's 95% confidence interval (order statistics of the rounds)."""
    medians = np.array([np.median(r) for r in rounds]) * 1e3
    medians = np.sort(medians if states is None else medians / states)
    calls = np.concatenate([np.asarray(r, dtype=float) for r in rounds]) * 1e3
    p50 = float(np.median(medians))
    low, high = median_interval(len(medians))
    ci = (float(medians[low]), float(medians[high]))
    return {
        "p50_ms": p50, "ci_low_ms": ci[0], "ci_high_ms": ci[1], "stable": bool((ci[1] - ci[0]) / 2 <= tolerance * p50),
        "p90_ms": float(np.percentile(calls, 90)), "p99_ms": float(np.percentile(calls, 99)), "mean_ms": float(calls.mean()),
        "rounds": len(rounds), "calls": int(calls.size), "round_medians_ms": [round(float(m), 6) for m in medians],
    }


REWARM_BELOW_S = 10e-3
"""Calls shorter than this open each round with an untimed call: the subject before left the caches,
the allocator and the branch predictors to its own code. Past it, a cold start is a small share of
the call."""

STATE_SUBJECTS = 6
"""The fewest other subjects from which a cycle's machine state is estimated; with fewer, rounds are taken as they are."""


def machine_states(round_medians: np.ndarray) -> np.ndarray | None:
    """(subjects, cycles) -> per subject and cycle, how much slower than usual the machine ran in that
    cycle, judged from the other subjects: the median over them of their round in that cycle relative
    to their own median (a randomized block design's block effect). None with too few subjects."""
    n = round_medians.shape[0]
    if n - 1 < STATE_SUBJECTS:
        return None
    relative = round_medians / np.median(round_medians, axis=1, keepdims=True)
    return np.stack([np.median(np.delete(relative, i, axis=0), axis=0) for i in range(n)])


def measure(timers: dict[Hashable, Timer], setup: LatencySetup) -> dict[Hashable, dict]:
    """Every timer's figure (see `summarize`), measured in interleaved rounds: in each cycle every
    subject runs one round, in a shuffled order."""
    round_s = setup.round_ms / 1e3
    subjects = {}
    for key, timer in timers.items():
        per_call = _warm_up(timer, setup)
        subjects[key] = _Subject(timer, max(1, math.ceil(round_s / max(per_call, 1e-9))), per_call < REWARM_BELOW_S, [])
    rng = np.random.default_rng(setup.seed)
    keys = list(subjects)
    for _ in range(setup.rounds):
        _interleave(subjects, keys, rng, setup.settle_ms / 1e3)
    results = _summaries(subjects, keys, setup.tolerance)
    # more cycles for everyone, not only the unstable: a subject measured alone would see another
    # state of the machine than the rest, and the figures would stop being comparable
    while not all(r["stable"] for r in results.values()) and len(subjects[keys[0]].rounds) < setup.max_rounds:
        _interleave(subjects, keys, rng, setup.settle_ms / 1e3)
        results = _summaries(subjects, keys, setup.tolerance)
    return results


def _summaries(subjects: dict, keys: list, tolerance: float) -> dict:
    states = machine_states(np.array([[np.median(r) for r in subjects[k].rounds] for k in keys]))
    return {k: summarize(subjects[k].rounds, tolerance, None if states is None else states[i]) for i, k in enumerate(keys)}


def _interleave(subjects: dict, keys: list, rng: np.random.Generator, settle_s: float) -> None:
    for i in rng.permutation(len(keys)):
        subjects[keys[i]].run_round(settle_s)


def noise_interval(figure: dict, tolerance: float) -> tuple[float, float]:
    """The latencies a figure cannot be told apart from: its confidence interval, widened to at least
    ± half the tolerance of its median; two figures whose intervals overlap are tied."""
    half = tolerance / 2 * figure["p50_ms"]
    return min(figure["ci_low_ms"], figure["p50_ms"] - half), max(figure["ci_high_ms"], figure["p50_ms"] + half)


def figure_text(figure: dict) -> str:
    """'0.028 ±2%': the median in ms and the half-width of its confidence interval, relative; ' unstable' where so."""
    half = (figure["ci_high_ms"] - figure["ci_low_ms"]) / 2 / figure["p50_ms"]
    return f"{figure['p50_ms']:.3f} ±{half:.0%}" + ("" if figure["stable"] else " unstable")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    import torch

    from kdforge.export.ort import ort as onnxruntime

    from kdforge.export.int8_cpu import instructions

    return {"cpu": cpu_model(), "cpu_instructions": instructions(), "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "platform": platform.platform(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def example_input(input_shape) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(input_shape).astype(np.float32)


def onnxruntime_timer(session, input_shape) -> Timer:
    from kdforge.export import ort as ort_backend

    x = example_input(input_shape)
    return call_timer(lambda: ort_backend.run(session, x))


def pytorch_timer(model, input_shape) -> Timer:
    """Eager PyTorch on the CPU; run it inside `torch_threads`."""
    import torch

    x = torch.from_numpy(example_input(input_shape))

    def infer():
        with torch.inference_mode():
            model(x)
    return call_timer(infer)


@contextmanager
def torch_threads(threads: int):
    """PyTorch's intra-op thread count (and numba's, which kdforge's adder op runs on) set for a
    block, and restored after."""
    import numba
    import torch

    from kdforge.train.threads import set_threads

    previous = torch.get_num_threads(), numba.get_num_threads()
    set_threads(threads)
    try:
        yield
    finally:
        numba.set_num_threads(previous[1])
        torch.set_num_threads(previous[0])
