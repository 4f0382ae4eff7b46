"""`kdforge profile MODEL`: the cost table of one model outside a pipeline: a deploy.pt, an .onnx
file (counted from its own graph, kdforge.profile.onnx_counts), a training checkpoint.pt inside a
run directory (teacher/ or students/NAME/, whose architecture the run's config.yaml and
data/summary.json give), or a model kdforge did not write, named by its factory
`package.module:function` (called with no arguments) with `--input NxCxHxW`. Every kind gets the
same table.

torch.export archives (.pt2) are refused: torch.export.load runs code that an archive carries
(AOTInductor libraries and compiler commands, guard code it compiles, symbolic shapes it hands to
sympy's parser, which evaluates them, and any aten op its graph names, file-writing ops included),
so no check short of re-implementing the loader makes one safe to open."""

from pathlib import Path

from kdforge.errors import UserError, printable, printable_name, reason
from kdforge.profile import latency
from kdforge.safe_files import MAX_TENSOR_MIB, check_declared_input, read_json


def _table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _layer_table(layers: list[dict]) -> str:
    lines = [f"{'layer':40s} {'kind':12s} {'MACs':>14s} {'mul':>14s} {'add':>14s} {'XNOR':>14s} {'elements':>10s}"]
    for c in layers:
        lines.append(f"{printable(c['layer'])[:40]:40s} {c['kind']:12s} {c['macs']:>14,} {c['mul']:>14,} {c['add']:>14,} "
                     f"{c.get('xnor', 0):>14,} {c['elements']:>10,}")
    return "\n".join(lines)


def _cost_rows(t: dict) -> list[tuple[str, str]]:
    rows = [
        ("parameters", f"{t['params']:,} ({t['param_bytes'] / 1024:,.1f} KiB)"),
        ("MACs", f"{t['macs']:,} (1 MAC = 1 mul + 1 add; adder MAC = 2 add; binary MAC = 1 XNOR + 1 add)"),
        ("multiplications", f"{t['mul']:,}"), ("additions", f"{t['add']:,}"), ("XNOR", f"{t.get('xnor', 0):,}"),
        ("norm / element-wise", f"{t['norm_elements']:,} / {t['elementwise_elements']:,} elements (not in the totals)"),
        ("peak activations", f"{t['peak_activation_bytes'] / 1024:,.1f} KiB"),
    ]
    if t.get("unknown_layers"):
        rows.append(("not counted", f"{len(t['unknown_layers'])} layers of unknown shape: {', '.join(map(printable, t['unknown_layers'][:5]))}"))
    return rows


TIMING_BUDGET_S = 60
NOT_ASKED = "--count-only asks for counts and estimates alone"


def profile_file(path, threads: int = 1, layers: bool = False, batch: int = 1,
                 setup: latency.LatencySetup | None = latency.LatencySetup(), input_shape: tuple[int, ...] | None = None,
                 max_tensor_mib: int = MAX_TENSOR_MIB, dims: dict | None = None) -> dict:
    """The cost table of a model file or factory, and its CPU latency unless `setup` is None (counts
    and estimates only: nothing is timed)."""
    if ":" in str(path) and not Path(path).exists():
        return _profile_factory(str(path), input_shape, threads, layers, setup, max_tensor_mib << 20)
    path = Path(path)
    if not path.exists():
        raise UserError(f"{printable(str(path))} does not exist; give a deploy.pt, a .onnx file, or a factory package.module:function.")
    if path.suffix == ".onnx":
        return _profile_onnx(path, threads, layers, setup, batch, max_tensor_mib << 20, dims or {})
    if path.suffix == ".pt2":
        raise UserError(f"{printable(str(path))}: kdforge does not open torch.export archives, since loading one can run "
                        f"code it carries; export the model to ONNX, or profile it by its factory package.module:function.")
    if path.name == "checkpoint.pt":
        return _profile_model(*_checkpoint_model(path), threads, layers, setup, max_tensor_mib << 20)
    if path.suffix == ".pt":
        from kdforge.export.strip import load_deployed

        return _profile_model(*load_deployed(path), threads, layers, setup, max_tensor_mib << 20)
    raise UserError(f"{path}: kdforge profiles deploy.pt files and .onnx files, not '{path.suffix}'.")


