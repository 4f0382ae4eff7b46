"""The stage records' schema (kdforge/results.py): what a writer renames fails where it is written,
and a record edited by hand is one sentence when the report reads it."""

import json

import pytest
from pydantic import ValidationError

from kdforge.errors import UserError
from kdforge.results import ProfileRecord, VerifyRecord, read_record

VERDICT = {"backend": "onnxruntime", "samples": 4, "max_abs_diff": 1e-6, "top1_agreement": 1.0, "accuracy_pytorch": 0.75,
           "accuracy_backend": 0.75, "accuracy_drop": 0.0, "atol": 1e-3, "atol_key": "verify.atol", "min_agreement": 0.99,
           "passed": True}
COUNTS = {"pytorch": {"conv": 10}, "onnx": {"conv": 10}, "agree": True, "note": ""}


def test_verify_json_round_trips_and_a_renamed_key_fails_at_the_writer():
    raw = {"onnxruntime": VERDICT, "openvino": {**VERDICT, "backend": "openvino"}, "counts": COUNTS}
    assert VerifyRecord.from_json(raw).to_json() == {**raw, "onnxruntime": {**VERDICT, "max_accuracy_drop": None, "cpu": None,
                                                                              "first_divergence": None},
                                                     "openvino": {**VERDICT, "backend": "openvino", "max_accuracy_drop": None,
                                                                  "cpu": None, "first_divergence": None}}
    renamed = {k if k != "top1_agreement" else "top1" : v for k, v in VERDICT.items()}
    with pytest.raises(ValidationError, match="top1"):
        VerifyRecord.from_json({"onnxruntime": renamed, "counts": COUNTS})


def test_a_hand_edited_record_is_one_sentence(tmp_path):
    path = tmp_path / "profile.json"
    path.write_text(json.dumps({"costs": {}, "environment": {}, "latency": {"onnxruntime": {"p50_ms": "fast"}}}))
    with pytest.raises(UserError, match=r"is not the record kdforge writes there \(key latency.onnxruntime.p50_ms"):
        read_record(path, ProfileRecord.model_validate)
    path.write_text(json.dumps({"onnxruntime": VERDICT}))
    with pytest.raises(UserError, match="key 'counts'"):
        read_record(path, VerifyRecord.from_json)
