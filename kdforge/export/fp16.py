"""FP16 students: the deployed model with fp16 weights and arithmetic, fp32 input and logits (so
a caller feeds what it fed the fp32 file), exported as model.fp16.onnx. ONNX Runtime runs it on
CPUs (converting where a CPU lacks fp16 arithmetic); GPUs run fp16 natively. CNN and binary
students only: the adder kernels are fp32 or integer (kdforge.config refuses the rest)."""

import copy

import torch
from torch import nn


class Float16Student(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = copy.deepcopy(model).half().eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(torch.float16)).to(torch.float32)