def _checkpoint_model(path: Path):
    """The network a run's training checkpoint holds (the student or teacher as it trained)."""
    from kdforge.config import load_config
    from kdforge.train.models.build import build_network
    from kdforge.train.models.factory import file_names_factory, is_factory
    from kdforge.train.weights import load_into, network_weights
    from kdforge.untrusted import load_torch

    folder = path.parent
    run_dir = folder.parent if folder.name == "teacher" else folder.parent.parent
    if not (run_dir / "config.yaml").is_file() or not (run_dir / "data" / "summary.json").is_file():
        raise UserError(f"{path} is not inside a kdforge run directory (no config.yaml and data/summary.json above it).")
    cfg, data = load_config(run_dir / "config.yaml"), _data_summary(run_dir / "data" / "summary.json")
    if folder.name == "teacher" and cfg.teacher is not None:
        section, classes = cfg.teacher, len(data["teacher_classes"] or []) or data["num_classes"]
    else:
        section, classes = next((s for s in cfg.students if s.name == folder.name), None), data["num_classes"]
        if section is None:
            raise UserError(f"{path}: the run's config has no {'teacher' if folder.name == 'teacher' else 'student'} "
                            f"{printable_name(folder.name)}.")
    if is_factory(section.model):  # the run directory's config.yaml is a file like any other
        raise file_names_factory(path, section.model, "profile")
    model, _ = build_network(section, classes, data["in_channels"], data["image_size"], with_weights=False)
    load_into(model.load_state_dict, network_weights(load_torch(path, "training checkpoint")), path)
    spec = {"model": section.model, "method": "training checkpoint", "in_channels": data["in_channels"],
            "image_size": data["image_size"]}
    return model.eval(), spec


def _data_summary(path: Path) -> dict:
    """data/summary.json's sizes, a UserError unless each is what the data stage writes."""
    data = read_json(path, "data summary")
    sizes = ("num_classes", "in_channels", "image_size")
    if (not isinstance(data, dict) or not all(type(data.get(k)) is int and 0 < data[k] <= 1 << 16 for k in sizes)
            or not isinstance(data.get("teacher_classes") or [], list)):
        raise UserError(f"data summary {printable(str(path))} is corrupt (it needs positive integers {', '.join(sizes)}); "
                        f"run the data stage again with --force.")
    return {"teacher_classes": None, **data}


def _profile_factory(factory: str, input_shape, threads: int, layers: bool, setup: latency.LatencySetup, max_bytes: int) -> dict:
    """A model built by the user's own code: importing and calling it is what they asked for."""
    from kdforge.train.models.factory import build_factory, check_factory

    check_factory(factory)
    if input_shape is None:
        raise UserError(f"profiling {printable(factory)} needs the input shape: add --input, e.g. --input 1x3x224x224.")
    spec = {"model": factory, "method": "factory", "input_shape": tuple(input_shape)}
    return _profile_model(build_factory(factory).eval(), spec, threads, layers, setup, max_bytes)


def _profile_model(model, spec: dict, threads: int, layers: bool, setup: latency.LatencySetup, max_bytes: int) -> dict:
    from kdforge.profile.counts import count_costs

    shape = spec.get("input_shape") or (1, spec["in_channels"], spec["image_size"], spec["image_size"])
    check_declared_input(shape, printable(str(spec["model"])), max_bytes)
    try:
        costs = count_costs(model, shape)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - a model torch.export cannot trace, or a wrong --input
        raise UserError(f"torch.export cannot trace {spec['model']} on a {'x'.join(map(str, shape))} input "
                        f"({reason(e)}).") from None
    peak = costs["totals"]["peak_activation_bytes"]
    if peak > max_bytes:  # counted on the traced graph; nothing ran yet
        raise UserError(f"{printable(str(spec['model']))} on a {'x'.join(map(str, shape))} input would hold "
                        f"{peak / (1 << 20):,.0f} MiB of activations at once, more than the {max_bytes / (1 << 20):,.0f} "
                        f"MiB kdforge allocates; raise --max-tensor-mib if you mean it.")
    lat = _pytorch_figure(model, shape, threads, setup) if setup else {"not_timed": NOT_ASKED}
    return _model_result(costs, lat, printable(f"{spec['model']} ({spec.get('method', '?')})"), shape, threads, layers)


def _model_result(costs: dict, lat: dict, label: str, shape, threads: int, layers: bool) -> dict:
    t = costs["totals"]
    table = _table([
        ("model", label), ("input", "x".join(map(str, shape))), *_cost_rows(t),
        ("PyTorch CPU latency",
         f"not timed: {lat['not_timed']}" if "not_timed" in lat else f"{_latency_text(lat)} ({threads} thread(s))"),
    ])
    if layers:
        table += "\n\n" + _layer_table(costs["layers"])
    return {"table": table, "costs": costs, "latency": {"pytorch": lat}, "environment": latency.environment()}


