"""The `kdforge` command: run a pipeline, list what is registered, profile a model.

A user's mistake ends with exit code 2 and one sentence on stderr; a bug is a traceback."""

import argparse
import signal
import sys
import threading
import warnings
from pathlib import Path

from kdforge.errors import Interrupted, UserError, printable
from kdforge.safe_files import MAX_TENSOR_MIB
from kdforge.profile.roofline import PRECISIONS
from kdforge.profile.targets import TARGET_NAMES


def _cmd_run(args) -> None:
    from kdforge.config import load_config
    from kdforge.export import ort  # noqa: F401 - before training: export and profile need ONNX Runtime
    from kdforge.pipeline.runner import run_pipeline

    cfg = load_config(args.config, tuple(args.set or ()))
    for notice in cfg.notices():
        print(f"kdforge: notice: {notice}.", file=sys.stderr)
    if args.run_dir is not None:
        cfg.run_dir = args.run_dir
    only = args.only if args.command == "run" else [args.stage]
    run_dir = run_pipeline(cfg, force=args.force, only=only, wait=args.wait)
    report = run_dir / "report" / "report.md"
    print(f"run directory: {run_dir}" + (f"; report: {report}" if report.exists() else ""))


def _cmd_data_bench(args) -> None:
    from kdforge.config import load_config
    from kdforge.train.data.bench import bench

    print(bench(load_config(args.config, tuple(args.set or ())), args.steps))


def _cmd_data_pack(args) -> None:
    from kdforge.train.data.shards import pack

    index = pack(args.root, args.out, args.shard_size)
    counts = {split: (len(shards), sum(s["nsamples"] for s in shards)) for split, shards in index["splits"].items()}
    print(f"written to {args.out}: " + "; ".join(f"{split} {n} shard(s), {total} images" for split, (n, total) in counts.items())
          + f"; {len(index['classes'])} classes (data.name: webdataset, data.root: {args.out})")


def _first_line(doc) -> str:
    lines = (doc or "").strip().splitlines()
    return lines[0] if lines else ""


def _cmd_methods(args) -> None:
    from kdforge.train.methods import list_methods, method_class

    for name in list_methods():
        print(f"{name:12s} {_first_line(sys.modules[method_class(name).__module__].__doc__)}")


def _cmd_models(args) -> None:
    from kdforge.train.models import list_models, model_builder

    for name in list_models():
        print(f"{name:20s} {_first_line(model_builder(name).__doc__)}")


def _cmd_export(args) -> None:
    """Builds the artifacts named by --deploy (kdforge.export.artifacts) from a deploy.pt, in the registry's order."""
    from pydantic import ValidationError

    from kdforge.config import ExportConfig
    from kdforge.export.artifacts import ExportJob, artifact, deploy_names, registered
    from kdforge.export.strip import load_deployed
    from kdforge.train.models.families import family_of_model

    if args.list:
        for entry in registered():
            print(f"{entry.name:20s} {entry.label}: <stem>{entry.suffix}" + (f" (also: {', '.join(entry.aliases)})" if entry.aliases else ""))
        return
    if args.model is None:
        raise UserError("kdforge export needs a deploy.pt (or --list for the artifacts it can build).")
    try:
        export = ExportConfig(opset=args.opset, portable=args.portable)  # the config's own range for the key
    except ValidationError as e:
        raise UserError(f"--opset {args.opset}: {e.errors()[0]['msg'].removeprefix('Value error, ')}.") from None
    flags = {name: "--deploy " + name for name in args.deploy or []}
    flags.update({"tensorrt": "--backend tensorrt"} if args.backend == "tensorrt" else {})
    flags.update({"fp16": "--fp16"} if args.fp16 else {})
    try:
        names = deploy_names(list(flags))
    except ValueError as e:
        raise UserError(f"--deploy: {e}.") from None
    model, spec = load_deployed(args.model)
    family = family_of_model(model)
    for asked, flag in flags.items():
        refusal = artifact(asked).refusal(family)
        if refusal:
            raise UserError(f"{args.model} is a {family.name} student, which cannot deploy {artifact(asked).name}: {refusal}; drop {flag}.")
    out = args.output or args.model.with_name("model.onnx")
    job = ExportJob(model=model, folder=out.parent, input_shape=(spec["in_channels"], spec["image_size"], spec["image_size"]),
                    deploy=names, family=family, export=export, stem=out.name.removesuffix(".onnx"),
                    input_ranges=spec.get("int8_input_ranges", {}))
    for name in names:
        built = artifact(name).build(job)
        if built is not None:
            print(f"written in {job.folder}: {built.summary}")


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise UserError(f"--input {text}: write the shape as NxCxHxW with positive sizes, e.g. 1x3x224x224.")
    return shape


