"""The randomness of training augmentation: a function of (seed, epoch, sample index) alone.

Each sample's draws come from a counter-based hash (splitmix64) of its (seed, epoch, index)
and the draw's number, so they do not depend on which worker process, rank or batch loads the
sample, on how many there are, or on what ran before: an epoch's augmented batches are the
same with 0 or 8 workers, on 1 or 8 ranks, in a run resumed mid-epoch; two epochs differ; and
no two samples of an epoch share a stream (their keys differ). No global RNG is touched.
"""

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def sample_uniforms(seed: int, epoch: int, indices, count: int) -> np.ndarray:
    """(len(indices), count) float64 draws in [0, 1), the j-th draw of sample i a hash of (seed, epoch, i, j)."""
    key = _splitmix64(np.array([seed], dtype=np.uint64) ^ _splitmix64(np.array([epoch], dtype=np.uint64) + np.uint64(1)))
    samples = _splitmix64(key ^ _splitmix64(np.asarray(indices, dtype=np.uint64).reshape(-1, 1) + np.uint64(2)))
    bits = _splitmix64(samples ^ _splitmix64(np.arange(count, dtype=np.uint64).reshape(1, -1) + np.uint64(3)))
    return (bits >> np.uint64(11)).astype(np.float64) / float(1 << 53)
