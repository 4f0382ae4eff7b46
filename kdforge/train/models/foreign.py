"""`ForeignNet`: a model kdforge did not define, seen in StagedNet's shape (stages whose outputs
methods read, the classifier's input as the embedding, the classifier) through forward hooks, as
torchdistill reads intermediate features. The user's module is held as `net` and never rebuilt:
its parameters keep their names under that prefix, and `ForeignNet.net.state_dict()` is the state
dict the user's own code loads.

Where the stages end comes from the config (`stages`: module paths, `classifier`: the final
nn.Linear) or, where it is silent, from one forward pass on an example
(kdforge.train.models.discovery). A vision transformer's stages give tokens (N, L, C); methods
read them as maps of C channels over L positions in one column (`as_map`), so that FitNet's
regressor is a per-token linear map, AT's attention is over tokens and TOFD's heads convolve
along the sequence. Channels-last maps (N, H, W, C), as Swin's, are not told from tokens' order
and would be misread: name stages whose output is channels-first.
"""

import torch
import torch.nn.functional as F
from torch import nn

from kdforge.errors import UserError, printable
from kdforge.train.models.outputs import OutputKey, logits_of

EMBEDDING = "__embedding__"


def _module(net: nn.Module, path: str, what: str) -> nn.Module:
    try:
        return net.get_submodule(path)
    except AttributeError:
        raise UserError(f"{what} '{printable(path)}' is not a module of the model (print(model) lists their "
                        f"names).") from None


def as_map(feature: torch.Tensor) -> torch.Tensor:
    """A stage's output as methods read it: a feature map as it is, tokens (N, L, C) as a map of
    C channels over L positions in one column, (N, C, L, 1)."""
    return feature.transpose(1, 2).unsqueeze(-1) if feature.ndim == 3 else feature


class ForeignNet(nn.Module):
    """`net` with `stages` (module paths, in execution order), its `classifier` (an nn.Linear) and
    where its forward's return holds the logits (`output`, kdforge.train.models.outputs)."""

    def __init__(self, net: nn.Module, stages: list[str], classifier: str, source: str = "", output: OutputKey = None):
        super().__init__()
        if not stages:
            raise UserError(f"{source or 'the model'}: name at least one stage.")
        self.net, self.net_stages, self.classifier_path, self.source = net, list(stages), classifier, source
        self.output = output
        head = _module(net, classifier, "classifier")
        if not isinstance(head, nn.Linear):
            raise UserError(f"classifier '{printable(classifier)}' of {source} is a {type(head).__name__}; it must be the "
                            f"final nn.Linear, whose input is the embedding.")
        for path in self.net_stages:
            _module(net, path, "stage")
        self.feature_dim = head.in_features
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def fc(self) -> nn.Linear:
        return self.net.get_submodule(self.classifier_path)

    @property
    def stages(self) -> tuple[nn.Module, ...]:
        return tuple(self.net.get_submodule(p) for p in self.net_stages)

    @property
    def stage_paths(self) -> list[str]:
        """Each stage's module path in this wrapper (`net.` and the path in the user's model)."""
        return [f"net.{p}" for p in self.net_stages]

    def forward_stages(self, x: torch.Tensor, start: int = 0) -> list[torch.Tensor]:
        """Every stage's output in one pass of the user's forward; it cannot start mid-way."""
        if start:
            raise UserError(f"{self.source} is not a kdforge architecture, so it cannot be run from a middle stage "
                            f"(JointRD's hybrid paths need that); use a registered ResNet there.")
        captured: dict[str, torch.Tensor] = {}
        hooks = [self.net.get_submodule(p).register_forward_hook(lambda m, i, o, p=p: captured.__setitem__(p, o))
                 for p in self.net_stages]
        hooks.append(self.fc.register_forward_hook(lambda m, i, o: captured.__setitem__(EMBEDDING, i[0])))
        try:
            self.net(x)
        finally:
            for hook in hooks:
                hook.remove()
        feats = [as_map(captured[p]) for p in self.net_stages]
        self._last = (feats[-1], captured[EMBEDDING])  # for embed(feats[-1]) right after: the pass is not repeated
        return feats

    def embed(self, feature_map: torch.Tensor) -> torch.Tensor:
        """The classifier's input of the last forward_stages pass where `feature_map` is its last
        stage's output; else the map pooled and flattened, as a StagedNet embeds."""
        if self._last is not None and feature_map is self._last[0]:
            return self._last[1]
        return torch.flatten(F.adaptive_avg_pool2d(feature_map, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return logits_of(self.net(x), self.output, self.source)