def _named_size(text: str) -> tuple[str, int]:
    name, _, size = text.partition("=")
    if not name or not size.isdigit() or int(size) < 1:
        raise UserError(f"--dim {printable(text)}: write a dynamic dimension's size as NAME=SIZE, e.g. --dim height=224.")
    return name, int(size)


def _cmd_profile(args) -> None:
    from kdforge.profile.latency import LatencySetup
    from kdforge.profile.standalone import profile_file

    if args.batch < 1:
        raise UserError(f"--batch {args.batch}: give a batch size of 1 or more.")
    if args.rounds < 5 or args.round_ms <= 0:
        raise UserError("--rounds takes 5 or more and --round-ms a positive duration: the median's interval needs rounds.")
    if args.threads < 1 or args.max_tensor_mib < 1:
        raise UserError("--threads and --max-tensor-mib take 1 or more.")
    if (args.input_on_device or args.no_cuda_graph) and args.target in (None, "cpu"):
        raise UserError("--input-on-device and --no-cuda-graph describe how a GPU serves the model: add --target with a GPU.")
    setup = None if args.count_only else LatencySetup(rounds=args.rounds, round_ms=args.round_ms, max_rounds=2 * args.rounds)
    result = profile_file(args.model, threads=args.threads, layers=args.layers, batch=args.batch,
                          input_shape=_shape(args.input) if args.input else None, setup=setup,
                          max_tensor_mib=args.max_tensor_mib, dims=dict(_named_size(d) for d in args.dim or ()))
    print(result["table"])
    if args.target:
        from kdforge.profile.standalone import estimate_on

        from kdforge.profile.gpu_query import Deployment

        deployment = Deployment(input_on_device=args.input_on_device, cuda_graph=not args.no_cuda_graph)
        result["estimate"], table = estimate_on(result["costs"], args.target, args.precision, args.threads, deployment)
        print("\n" + table)
    if args.json:
        from kdforge import atomic

        atomic.write_json(args.json, {k: v for k, v in result.items() if k != "table"})
        print(f"written: {args.json}")


