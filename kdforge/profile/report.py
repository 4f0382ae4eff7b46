"""The run's report: one row per student as Markdown, self-contained HTML (tables and plots
embedded) and JSON, with the conventions of every number stated in words."""

import base64
import html
from pathlib import Path

from kdforge import atomic
from kdforge.profile.latency import figure_text, noise_interval
from kdforge.profile.plots import layer_cost_plot, pareto_front, tradeoff_plot, training_curves_plot

LATENCY = "latency"  # a column format: the median with its spread, or marked unstable
LATENCY_SOURCES = {"ort_p50_ms": "onnxruntime", "torch_p50_ms": "pytorch", "trt_p50_ms": "tensorrt"}

COLUMNS = [
    ("student", "student", "{}"), ("method", "method", "{}"), ("model", "model", "{}"),
    ("test_accuracy", "test acc. (%)", "{:.2%}"), ("params_training", "params (train)", "{:,}"),
    ("params", "params (deploy)", "{:,}"), ("macs", "MACs", "{:,}"), ("mul", "mul", "{:,}"), ("add", "add", "{:,}"), ("xnor", "XNOR", "{:,}"),
    ("peak_activation_kib", "peak act. (KiB)", "{:,.1f}"), ("energy_uj_fp32", "energy fp32 (uJ, est.)", "{:.3f}"),
    ("precision", "precision", "{}"), ("energy_uj_deployed", "energy at precision (uJ, est.)", "{:.3f}"),
    ("graph", "graph", "{}"), ("ort_p50_ms", "ORT p50 (ms)", LATENCY), ("ort_p90_ms", "ORT p90 (ms)", "{:.3f}"),
    ("ort_precision_p50_ms", "ORT p50 at precision (ms)", LATENCY), ("precision_accuracy_drop", "acc. drop at precision (points)", "{:.2f}"),
    ("torch_p50_ms", "PyTorch p50 (ms)", LATENCY), ("trt_p50_ms", "TensorRT p50 (ms)", LATENCY),
    ("max_abs_diff", "max abs diff ORT vs PyTorch", "{:.2e}"), ("onnx_flavour", "ONNX", "{}"),
]


def columns(context: dict) -> list[tuple[str, str, str]]:
    """The fixed columns, then per configured target its latency estimate and, where TensorRT
    was measured on that kind of GPU, the ratio of measurement to estimate."""
    extra = []
    for name in context.get("targets", []):
        extra.append((f"est_{name}_us", f"{name} {context['precision']} est. (us)", "{:,.2f}"))
        extra.append((f"trt_over_est_{name}", f"TensorRT / {name} est.", "{:.2f}"))
    return COLUMNS + extra


def _cell(row: dict, key: str, fmt: str) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    if fmt == LATENCY:
        return figure_text(row["latency_figures"][key])
    return fmt.format(value).rstrip("%")


def _estimate_cells(profile: dict) -> dict:
    cells, measured = {}, profile["latency"].get("tensorrt", {}).get("p50_ms")
    gpu = profile.get("environment", {}).get("gpu") or ""
    for name, estimate in profile.get("estimates", {}).items():
        cells[f"est_{name}_us"] = estimate["total_ms"] * 1e3
        same_kind = bool(estimate.get("gpu_name_contains")) and estimate["gpu_name_contains"] in gpu
        cells[f"trt_over_est_{name}"] = measured / estimate["total_ms"] if measured and same_kind else None
    return cells


def _latency_cells(lat: dict, precision: str) -> dict:
    """The latency columns' medians, and under "latency_figures" their whole figures (interval, stability, rounds)."""
    sources = {**LATENCY_SOURCES, "ort_precision_p50_ms": f"onnxruntime_{precision}"}
    figures = {key: {k: lat[backend][k] for k in ("p50_ms", "ci_low_ms", "ci_high_ms", "stable", "rounds")}
               for key, backend in sources.items() if backend in lat}
    return {**{key: figures[key]["p50_ms"] if key in figures else None for key in sources}, "latency_figures": figures}


def label_graphs(rows: list[dict]) -> dict[str, list[str]]:
    """Gives each row a "graph" letter, one per distinct deployed ONNX graph, and returns the
    students of every letter that more than one student shares."""
    letters, members = {}, {}
    for r in rows:
        letter = letters.setdefault(r["graph_digest"], _letter(len(letters)))
        r["graph"] = letter
        members.setdefault(letter, []).append(r["student"])
    return {letter: names for letter, names in members.items() if len(names) > 1}


