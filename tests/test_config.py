import pytest

from conftest import tiny_config
from kdforge.config import load_config, parse_config
from kdforge.errors import UserError


def test_tiny_config_parses_and_fills_defaults(tmp_path):
    cfg = parse_config(tiny_config(tmp_path))
    assert cfg.students[1].options == {"temperature": 4.0, "alpha": 0.9}
    assert cfg.data.augment.hflip is False  # digits are not mirror-symmetric


@pytest.mark.parametrize("mutate,message", [
    (lambda c: c["teacher"].update(trian={}), "key 'teacher.trian' is not a known setting"),
    (lambda c: c["students"][1]["options"].update(temprature=2), "key 'students[1].options.temprature' is not a known setting"),
    (lambda c: c["students"][0]["train"].update(epochs="ten"), "students[0].train.epochs"),
    (lambda c: c["students"][0].update(method="fitnetz"), "unknown method 'fitnetz'"),
    (lambda c: c["teacher"].update(model="resnet21"), "unknown model 'resnet21'"),
    (lambda c: c["students"][1]["options"].update(alpha=1.5), "students[1].options.alpha"),
    (lambda c: c.update(data={"name": "cifar10"}), "set data.root"),
    (lambda c: c["teacher"].update(checkpoint="/nonexistent/teacher.pt"), "teacher.checkpoint"),
    (lambda c: c["students"].append(dict(c["students"][0])), "'ce' appears more than once"),
    (lambda c: c.pop("teacher"), "key 'teacher' is required"),
])
def test_bad_configs_name_the_key(tmp_path, mutate, message):
    raw = tiny_config(tmp_path)
    mutate(raw)
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")) as err:
        parse_config(raw, "x.yaml")
    assert str(err.value).startswith("x.yaml: ")
    assert "\n" not in str(err.value)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML at line"):
        load_config(bad)


def test_deploy_names_what_ships_and_the_older_spellings_still_read_with_a_notice(tmp_path):
    raw = tiny_config(tmp_path / "run")
    raw["students"][0]["deploy"] = ["int8"]
    raw["students"][1]["precision"] = "fp16"
    cfg = parse_config(raw)
    assert cfg.students[0].deploy == ["onnxruntime", "onnxruntime-int8"] and cfg.students[0].precision == "int8"
    assert cfg.students[1].deploy == ["onnxruntime", "onnxruntime-fp16"] and cfg.students[1].precision == "fp16"
    assert cfg.students[2].deploy == ["onnxruntime"] and cfg.students[2].precision == "fp32"
    assert cfg.notices() == ["student 'kd': precision: fp16 is now written deploy: [fp32, fp16]; read as that"]
    raw = tiny_config(tmp_path / "run")
    raw["export"] = {"tensorrt": True, "fp16": True}
    cfg = parse_config(raw)
    assert [s.deploy for s in cfg.students] == [["onnxruntime", "onnxruntime-fp16", "tensorrt"]] * 2 + [["onnxruntime", "tensorrt"]]
    assert len(cfg.notices()) == 2  # the adder student (students[2]) cannot ship fp16: its engine stays fp32


@pytest.mark.parametrize("deploy, message", [
    (["tflite"], "'tflite' is not a deployable artifact; they are onnxruntime (fp32)"),
    (["fp16"], "student 'ann' cannot deploy onnxruntime-fp16: kdforge's adder kernels"),
])
def test_a_deploy_entry_that_cannot_be_built_is_one_sentence(tmp_path, deploy, message):
    raw = tiny_config(tmp_path / "run")
    raw["students"][2]["deploy"] = deploy
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_config(raw)
