"""Accuracy-aware INT8 (kdforge.export.int8_search): a student that MinMax post-training
quantization breaks passes through the float fallback with its float layers named; past the MAC
limit the export stops with one sentence and keeps the file."""

import copy

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from kdforge.errors import UserError
from kdforge.export.int8_cpu import FLOAT_KEY, host_cpu
from kdforge.export.int8_search import Gate, search_int8
from kdforge.export.onnx_export import export_onnx
from kdforge.export.verify import verify_int8
from kdforge.train.data import digits

GATE = Gate(min_agreement=0.97, max_accuracy_drop=0.02)


@pytest.fixture(scope="module")
def outlier_student(tmp_path_factory):
    """A small CNN trained on digits, then given one channel of huge activations without changing
    its function: the cheap 1x1 layer's channel 0 is scaled up 1000x (ReLU commutes with a positive
    scale) and the classifier's weights that read it down as much. MinMax spreads that tensor's 256
    levels over the outlier's range and the other channels round to zero."""
    data = digits.load(0.1, 0.2, 0)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 8, 1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(8 * 64, 10))
    x, y = torch.stack([data.train[i][0] for i in range(len(data.train))]), torch.tensor([data.train[i][1] for i in range(len(data.train))])
    optimiser = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(15):
        for i in range(0, len(x), 64):
            optimiser.zero_grad()
            nn.functional.cross_entropy(net(x[i:i + 64]), y[i:i + 64]).backward()
            optimiser.step()
    with torch.no_grad():
        net[6].weight[0] *= 1000
        net[6].bias[0] *= 1000
        net[9].weight.view(10, 8, 64)[:, 0] /= 1000
    folder = tmp_path_factory.mktemp("outlier")
    fp32 = export_onnx(net.eval(), torch.zeros(2, 1, 8, 8), folder / "model.onnx")

    def split(part):
        return (torch.stack([part[i][0] for i in range(len(part))]).numpy(), np.array([part[i][1] for i in range(len(part))]))

    return net, fp32, x[:256].numpy(), split(data.val), data.test


def _search(outlier_student, path, max_float_macs=0.10, logs=None):
    _, fp32, calibration, (val_x, val_y), _ = outlier_student
    return search_int8(fp32, path, host_cpu(), "minmax", calibration, val_x, val_y, GATE, max_float_macs,
                       log=(logs.append if logs is not None else print))


def test_a_student_that_minmax_breaks_passes_through_the_float_fallback(outlier_student, tmp_path):
    import onnxruntime as ort

    net, *_, test = outlier_student
    logs = []
    found = _search(outlier_student, tmp_path / "model.int8.onnx", logs=logs)
    assert not any(t["passed"] for t in found["tries"] if not t["float_layers"])  # every scheme alone misses the gate
    floated = found["float_layers"]
    assert floated and sum(f["mac_share"] for f in floated) <= 0.10
    assert {f["layer"] for f in floated} <= {r["layer"] for r in found["sensitivity"]}
    assert any(f["layer"] in line for line in logs for f in floated)
    model = onnx.load(str(tmp_path / "model.int8.onnx"))
    props = {p.key: p.value for p in model.metadata_props}
    assert props[FLOAT_KEY].split() == [f["layer"] for f in floated]
    assert {n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm")} >= set(props[FLOAT_KEY].split())
    session = ort.InferenceSession(str(tmp_path / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    verdict = verify_int8(net, lambda x: session.run(None, {"input": x})[0], test, 0.97, 0.02)
    assert verdict["passed"], verdict  # on the held-out test split, on this host's integer kernels


def test_past_the_float_mac_limit_the_export_stops_with_the_most_sensitive_layers(outlier_student, tmp_path):
    with pytest.raises(UserError) as error:
        _search(outlier_student, tmp_path / "model.int8.onnx", max_float_macs=0.001)
    message = str(error.value)
    assert "export.int8_max_float_macs=0.001" in message and "most sensitive layers are node_" in message
    assert message.count(".") and message.endswith(".") and "\n" not in message
    assert (tmp_path / "model.int8.onnx").is_file()  # kept for inspection


def test_the_int8_file_minmax_breaks_names_the_layer_that_reads_the_outlier_channel(outlier_student, tmp_path):
    from kdforge.export.divergence import first_divergence
    from kdforge.export.int8_cpu import SCHEMES
    from kdforge.export.quantize import quantize_int8

    net, fp32, calibration, _, test = outlier_student
    path = quantize_int8(fp32, tmp_path / "model.int8.onnx", calibration, SCHEMES[host_cpu()])
    images = torch.stack([test[i][0] for i in range(64)])
    found = first_divergence(path, net, images, fp32)
    assert found["layer"] == "9" and found["relative_error"] > 0.5  # the classifier, reading zeros for all but channel 0



def test_a_student_that_minmax_breaks_passes_through_qat_with_learned_ranges_and_no_float_layer(outlier_student, tmp_path):
    import onnxruntime as ort

    from kdforge.export.int8_cpu import SCHEMES
    from kdforge.export.int8_ranges import range_overrides
    from kdforge.train.qat import QuantizationAwareDistiller

    net, _, calibration, (val_x, val_y), test = outlier_student
    distiller = QuantizationAwareDistiller(copy.deepcopy(net), None, SCHEMES[host_cpu()], torch.from_numpy(calibration),
                                           learn_ranges=True)
    optimizer = torch.optim.SGD(distiller.parameter_groups(), lr=1e-3, momentum=0.9)
    train = digits.load(0.1, 0.2, 0).train
    images, labels = torch.stack([train[i][0] for i in range(len(train))]), torch.tensor([train[i][1] for i in range(len(train))])
    distiller.train()
    steps = range(0, 3 * len(images), 64)  # 3 epochs
    for step, start in enumerate(steps):
        batch = torch.arange(start, start + 64) % len(images)
        _, losses = distiller(images[batch], labels[batch], step / len(steps))
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    model, ranges = distiller.deployable(), distiller.input_ranges()
    with torch.no_grad():
        minmax = float(net[:9](images).max())
    # the classifier's range clips the outlier channel by an order of magnitude (how far three epochs
    # take it varies with the CPU's float kernels: 1/400 of MinMax's range on AVX-512, 1/70 seen elsewhere)
    assert ranges["9"][1] < 0.1 * minmax
    fp32 = export_onnx(model, torch.zeros(2, 1, 8, 8), tmp_path / "model.onnx")
    found = search_int8(fp32, tmp_path / "model.int8.onnx", host_cpu(), "minmax", calibration, val_x, val_y, GATE, 0.10,
                        range_overrides=lambda prepared: range_overrides(prepared, model, calibration, ranges))
    assert found["float_layers"] == [] and found["tries"][-1]["passed"]
    session = ort.InferenceSession(str(tmp_path / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    verdict = verify_int8(model, lambda x: session.run(None, {"input": x})[0], test, 0.97, 0.02)
    assert verdict["passed"], verdict