def _letter(i: int) -> str:
    return chr(ord("A") + i) if i < 26 else f"G{i + 1}"


def latency_front(rows: list[dict], tolerance: float) -> list[int]:
    """The Pareto front of ONNX Runtime latency against accuracy, latencies within the noise tied."""
    intervals = [_interval(r, "ort_p50_ms", tolerance) for r in rows]
    return pareto_front([(r["ort_p50_ms"], r["test_accuracy"]) for r in rows],
                        lambda i, j: intervals[i][0] <= intervals[j][1] and intervals[j][0] <= intervals[i][1])


def _interval(row: dict, key: str, tolerance: float) -> tuple[float, float]:
    return noise_interval(row["latency_figures"][key], tolerance)


def student_row(name: str, student_cfg, distill: dict, strip: dict, verify: dict, profile: dict, export: dict) -> dict:
    totals, lat = profile["costs"]["totals"], profile["latency"]
    precision = getattr(student_cfg, "precision", "fp32")
    low = verify.get(f"onnxruntime-{precision}") if precision != "fp32" else None
    return {**_estimate_cells(profile),
        "student": name, "method": student_cfg.method, "model": student_cfg.model,
        "test_accuracy": distill["test_accuracy"], "params_training": strip["params_training"], "params": totals["params"],
        "macs": totals["macs"], "mul": totals["mul"], "add": totals["add"], "xnor": totals.get("xnor", 0),
        "peak_activation_kib": totals["peak_activation_bytes"] / 1024, "energy_uj_fp32": totals["energy_uj"]["fp32"],
        "energy_uj_int8": totals["energy_uj"]["int8"],
        "precision": precision, "energy_uj_deployed": totals["energy_uj"][precision],
        **_latency_cells(lat, precision), "ort_p90_ms": lat["onnxruntime"]["p90_ms"],
        "graph_digest": lat["onnxruntime"].get("graph"),
        "precision_accuracy_drop": low["accuracy_drop"] * 100 if low else None,
        "max_abs_diff": verify["onnxruntime"]["max_abs_diff"], "onnx_flavour": export["flavour"],
        "sweep": profile.get("sweep", {}),
    }


def _notes(context: dict) -> list[str]:
    lat = context["latency_setup"]
    teacher = (f"Teacher: {context['teacher_model']}, test accuracy {context['teacher_accuracy'] * 100:.2f}%."
               if context["teacher_model"] else "No teacher.")
    return [
        f"{teacher} Data: {context['data']}.",
        "MACs: multiply-accumulates of convolutions and linear layers; one MAC is 1 multiplication + 1 addition "
        "(FLOPs = 2 x MACs); an adder-convolution MAC is 2 additions and no multiplication; a binary MAC is "
        "1 XNOR + 1 (popcount) addition. Batch norm and "
        "element-wise work are counted apart (profile.json), not in these totals.",
        "peak act.: the largest sum of live activations over one inference at batch 1, from tensor lifetimes in the graph.",
        f"energy: an estimate of arithmetic energy per inference from the mul/add counts ({context['energy_source']}); "
        "fp32, and at the student's precision (int8 and fp16 shipped beside fp32; the adder and binary counts as fp32's), in the table; "
        "int32, fp16 and int8 in summary.json. ORT p50 and acc. drop at precision: the model.<precision>.onnx file's.",
        f"Latency: batch {lat['batch_size']}, {lat['threads']} intra-op thread(s); {lat['method']}; p90 pools every "
        f"timed call; CPU: {context['environment']['cpu']}; "
        f"onnxruntime {context['environment']['onnxruntime']}, torch {context['environment']['torch']}.",
        "graph: students with the same letter deploy identical ONNX graphs (operators, shapes, attributes; weights aside), "
        "timed once and sharing their figures (PyTorch's likewise where the modules match)"
        + "".join(f"; {letter} = {', '.join(names)}" for letter, names in context.get("shared_graphs", {}).items()) + ".",
        f"Pareto front: latencies within {lat['tolerance']:.0%} of each other or within their intervals count as tied; "
        "a student is dominated by one at least as accurate and not slower beyond that noise, better in one of the two.",
        *([f"est.: an estimate of the GPU's time for one inference at batch 1 on each target at {context['precision']} "
           "(kdforge/profile/gpu_cost.py: the layers fused into kernels as TensorRT fuses them, each kernel its launch "
           "plus the larger of its tensor-core time after tile and wave quantisation and its DRAM time beyond the L2 "
           "cache; adder layers on CUDA cores). Not a measurement: on ResNet-50 it is within 1.5x of MLPerf's offline "
           "throughput but optimistic at batch 1 (README, 'Latency on the target device'). 'TensorRT / est.' appears "
           "where an engine was timed on that kind of GPU."] if context.get("targets") else []),
        "max abs diff: largest |ONNX Runtime - PyTorch| over all test-split logits. ONNX: 'standard' files use "
        "standard operators only; 'custom' files hold kdforge::AdderConv2d nodes, run by kdforge.export.ort.session "
        "(or the TensorRT plugin).",
    ]


