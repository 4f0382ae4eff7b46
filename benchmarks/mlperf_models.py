"""The networks of MLPerf Inference's closed vision benchmarks, as kdforge counts them: ResNet-50
v1.5, SSD-MobileNet-v1 at 300x300, SSD-ResNet34 at 1200x1200 and RetinaNet (ResNeXt50-32x4d FPN)
at 800x800. Each returns the tensors its detection heads write; box decoding and non-maximum
suppression (a TensorRT plugin in NVIDIA's submissions) are left out of every count.

ResNet-50, ResNet-34 and ResNeXt50 are torchvision's definitions (their model files alone where
torchvision's compiled operators do not load against this torch). SSD-ResNet34 follows
mlcommons/inference r0.5's ssd_r34.py: ResNet-34 up to its third stage, that stage at stride 1,
five extra blocks, and heads of stride 3. SSD-MobileNet-v1 follows TensorFlow's
ssd_mobilenet_v1_coco: MobileNet-v1's layers 11 and 13, four extra blocks, 1x1 box predictors.
RetinaNet follows MLPerf's (torchvision's RetinaNet with a ResNeXt50-32x4d backbone, 264
OpenImages classes, P3 to P7)."""

import sys
import tempfile
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


@lru_cache(maxsize=1)
def torchvision_models():
    try:
        import torchvision.models as models
    except Exception:  # noqa: BLE001 - torchvision's compiled operators do not load against this torch: its model files alone
        from test_torchvision_counts import _WHEELS, load_model_definitions

        models = load_model_definitions(sorted(_WHEELS.glob("torchvision-*.whl"))[-1], Path(tempfile.mkdtemp()))
    return models


def resnet50() -> nn.Module:
    return torchvision_models().resnet50().eval()


def _conv_bn(c_in, c_out, kernel, stride=1, groups=1):
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU6())


def _extra(c_in, middle, c_out, stride=2, padding=1):
    return nn.Sequential(nn.Conv2d(c_in, middle, 1), nn.ReLU(), nn.Conv2d(middle, c_out, 3, stride, padding), nn.ReLU())


class _Heads(nn.Module):
    def __init__(self, channels, anchors, classes, kernel, stride=1):
        super().__init__()
        self.classes = classes
        self.loc = nn.ModuleList(nn.Conv2d(c, a * 4, kernel, stride, kernel // 2) for c, a in zip(channels, anchors))
        self.conf = nn.ModuleList(nn.Conv2d(c, a * classes, kernel, stride, kernel // 2) for c, a in zip(channels, anchors))

    def forward(self, features):
        locs = [head(f).reshape(f.shape[0], 4, -1) for head, f in zip(self.loc, features)]
        confs = [head(f).reshape(f.shape[0], self.classes, -1) for head, f in zip(self.conf, features)]
        return torch.cat(locs, 2), torch.cat(confs, 2)


class SSDMobileNetV1(nn.Module):
    WIDTHS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *[(512, 1)] * 5, (1024, 2), (1024, 1))

    def __init__(self, classes=91):
        super().__init__()
        layers, c = [_conv_bn(3, 32, 3, 2)], 32
        for width, stride in self.WIDTHS:
            layers.append(nn.Sequential(_conv_bn(c, c, 3, stride, groups=c), _conv_bn(c, width, 1)))
            c = width
        self.backbone = nn.ModuleList(layers)
        self.extras = nn.ModuleList([_extra(1024, 256, 512), _extra(512, 128, 256), _extra(256, 128, 256),
                                     _extra(256, 64, 128)])
        self.heads = _Heads([512, 1024, 512, 256, 256, 128], [3, 6, 6, 6, 6, 6], classes, kernel=1)

    def forward(self, x):
        features = []
        for i, layer in enumerate(self.backbone):
            x = layer(x)
            if i in (11, 13):
                features.append(x)
        for extra in self.extras:
            x = extra(x)
            features.append(x)
        return self.heads(features)


class SSDResNet34(nn.Module):
    def __init__(self, classes=81):
        super().__init__()
        r = torchvision_models().resnet34()
        r.layer3[0].conv1.stride, r.layer3[0].downsample[0].stride = (1, 1), (1, 1)
        self.backbone = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2, r.layer3)
        self.extras = nn.ModuleList([_extra(256, 256, 512), _extra(512, 256, 512), _extra(512, 128, 256),
                                     _extra(256, 128, 256, padding=0), _extra(256, 128, 256, stride=1, padding=0)])
        self.heads = _Heads([256, 512, 512, 256, 256, 256], [4, 6, 6, 6, 4, 4], classes, kernel=3, stride=3)

    def forward(self, x):
        features = [self.backbone(x)]
        for extra in self.extras:
            features.append(extra(features[-1]))
        return self.heads(features)


class RetinaNet(nn.Module):
    def __init__(self, classes=264, anchors=9):
        super().__init__()
        from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
        from torchvision.models.detection.retinanet import RetinaNetHead
        from torchvision.ops.feature_pyramid_network import LastLevelP6P7

        models = torchvision_models()
        self.backbone = _resnet_fpn_extractor(models.resnext50_32x4d(), 5, returned_layers=[2, 3, 4],
                                              extra_blocks=LastLevelP6P7(256, 256))
        self.head = RetinaNetHead(256, anchors, classes)

    def forward(self, x):
        features = list(self.backbone(x).values())
        outputs = self.head(features)
        return outputs["cls_logits"], outputs["bbox_regression"]


NETWORKS = {  # name: (constructor, input side)
    "resnet50": (resnet50, 224),
    "ssd-mobilenet": (lambda: SSDMobileNetV1().eval(), 300),
    "ssd-resnet34": (lambda: SSDResNet34().eval(), 1200),
    "retinanet": (lambda: RetinaNet().eval(), 800),
}
