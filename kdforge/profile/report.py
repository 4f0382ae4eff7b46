"""The run's report: one row per student as Markdown, self-contained HTML (tables and plots
embedded) and JSON, with the conventions of every number stated in words."""

import base64
import html
from pathlib import Path

from kdforge import atomic
from kdforge.profile.latency import figure_text, noise_interval
from kdforge.profile.plots import layer_cost_plot, pareto_front, tradeoff_plot, training_curves_plot
from kdforge.results import ExportRecord, LatencyFigure, ProfileRecord, VerifyRecord

LATENCY = "latency"  # a column format: the median with its spread, or marked unstable
COMPACT = "compact"  # a column format: 3 significant digits with k, M, G
LATENCY_SOURCES = {"ort_p50_ms": "onnxruntime", "torch_p50_ms": "pytorch"}  # and "<artifact>_p50_ms" per other deployed file
RECOMMEND_WITHIN = 1.0  # points of accuracy below the most accurate that a recommendation gives up for speed

MAIN_COLUMNS = [  # what decides which student to ship; the rest is in DETAIL_COLUMNS
    ("student", "student", "{}"), ("method", "method", "{}"), ("model", "model", "{}"),
    ("precision_cell", "precision (drop)", "{}"), ("test_accuracy", "test acc. (%)", "{:.2%}"),
    ("params", "params", COMPACT), ("macs", "MACs", COMPACT), ("operations", "mul / add", "{}"),
    ("deployed_p50_ms", "ORT p50 (ms)", LATENCY),
]
DETAIL_COLUMNS = [
    ("student", "student", "{}"), ("graph", "graph", "{}"), ("params_training", "params (train)", "{:,}"),
    ("params", "params (deploy)", "{:,}"), ("macs", "MACs", "{:,}"), ("mul", "mul", "{:,}"), ("add", "add", "{:,}"),
    ("xnor", "XNOR", "{:,}"), ("peak_activation_kib", "peak act. (KiB)", "{:,.1f}"),
    ("energy_uj_fp32", "energy fp32 (uJ, est.)", "{:.3f}"), ("energy_uj_deployed", "energy at precision (uJ, est.)", "{:.3f}"),
    ("ort_p50_ms", "ORT p50 fp32 (ms)", LATENCY), ("ort_p90_ms", "ORT p90 fp32 (ms)", "{:.3f}"),
    ("torch_p50_ms", "PyTorch p50 (ms)", LATENCY),
    ("max_abs_diff", "max abs diff ORT vs PyTorch", "{:.2e}"), ("onnx_flavour", "ONNX", "{}"),
    ("int8_target", "INT8 made for", "{}"),
]


def main_columns(context: dict) -> list[tuple[str, str, str]]:
    """The deciding columns, with per other runtime a student ships on (kdforge.export.artifacts) its
    latency at the shipped precision, then per configured target its latency estimate."""
    runtimes = [(_runtime_key(r), f"{r} p50 (ms)", LATENCY) for r in context.get("runtimes", [])]
    return MAIN_COLUMNS + runtimes + [(f"est_{name}_us", f"{name} {context['precision']} est. (us)", "{:,.1f}")
                                      for name in context.get("targets", [])]


def detail_columns(context: dict) -> list[tuple[str, str, str]]:
    """Everything else measured per student, each other deployed file's latency among it; where
    TensorRT ran on a target's kind of GPU, its ratio to the estimate."""
    files = [(f"{name}_p50_ms", f"{label} p50 (ms)", LATENCY) for name, label in context.get("artifacts", [])]
    at = next(i for i, c in enumerate(DETAIL_COLUMNS) if c[0] == "torch_p50_ms") + 1
    return DETAIL_COLUMNS[:at] + files + DETAIL_COLUMNS[at:] + [
        (f"trt_over_est_{name}", f"TensorRT / {name} est.", "{:.2f}") for name in context.get("targets", [])]


def _runtime_key(runtime: str) -> str:
    return f"{runtime.lower().replace(' ', '_')}_shipped_p50_ms"


def deployed_columns(rows: list[dict]) -> tuple[list[str], list[tuple[str, str]]]:
    """The runtimes other than ONNX Runtime that any student ships on, and every deployed file but
    model.onnx in ONNX Runtime as (artifact, label), in the registry's order."""
    from kdforge.export.artifacts import registered

    shipped = {name for r in rows for name in r.get("deployed_artifacts", [])}
    entries = [e for e in registered() if e.name in shipped and e.name != "onnxruntime"]
    return list(dict.fromkeys(e.runtime for e in entries if e.runtime != "ONNX Runtime")), [(e.name, e.label) for e in entries]


