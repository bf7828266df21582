"""BatchNorm folding (nets.fold): same outputs, fewer modules, and a misread network is left alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ensemble_color.nets import create_model, list_architectures, tiny_config
from ensemble_color.nets.fold import fold_batchnorm


def _randomise_bn(net: nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics and affine parameters, as after training."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.randn(n, generator=g))
                m.bias.data.copy_(torch.randn(n, generator=g))


def _count_bn(net: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())


@pytest.mark.parametrize("arch", list_architectures())
def test_folding_every_registered_architecture_keeps_its_output(arch: str) -> None:
    net = create_model(arch, **tiny_config(arch)).eval()
    _randomise_bn(net)
    probe = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(1)) * 100
    folded, count = fold_batchnorm(net, probe)
    if count:
        assert folded is not net and _count_bn(folded) == _count_bn(net) - count
    other = torch.rand(1, 1, 96, 64, generator=torch.Generator().manual_seed(2)) * 100  # not the probe
    with torch.inference_mode():
        torch.testing.assert_close(folded(other), net(other), rtol=1e-4, atol=1e-3)


def test_resnet18_deconv_folds_its_trunk() -> None:
    net = create_model("resnet18-deconv", **tiny_config("resnet18-deconv")).eval()
    _randomise_bn(net)
    folded, count = fold_batchnorm(net, torch.rand(1, 1, 64, 64) * 100)
    assert count >= 5 and _count_bn(folded) <= _count_bn(net) - 5  # conv1/bn1, each BasicBlock's two pairs


def test_timm_batchnorm_with_activation_keeps_the_activation() -> None:
    timm = pytest.importorskip("timm")
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False),
                        timm.layers.BatchNormAct2d(8, act_layer=nn.ReLU6), nn.Conv2d(8, 2, 1)).eval()
    _randomise_bn(net)
    x = torch.randn(1, 1, 16, 16) * 5
    folded, count = fold_batchnorm(net, x)
    assert count == 1 and _count_bn(folded) == 0
    assert any(isinstance(m, nn.ReLU6) for m in folded.modules())
    with torch.inference_mode():
        torch.testing.assert_close(folded(x), net(x), rtol=1e-4, atol=1e-5)
        assert (folded[1](torch.full((1, 8, 2, 2), -3.0)) == 0).all()  # the activation still clips


class _NormBeforeConv(nn.Module):
    """Declares conv then bn, but normalises the *input* channels: folding by declaration order is wrong here."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.bn(x))


def test_a_network_that_uses_its_norm_elsewhere_is_returned_unfolded() -> None:
    net = _NormBeforeConv().eval()
    _randomise_bn(net)
    folded, count = fold_batchnorm(net, torch.randn(1, 4, 8, 8))
    assert folded is net and count == 0 and isinstance(net.bn, nn.BatchNorm2d)


def test_folding_a_training_network_is_refused() -> None:
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2)), torch.randn(1, 1, 4, 4))


def test_pipeline_torch_experts_are_folded_and_colour_as_the_plain_build(tiny_experts) -> None:
    from ensemble_color.pipeline import Pipeline

    pipe = Pipeline.load(experts_dirs=[tiny_experts], use_shipped=False, router="background", device="cpu")
    expert = next(e for e in pipe.experts.values() if _count_bn(e.spec.build()))
    plain = expert.spec.build()
    assert _count_bn(expert.model) < _count_bn(plain)
    L = torch.rand(1, 1, 64, 96) * 100
    with torch.inference_mode():
        torch.testing.assert_close(expert.model(L), plain(L), rtol=1e-4, atol=1e-3)
