import json

import pytest

from conftest import report_tables, tiny_config
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
    per_student = [f"{st}/{s}" for s in ("ce", "kd", "ann") for st in ("distill", "strip", "export", "verify")]
    assert log.ran() == ["data", "teacher"] + per_student + ["profile", "report"]
    for rel in ["config.yaml", "manifest.json", "teacher/checkpoint.pt", "teacher/metrics.json", "report/report.md", "report/report.html",
                "report/summary.json"]:
        assert (run_dir / rel).is_file(), rel
    for s in ("ce", "kd", "ann"):
        for rel in ["checkpoint.pt", "deploy.pt", "model.onnx", "verify.json", "profile.json"]:
            assert (run_dir / "students" / s / rel).is_file(), rel
    manifest = json.loads((run_dir / "manifest.json").read_text())["units"]
    assert all(u["status"] == "done" for u in manifest.values())


def test_report_has_one_row_per_student_with_the_issue_columns(finished_run):
    run_dir, _ = finished_run
    report = (run_dir / "report" / "report.md").read_text()
    main, details, sweep = report_tables(report)
    assert [r["student"] for r in main] == [r["student"] for r in details] == ["ce", "kd", "ann"]
    assert list(main[0]) == ["student", "method", "model", "precision (drop)", "test acc. (%)", "params", "MACs", "mul / add",
                             "ORT p50 (ms)"]  # what decides; at most about 12 columns with targets
    assert details[2]["ONNX"] == "custom"  # the AdderNet file holds kdforge nodes
    mul, add = (int(details[2][key].replace(",", "")) for key in ("mul", "add"))
    assert main[2]["mul / add"] == f"{mul / 1e3:.3g} k / {add / 1e6:.3g} M"
    assert main[2]["MACs"] == f"{int(details[2]['MACs'].replace(',', '')) / 1e3:.3g} k"
    for figure in ("training_curves.png", "accuracy_vs_latency.png", "accuracy_vs_macs.png"):
        assert (run_dir / "report" / figure).stat().st_size > 1000
    # ce and kd deploy the same ResNet-8 graph: one letter, one shared figure, one sweep and one layer plot per graph
    graphs = {r["student"]: r["graph"] for r in details}
    assert graphs["ce"] == graphs["kd"] != graphs["ann"] and f"{graphs['ce']} = ce, kd" in report
    assert main[0]["ORT p50 (ms)"] == main[1]["ORT p50 (ms)"] and " ±" in main[0]["ORT p50 (ms)"]
    layer_plots = sorted(p.name for p in (run_dir / "report").glob("layers_*.png"))
    assert layer_plots == [f"layers_{graphs['ce']}.png", f"layers_{graphs['ann']}.png"]
    assert {(r["graph"], r["backend"], r["batch"]) for r in sweep} >= {(f"graph {graphs['ann']} (ann)", "onnxruntime", "64")}
    assert len({r["graph"] for r in sweep}) == 2 and sum(r["graph"].startswith(f"graph {graphs['ce']} (ce, kd)") for r in sweep) > 0
    page = (run_dir / "report" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 1 + 2 + 2  # self-contained: every figure embedded
    assert page.index("id='recommendations'") < page.index("id='tradeoff'") < page.index("id='main'") < page.index("<details>")
    for column in ("test acc.", "params", "MACs", "ORT p50", "ORT p90", "max abs diff"):
        assert column in report
    assert "1 intra-op thread" in report and "interleaved" in report
    summary = json.loads((run_dir / "report" / "summary.json").read_text())
    assert summary["students"][0]["macs"] > 0 and summary["students"][0]["max_abs_diff"] < 1e-3


def test_the_report_recommends_the_fastest_student_within_a_point_of_the_best(finished_run):
    run_dir, _ = finished_run
    rows = json.loads((run_dir / "report" / "summary.json").read_text())["students"]
    best = max(r["test_accuracy"] for r in rows)
    near = [r for r in rows if r["test_accuracy"] >= best - 0.01]
    fastest = min(near, key=lambda r: (r["ort_p50_ms"], -r["test_accuracy"]))
    report = (run_dir / "report" / "report.md").read_text()
    line = next(line for line in report.splitlines() if line.startswith("- fp32 on this CPU"))
    assert line.startswith(f"- fp32 on this CPU (ONNX Runtime, batch 1): {fastest['student']} ({fastest['method']}, ")
    assert f"{fastest['test_accuracy'] * 100:.2f}% at {fastest['ort_p50_ms']:.3f} ms" in line


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


def test_a_method_below_plain_training_is_named_with_what_its_validation_curve_did():
    from kdforge.profile.report import against_plain_training

    rows = [{"student": name, "method": method, "model": model, "test_accuracy": acc} for name, method, model, acc in (
        ("ce", "ce", "resnet8", 0.98), ("kd", "kd", "resnet8", 0.985), ("at", "at", "resnet8", 0.95),
        ("ann", "ce", "adder", 0.96), ("pkkd", "pkkd", "adder", 0.955), ("lone", "kd", "wrn", 0.5))]
    rising = [{"val_accuracy": v} for v in (0.5, 0.6, 0.7, 0.8, 0.9)]
    peaked = [{"val_accuracy": v} for v in (0.5, 0.97, 0.9, 0.91)]
    lines = against_plain_training(rows, {"at": peaked, "pkkd": rising})
    assert lines == [
        "resnet8, against ce (cross-entropy alone, 98.00%): kd +0.50, at -3.00 points.",
        "at (at) is 3.00 points below ce: its validation accuracy peaked at epoch 2 of 4 (97.00%) and ended at 91.00%.",
        "adder, against ann (cross-entropy alone, 96.00%): pkkd -0.50 points.",
        "pkkd (pkkd) is 0.50 points below ann: its validation accuracy was still rising at its last epoch (90.00%): "
        "a longer schedule may close the gap.",
    ]  # kd is ahead; a baseline within a point is not flagged; a model without a plain twin gets no line


def test_which_method_is_the_baseline_and_which_claims_to_beat_it_are_facts_of_the_methods():
    from kdforge.profile.report import against_plain_training
    from kdforge.train.methods import register_method
    from kdforge.train.methods.kd import KnowledgeDistillation

    @register_method("test_claims_to_beat_plain_training")
    class Claiming(KnowledgeDistillation):
        beats_baseline = True

    rows = [{"student": name, "method": method, "model": "m", "test_accuracy": acc} for name, method, acc in (
        ("plain", "ce", 0.98), ("kd", "kd", 0.979), ("claims", "test_claims_to_beat_plain_training", 0.979))]
    lines = against_plain_training(rows, {})
    assert [line.split(" ")[0] for line in lines[1:]] == ["claims"]  # 0.1 below: flagged for the claiming method only


def test_the_tradeoff_plot_labels_a_crowded_corner_once_and_a_distant_point_by_itself():
    from kdforge.profile.plots import _labels

    rows = [{"student": s} for s in ("kd", "ce", "tofd", "fitnet", "binary", "pkkd")]
    points = [(0.028, 99.4), (0.028, 98.9), (0.029, 98.9), (0.038, 98.1), (0.038, 74.7), (0.45, 96.1)]
    assert _labels(rows, points) == {(0.028, 99.4): "kd: 99.4%\nce, tofd: 98.9%", (0.038, 98.1): "fitnet",
                                     (0.038, 74.7): "binary", (0.45, 96.1): "pkkd"}
