"""``resnet18-deconv``: the specialist expert architecture.

ResNet-18 ``conv1 … layer2`` as a mid-level encoder (stride 8, 128 channels) with ``conv1``
summed over RGB to take one channel, then a decoder of three Conv-BN-ReLU + x2 upsampling stages
down to two output channels. About 0.9 M parameters: small enough to train on a CPU, big enough
to learn a category's palette.

Contract (richzhang/colorization style): ``forward`` takes L in Lab units (B, 1, H, W) and returns
ab in Lab units (B, 2, H, W); the normalisation lives inside the model, and so does ``ab_gain``.

``ab_gain`` (config, default 1) scales the predicted ab. An MSE regressor predicts the conditional
mean of ab, which is desaturated wherever the hue is uncertain; training on targets x s and scaling the
MSE-optimal output by s are the same thing, so the trainer chooses the gain after training, on
held-out train photos (``train.expert.choose_gain``), instead of retraining per saturation.
"""

from __future__ import annotations

import itertools

import torch
import torchvision
from torch import nn

from ..color import AB_RANGE, checked_gain, gain_ab
from .registry import ModelDescriptor, register_architecture


def _decoder_stage(c_in: int, c_out: int) -> nn.Sequential:
    # Bilinear x2 then conv: same receptive field as a deconvolution without its checkerboard.
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
    )


class ResNetDeconv(nn.Module):
    """ResNet-18 mid-level encoder + upsampling decoder predicting ab."""

    def __init__(self, decoder_widths: tuple[int, int, int] = (128, 64, 32), imagenet_init: bool = False,
                 input_size: int = 128, ab_gain: float = 1.0) -> None:
        super().__init__()
        self.ab_gain = checked_gain(ab_gain, "ab_gain")
        weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1 if imagenet_init else None
        resnet = torchvision.models.resnet18(weights=weights)  # downloads only when imagenet_init
        conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        with torch.no_grad():
            conv1.weight.copy_(resnet.conv1.weight.sum(dim=1, keepdim=True))
        self.encoder = nn.Sequential(conv1, resnet.bn1, resnet.relu, resnet.maxpool, resnet.layer1, resnet.layer2)
        widths = [128, *decoder_widths]
        self.decoder = nn.Sequential(*[_decoder_stage(a, b) for a, b in itertools.pairwise(widths)])
        self.head = nn.Conv2d(widths[-1], 2, kernel_size=3, padding=1)
        self.descriptor = ModelDescriptor("resnet18-deconv", size_multiple=8, supports_half=True,
                                          input_size=input_size)

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        x = (L - 50.0) / 50.0
        ab = torch.tanh(self.head(self.decoder(self.encoder(x)))) * AB_RANGE
        return gain_ab(ab, self.ab_gain)


@register_architecture("resnet18-deconv", tiny_config={"decoder_widths": (16, 8, 8)})
def resnet18_deconv(**config) -> ResNetDeconv:
    return ResNetDeconv(**config)
