"""Strip: from a trained distiller to the student as it ships, and the deploy.pt format.

Generic for every method: the method's `deployable()` gives the student without what it
declared training-only (teacher, heads, connectors...), then the deployed model's outputs are
checked against the training model's main head on real inputs. deploy.pt holds the
architecture by name and a state dict, never a pickled module, so it loads in any process that
has kdforge, and a mismatched file is caught by name.
"""

import math
from pathlib import Path

import torch
from torch import nn

from kdforge import atomic
from kdforge.errors import UserError, printable, printable_name
from kdforge.nn.input_clip import clip_layer_inputs
from kdforge.nn.widths import resize
from kdforge.safe_files import check_declared_input
from kdforge.untrusted import load_torch
from kdforge.train.models.plain import apply_transforms

FORMAT = "kdforge-deploy-1"


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def training_parameters(distiller: nn.Module) -> int:
    """Parameters the student carries while it trains: everything but the networks it learns from."""
    others = [getattr(distiller, name, None) for name in distiller.teacher_modules]
    return count_parameters(distiller) - sum(count_parameters(m) for m in others if m is not None)


@torch.no_grad()
def strip(distiller: nn.Module, probe: torch.Tensor, atol: float = 1e-5) -> nn.Module:
    distiller.eval()
    reference = distiller.student(probe)
    deployed = distiller.deployable().eval()
    diff = (deployed(probe) - reference).abs().max().item()
    if diff > atol:
        raise RuntimeError(f"stripping changed the main head's outputs by {diff:.3g} (> {atol}); the method's deployable() is wrong")
    return deployed


def save_deployed(path: Path, model: nn.Module, spec: dict) -> None:
    atomic.save_torch(path, {"format": FORMAT, **spec, "state_dict": model.state_dict()})


def load_deployed(path: Path, section=None) -> tuple[nn.Module, dict]:
    """The deployed model (eval mode) and its spec (model, model_args, family, stages, classifier,
    num_classes, in_channels, image_size). A model built by a factory is rebuilt only from
    `section`, the config's teacher or student section naming that factory: the name in the file
    is never imported, since importing runs code."""
    from kdforge.config import ModelSection
    from kdforge.train.models.build import build_network, convert_family
    from kdforge.train.models.factory import file_names_factory, is_factory

    path = Path(path)
    if not path.is_file():
        raise UserError(f"deployed model {printable(str(path))} does not exist; run the strip stage first.")
    blob = load_torch(path, "deployed model")
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise UserError(f"{printable(str(path))} is not a kdforge deployed model (deploy.pt written by the strip stage).")
    spec = {k: v for k, v in blob.items() if k not in ("format", "state_dict")}
    model_name = spec.get("model")
    if isinstance(model_name, str) and is_factory(model_name) and (section is None or section.model != model_name):
        raise file_names_factory(path, model_name, "export")
    check_declared_input((2, spec.get("in_channels"), spec.get("image_size"), spec.get("image_size")), printable(str(path)))
    try:
        if section is None:
            section = ModelSection(model=spec["model"], model_args=spec["model_args"], family=spec.get("family"))
        pruned = "widths" in spec  # its CNN at the cut's widths, then turned into its family's twin
        model, _ = build_network(section.model_copy(update={"family": None}) if pruned else section, spec["num_classes"],
                                 spec["in_channels"], spec["image_size"], with_weights=False)
        if pruned:
            _resize(model, spec["widths"], path)
            convert_family(model, section.family)
        apply_transforms(model, spec.get("transforms", ()))
        model.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, ValueError, AttributeError):
        raise UserError(f"{printable(str(path))} has a damaged header (model, model_args, num_classes, in_channels); "
                        f"re-run the strip stage.") from None
    except RuntimeError:
        raise UserError(f"{printable(str(path))} holds weights of another architecture than "
                        f"{printable_name(spec['model'])}.") from None
    ranges = spec.get("int8_input_ranges", {})
    _check_input_ranges(ranges, dict(model.named_modules()), path)
    return clip_layer_inputs(model, ranges).eval(), spec


def _resize(model: nn.Module, widths, path: Path) -> None:
    try:
        resize(model, widths)
    except ValueError as e:
        raise UserError(f"{printable(str(path))} has widths that do not fit its model: {e}; re-run the strip stage.") from None


def _check_input_ranges(ranges, modules: dict[str, nn.Module], path: Path) -> None:
    """The learned INT8 ranges a QAT stage wrote ({layer path: [rmin, rmax]}), as a stranger's file may not hold them."""
    def well_formed(bounds) -> bool:
        return (isinstance(bounds, (list, tuple)) and len(bounds) == 2 and all(isinstance(b, float) for b in bounds)
                and all(math.isfinite(b) for b in bounds) and bounds[0] <= 0 <= bounds[1])

    if not isinstance(ranges, dict) or not all(isinstance(k, str) and well_formed(v) for k, v in ranges.items()):
        raise UserError(f"{printable(str(path))} has damaged int8_input_ranges (each a layer's [rmin <= 0, rmax >= 0]); "
                        f"re-run the qat stage.")
    missing = [printable_name(k) for k in ranges if k not in modules]
    if missing:
        raise UserError(f"{printable(str(path))}'s int8_input_ranges name layer(s) {', '.join(missing[:3])} its model does "
                        f"not have; re-run the qat stage.")
