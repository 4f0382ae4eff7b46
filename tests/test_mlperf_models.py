"""The MLPerf networks benchmarks/gpu_estimates_mlperf.py sets beside NVIDIA's results
(benchmarks/mlperf_models.py) have MLPerf's shapes: its anchor counts and published sizes."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from mlperf_models import NETWORKS  # noqa: E402

from kdforge.profile.counts import count_costs  # noqa: E402


@pytest.mark.parametrize("name, classes, anchors", [
    ("ssd-mobilenet", 91, 1917),      # TensorFlow's ssd_mobilenet_v1_coco at 300x300
    ("ssd-resnet34", 81, 15130),      # MLPerf's SSD-ResNet34 at 1200x1200: maps of 50, 25, 13, 7, 3, 3
    ("retinanet", 264, 120087),       # MLPerf's RetinaNet at 800x800: 9 anchors on P3 to P7
])
def test_each_detector_scores_mlperfs_anchor_count(name, classes, anchors):
    make, side = NETWORKS[name]
    with torch.no_grad():
        first, second = make()(torch.zeros(1, 3, side, side))
    if name == "retinanet":  # torchvision's head: scores (N, anchors, classes), then boxes (N, anchors, 4)
        assert first.shape == (1, anchors, classes) and second.shape == (1, anchors, 4)
    else:  # ssd_r34.py's order: boxes (N, 4, anchors), then scores (N, classes, anchors)
        assert first.shape == (1, 4, anchors) and second.shape == (1, classes, anchors)


def test_the_counts_match_the_published_sizes():
    macs = {name: count_costs(make(), (1, 3, side, side))["totals"]["macs"] for name, (make, side) in NETWORKS.items()}
    assert macs["resnet50"] == pytest.approx(4.09e9, rel=0.01)     # ResNet-50 v1.5: 4.1 G MACs
    assert macs["ssd-resnet34"] == pytest.approx(433e9 / 2, rel=0.01)  # MLCommons: 433 GFLOPs
