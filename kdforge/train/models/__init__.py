"""Registered models; importing this package registers them all."""

from kdforge.train.models import mobilenetv2, resnet, vgg, wrn  # noqa: F401  (registration)
from kdforge.train.models import twins  # noqa: F401,I001  (wraps the CNNs above)
from kdforge.train.models.base import StagedNet
from kdforge.train.models.registry import create_model, list_models, model_builder, register_model

__all__ = ["StagedNet", "create_model", "list_models", "model_builder", "register_model"]
