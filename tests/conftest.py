import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

torch.set_num_threads(2)


def tiny_config(run_dir, **overrides) -> dict:
    """A complete config that runs every stage in seconds: digits, ResNet-8s, one epoch each."""
    train = {"epochs": 1, "batch_size": 128, "lr": 0.05}
    cfg = {
        "name": "tiny", "seed": 0, "run_dir": str(run_dir),
        "data": {"name": "digits"},
        "teacher": {"model": "resnet8", "train": dict(train)},
        "students": [
            {"name": "ce", "method": "ce", "model": "resnet8", "train": dict(train)},
            {"name": "kd", "method": "kd", "model": "resnet8", "options": {"temperature": 4.0}, "train": dict(train)},
            {"name": "ann", "method": "ce", "model": "resnet8_adder", "train": dict(train)},
        ],
        "profile": {"warmup": 1, "rounds": 5, "round_ms": 0.2, "max_rounds": 5},
    }
    cfg.update(overrides)
    return cfg


def run_tiny(tmp_path, students: list[dict], **overrides) -> subprocess.CompletedProcess:
    """`kdforge run` of tiny_config (run folder tmp_path/run) with these students."""
    raw = tiny_config(tmp_path / "run", **overrides)
    raw["students"] = students
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    return kdforge_cli("run", tmp_path / "c.yaml")


def run_python(code: str, **env) -> str:
    """Runs `code` in a fresh interpreter (extra environment variables from `env`); returns its
    stdout, failing the test with the child's stderr if it exits non-zero."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env})
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip()


def kdforge_cli(*args, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """`kdforge ARGS` in a fresh process (extra environment variables from `env`)."""
    return subprocess.run([sys.executable, "-m", "kdforge", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, **kwargs)


def assert_one_sentence(out, fragment: str, code: int = 2, prefix: str = "kdforge: error: ", notices: int = 0) -> None:
    """The command ended with `code` and exactly one line on stderr that contains `fragment`, after
    `notices` lines of notices (an older config spelling read as its newer one)."""
    assert out.returncode == code, (out.returncode, out.stderr[-2000:])
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert all(line.startswith("kdforge: notice: ") for line in lines[:notices]), out.stderr
    lines = lines[notices:]
    assert len(lines) == 1 and lines[0].startswith(prefix) and lines[0].endswith("."), out.stderr
    assert fragment in lines[0], lines[0]


@pytest.fixture(scope="session")
def _pristine_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    raw = tiny_config(root / "run")
    raw["students"] = raw["students"][:2]
    (root / "ok.yaml").write_text(yaml.safe_dump(raw))
    out = kdforge_cli("run", root / "ok.yaml")
    assert out.returncode == 0, out.stderr
    return root / "run", raw


@pytest.fixture(scope="module")
def finished(_pristine_run, tmp_path_factory):
    """A finished tiny run (CNN students only), one copy per test module: (folder holding ok.yaml
    and run/, its raw config). Tests that change it put it back; tests that damage it copy it."""
    pristine, raw = _pristine_run
    root = tmp_path_factory.mktemp("finished")
    shutil.copytree(pristine, root / "run")
    raw = {**raw, "run_dir": str(root / "run")}
    (root / "ok.yaml").write_text(yaml.safe_dump(raw))
    return root, raw


@pytest.fixture
def write_config(tmp_path):
    def write(cfg: dict, name: str = "config.yaml"):
        path = tmp_path / name
        path.write_text(yaml.safe_dump(cfg))
        return path
    return write


def pytest_collection_modifyitems(config, items):
    """`gpu` tests skip where no CUDA device is, `tensorrt` tests where TensorRT does not import
    (`make gpu-check` selects both on any GPU machine, with or without TensorRT)."""
    import importlib.util

    missing = {"gpu": None if torch.cuda.is_available() else "needs a CUDA GPU",
               "tensorrt": None if importlib.util.find_spec("tensorrt") else "needs TensorRT"}
    for item in items:
        reasons = [reason for mark, reason in missing.items() if reason and mark in item.keywords]
        if reasons:
            item.add_marker(pytest.mark.skip(reason=", ".join(reasons)))


def report_tables(markdown: str) -> list[list[dict[str, str]]]:
    """Every table of a Markdown report, in order, as rows of {column header: cell}."""
    tables, lines = [], markdown.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|---") and i > 0:
            header = [c.strip() for c in lines[i - 1].strip("|").split("|")]
            rows = []
            for row in lines[i + 1:]:
                if not row.startswith("|"):
                    break
                rows.append(dict(zip(header, (c.strip() for c in row.strip("|").split("|")), strict=True)))
            tables.append(rows)
    return tables
