"""What one query costs the host around a TensorRT engine on a catalogued GPU (gpu_cost.py times the
engine's kernels): the input's copy to the GPU, the launch of the engine, the output's copy back.

- Copies cross the target's host link (targets.py: PCIe generation and width, one direction) at
  its signalling rate, each also paying one stand-alone launch. On a GPU that shares the host's
  memory (Jetson Orin) the engine reads and writes host buffers in place: no copy.
- A CUDA graph (TensorRT engines replayed the way NVIDIA's MLPerf harness does with
  `use_graphs`) is one launch for the whole engine, and each kernel in it then costs
  LAUNCH_IN_GRAPH_S, the per-kernel time of back-to-back small kernels replayed from a graph: 80
  kernels in 70 us (CUDA.jl documentation, "Graphs"). Without a graph, each kernel is a
  stand-alone launch.
- STANDALONE_LAUNCH_S: "about 4-6 us" per kernel launch measured on a GeForce RTX 5070 Ti with
  CUDA 13.0 (susun-blog.com, "pegainfer (3): From Launch Overhead to CUDA Graph"); the low end,
  as the engine's best case.

Input and output are stored at the estimate's precision (an INT8 engine takes INT8 input, as
MLPerf's harness feeds it).
"""

from dataclasses import dataclass

from kdforge.profile.roofline import BYTES
from kdforge.profile.targets import Target

LAUNCH_IN_GRAPH_S = 70e-6 / 80
STANDALONE_LAUNCH_S = 4e-6


@dataclass(frozen=True)
class Deployment:
    """How the engine is served: whether the input is already on the GPU (decoded there, or
    MLPerf's `start_from_device`), and whether its kernels replay from a CUDA graph."""

    input_on_device: bool = False
    cuda_graph: bool = True

    def launch_seconds(self) -> float:
        """What each kernel's launch costs."""
        return LAUNCH_IN_GRAPH_S if self.cuda_graph else STANDALONE_LAUNCH_S

    def describe(self) -> str:
        return (f"input {'already on the GPU' if self.input_on_device else 'copied from the host'}, "
                f"kernels {'replayed from one CUDA graph' if self.cuda_graph else 'launched one by one'}")


def copy_seconds(elements: int, target: Target, precision: str) -> float:
    if not target.host_link_gbs:
        return 0.0
    return STANDALONE_LAUNCH_S + elements * BYTES[precision] / (target.host_link_gbs * 1e9)


def query_seconds(costs: dict, target: Target, precision: str, deployment: Deployment) -> dict:
    """Seconds per query outside the kernels, by what they are spent on."""
    totals = costs["totals"]
    input_elements = 1
    for d in totals.get("input_shape") or [0]:
        input_elements *= d
    return {
        "input_copy": 0.0 if deployment.input_on_device else copy_seconds(input_elements, target, precision),
        "graph_launch": STANDALONE_LAUNCH_S if deployment.cuda_graph else 0.0,
        "output_copy": copy_seconds(totals.get("output_elements", 0), target, precision),
    }
