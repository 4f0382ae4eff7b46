"""The latency estimate of a cost table on a named target: gpu_cost.py's kernel model for the
catalogued GPUs, roofline.py's per-layer roofline for the measured CPU."""

from kdforge.profile import gpu_cost, roofline
from kdforge.profile.targets import Target


def estimate(costs: dict, target: Target, precision: str) -> dict:
    return gpu_cost.estimate(costs, target, precision) if target.sms else roofline.estimate(costs, target, precision)
