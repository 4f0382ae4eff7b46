"""The latency estimate of a cost table on a named target: gpu_cost.py's kernel model (and
gpu_query.py's per-query costs, set by a Deployment) for the catalogued GPUs, roofline.py's
per-layer roofline for the measured CPU."""

from kdforge.profile import gpu_cost, roofline
from kdforge.profile.gpu_query import Deployment
from kdforge.profile.targets import Target


def estimate(costs: dict, target: Target, precision: str, deployment: Deployment | None = None) -> dict:
    if target.sms:
        return gpu_cost.estimate(costs, target, precision, deployment)
    return roofline.estimate(costs, target, precision)