def _compact(value: float) -> str:
    for factor, unit in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{unit}"
    return f"{value:g}"


def _cell(row: dict, key: str, fmt: str) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    if fmt == LATENCY:
        return figure_text(row["latency_figures"][key])
    if fmt == COMPACT:
        return _compact(value)
    return fmt.format(value).rstrip("%")


def _estimate_cells(profile: ProfileRecord) -> dict:
    cells, measured = {}, profile.latency["tensorrt"].p50_ms if "tensorrt" in profile.latency else None
    gpu = profile.environment.get("gpu") or ""
    for name, estimate in profile.estimates.items():
        cells[f"est_{name}_us"] = estimate["total_ms"] * 1e3
        same_kind = bool(estimate.get("gpu_name_contains")) and estimate["gpu_name_contains"] in gpu
        cells[f"trt_over_est_{name}"] = measured / estimate["total_ms"] if measured and same_kind else None
    return cells


def _latency_cells(lat: dict[str, LatencyFigure], precision: str) -> dict:
    """The latency columns' medians, and under "latency_figures" their whole figures (interval,
    stability, rounds), and the artifacts timed; "deployed_p50_ms" is ONNX Runtime's file at the
    student's precision, and "<runtime>_shipped_p50_ms" each other runtime's at it (else at fp32)."""
    from kdforge.export.artifacts import registered

    entries = [e for e in registered() if e.name in lat]
    sources = {**LATENCY_SOURCES, **{f"{e.name}_p50_ms": e.name for e in entries if e.name != "onnxruntime"}}
    for runtime in dict.fromkeys(e.runtime for e in entries):
        on_it = {e.precision: e.name for e in entries if e.runtime == runtime}
        key = "deployed_p50_ms" if runtime == "ONNX Runtime" else _runtime_key(runtime)
        sources[key] = on_it.get(precision, on_it.get("fp32"))
    figures = {key: lat[backend].model_dump(include={"p50_ms", "ci_low_ms", "ci_high_ms", "stable", "rounds"})
               for key, backend in sources.items() if backend in lat}
    return {**{key: figures[key]["p50_ms"] if key in figures else None for key in sources},
            "latency_figures": figures, "deployed_artifacts": [e.name for e in entries]}


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
    """The Pareto front of the shipped files' ONNX Runtime latency against accuracy, latencies within the noise tied."""
    intervals = [_interval(r, "deployed_p50_ms", tolerance) for r in rows]
    return pareto_front([(r["deployed_p50_ms"], r["deployed_accuracy"]) for r in rows],
                        lambda i, j: intervals[i][0] <= intervals[j][1] and intervals[j][0] <= intervals[i][1])


def _interval(row: dict, key: str, tolerance: float) -> tuple[float, float]:
    return noise_interval(row["latency_figures"][key], tolerance)


def student_row(name: str, student_cfg, distill: dict, strip: dict, verify: VerifyRecord, profile: ProfileRecord,
                export: ExportRecord) -> dict:
    totals, lat = profile.costs["totals"], profile.latency
    precision = student_cfg.precision
    low = next((v for k, v in verify.verdicts.items() if precision != "fp32" and k == f"onnxruntime-{precision}"), None)
    drop = low.accuracy_drop * 100 if low else None
    xnor = totals.get("xnor", 0)
    qat = student_cfg.qat is not None
    fp32 = verify.verdicts["onnxruntime"]
    accuracy = fp32.accuracy_pytorch if qat else distill["test_accuracy"]  # QAT fine-tuned what ships
    return {**_estimate_cells(profile),
        "student": name, "method": student_cfg.method, "model": student_cfg.model + _pruned_to(strip),
        "test_accuracy": accuracy, "params_training": strip["params_training"], "params": totals["params"],
        "macs": totals["macs"], "mul": totals["mul"], "add": totals["add"], "xnor": xnor,
        "operations": f"{_compact(totals['mul'])} / {_compact(totals['add'])}",
        "precision_cell": (precision + (" QAT" if qat else "")) if drop is None else f"{precision}{' QAT' if qat else ''} ({drop:.2f})",
        "deployed_accuracy": accuracy - (drop or 0) / 100,
        "peak_activation_kib": totals["peak_activation_bytes"] / 1024, "energy_uj_fp32": totals["energy_uj"]["fp32"],
        "energy_uj_int8": totals["energy_uj"]["int8"],
        "precision": precision, "energy_uj_deployed": totals["energy_uj"][precision],
        **_latency_cells(lat, precision), "ort_p90_ms": lat["onnxruntime"].p90_ms,
        "graph_digest": lat["onnxruntime"].graph,
        "precision_accuracy_drop": drop,
        "max_abs_diff": fp32.max_abs_diff, "onnx_flavour": export.flavour,
        "int8_target": _int8_target(export),
        "sweep": profile.sweep,
    }


