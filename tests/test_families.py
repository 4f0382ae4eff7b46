"""A model family's capabilities, declared once (kdforge.train.models.families)."""

import pytest

from kdforge.train.models import create_model
from kdforge.train.models.families import ADDER, BINARY, CNN, family_of_model, family_of_section


@pytest.mark.parametrize("model,family,expected", [
    ("resnet20", None, CNN), ("resnet20_adder", None, ADDER), ("resnet8_binary", None, BINARY),
    ("resnet20", "adder", ADDER), ("torchvision.models:resnet18", "binary", BINARY), ("my.pkg:net_adder", None, CNN),
])
def test_a_sections_family_comes_from_its_family_key_or_its_registered_twin(model, family, expected):
    assert family_of_section(model, family) is expected  # a factory's name says nothing, whatever it ends with


@pytest.mark.parametrize("name,expected", [("resnet8", CNN), ("resnet8_adder", ADDER), ("resnet8_binary", BINARY)])
def test_a_built_networks_family_comes_from_its_layers(name, expected):
    assert family_of_model(create_model(name, 10, 1)) is expected


def test_what_each_family_ships():
    assert ADDER.precisions == ("fp32", "int8") and "int8 or fp32" in ADDER.refusal("fp16")
    assert CNN.precisions == BINARY.precisions == ("fp32", "fp16", "int8") and CNN.refusal("fp16") is None
