"""`Distiller`: what every method is.

A distiller wraps a student and (optionally) a teacher. `forward(images, labels, progress)`
returns the student's logits and a dict of named loss terms; the trainer sums them. `progress`
runs from 0 to 1 over training, for methods whose weights or temperatures follow a schedule.
`training_only` names the submodules that exist only for training: the strip stage drops
them. `deployable()` returns the student as it ships.
"""

from typing import ClassVar, Optional

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Distiller(nn.Module):
    Options: ClassVar[type[BaseModel]] = NoOptions
    needs_teacher: ClassVar[bool] = True
    trains_teacher: ClassVar[bool] = False
    training_only: ClassVar[tuple[str, ...]] = ("teacher",)

    def __init__(self, student: nn.Module, teacher: Optional[nn.Module], options: BaseModel):
        super().__init__()
        self.student = student
        self.teacher = teacher
        self.options = options
        if teacher is not None and not self.trains_teacher:
            teacher.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None and not self.trains_teacher:
            self.teacher.eval()  # a frozen teacher keeps its batch-norm statistics
        return self

    def forward(self, images: torch.Tensor, labels: torch.Tensor, progress: float) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.teacher(images)

    def parameter_groups(self) -> list[dict]:
        """Optimizer parameter groups; a method overrides this to exempt parameters from weight decay."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def deployable(self) -> nn.Module:
        return self.student