def _pruned_to(strip: dict) -> str:
    """A pruned student's budget asked and cost reached (kdforge.train.prune), after its model's name."""
    pruned = strip.get("pruned")
    if pruned is None:
        return ""
    return f" pruned to {pruned['reached']:.2f} of its {pruned['measure']} (budget {pruned['budget']})"


def _int8_target(export: ExportRecord) -> str | None:
    """The CPU an INT8 file's integer settings are for, with its scheme, its calibrator and the
    layers the accuracy-aware search left in float (kdforge.export.int8_search)."""
    if export.int8_cpu is None:
        return None
    if export.int8_cpu == "any":
        return "any CPU (exact integer adder)"
    floated = (export.int8_search or {}).get("float_layers", [])
    return f"{export.int8_cpu} ({export.int8_scheme}, {export.calibration})" + (
        "; in float: " + ", ".join(f"{f['layer']} {f['mac_share']:.1%} of MACs" for f in floated) if floated else "")


def _notes(context: dict) -> list[str]:
    lat = context["latency_setup"]
    return [
        "MACs: multiply-accumulates of convolutions and linear layers; one MAC is 1 multiplication + 1 addition "
        "(FLOPs = 2 x MACs); an adder-convolution MAC is 2 additions and no multiplication; a binary MAC is "
        "1 XNOR + 1 (popcount) addition (the XNOR column of all measurements). Batch norm and "
        "element-wise work are counted apart (profile.json), not in these totals.",
        "peak act.: the largest sum of live activations over one inference at batch 1, from tensor lifetimes in the graph.",
        f"energy: an estimate of arithmetic energy per inference from the mul/add counts ({context['energy_source']}); "
        "fp32, and at the student's precision (int8 and fp16 shipped beside fp32; the adder and binary counts as fp32's), in the table; "
        "int32, fp16 and int8 in summary.json. The main table's ORT p50 and the drop in its precision column (accuracy points "
        "against the student in PyTorch) are the shipped file's: model.<precision>.onnx, or model.onnx at fp32.",
        f"Latency: batch {lat['batch_size']}, {lat['threads']} intra-op thread(s); {lat['method']}; p90 pools every "
        f"timed call; CPU: {context['environment']['cpu']} ({context['environment'].get('cpu_instructions', '?')}); "
        f"onnxruntime {context['environment']['onnxruntime']}, torch {context['environment']['torch']}.",
        "graph: students with the same letter deploy identical ONNX graphs (operators, shapes, attributes; weights aside), "
        "timed once and sharing their figures (PyTorch's likewise where the modules match)"
        + "".join(f"; {letter} = {', '.join(names)}" for letter, names in context.get("shared_graphs", {}).items()) + ".",
        f"Pareto front: latencies within {lat['tolerance']:.0%} of each other or within their intervals count as tied; "
        "a student is dominated by one at least as accurate and not slower beyond that noise, better in one of the two.",
        *([f"est.: an estimate of one query at batch 1 on each target at {context['precision']} "
           "(kdforge/profile/gpu_cost.py: the layers fused into kernels as TensorRT fuses them, each kernel its launch, "
           "its prologue and epilogue DRAM latency, and the larger of its tensor-core time after tile and wave "
           "quantisation and its DRAM time; adder layers on CUDA cores; per query the host's copies and launch, "
           "kdforge/profile/gpu_query.py, as profile.input_on_device and profile.cuda_graph set them). Not a "
           "measurement, and faster than NVIDIA's published figures: 1.1x to 4x at batch 1 (README, 'Latency on the "
           "target device'). 'TensorRT / est.' appears where an engine was timed on that kind of GPU; kdforge times "
           "engines without a CUDA graph, so set profile.cuda_graph: false to compare like with like."]
          if context.get("targets") else []),
        "INT8 made for: the CPU whose integer instructions an INT8 file's types follow (export.int8_cpu, "
        "kdforge/export/int8_cpu.py; without VNNI, x86 saturates 8-bit products, so weights get 7 bits), also named in "
        "the file's metadata_props; verify says so where it ran on another kind of CPU.",
        "max abs diff: largest |ONNX Runtime - PyTorch| over all test-split logits. ONNX: 'standard' files use "
        "standard operators only; 'custom' files hold kdforge::AdderConv2d nodes, run by kdforge.export.ort.session "
        "(or the TensorRT plugin).",
    ]


