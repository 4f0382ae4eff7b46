import json

import pytest

from conftest import tiny_config
from kdforge.config import parse_config
from kdforge.errors import UserError
from kdforge.pipeline.runner import run_pipeline


class Log(list):
    def __call__(self, line):
        self.append(line)

    def ran(self):
        return [line.split("]")[0][1:] for line in self if "up to date" not in line]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    log = Log()
    run_pipeline(parse_config(tiny_config(run_dir)), log=log)
    return run_dir, log


def test_every_stage_runs_and_writes_its_artifacts(finished_run):
    run_dir, log = finished_run
    assert log.ran() == ["data", "teacher"] + [f"{st}/{s}" for s in ("ce", "kd", "ann") for st in ("distill", "strip", "export", "verify")] + ["profile", "report"]
    for rel in ["config.yaml", "manifest.json", "teacher/checkpoint.pt", "teacher/metrics.json", "report/report.md", "report/report.html", "report/summary.json"]:
        assert (run_dir / rel).is_file(), rel
    for s in ("ce", "kd", "ann"):
        for rel in ["checkpoint.pt", "deploy.pt", "model.onnx", "verify.json", "profile.json"]:
            assert (run_dir / "students" / s / rel).is_file(), rel
    manifest = json.loads((run_dir / "manifest.json").read_text())["units"]
    assert all(u["status"] == "done" for u in manifest.values())


def test_report_has_one_row_per_student_with_the_issue_columns(finished_run):
    run_dir, _ = finished_run
    report = (run_dir / "report" / "report.md").read_text()
    main_table = report.split("\n\n")[1].splitlines()
    rows = main_table[2:]
    assert [r.split(" | ")[0] for r in rows] == ["| ce", "| kd", "| ann"]
    assert rows[2].endswith("| custom |")  # the AdderNet file holds kdforge nodes
    assert "## Batch sweep" in report and "| ann | onnxruntime | 64 |" in report
    for figure in ("training_curves.png", "accuracy_vs_latency.png", "accuracy_vs_macs.png", "layers_ann.png"):
        assert (run_dir / "report" / figure).stat().st_size > 1000
    page = (run_dir / "report" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 1 + 2 + 3  # self-contained: every figure embedded
    for column in ("test acc.", "params", "MACs", "ORT p50", "ORT p90", "max abs diff"):
        assert column in report
    assert "1 intra-op thread" in report and "interleaved" in report
    # ce and kd deploy the same ResNet-8 graph: one letter, one shared figure, said so in the notes
    graphs = {r.split(" | ")[0][2:]: r.split(" | ")[14] for r in rows}
    assert graphs["ce"] == graphs["kd"] != graphs["ann"] and f"{graphs['ce']} = ce, kd" in report
    assert rows[0].split(" | ")[15] == rows[1].split(" | ")[15] and " ±" in rows[0].split(" | ")[15]
    summary = json.loads((run_dir / "report" / "summary.json").read_text())
    assert summary["students"][0]["macs"] > 0 and summary["students"][0]["max_abs_diff"] < 1e-3


def test_second_run_skips_everything(finished_run):
    run_dir, _ = finished_run
    log = Log()
    run_pipeline(parse_config(tiny_config(run_dir)), log=log)
    assert log.ran() == [] and all("up to date, skipped" in line for line in log)


def test_changed_student_reruns_only_its_stages_and_the_report(finished_run):
    run_dir, _ = finished_run
    raw = tiny_config(run_dir)
    raw["students"][1]["options"]["temperature"] = 2.0
    log = Log()
    run_pipeline(parse_config(raw), log=log)
    assert log.ran() == ["distill/kd", "strip/kd", "export/kd", "verify/kd", "profile", "report"]  # profile: all students, together
    run_pipeline(parse_config(tiny_config(run_dir)), log=Log())  # back to the fixture's state


def test_only_and_force(finished_run):
    run_dir, _ = finished_run
    log = Log()
    run_pipeline(parse_config(tiny_config(run_dir)), force=True, only=["export"], log=log)
    assert log.ran() == ["export/ce", "export/kd", "export/ann"]


def test_addernet_student_counts_additions_not_multiplications(finished_run):
    summary = json.loads((finished_run[0] / "report" / "summary.json").read_text())
    ann = next(r for r in summary["students"] if r["student"] == "ann")
    first_conv_and_fc = 16 * 1 * 9 * 64 + 64 * 10
    assert ann["mul"] == first_conv_and_fc
    assert ann["add"] == 2 * (ann["macs"] - first_conv_and_fc) + first_conv_and_fc


def test_teacher_is_optional_when_no_method_needs_one(tmp_path):
    raw = tiny_config(tmp_path)
    raw.pop("teacher")
    raw["students"] = [raw["students"][0]]
    log = Log()
    run_pipeline(parse_config(raw), log=log)
    assert "teacher" not in log.ran() and "report" in log.ran()
    raw["students"] = tiny_config(tmp_path)["students"][1:2]
    with pytest.raises(UserError, match="students\\[0\\] uses method 'kd', which learns from a teacher"):
        parse_config(raw)


def test_only_refuses_a_stage_whose_inputs_are_missing(tmp_path):
    with pytest.raises(UserError, match="stage 'strip/ce' needs 'distill/ce', which is missing or out of date"):
        run_pipeline(parse_config(tiny_config(tmp_path)), only=["strip"], log=Log())


def test_verification_beyond_tolerance_fails_and_keeps_artifacts(finished_run):
    run_dir, _ = finished_run
    raw = tiny_config(run_dir, verify={"atol": 1e-12})
    with pytest.raises(UserError, match="student 'ce' on onnxruntime differs from PyTorch .* beyond verify.atol=1e-12"):
        run_pipeline(parse_config(raw), log=Log())
    verdict = json.loads((run_dir / "students" / "ce" / "verify.json").read_text())["onnxruntime"]
    assert verdict["passed"] is False and (run_dir / "students" / "ce" / "model.onnx").is_file()
    manifest = json.loads((run_dir / "manifest.json").read_text())["units"]
    assert manifest["verify/ce"]["status"] == "failed" and manifest["teacher"]["status"] == "done"
    run_pipeline(parse_config(tiny_config(run_dir)), log=Log())
