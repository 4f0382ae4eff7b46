"""Energy estimate from operation counts, with per-operation energies at 45 nm from
M. Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014.

An estimate of arithmetic energy only: memory traffic, which usually dominates, is not counted.
"""

SOURCE = "Horowitz, ISSCC 2014, 45 nm: arithmetic only, memory access not included"

# picojoules per operation: (addition, multiplication)
ENERGY_PJ = {
    "fp32": (0.9, 3.7),
    "fp16": (0.4, 1.1),
    "int32": (0.1, 3.1),
    "int8": (0.03, 0.2),
}


def energy_estimate(mul: int, add: int) -> dict:
    """Microjoules per inference for each number format, from multiplication and addition counts."""
    return {fmt: (add * e_add + mul * e_mul) * 1e-6 for fmt, (e_add, e_mul) in ENERGY_PJ.items()}
