# kdforge on a GPU with TensorRT: NVIDIA's PyTorch container ships CUDA, PyTorch, Triton,
# TensorRT and Torch-TensorRT. By default the container runs the digits demo and builds a
# TensorRT engine for every student (adder students through the kdforge plugin).
#   docker build -t kdforge .
#   docker run --gpus all --rm -v "$PWD/runs:/kdforge/runs" kdforge
FROM nvcr.io/nvidia/pytorch:25.10-py3

WORKDIR /kdforge
COPY pyproject.toml README.md ./
COPY kdforge ./kdforge
COPY configs ./configs
COPY docker ./docker
# Keep the container's own torch, triton and tensorrt; install the rest with the `gpu` extra:
# ONNX Runtime's GPU build (never the CPU wheel) and DALI. The check fails the build where
# TensorRT, ONNX Runtime's CUDA provider, DALI or kdforge's native kernels are missing.
RUN pip install --no-cache-dir -e '.[gpu]' \
 && python docker/build_check.py

CMD ["kdforge", "run", "configs/digits_demo.yaml", "--set", "device=cuda", "--set", "export.tensorrt=true", "--set", "run_dir=runs/digits_demo_tensorrt"]
