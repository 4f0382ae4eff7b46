"""`Distiller`: what every method is.

A distiller wraps a student and (optionally) a teacher. `forward(images, labels, progress)`
returns the student's logits and a dict of named loss terms; the trainer sums them. `progress`
runs from 0 to 1 over training, for methods whose weights or temperatures follow a schedule;
`epochs`, the length of that training (set by the trainer), turns it into an epoch index for
schedules that step once per epoch.
`training_only` names the submodules that exist only for training: the strip stage drops
them. `deployable()` returns the student as it ships, `deploy_transforms` the architecture
changes (see models/plain.py) that rebuild it from its registered name.

`example` is a small input batch, for methods that size connectors from feature shapes.
`baseline` marks the method every other is compared with in the report (plain training);
`beats_baseline` a method whose paper claims it does, so that the report explains any shortfall.
`teacher_method` names the method the teacher stage trains the teacher with (TOFD's teacher
carries auxiliary heads); `load_teacher_state` takes that stage's checkpoint.
"""

import contextlib
from typing import ClassVar, Optional

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from kdforge.train.weights import submodule_state


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Distiller(nn.Module):
    Options: ClassVar[type[BaseModel]] = NoOptions
    needs_teacher: ClassVar[bool] = True
    trains_teacher: ClassVar[bool] = False
    teacher_method: ClassVar[str] = "ce"
    training_only: ClassVar[tuple[str, ...]] = ("teacher",)
    teacher_modules: ClassVar[tuple[str, ...]] = ("teacher",)
    deploy_transforms: ClassVar[tuple[str, ...]] = ()
    baseline: ClassVar[bool] = False
    beats_baseline: ClassVar[bool] = False
    epochs: int = 1

    def __init__(self, student: nn.Module, teacher: Optional[nn.Module], options: BaseModel, example: Optional[torch.Tensor] = None):
        super().__init__()
        self.student = student
        self.teacher = teacher
        self.options = options
        if teacher is not None and not self.trains_teacher:
            teacher.requires_grad_(False)

    @classmethod
    def uses_teacher(cls, options: BaseModel) -> bool:
        """Whether this method, with these options, learns from the run's teacher (the teacher
        stage trains it and the distill stage loads it)."""
        return cls.needs_teacher

    @classmethod
    def teacher_by_options(cls) -> bool:
        """Whether its options decide if it learns from the run's teacher (it overrides uses_teacher)."""
        return cls.uses_teacher.__func__ is not Distiller.uses_teacher.__func__

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None and not self.trains_teacher:
            self.teacher.eval()  # a frozen teacher keeps its batch-norm statistics
        return self

    def forward(self, images: torch.Tensor, labels: torch.Tensor, progress: float) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def epoch(self, progress: float) -> int:
        """The epoch (from 0) that `progress` falls in."""
        return min(int(round(progress * self.epochs, 9)), self.epochs - 1)  # round: (e / E) * E may fall just short of e

    def no_teacher_grad(self):
        """No graph through a frozen teacher; a teacher that trains along keeps its gradients."""
        return contextlib.nullcontext() if self.trains_teacher else torch.no_grad()

    def teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        with self.no_teacher_grad():
            return self.teacher(images)

    def load_teacher_state(self, state: dict) -> None:
        """Loads the teacher stage's checkpoint (its distiller's state dict) into this method."""
        self.teacher.load_state_dict(submodule_state(state, "student."))

    def parameter_groups(self) -> list[dict]:
        """Optimizer parameter groups; a method overrides this to exempt parameters from weight decay."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def deployable(self) -> nn.Module:
        return self.student


def features_and_logits(model: nn.Module, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Every stage's output, the pooled embedding and the logits of a StagedNet, in one pass."""
    feats = model.forward_stages(images)
    embedding = model.embed(feats[-1])
    return feats, embedding, model.fc(embedding)
