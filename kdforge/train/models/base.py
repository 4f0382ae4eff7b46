"""`StagedNet`: the one shape every registered model has.

stem -> stages[0] -> ... -> stages[-1] -> pool -> flatten -> fc. Distillation methods hook into
that shape (per-stage features, the pooled embedding, running a teacher from a given stage on)
without knowing the architecture.
"""

import torch
from torch import nn


class StagedNet(nn.Module):
    def __init__(self, stem: nn.Module, stages: list[nn.Module], feature_dim: int, num_classes: int):
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(feature_dim, num_classes)
        self.feature_dim = feature_dim

    @property
    def stage_paths(self) -> list[str]:
        """Each stage's module path in this network."""
        return [f"stages.{i}" for i in range(len(self.stages))]

    def forward_stages(self, x: torch.Tensor, start: int = 0) -> list[torch.Tensor]:
        """Outputs of every stage from `start` on; with start > 0, x is the input of that stage."""
        if start == 0:
            x = self.stem(x)
        feats = []
        for stage in self.stages[start:]:
            x = stage(x)
            feats.append(x)
        return feats

    def embed(self, feature_map: torch.Tensor) -> torch.Tensor:
        """Pooled, flattened penultimate features: the input of the classifier."""
        return torch.flatten(self.pool(feature_map), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(self.forward_stages(x)[-1]))


def conv_bn(conv: nn.Module, out_channels: int) -> nn.Sequential:
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels))


@torch.no_grad()
def calibrate_batch_norm(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """Sets every batch norm's running statistics to those of `images` and returns the model in
    eval mode: an untrained AdderNet otherwise feeds its ReLUs only negative values."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the calibration batch
    model.train()(images)
    return model.eval()


def reinitialize(model: nn.Module) -> nn.Module:
    """Fresh weights from the distributions a new model of this kind starts from."""
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return kaiming_init(model)


def kaiming_init(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model
