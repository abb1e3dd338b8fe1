"""The model zoo: arch specs -> ``nn.Module`` through one registry.

- ``registry``: :func:`create_model`, :func:`normalize_spec`, :func:`register_model`, ...
- ``cifar_resnet``, ``wrn``, ``mobilenetv2``: the CIFAR KD benchmark networks, built as
  RepDistiller builds them so its checkpoints load strictly;
- ``small_cnn``: tiny CNNs for 8x8 digits and 28x28 MNIST;
- ``torchvision_models``: any torchvision classifier as ``tv:NAME``;
- ``searchable``: the NAS families ``nas_mbv`` and ``nas_resnet``, built from arch specs.

Importing this package imports every family module, which registers its models.
"""

from edgekd.models import (  # noqa: F401
    cifar_resnet,
    mobilenetv2,
    searchable,  # noqa: F401  (nas_mbv, nas_resnet: the searchable families)
    small_cnn,
    torchvision_models,
    wrn,
)
from edgekd.models.registry import (
    count_parameters,
    create_model,
    list_models,
    normalize_spec,
    register_model,
)

__all__ = [
    "count_parameters",
    "create_model",
    "list_models",
    "normalize_spec",
    "register_model",
]
