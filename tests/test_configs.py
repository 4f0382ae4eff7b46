"""Every shipped config is valid: it parses and its stage graph builds."""

from pathlib import Path

import pytest
import yaml

from kdforge.config import parse_config
from kdforge.pipeline.graph import build_graph

CONFIGS = sorted(Path(__file__).parent.parent.joinpath("configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_is_valid(path):
    cfg = parse_config(yaml.safe_load(path.read_text()), str(path))
    units = build_graph(cfg)
    assert units[-1].key == "report" and units[-2].key == "profile" and len(units) >= 1 + 4 * len(cfg.students) + 2
