"""The artifact registry (kdforge.export.artifacts): a deployable file registered from a test
module alone is exported, verified, timed and reported by the pipeline, like the built-in ones."""

import json

import onnx
import pytest

from conftest import report_tables, tiny_config
from kdforge.config import parse_config
from kdforge.export.artifacts import Artifact, Built, Runner, base, register_artifact


class ToyFile(Artifact):
    """model.toy.onnx: model.onnx with a doc string, run by ONNX Runtime under another name."""
    name, suffix, runtime, needs = "toy", ".toy.onnx", "Toy", ("onnxruntime",)

    def build(self, job) -> Built:
        model = onnx.load(str(job.path(".onnx")))
        model.doc_string = "a toy artifact"
        onnx.save(model, str(self.path(job)))
        return Built([self.path(job)], {"toy_bytes": self.path(job).stat().st_size}, "model.toy.onnx (a toy)")

    def open(self, path, threads: int) -> Runner:
        from kdforge.export import ort

        session = ort.session(path, threads=threads)
        return Runner(lambda x: ort.run(session, x), {"backend": "toy"})


@pytest.fixture
def toy_registered():
    register_artifact(ToyFile)
    yield
    base._REGISTRY.pop(ToyFile.name)


def test_a_registered_artifact_is_exported_verified_timed_and_reported(tmp_path, toy_registered):
    from kdforge.pipeline.runner import run_pipeline

    raw = tiny_config(tmp_path / "run")
    del raw["teacher"]  # neither student learns from one
    raw["students"] = [{**raw["students"][0], "deploy": ["toy"]}, {**raw["students"][0], "name": "kd"}]
    run_pipeline(parse_config(raw), log=lambda line: None)
    folder = tmp_path / "run" / "students" / "ce"
    assert onnx.load(str(folder / "model.toy.onnx")).doc_string == "a toy artifact"
    verify = json.loads((folder / "verify.json").read_text())
    assert verify["toy"]["passed"] and verify["toy"]["max_abs_diff"] <= 1e-3
    profile = json.loads((folder / "profile.json").read_text())
    assert profile["latency"]["toy"]["backend"] == "toy" and profile["latency"]["toy"]["p50_ms"] > 0
    assert "toy" not in json.loads((tmp_path / "run" / "students" / "kd" / "profile.json").read_text())["latency"]
    main, details = report_tables((tmp_path / "run" / "report" / "report.md").read_text())[:2]
    assert main[0]["Toy p50 (ms)"] != "-" and main[1]["Toy p50 (ms)"] == "-"
    assert details[0]["Toy p50 (ms)"] != "-"


def test_names_are_one_key_each(toy_registered):
    class Clash(ToyFile):
        name, aliases = "toy2", ("fp32",)

    with pytest.raises(ValueError, match="'fp32' is taken by 'onnxruntime'"):
        register_artifact(Clash)


def test_kdforge_export_builds_what_deploy_names(tmp_path, capsys):
    from kdforge.cli import main
    from kdforge.export.strip import save_deployed
    from kdforge.train.models import create_model

    save_deployed(tmp_path / "deploy.pt", create_model("resnet8", 10, 1),
                  {"model": "resnet8", "model_args": {}, "num_classes": 10, "in_channels": 1, "image_size": 8})
    assert main(["export", str(tmp_path / "deploy.pt"), "--deploy", "fp16", "-o", str(tmp_path / "net.onnx")]) == 0
    assert (tmp_path / "net.onnx").is_file() and (tmp_path / "net.fp16.onnx").is_file()
    assert main(["export", str(tmp_path / "deploy.pt"), "--deploy", "int8"]) == 2
    assert "calibrated on training images, which only `kdforge run` has" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "deploy.pt"), "--deploy", "tflite"]) == 2
    assert "'tflite' is not a deployable artifact" in capsys.readouterr().err
    adder = tmp_path / "adder" / "deploy.pt"
    adder.parent.mkdir()
    save_deployed(adder, create_model("resnet8_adder", 10, 1),
                  {"model": "resnet8_adder", "model_args": {}, "num_classes": 10, "in_channels": 1, "image_size": 8})
    assert main(["export", str(adder), "--deploy", "fp16"]) == 2  # refused before anything is written
    assert "adder student, which cannot deploy onnxruntime-fp16" in capsys.readouterr().err and not (adder.parent / "model.onnx").exists()
    main(["export", "--list"])
    listed = capsys.readouterr().out
    assert "onnxruntime-int8" in listed and "tensorrt" in listed
