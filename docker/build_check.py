"""The image's build check: fails the build where a part of the GPU path is missing. A build
has no GPU, so it checks what can be known without one: TensorRT imports and is new enough for
the adder plugin, ONNX Runtime is the GPU build (its CUDA and TensorRT providers are compiled
in), DALI imports (`data.backend: dali`, the `gpu` extra), and kdforge's native adder kernel compiles."""

import sys

import onnxruntime
import tensorrt
import triton

from kdforge.export.ort import native_library
from kdforge.export.tensorrt_plugin import check_versions

problems = []
try:
    check_versions(tensorrt.__version__, triton.__version__)
except Exception as error:  # noqa: BLE001 - the check's one sentence
    problems.append(str(error))
providers = onnxruntime.get_available_providers()
if "CUDAExecutionProvider" not in providers:
    problems.append(f"ONNX Runtime {onnxruntime.__version__} has no CUDA execution provider ({', '.join(providers)}): "
                    f"the CPU wheel is installed, not onnxruntime-gpu")
try:
    import nvidia.dali

    dali = nvidia.dali.__version__
except ImportError:
    dali = None
    problems.append("NVIDIA DALI is not installed (the gpu extra installs nvidia-dali-cuda120)")
if native_library() is None:
    problems.append("kdforge's native adder kernel did not compile (no working C compiler)")
if problems:
    sys.exit("kdforge image check failed: " + "; ".join(problems))
print(f"kdforge image check passed: TensorRT {tensorrt.__version__}, Triton {triton.__version__}, ONNX Runtime "
      f"{onnxruntime.__version__} with {', '.join(providers)}, DALI {dali}")
