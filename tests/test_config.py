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
