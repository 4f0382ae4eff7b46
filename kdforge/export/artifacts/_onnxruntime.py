"""What the ONNX Runtime entries share: a CPU (or CUDA) session of kdforge.export.ort, adder kernel included."""

from pathlib import Path

from kdforge.export.artifacts.base import Artifact, Runner


class OnnxRuntimeFile(Artifact):
    runtime = "ONNX Runtime"
    locates_divergence = True

    def open(self, path: Path, threads: int) -> Runner:
        from kdforge.export import ort

        session = ort.session(path, threads=threads)
        return Runner(lambda x: ort.run(session, x), {"backend": "onnxruntime", "provider": session.get_providers()[0]})
