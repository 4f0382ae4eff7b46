"""Networks kdforge did not define, as users write them: their own parameter names, their own
forward, built by a factory function, blocks held in an nn.Sequential, an nn.ModuleDict, nested
nn.ModuleLists or attributes, branches concatenated, an encoder-decoder, forwards that return a
tuple, a dict or a dataclass. tests/test_own_models.py names them in configs as `own_models:NAME`."""

from dataclasses import dataclass

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv_a = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm_a = nn.BatchNorm2d(cout)
        self.conv_b = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm_b = nn.BatchNorm2d(cout)
        self.skip = nn.Sequential() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.norm_a(self.conv_a(x)))
        return torch.relu(self.norm_b(self.conv_b(y)) + self.skip(x))


class TinyNet(nn.Module):
    """A small residual network: body (stem and three blocks), pool, head."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 16):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                                  Block(width, width, 1), Block(width, 2 * width, 2), Block(2 * width, 4 * width, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        return self.head(torch.flatten(self.pool(self.body(x)), 1))


def tiny(**kwargs) -> nn.Module:
    return TinyNet(**kwargs)


def depthwise(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """Separable convolutions without blocks: a depthwise (grouped) and a biased one among them."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 1, bias=True), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))


class DictNet(nn.Module):
    """A stem nn.Sequential, residual blocks held in an nn.ModuleDict and called in a loop, a
    mean-pooled linear head."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = nn.ModuleDict({"b1": Block(width, width, 1), "b2": Block(width, 2 * width, 2),
                                     "b3": Block(2 * width, 2 * width, 1), "b4": Block(2 * width, 4 * width, 2)})
        self.classifier = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks.values():
            x = block(x)
        return self.classifier(x.mean((2, 3)))


class NestedNet(nn.Module):
    """Stages as an nn.ModuleList of nn.ModuleLists of blocks, a functional max-pool between them."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 16):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        self.stages = nn.ModuleList([nn.ModuleList([Block(width, width, 1), Block(width, width, 1)]),
                                     nn.ModuleList([Block(width, 2 * width, 1), Block(2 * width, 2 * width, 1)])])
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        for i, stage in enumerate(self.stages):
            if i:
                x = torch.nn.functional.max_pool2d(x, 2)
            for block in stage:
                x = block(x)
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


class Mixed(nn.Module):
    """Two branches, concatenated."""

    def __init__(self, cin: int, each: int):
        super().__init__()
        self.wide = nn.Sequential(nn.Conv2d(cin, each, 3, padding=1, bias=False), nn.BatchNorm2d(each), nn.ReLU())
        self.narrow = nn.Sequential(nn.Conv2d(cin, each, 1, bias=False), nn.BatchNorm2d(each), nn.ReLU())

    def forward(self, x):
        return torch.cat([self.wide(x), self.narrow(x)], 1)


class InlineConcatNet(nn.Module):
    """Branch-and-concatenate blocks built inline as attributes, strided convolutions between them."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.mixed_a = Mixed(16, 8)
        self.reduce_a = nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False)
        self.mixed_b = Mixed(32, 16)
        self.reduce_b = nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=False)
        self.mixed_c = Mixed(64, 32)
        self.logits = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.mixed_a(torch.relu(self.conv_in(x)))
        x = self.mixed_b(torch.relu(self.reduce_a(x)))
        x = self.mixed_c(torch.relu(self.reduce_b(x)))
        return self.logits(x.amax((2, 3)))


class EncoderDecoder(nn.Module):
    """A U-Net-like classifier: an encoder that halves the resolution, a decoder that doubles it back
    and concatenates the encoder's map, then a pooled head."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 16):
        super().__init__()
        self.encoder = nn.ModuleList([Block(in_channels, width, 1), Block(width, 2 * width, 2)])
        self.decoder = Block(3 * width, width, 1)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        skip = self.encoder[0](x)
        deep = self.encoder[1](skip)
        up = torch.nn.functional.interpolate(deep, scale_factor=2.0, mode="nearest")
        return self.head(self.decoder(torch.cat([up, skip], 1)).mean((2, 3)))


def dict_net(**kwargs) -> nn.Module:
    return DictNet(**kwargs)


def nested(**kwargs) -> nn.Module:
    return NestedNet(**kwargs)


def inline_concat(**kwargs) -> nn.Module:
    return InlineConcatNet(**kwargs)


def encoder_decoder(**kwargs) -> nn.Module:
    return EncoderDecoder(**kwargs)


@dataclass
class Prediction:
    embedding: torch.Tensor
    scores: torch.Tensor


class Returning(TinyNet):
    """TinyNet whose forward returns more than the logits: `kind` "tuple" (embedding, logits),
    "dict" {"embedding", "scores"}, "logits-dict" {"embedding", "logits"} or "dataclass"
    Prediction(embedding, scores)."""

    def __init__(self, kind: str = "tuple", **kwargs):
        super().__init__(**kwargs)
        self.kind = kind

    def forward(self, x):
        embedding = torch.flatten(self.pool(self.body(x)), 1)
        logits = self.head(embedding)
        if self.kind == "tuple":
            return embedding, logits
        if self.kind == "dict":
            return {"embedding": embedding, "scores": logits}
        if self.kind == "logits-dict":
            return {"embedding": embedding, "logits": logits}
        return Prediction(embedding, logits)


def returning(**kwargs) -> nn.Module:
    return Returning(**kwargs)
