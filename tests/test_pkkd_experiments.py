"""The PKKD experiments of the rebuttal, as shipped configs, run on digits: the 2x2 ablation
(kernel on/off x progressive/fixed teacher) and PKKD between two CNNs of different
architectures. Each config is shrunk (digits, one epoch, ImageNet-size teacher ResNet-152 ->
ResNet-50) and trained through the distill stage; the loss terms show which cell ran."""

import json
from pathlib import Path

import pytest
import yaml

from conftest import kdforge_cli

CONFIGS = Path(__file__).parent.parent / "configs"
ABLATION = sorted(CONFIGS.glob("cifar10_pkkd_ablation_*.yaml"))


def _on_digits(path: Path, tmp_path: Path) -> Path:
    raw = yaml.safe_load(path.read_text())
    raw.update(data={"name": "digits"}, device="cpu", run_dir=str(tmp_path / "run"))
    small = {"epochs": 1, "batch_size": 256, "lr": 0.05}
    if "teacher" in raw:
        raw["teacher"]["train"] = small
        raw["teacher"]["model"] = raw["teacher"]["model"].replace("resnet152", "resnet50")  # minutes -> seconds on 2 cores
    raw["students"] = [{**s, "train": small} for s in raw["students"] if s["method"] == "pkkd"]
    out = tmp_path / path.name
    out.write_text(yaml.safe_dump(raw))
    return out


def test_the_ablation_is_four_configs_that_differ_in_the_two_switches():
    cells = {(s["options"]["kernel"], s["options"]["progressive"])
             for path in ABLATION for s in yaml.safe_load(path.read_text())["students"]}
    assert len(ABLATION) == 4 and cells == {(True, True), (True, False), (False, True), (False, False)}


def _fast_or_slow(path):  # each a pipeline of 35-100 s: under `slow` (test_own_models runs PKKD end to end in `make test`)
    return pytest.param(path, marks=pytest.mark.slow, id=path.stem)


@pytest.mark.parametrize("path", [_fast_or_slow(p) for p in ABLATION + [CONFIGS / "imagenet_pkkd_resnet152_resnet18.yaml"]])
def test_each_pkkd_experiment_trains_on_digits(tmp_path, path):
    config = _on_digits(path, tmp_path)
    out = kdforge_cli("run", config, "--only", "data", "--only", "teacher", "--only", "distill")
    assert out.returncode == 0, out.stderr[-2000:]
    student = yaml.safe_load(config.read_text())["students"][0]
    options = student["options"]
    history = json.loads((tmp_path / "run" / "students" / student["name"] / "metrics.json").read_text())["history"]
    terms = set(history[0])
    assert ("kernel" in terms) == options["kernel"] and ("feature" in terms) != options["kernel"]
    assert ("ce_teacher" in terms) == options["progressive"]
    assert (tmp_path / "run" / "teacher").exists() == (options.get("teacher") == "pipeline")


def test_a_fixed_twin_without_weights_and_a_pipeline_teacher_without_a_teacher_are_refused_in_one_sentence(tmp_path):
    from conftest import assert_one_sentence, run_tiny

    student = {"name": "ann", "method": "pkkd", "model": "resnet8_adder", "train": {"epochs": 1}}
    out = run_tiny(tmp_path, [{**student, "options": {"progressive": False}}])
    assert_one_sentence(out, "needs trained weights: set teacher_checkpoint")
    out = run_tiny(tmp_path, [{**student, "options": {"teacher": "pipeline"}}], teacher=None)
    assert_one_sentence(out, "key 'teacher' is required")