def _table(rows: list[dict], columns) -> list[list[str]]:
    return [[_cell(r, key, fmt) for key, _, fmt in columns] for r in rows]


def _sweep_rows(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["student", "backend", "batch", "p50 (ms)", "images/s"]
    body = [[r["student"], backend, str(s["batch"]), figure_text(s), f"{s['images_per_s']:,.0f}"]
            for r in rows for backend, sweep in r["sweep"].items() for s in sweep]
    return header, body


def _markdown_table(header: list[str], body: list[list[str]], left: int = 1) -> str:
    rule = "|" + "|".join("---" if i < left else "---:" for i in range(len(header))) + "|"
    return "\n".join(["| " + " | ".join(header) + " |", rule, *("| " + " | ".join(r) + " |" for r in body)])


def markdown(rows: list[dict], context: dict, figures: list[Path]) -> str:
    main = _markdown_table([t for _, t, _ in columns(context)], _table(rows, columns(context)), left=3)
    notes = "\n".join(f"- {n}" for n in _notes(context))
    front = ", ".join(rows[i]["student"] for i in latency_front(rows, context["latency_setup"]["tolerance"]))
    sweep = _markdown_table(*_sweep_rows(rows), left=2)
    images = "\n".join(f"![{p.stem}]({p.name})" for p in figures)
    return (f"# kdforge report: {context['name']}\n\n{main}\n\n{notes}\n\n"
            f"Pareto front (ONNX Runtime latency vs accuracy): {front}.\n\n## Batch sweep\n\n{sweep}\n\n## Figures\n\n{images}\n")


def _html_table(header: list[str], body: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><tr>{head}</tr>{rows}</table>"


def html_page(rows: list[dict], context: dict, figures: list[Path]) -> str:
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in _notes(context))
    images = "".join(f"<figure><img alt='{html.escape(p.stem)}' src='data:image/png;base64,"
                     f"{base64.b64encode(p.read_bytes()).decode()}'/></figure>" for p in figures)
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1em}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}img{max-width:100%}")
    title = html.escape(f"kdforge report: {context['name']}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{style}</style></head><body>"
            f"<h1>{title}</h1>{_html_table([t for _, t, _ in columns(context)], _table(rows, columns(context)))}<ul>{notes}</ul>"
            f"<h2>Batch sweep</h2>{_html_table(*_sweep_rows(rows))}<h2>Figures</h2>{images}</body></html>\n")


def write_report(folder: Path, rows: list[dict], context: dict, layers: dict[str, list[dict]],
                 histories: dict[str, list[dict]] | None = None) -> list[Path]:
    """`histories`: per-epoch training records by network (teacher and students) for the curves."""
    context["shared_graphs"] = label_graphs(rows)
    tolerance = context["latency_setup"]["tolerance"]
    curves = [training_curves_plot(histories, folder / "training_curves.png")] if histories else []
    figures = [
        *curves,
        tradeoff_plot(rows, "ort_p50_ms", f"ONNX Runtime latency p50 (ms, batch {context['latency_setup']['batch_size']})",
                      folder / "accuracy_vs_latency.png", latency_front(rows, tolerance),
                      [_interval(r, "ort_p50_ms", tolerance) for r in rows]),
        tradeoff_plot(rows, "macs", "MACs per inference", folder / "accuracy_vs_macs.png"),
        *(layer_cost_plot(name, layer_costs, folder / f"layers_{name}.png") for name, layer_costs in layers.items()),
    ]
    paths = [folder / "report.md", folder / "report.html", folder / "summary.json"]
    atomic.write_text(paths[0], markdown(rows, context, figures))
    atomic.write_text(paths[1], html_page(rows, context, figures))
    atomic.write_json(paths[2], {"context": context, "students": rows})
    return paths + figures
