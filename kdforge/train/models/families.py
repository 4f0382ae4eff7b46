"""A model family's capabilities, declared once: which layer makes a network of the family and
which precisions it can ship, with the sentence that says why not. The config, the CLI, the
export and the methods ask here, of a config section (its `family` key, or the family a
registered twin was built as) or of a built network (the layers it holds)."""

from dataclasses import dataclass, field

from torch import nn

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class Family:
    name: str  # "cnn", "adder" or "binary"
    refused: dict[str, str] = field(default_factory=dict)  # precision -> why it cannot ship in it

    @property
    def precisions(self) -> tuple[str, ...]:
        return tuple(p for p in PRECISIONS if p not in self.refused)

    def refusal(self, precision: str) -> str | None:
        """Why a student of this family cannot ship `precision`, or None where it can."""
        return self.refused.get(precision)


CNN = Family("cnn")
ADDER = Family("adder", {"fp16": "kdforge's adder kernels (ONNX Runtime's, the TensorRT plugin's) are fp32 or integer, so ship "
                                 "an AdderNet as int8 or fp32"})
BINARY = Family("binary")
FAMILIES = {f.name: f for f in (CNN, ADDER, BINARY)}


def family_of_model(model: nn.Module) -> Family:
    """The family of a built network: adder where it holds an adder layer, binary where a 1-bit one."""
    from kdforge.nn.adder import AdderConv2d
    from kdforge.nn.binary import BinaryConv2d

    kinds = {type(m) for m in model.modules()}
    if any(issubclass(k, AdderConv2d) for k in kinds):
        return ADDER
    return BINARY if any(issubclass(k, BinaryConv2d) for k in kinds) else CNN


def family_of_section(model: str, family: str | None) -> Family:
    """The family a config section builds: its `family` key, else the registered twin's (NAME_adder, NAME_binary)."""
    from kdforge.train.models.registry import model_family

    return FAMILIES[family or model_family(model) or "cnn"]