class _Parser(argparse.ArgumentParser):
    """argparse whose mistakes end like every other user error: one line, exit code 2."""

    def error(self, message: str):
        self.exit(2, f"kdforge: error: {printable(message)}; see `{self.prog} --help`.\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kdforge", description="Distil, strip, export, verify and profile compact vision models.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run the pipeline of a YAML config (up-to-date stages are skipped)")
    run.add_argument("config", type=Path)
    run.add_argument("--force", action="store_true", help="re-run stages even if they are up to date")
    run.add_argument("--only", action="append", metavar="STAGE", help="run only this stage (repeatable); its inputs must exist")
    run.add_argument("--run-dir", type=Path, default=None, help="override the config's run directory")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. export.tensorrt=true")
    run.add_argument("--wait", action="store_true", help="if another kdforge process uses the run directory, wait for it instead of exiting")
    run.set_defaults(func=_cmd_run)

    stage = sub.add_parser("stage", help="run one stage of a config (same as run --only STAGE)")
    stage.add_argument("stage")
    stage.add_argument("config", type=Path)
    stage.add_argument("--force", action="store_true")
    stage.add_argument("--run-dir", type=Path, default=None)
    stage.add_argument("--set", action="append", metavar="KEY=VALUE")
    stage.add_argument("--wait", action="store_true", help="wait for another kdforge process using the run directory")
    stage.set_defaults(func=_cmd_run)

    export = sub.add_parser("export", help="build a deploy.pt's deployable artifacts: ONNX files, TensorRT engines, ...")
    export.add_argument("model", type=Path, nargs="?")
    export.add_argument("-o", "--output", type=Path, default=None, help="the .onnx path (default: beside the model); the "
                        "other files take its stem")
    export.add_argument("--deploy", nargs="+", metavar="ARTIFACT", help="what to build besides model.onnx (see --list)")
    export.add_argument("--list", action="store_true", help="the artifacts kdforge can build")
    export.add_argument("--backend", choices=("onnx", "tensorrt"), default="onnx", help="tensorrt: --deploy tensorrt")
    export.add_argument("--fp16", action="store_true", help="--deploy fp16 (a TensorRT engine then takes fp16)")
    export.add_argument("--portable", action="store_true", help="standard ONNX operators only")
    export.add_argument("--opset", type=int, default=18)
    export.set_defaults(func=_cmd_export)

    data = sub.add_parser("data", help="the training input pipeline").add_subparsers(dest="data_command", required=True)
    data_bench = data.add_parser("bench", help="the training loader's images/s against what the cores can decode")
    data_bench.add_argument("config", type=Path)
    data_bench.add_argument("--steps", type=int, default=50, help="batches to time")
    data_bench.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. data.num_workers=4")
    data_bench.set_defaults(func=_cmd_data_bench)
    data_pack = data.add_parser("pack", help="write WebDataset tar shards from an ImageNet-style folder")
    data_pack.add_argument("root", type=Path, help="ROOT with train/CLASS/* and val/CLASS/* (or test/)")
    data_pack.add_argument("out", type=Path)
    data_pack.add_argument("--shard-size", type=int, default=1000, help="images per shard")
    data_pack.set_defaults(func=_cmd_data_pack)

    sub.add_parser("methods", help="list the registered distillation methods").set_defaults(func=_cmd_methods)
    sub.add_parser("models", help="list the registered models").set_defaults(func=_cmd_models)

    prof = sub.add_parser("profile", help="cost table of a deploy.pt, checkpoint.pt or .onnx file, or a model factory")
    prof.add_argument("model", help="a file, or a factory package.module:function (with --input)")
    prof.add_argument("--input", default=None, metavar="NxCxHxW", help="the input shape, for a factory")
    prof.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    prof.add_argument("--layers", action="store_true", help="add the per-layer table")
    prof.add_argument("--threads", type=int, default=1)
    prof.add_argument("--batch", type=int, default=1, help="the batch size a dynamic batch dimension of an .onnx file takes")
    prof.add_argument("--dim", action="append", metavar="NAME=SIZE", help="the size of a named dynamic dimension of an "
                      ".onnx file's inputs (repeatable)")
    prof.add_argument("--rounds", type=int, default=20, help="timed rounds; the latency is the median of their medians")
    prof.add_argument("--round-ms", type=float, default=1.0, help="the least duration of one round (ms)")
    prof.add_argument("--max-tensor-mib", type=int, default=MAX_TENSOR_MIB, help=(
        "the most memory (MiB) an .onnx file's shapes may imply, per tensor and for the live activations together, for "
        "kdforge to run it; a file that needs more is counted, not run"))
    prof.add_argument("--count-only", action="store_true", help=(
        "counts and target estimates without timing the model: seconds, whatever its size (an .onnx file whose shapes "
        "inference cannot fix still runs once, capped, to count them)"))
    prof.add_argument("--target", choices=TARGET_NAMES, default=None, help=(
        "estimate the latency per kernel on this device (GPUs: kdforge/profile/gpu_cost.py; cpu: a per-layer roofline)"))
    prof.add_argument("--precision", choices=PRECISIONS, default="fp16", help="the precision of that estimate")
    prof.add_argument("--input-on-device", action="store_true", help=(
        "GPU estimates: the input is already on the GPU (decoded there), so no host-to-device copy per query"))
    prof.add_argument("--no-cuda-graph", action="store_true", help=(
        "GPU estimates: the engine's kernels are launched one by one, not replayed from a CUDA graph"))
    prof.set_defaults(func=_cmd_profile)
    return parser


def _stop_on(signum, frame) -> None:
    """SIGINT and SIGTERM end the command through the same path as Ctrl-C, once: a second signal
    during the clean-up is ignored, so the clean-up finishes."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signal.Signals(signum).name)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    handled = (signal.SIGINT, signal.SIGTERM) if threading.current_thread() is threading.main_thread() else ()
    previous = {sig: signal.signal(sig, _stop_on) for sig in handled}
    try:
        # warnings are held back until the command ends: a command that fails says one line, the error
        with warnings.catch_warnings(record=True) as held:
            args.func(args)
        for w in held:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    except UserError as e:
        print(f"kdforge: error: {printable(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        stop = Interrupted.of(e)
        print(f"kdforge: {stop.sentence()}", file=sys.stderr)
        return 128 + signal.Signals[stop.signal_name].value
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
