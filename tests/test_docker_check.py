"""The Docker image's build check (docker/build_check.py) fails the build where the GPU path is
incomplete: run here, where ONNX Runtime is the CPU wheel, with a stand-in TensorRT module."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _check(tmp_path, tensorrt_version: str, dali: bool = True) -> subprocess.CompletedProcess:
    (tmp_path / "tensorrt.py").write_text(f"__version__ = {tensorrt_version!r}\n")
    if not dali:  # a regular package named nvidia hides the installed nvidia.dali
        (tmp_path / "nvidia").mkdir()
        (tmp_path / "nvidia" / "__init__.py").write_text("")
    return subprocess.run([sys.executable, str(ROOT / "docker" / "build_check.py")], capture_output=True, text=True,
                          env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"})


def test_the_build_fails_on_the_cpu_onnxruntime_and_an_old_tensorrt(tmp_path):
    current = _check(tmp_path, "10.13.3.9")
    assert current.returncode == 1 and "no CUDA execution provider" in current.stderr
    assert "TensorRT" not in current.stderr.split("failed:")[1].split(";")[0]  # 10.13 is new enough
    old = _check(tmp_path, "10.8.0")
    assert old.returncode == 1 and "TensorRT 10.8.0 is older than 10.9" in old.stderr


def test_the_build_fails_without_dali(tmp_path):
    assert "DALI" not in _check(tmp_path, "10.13.3.9").stderr
    missing = _check(tmp_path, "10.13.3.9", dali=False)
    assert missing.returncode == 1 and "NVIDIA DALI is not installed" in missing.stderr
