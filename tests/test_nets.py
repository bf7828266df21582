import pytest
import torch

from ensemble_color.loading import LoadedExpert
from ensemble_color.nets import create_model, list_architectures, tiny_config
from ensemble_color.plugins import ExpertSpec


@pytest.mark.parametrize("arch", list_architectures())
def test_contract_l_in_ab_out(arch):
    model = create_model(arch, **tiny_config(arch)).eval()
    m = model.descriptor.size_multiple
    L = torch.rand(2, 1, 4 * m, 3 * m) * 100
    with torch.inference_mode():
        ab = model(L)
    assert ab.shape == (2, 2, 4 * m, 3 * m)
    assert ab.abs().max() <= 128  # Lab units, not normalised values


@pytest.mark.parametrize("arch", list_architectures())
@pytest.mark.parametrize("size", [(37, 53), (8, 8), (101, 64)])
def test_odd_sizes_are_padded_by_the_runner(arch, size, tmp_path):
    from conftest import make_expert

    folder = make_expert(tmp_path, "x", ["background"], arch=arch)
    import json
    manifest = json.loads((folder / "expert.json").read_text())
    spec = ExpertSpec("x", folder, arch, ("background",), manifest)
    with torch.inference_mode():
        ab = LoadedExpert(spec, torch.device("cpu")).run(torch.rand(1, 1, *size) * 100)
    assert ab.shape == (1, 2, *size)
    assert torch.isfinite(ab).all()


def test_resnet18_deconv_size_is_about_one_million_parameters():
    model = create_model("resnet18-deconv")
    n = sum(p.numel() for p in model.parameters())
    assert 0.7e6 < n < 1.3e6


def test_unknown_architecture_names_choices():
    with pytest.raises(KeyError, match="resnet18-deconv"):
        create_model("no-such-net")