def _profile_onnx(path: Path, threads: int, layers: bool, setup: latency.LatencySetup, batch: int, max_bytes: int,
                  dims: dict) -> dict:
    """Counts always; the latency where the graph can be fed, fits `max_bytes` and ran once, in a
    capped child process, fast enough to be timed within TIMING_BUDGET_S."""
    from kdforge.export.onnx_file import feedable_inputs, load_model
    from kdforge.export.ort import check_adder_nodes, model_session, run_feeds
    from kdforge.profile.onnx_counts import count_onnx, fixed_inputs
    from kdforge.profile.onnx_trial import zero_feeds

    model = fixed_inputs(load_model(path), batch, dims)
    check_adder_nodes(model, path)  # kdforge's own nodes follow their contract, or the file is refused
    costs = count_onnx(model, batch, path, max_bytes, run=setup is not None)
    t = costs["totals"]
    lat = {"backend": "onnxruntime", "threads": threads, "batch": batch, "not_timed": costs["not_run"] if setup else NOT_ASKED}
    if lat["not_timed"] is None and costs["trial_seconds"] * (1 + setup.warmup + setup.max_rounds) > TIMING_BUDGET_S:
        lat["not_timed"] = (f"one run on zeros took {costs['trial_seconds']:.1f} s, so up to {setup.max_rounds} rounds could "
                            f"take over {TIMING_BUDGET_S} s; lower --rounds to time it")
    if lat["not_timed"] is None:
        session, feeds = model_session(model, path, threads=threads), zero_feeds(model)
        lat.update(provider=session.get_providers()[0], **_figure(latency.call_timer(lambda: run_feeds(session, feeds)), setup))
        latency_row = f"{_latency_text(lat)} ({threads} thread(s), {lat['provider']})"
    else:
        latency_row = f"not timed: {lat['not_timed']}"
    inputs = "; ".join(f"{printable(v.name)} {_value_text(v)}" for v in feedable_inputs(model))
    table = _table([("file", printable(str(path))), ("input", inputs), *_cost_rows(t), ("ONNX Runtime latency", latency_row)])
    if layers:
        table += "\n\n" + _layer_table(costs["layers"])
    return {"table": table, "costs": costs, "latency": {"onnxruntime": lat}, "environment": latency.environment()}


def _value_text(value) -> str:
    """'1x3x224x224 float' for a tensor input, its kind for anything else."""
    import onnx

    if not value.type.HasField("tensor_type"):
        return value.type.WhichOneof("value") or "untyped"
    tensor = value.type.tensor_type
    dims = "x".join(str(d.dim_value) if d.HasField("dim_value") else "?" for d in tensor.shape.dim)
    elem = onnx.TensorProto.DataType.Name(tensor.elem_type).lower() if tensor.elem_type in onnx.TensorProto.DataType.values() else "?"
    return f"{dims or 'scalar'} {elem}" if tensor.HasField("shape") else f"(no shape) {elem}"


def _figure(timer, setup: latency.LatencySetup) -> dict:
    return latency.measure({"model": timer}, setup)["model"]


def _pytorch_figure(model, shape, threads: int, setup: latency.LatencySetup) -> dict:
    with latency.torch_threads(threads):
        figure = _figure(latency.pytorch_timer(model, shape), setup)
    return {"backend": "pytorch-eager", "device": "cpu", "threads": threads, "batch": shape[0], **figure}


def _latency_text(figure: dict) -> str:
    return f"p50 {latency.figure_text(figure)} over {figure['rounds']} rounds (ms), p90 {figure['p90_ms']:.3f} ms"


def estimate_on(costs: dict, target_name: str, precision: str, threads: int = 1, deployment=None) -> tuple[dict, str]:
    """The latency estimate of a cost table on a named target, and its printed table: per kernel
    (per layer on the CPU) its time and the term that bounds it."""
    from kdforge.profile.estimates import estimate
    from kdforge.profile.targets import target

    result = estimate(costs, target(target_name, threads), precision, deployment)
    lines = [f"estimated on {result['description']} at {precision}: {result['total_ms']:.4f} ms per query "
             f"({result['compute_bound_ms']:.4f} ms compute-bound, {result['memory_bound_ms']:.4f} ms memory-bound"
             + (f", {result['floor_bound_ms']:.4f} ms floor-bound, {result['launch_bound_ms']:.4f} ms launch-bound"
                if "engine_ms" in result else "") + f"); {result['method']}", f"figures: {result['source']}"]
    if "engine_ms" in result:
        host = ", ".join(f"{name.replace('_', ' ')} {ms * 1e3:.2f} us" for name, ms in result["query_ms"].items())
        lines.append(f"per query: engine {result['engine_ms']:.4f} ms; {host} ({result['deployment']})")
        lines += ["", f"{'kernel':40s} {'kind':12s} {'est. (us)':>10s} {'bound':>8s} {'compute':>9s} {'memory':>9s} "
                      f"{'floor':>7s} {'launch':>7s}"]
        lines += [f"{l['layer'][:40]:40s} {l['kind']:12s} {l['ms'] * 1e3:>10.3f} {l['bound']:>8s} {l['compute_us']:>9.3f} "
                  f"{l['memory_us']:>9.3f} {l['floor_us']:>7.3f} {l['launch_us']:>7.3f}" for l in result["layers"]]
    else:
        lines += ["", f"{'layer':40s} {'kind':12s} {'est. (us)':>12s} {'bound':>8s}"]
        lines += [f"{l['layer'][:40]:40s} {l['kind']:12s} {l['ms'] * 1e3:>12.3f} {l['bound']:>8s}" for l in result["layers"]]
    return result, "\n".join(lines)