def _fastest_within(candidates: list[tuple[dict, float, float]]) -> tuple[dict, float, float] | None:
    """Of (row, accuracy, cost) triples, the cheapest within RECOMMEND_WITHIN points of the most accurate."""
    candidates = [c for c in candidates if c[2] is not None]
    if not candidates:
        return None
    best = max(accuracy for _, accuracy, _ in candidates)
    return min((c for c in candidates if c[1] >= best - RECOMMEND_WITHIN / 100), key=lambda c: (c[2], -c[1]))


def recommendations(rows: list[dict], context: dict) -> list[str]:
    """One line per precision the students ship (their files on this CPU) and per target (estimated)."""
    lines = []
    batch = context["latency_setup"]["batch_size"]
    shipped = ["fp32"] + sorted({r["precision"] for r in rows} - {"fp32"})
    for precision in shipped:
        if precision == "fp32":
            candidates = [(r, r["test_accuracy"], r["ort_p50_ms"]) for r in rows]
        else:
            candidates = [(r, r["deployed_accuracy"], r["deployed_p50_ms"]) for r in rows if r["precision"] == precision]
        pick = _fastest_within(candidates)
        if pick:
            r, accuracy, ms = pick
            lines.append(f"{precision} on this CPU (ONNX Runtime, batch {batch}): {r['student']} ({r['method']}, {r['model']}), "
                         f"{accuracy * 100:.2f}% at {ms:.3f} ms")
    for name in context.get("targets", []):
        pick = _fastest_within([(r, r["test_accuracy"], r.get(f"est_{name}_us")) for r in rows])
        if pick:
            r, accuracy, us = pick
            lines.append(f"{name} at {context['precision']} (estimated, not measured): {r['student']} ({r['method']}, {r['model']}), "
                         f"{accuracy * 100:.2f}% at {us:,.1f} us")
    return lines


def _curve(history: list[dict]) -> str:
    """What a student's validation curve did, in words: still rising at its end, or where it peaked."""
    accuracies = [h["val_accuracy"] for h in history if "val_accuracy" in h]
    if not accuracies:
        return "no validation curve was recorded"
    peak = max(range(len(accuracies)), key=accuracies.__getitem__)
    if peak == len(accuracies) - 1 and len(accuracies) > 3 and accuracies[-1] > accuracies[-4]:
        return f"its validation accuracy was still rising at its last epoch ({accuracies[-1] * 100:.2f}%): a longer schedule may close the gap"
    return (f"its validation accuracy peaked at epoch {peak + 1} of {len(accuracies)} ({accuracies[peak] * 100:.2f}%) "
            f"and ended at {accuracies[-1] * 100:.2f}%")


def against_plain_training(rows: list[dict], histories: dict[str, list[dict]]) -> list[str]:
    """Per model with a student trained by cross-entropy alone, every other method's accuracy
    against it, and for each more than RECOMMEND_WITHIN points below it (a method whose paper
    claims to beat it, `beats_baseline`: below it at all) the measured shape of its validation curve."""
    from kdforge.train.methods import method_class

    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        plain = next((r for r in rows if r["model"] == model and method_class(r["method"]).baseline), None)
        others = [r for r in rows if r["model"] == model and not method_class(r["method"]).baseline]
        if plain is None or not others:
            continue
        deltas = [(r, (r["test_accuracy"] - plain["test_accuracy"]) * 100) for r in others]
        lines.append(f"{model}, against {plain['student']} (cross-entropy alone, {plain['test_accuracy'] * 100:.2f}%): "
                     + ", ".join(f"{r['student']} {delta:+.2f}" for r, delta in deltas) + " points.")
        for r, delta in deltas:
            if delta < -RECOMMEND_WITHIN or (method_class(r["method"]).beats_baseline and delta < 0):
                lines.append(f"{r['student']} ({r['method']}) is {-delta:.2f} points below {plain['student']}: "
                             f"{_curve(histories.get(r['student'], []))}.")
    return lines


