"""Network architectures. Importing this package registers every architecture it defines."""

from . import (
    resnet_context,  # noqa: F401  (registers "resnet18-deconv-ctx")
    resnet_deconv,  # noqa: F401  (registers "resnet18-deconv")
)
from .multihead_lite import MultiHeadLite  # noqa: F401  (registers "multihead-lite")
from .multihead_unet import MultiHeadUNet  # noqa: F401  (registers "multihead-unet")
from .registry import ModelDescriptor, create_model, list_architectures, register_architecture, tiny_config

__all__ = ["ModelDescriptor", "create_model", "list_architectures", "register_architecture", "tiny_config"]
