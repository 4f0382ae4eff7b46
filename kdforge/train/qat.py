"""Quantization-aware distillation (a student's `qat: {epochs, lr}`): after its distillation, an
INT8 student is fine-tuned through fake quantization in its export's integer scheme
(kdforge.nn.fake_quant), learning from its own FP32 self and from its teacher.

loss = CE(s, y) + T^2 KL(softmax(f/T) || softmax(s/T)) + T^2 KL(softmax(t/T) || softmax(s/T)),
T = 4, where s are the fake-quantized student's logits, f its frozen FP32 copy's and t the
teacher's (the teacher term is left out where the student trained without one, or where the
teacher classifies another class set). Batch norms keep their running statistics (frozen, as the
export folds them); their affine parameters train. The input ranges are either calibrated
(`qat.ranges: calibrated`, the default): recalibrated at the start of every epoch, MinMax over
the export's calibration images, so the last epoch trains on the ranges the export will find; or
learned (`qat.ranges: learned`, CNN and binary students; LSQ+, kdforge.nn.fake_quant): calibrated
once, then trained with the weights (without weight decay) for the layers whose input tensor no
other operation reads (a residual sum would take the clip in the file but not in fake
quantization; those keep that first calibration's ranges). Learned ranges are written into
deploy.qat.pt's spec (`int8_input_ranges`): the deployed FP32 model clips its layers' inputs to
them (kdforge.nn.input_clip) and the INT8 export quantizes with them instead of calibrating. The
training loop is the distill stage's (kdforge.train.trainer.fit): the same optimizer, schedule,
checkpoints and mid-epoch resumption, with the student's `train` settings but `qat.epochs` and
`qat.lr`.

Where this departs from the toolkits users compare with (TensorRT Model Optimizer, pt2e): calibrated
ranges are held fixed within an epoch and are MinMax whatever `export.calibration` says, so a
percentile or entropy export calibrates ranges QAT did not see; learned ranges are those of the
layers' inputs only (the file's other quantizers, on outputs and sums, are calibrated by the export).
"""

import copy
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from kdforge.export.int8_cpu import IntegerScheme
from kdforge.export.int8_ranges import privately_read_layers
from kdforge.nn.fake_quant import (InputRange, calibrate_fake_quant, learned_input_ranges, with_fake_quant,
                                   without_fake_quant)
from kdforge.nn.input_clip import clip_layer_inputs
from kdforge.train.methods.base import Distiller, NoOptions
from kdforge.train.methods.kd import kd_loss

TEMPERATURE = 4.0


class QuantizationAwareDistiller(Distiller):
    """The fake-quantized `student` against its FP32 self and `teacher` (or None)."""

    training_only = ("teacher", "fp32")

    def __init__(self, student: nn.Module, teacher: Optional[nn.Module], scheme: IntegerScheme,
                 calibration_images: torch.Tensor, learn_ranges: bool = False):
        fp32 = copy.deepcopy(student).eval().requires_grad_(False)
        learned = privately_read_layers(student, calibration_images.numpy()) if learn_ranges else ()
        super().__init__(with_fake_quant(student, scheme, learned), teacher, NoOptions())
        self.fp32 = fp32
        self.calibration_images = calibration_images
        self.learn_ranges = learn_ranges
        self._calibrated_epoch: Optional[int] = None
        if learn_ranges:  # once, before the optimizer takes the ranges' parameters
            calibrate_fake_quant(self.student, calibration_images)

    def train(self, mode: bool = True):
        super().train(mode)
        self.fp32.eval()
        for m in self.student.modules():  # running statistics frozen, as the export folds them
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self

    def parameter_groups(self) -> list[dict]:
        ranges = {id(p) for m in self.student.modules() if isinstance(m, InputRange) for p in m.parameters()}
        trained = [p for p in self.parameters() if p.requires_grad]
        return [{"params": [p for p in trained if id(p) not in ranges]},
                {"params": [p for p in trained if id(p) in ranges], "weight_decay": 0.0}]

    def forward(self, images, labels, progress):
        epoch = self.epoch(progress)
        if not self.learn_ranges and epoch != self._calibrated_epoch:
            calibrate_fake_quant(self.student, self.calibration_images.to(images.device))
            self.train()
            self._calibrated_epoch = epoch
        logits = self.student(images)
        with torch.no_grad():
            fp32_logits = self.fp32(images)
        losses = {"ce": F.cross_entropy(logits, labels), "kd_fp32": kd_loss(logits, fp32_logits, TEMPERATURE)}
        if self.teacher is not None:
            losses["kd_teacher"] = kd_loss(logits, self.teacher_logits(images), TEMPERATURE)
        return logits, losses

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state, strict, assign)
        self._calibrated_epoch = None  # a resumed run recalibrates before its first step
        return result

    def deployable(self) -> nn.Module:
        """The fine-tuned student, float layers back in place of the fake-quantized ones, clipping
        their inputs to the learned ranges as it trained."""
        return clip_layer_inputs(without_fake_quant(copy.deepcopy(self.student)), self.input_ranges()).eval()

    def input_ranges(self) -> dict[str, list[float]]:
        """{layer path: [rmin, rmax]} of the learned input ranges (empty where they are calibrated)."""
        return learned_input_ranges(self.student)