def _recommendation_rule() -> str:
    return (f"Each line: the fastest student within {RECOMMEND_WITHIN:g} point of the most accurate one, for files at that "
            f"precision (their own accuracy: an INT8 or FP16 file's drop is subtracted) or on that target.")


def _table(rows: list[dict], columns) -> list[list[str]]:
    return [[_cell(r, key, fmt) for key, _, fmt in columns] for r in rows]


def graph_members(rows: list[dict]) -> dict[str, list[dict]]:
    """The rows of each graph letter, in order."""
    members: dict[str, list[dict]] = {}
    for r in rows:
        members.setdefault(r["graph"], []).append(r)
    return members


def _graph_title(letter: str, members: list[dict]) -> str:
    names = [r["student"] for r in members]
    return f"graph {letter} ({', '.join(names[:5])}{f' and {len(names) - 5} more' if len(names) > 5 else ''})"


def _sweep_rows(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The batch sweep once per deployed graph and backend (students that share a graph share its figures)."""
    header = ["graph", "backend", "batch", "p50 (ms)", "images/s"]
    body, seen = [], set()
    for letter, members in graph_members(rows).items():
        for r in members:
            for backend, sweep in r["sweep"].items():
                if (letter, backend) in seen:
                    continue
                seen.add((letter, backend))
                body += [[_graph_title(letter, members), backend, str(s["batch"]), figure_text(s), f"{s['images_per_s']:,.0f}"]
                         for s in sweep]
    return header, body


def _markdown_table(header: list[str], body: list[list[str]], left: int = 1) -> str:
    rule = "|" + "|".join("---" if i < left else "---:" for i in range(len(header))) + "|"
    return "\n".join(["| " + " | ".join(header) + " |", rule, *("| " + " | ".join(r) + " |" for r in body)])


def _lead(context: dict) -> str:
    teacher = (f"teacher {context['teacher_model']} at {context['teacher_accuracy'] * 100:.2f}%" if context["teacher_model"]
               else "no teacher")
    return f"Data: {context['data']}; {teacher}. Conventions of every number are below the tables."


def markdown(rows: list[dict], context: dict, figures: dict[str, list[Path]], plain: list[str]) -> str:
    main = _markdown_table([t for _, t, _ in main_columns(context)], _table(rows, main_columns(context)), left=4)
    details = _markdown_table([t for _, t, _ in detail_columns(context)], _table(rows, detail_columns(context)), left=2)
    recommended = "\n".join(f"- {line}" for line in recommendations(rows, context))
    notes = "\n".join(f"- {n}" for n in _notes(context))
    front = ", ".join(rows[i]["student"] for i in latency_front(rows, context["latency_setup"]["tolerance"]))

    def images(key):
        return "\n".join(f"![{p.stem}]({p.name})" for p in figures[key])

    return (f"# kdforge report: {context['name']}\n\n{_lead(context)}\n\n## Which student to ship\n\n{recommended}\n\n"
            f"{_recommendation_rule()}\n\n{main}\n\n{images('tradeoff')}\n\n"
            f"Pareto front (shipped files' ONNX Runtime latency vs accuracy): {front}.\n\n"
            + ("## Against plain training\n\n" + "\n".join(f"- {line}" for line in plain) + "\n\n" if plain else "")
            + f"## All measurements per student\n\n{details}\n\n{notes}\n\n"
            f"## Batch sweep, per deployed graph\n\n{_markdown_table(*_sweep_rows(rows), left=2)}\n\n"
            f"## Cost per layer, per deployed graph\n\n{images('layers')}\n\n## Training and cost\n\n{images('other')}\n")


def _html_table(header: list[str], body: list[list[str]], table_id: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
    return f"<table{f' id={table_id!r}' if table_id else ''}><tr>{head}</tr>{rows}</table>"


def _html_figure(path: Path, figure_id: str = "", width: int | None = None) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    size = f" style='width:{width}px'" if width else ""
    return (f"<figure{f' id={figure_id!r}' if figure_id else ''}><img alt='{html.escape(path.stem)}'{size} "
            f"src='data:image/png;base64,{data}'/></figure>")


PLOT_WIDTH = 440  # px: beside the main table within a 1366-px window

STYLE = ("body{font-family:sans-serif;margin:12px 16px;font-size:14px}h1{font-size:20px;margin:0 0 4px}"
         "h2{font-size:16px;margin:14px 0 6px}p,ul{margin:4px 0}table{border-collapse:collapse;margin-bottom:8px;font-size:12px}"
         "td,th{border:1px solid #ccc;padding:2px 5px;text-align:right;white-space:nowrap}"
         "th{background:#f3f3f3;white-space:normal;vertical-align:bottom}"
         "td:nth-child(-n+3),th:nth-child(-n+3){text-align:left}figure{margin:0}img{max-width:100%}"
         ".top{display:flex;gap:12px;align-items:flex-start}.top>figure{flex:none}.scroll{overflow-x:auto;min-width:0}"
         "details{margin:8px 0}summary{cursor:pointer;font-weight:bold}")


def html_page(rows: list[dict], context: dict, figures: dict[str, list[Path]], plain: list[str]) -> str:
    """The page a reader opens: the recommendations, the deciding table and the accuracy-latency
    plot side by side in the first screen of a 1366-px window; everything else below it."""
    title = html.escape(f"kdforge report: {context['name']}")
    recommended = "".join(f"<li>{html.escape(line)}</li>" for line in recommendations(rows, context))
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in _notes(context))
    front = ", ".join(rows[i]["student"] for i in latency_front(rows, context["latency_setup"]["tolerance"]))
    main = _html_table([t for _, t, _ in main_columns(context)], _table(rows, main_columns(context)), "main")
    details = _html_table([t for _, t, _ in detail_columns(context)], _table(rows, detail_columns(context)))
    plot = "".join(_html_figure(p, "tradeoff", PLOT_WIDTH) for p in figures["tradeoff"])
    plain_items = "".join(f"<li>{html.escape(line)}</li>" for line in plain)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{STYLE}</style></head><body>"
            f"<h1>{title}</h1><p>{html.escape(_lead(context))}</p>"
            f"<ul id='recommendations'>{recommended}</ul><p>{html.escape(_recommendation_rule())} "
            f"Pareto front (shipped files' ONNX Runtime latency vs accuracy): {html.escape(front)}.</p>"
            f"<div class='top'>{plot}<div class='scroll'>{main}</div></div>"
            + (f"<h2>Against plain training</h2><ul>{plain_items}</ul>" if plain else "")
            + f"<details><summary>All measurements per student ({len(detail_columns(context)) - 1} columns)</summary>"
            f"<div class='scroll'>{details}</div></details><h2>Conventions</h2><ul>{notes}</ul>"
            f"<h2>Batch sweep, per deployed graph</h2>{_html_table(*_sweep_rows(rows))}"
            f"<h2>Cost per layer, per deployed graph</h2>{''.join(_html_figure(p) for p in figures['layers'])}"
            f"<h2>Training and cost</h2>{''.join(_html_figure(p) for p in figures['other'])}</body></html>\n")


def write_report(folder: Path, rows: list[dict], context: dict, layers: dict[str, list[dict]],
                 histories: dict[str, list[dict]] | None = None) -> list[Path]:
    """`layers`: per student its layer costs (plotted once per deployed graph); `histories`:
    per-epoch training records by network (teacher and students) for the curves."""
    context["shared_graphs"] = label_graphs(rows)
    context["runtimes"], context["artifacts"] = deployed_columns(rows)
    tolerance = context["latency_setup"]["tolerance"]
    figures = {
        "tradeoff": [tradeoff_plot(rows, "deployed_p50_ms", f"ONNX Runtime latency p50 at the shipped precision (ms, batch "
                                   f"{context['latency_setup']['batch_size']})", folder / "accuracy_vs_latency.png",
                                   latency_front(rows, tolerance), [_interval(r, "deployed_p50_ms", tolerance) for r in rows],
                                   accuracy_key="deployed_accuracy")],
        "layers": [layer_cost_plot(_graph_title(letter, members), layers[members[0]["student"]], folder / f"layers_{letter}.png")
                   for letter, members in graph_members(rows).items()],
        "other": [*([training_curves_plot(histories, folder / "training_curves.png")] if histories else []),
                  tradeoff_plot(rows, "macs", "MACs per inference", folder / "accuracy_vs_macs.png")],
    }
    paths = [folder / "report.md", folder / "report.html", folder / "summary.json"]
    plain = against_plain_training(rows, histories or {})
    atomic.write_text(paths[0], markdown(rows, context, figures, plain))
    atomic.write_text(paths[1], html_page(rows, context, figures, plain))
    atomic.write_json(paths[2], {"context": context, "students": rows})
    return paths + [p for group in figures.values() for p in group]
