"""The run's report: one row per student, as Markdown, self-contained HTML and JSON."""

import html
from pathlib import Path

from kdforge import atomic

COLUMNS = [
    ("student", "student", "{}"), ("method", "method", "{}"), ("model", "model", "{}"),
    ("test_accuracy", "test acc. (%)", "{:.2f}"), ("params_training", "params (train)", "{:,}"),
    ("params", "params (deploy)", "{:,}"), ("macs", "MACs", "{:,}"), ("mul", "mul", "{:,}"), ("add", "add", "{:,}"),
    ("peak_activation_kib", "peak act. (KiB)", "{:,.1f}"),
    ("ort_p50_ms", "ORT p50 (ms)", "{:.3f}"), ("ort_p90_ms", "ORT p90 (ms)", "{:.3f}"),
    ("torch_p50_ms", "PyTorch p50 (ms)", "{:.3f}"), ("max_abs_diff", "max abs diff ORT vs PyTorch", "{:.2e}"),
    ("onnx_flavour", "ONNX", "{}"),
]


def _cell(value, fmt: str) -> str:
    if value is None:
        return "-"
    return fmt.format(value * 100 if fmt == "{:.2f}" else value)


def student_row(name: str, student_cfg, distill: dict, strip: dict, verify: dict, profile: dict, export: dict) -> dict:
    totals = profile["costs"]["totals"]
    return {
        "student": name, "method": student_cfg.method, "model": student_cfg.model,
        "test_accuracy": distill["test_accuracy"], "params_training": strip["params_training"], "params": totals["params"],
        "macs": totals["macs"], "mul": totals["mul"], "add": totals["add"],
        "peak_activation_kib": totals["peak_activation_bytes"] / 1024,
        "ort_p50_ms": profile["latency"]["onnxruntime"]["p50_ms"], "ort_p90_ms": profile["latency"]["onnxruntime"]["p90_ms"],
        "torch_p50_ms": profile["latency"]["pytorch"]["p50_ms"], "max_abs_diff": verify["onnxruntime"]["max_abs_diff"],
        "onnx_flavour": export["flavour"],
    }


def _notes(context: dict) -> list[str]:
    lat = context["latency_setup"]
    teacher = (f"Teacher: {context['teacher_model']}, test accuracy {context['teacher_accuracy'] * 100:.2f}%."
               if context["teacher_model"] else "No teacher.")
    return [
        f"{teacher} Data: {context['data']}.",
        "MACs: multiply-accumulates of convolutions and linear layers; one MAC is 1 multiplication + 1 addition "
        "(FLOPs = 2 x MACs); an adder-convolution MAC is 2 additions and no multiplication. Batch norm and "
        "element-wise work are not included.",
        f"Latency: batch {lat['batch_size']}, {lat['threads']} intra-op thread(s), {lat['warmup']} warm-up runs excluded, "
        f"percentiles over {lat['runs']} runs; CPU: {context['environment']['cpu']}; "
        f"onnxruntime {context['environment']['onnxruntime']}, torch {context['environment']['torch']}.",
        "max abs diff: largest |ONNX Runtime - PyTorch| over all test-split logits. ONNX: 'standard' files use "
        "standard operators only; 'custom' files hold kdforge::AdderConv2d nodes, run by kdforge.export.ort.session "
        "(or the TensorRT plugin).",
    ]


def markdown(rows: list[dict], context: dict) -> str:
    header = "| " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    rule = "|" + "|".join("---" if i < 3 else "---:" for i in range(len(COLUMNS))) + "|"
    body = ["| " + " | ".join(_cell(r.get(key), fmt) for key, _, fmt in COLUMNS) + " |" for r in rows]
    notes = "\n".join(f"- {n}" for n in _notes(context))
    return f"# kdforge report: {context['name']}\n\n" + "\n".join([header, rule, *body]) + f"\n\n{notes}\n"


def html_page(rows: list[dict], context: dict) -> str:
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title, _ in COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(r.get(key), fmt))}</td>" for key, _, fmt in COLUMNS) + "</tr>" for r in rows
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in _notes(context))
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>kdforge report: {html.escape(context['name'])}</title>"
            f"<style>{style}</style></head><body><h1>kdforge report: {html.escape(context['name'])}</h1>"
            f"<table><tr>{head}</tr>{body}</table><ul>{notes}</ul></body></html>\n")


def write_report(folder: Path, rows: list[dict], context: dict) -> list[Path]:
    paths = [folder / "report.md", folder / "report.html", folder / "summary.json"]
    atomic.write_text(paths[0], markdown(rows, context))
    atomic.write_text(paths[1], html_page(rows, context))
    atomic.write_json(paths[2], {"context": context, "students": rows})
    return paths
