"""The context specialist (resnet18-deconv-ctx): its frozen branch, warm start, decodings and trainer."""


import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ensemble_color.nets import create_model, tiny_config
from ensemble_color.nets.context import GlobalContext
from ensemble_color.train import expert_context as ctx
from ensemble_color.train.expert import _load_init
from ensemble_color.train.losses import degrade_share

ARCH = "resnet18-deconv-ctx"


def _tiny(**over):
    return create_model(ARCH, **{**tiny_config(ARCH), **over}).eval()


def test_the_judge_can_never_be_the_context_branch():
    with pytest.raises(ValueError, match="lite0"):
        GlobalContext("lite0")


def test_a_warm_start_from_a_plain_specialist_begins_exactly_where_it_was(tmp_path):
    torch.manual_seed(0)
    plain = create_model("resnet18-deconv", decoder_widths=(16, 8, 8)).eval()
    for p in plain.parameters():  # non-trivial weights, BN statistics included via a forward pass in train mode
        p.data.normal_(0, 0.2)
    plain.train()(torch.rand(4, 1, 32, 32) * 100)
    plain.eval()
    save_file({k: v.contiguous() for k, v in plain.state_dict().items()}, str(tmp_path / "m.safetensors"))
    model = _tiny(decode="regression")
    _load_init(model, str(tmp_path / "m.safetensors"))  # the trainer's --init
    fresh = set(model.state_dict()) - set(plain.state_dict())
    assert fresh and all(k.startswith(ctx.NEW_MODULES) for k in fresh)
    x = torch.rand(2, 1, 40, 48) * 100
    with torch.no_grad():
        assert torch.allclose(model(x), plain(x), atol=1e-5)
        model.fuse.weight[:, 128:].fill_(0.05)  # once the context is fused, the output depends on the whole crop
        assert not torch.allclose(model(x), plain(x), atol=1e-3)


def test_a_file_of_another_architecture_is_refused(tmp_path):
    save_file({"encoder.0.weight": torch.zeros(3, 3)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(SystemExit, match="does not fit"):
        _load_init(_tiny(), str(tmp_path / "bad.safetensors"))


def test_the_frozen_branch_stays_out_of_the_plugin_file_but_moves_with_the_model():
    model = _tiny()
    assert not any("context." in k and not k.startswith("context_proj") for k in model.state_dict())
    assert all(not p.requires_grad for p in model.context.parameters())
    model.double().train()
    assert next(model.context.parameters()).dtype == torch.float64
    assert not model.context.training  # frozen: batch-norm statistics never move


def test_each_decoding_reads_the_two_heads_as_it_says():
    model = _tiny()
    x = torch.rand(1, 1, 32, 32) * 100
    with torch.no_grad():
        reg, logits = model.heads(x)
        soft = model.decode_heads(reg, logits, "soft")
        half = model.decode_heads(reg, logits, "blend", blend_w=0.5)
        assert torch.allclose(model.decode_heads(reg, logits, "regression", gain=1.0), reg)
        assert torch.allclose(half, 0.5 * soft + 0.5 * reg, atol=1e-5)
        assert soft.shape == reg.shape == (1, 2, 32, 32)
    with pytest.raises(ValueError, match="decode"):
        _tiny(decode="median")


def test_the_decoding_rule_chooses_the_lowest_palette_among_the_eligible():
    torch.manual_seed(1)
    model = _tiny()
    lab = torch.cat([torch.rand(6, 1, 32, 32) * 80 + 10, torch.randn(6, 2, 32, 32) * 25], 1)
    chosen, rows = ctx.choose_decoding(model, lab, reference_gain=1.0, gains=(1.0, 1.5))
    assert len(rows) == len(ctx.candidates((1.0, 1.5)))
    ref = rows[0]
    eligible = [r for r in rows if abs(r["cf"] - r["cf_gt"]) <= ctx.CF_TOLERANCE * r["cf_gt"]
                and r["l2ab"] <= (1 + ctx.L2AB_SLACK) * ref["l2ab"]]
    best = min(eligible, key=lambda r: r["palette"]) if eligible else ref
    assert chosen == {k: best[k] for k in ("decode", "gain", "T", "blend_w") if k in best}


def test_degrading_a_share_of_a_batch_touches_only_that_share():
    L = torch.rand(8, 1, 48, 48) * 100
    assert degrade_share(L, 0.0, np.random.default_rng(0)) is L
    out = degrade_share(L, 1.0, np.random.default_rng(0))
    assert out.shape == L.shape and all(not torch.equal(out[i], L[i]) for i in range(8))
    assert float(out.min()) >= 0 and float(out.max()) <= 100
    some = degrade_share(L, 0.5, np.random.default_rng(3))
    changed = sum(not torch.equal(some[i], L[i]) for i in range(8))
    assert 0 < changed < 8


def test_it_builds_on_the_meta_device_as_plugin_validation_does():
    from ensemble_color import softencode

    softencode._bins_cached.cache_clear()  # a fresh process: the bins are not computed yet
    with torch.device("meta"):
        model = create_model(ARCH, **tiny_config(ARCH))
    assert model.ab_bins.is_meta


def test_the_colourfulness_gap_pulls_a_washed_out_output_to_the_truth_and_no_further():
    from ensemble_color.color import lab_to_rgb
    from ensemble_color.eval.metrics import colorfulness
    from ensemble_color.train.losses import colourfulness_gap

    g = torch.Generator().manual_seed(0)
    L = torch.full((2, 1, 24, 24), 55.0)
    truth = torch.randn(2, 2, 24, 24, generator=g) * 25
    assert colourfulness_gap(L, truth, truth).item() < 1e-4
    washed = (truth * 0.3).requires_grad_(True)
    assert colourfulness_gap(L, washed, truth).item() > 0.05
    colourfulness_gap(L, washed, truth).backward()
    stepped = washed.detach() - 50.0 * washed.grad
    cf = [colorfulness(lab_to_rgb(torch.cat([L, ab], 1))).mean().item() for ab in (washed.detach(), stepped, truth)]
    assert cf[0] < cf[1] <= cf[2] * 1.05  # more colourful, not past the truth
    gray = torch.zeros(2, 2, 24, 24, requires_grad=True)
    colourfulness_gap(L, gray, truth).backward()
    assert torch.isfinite(gray.grad).all()


def test_the_palette_gap_ignores_placement_and_its_gradient_leads_to_the_truths_colours():
    from ensemble_color.eval.metrics import palette_distance
    from ensemble_color.train.losses import palette_gap

    g = torch.Generator().manual_seed(0)
    truth = torch.randn(2, 2, 32, 32, generator=g) * 25
    shuffled = truth.flatten(2)[:, :, torch.randperm(32 * 32, generator=g)].reshape(truth.shape)
    assert palette_gap(truth, truth, g).item() < 1e-6
    assert palette_gap(shuffled, truth, g, samples=32 * 32 * 8).item() < 1.5  # same colours elsewhere: ~sampling noise
    washed = (truth * 0.2).requires_grad_(True)
    before = palette_gap(washed, truth, g)
    assert before.item() > 5.0
    before.backward()
    assert torch.isfinite(washed.grad).all()
    stepped = washed.detach() - 2000.0 * washed.grad
    assert palette_distance(stepped[0], truth[0]) < palette_distance(washed[0].detach(), truth[0])


def test_the_embedding_gap_is_zero_at_the_truth_and_its_gradient_leads_towards_it():
    from ensemble_color.train.losses import EmbeddingGap

    gap = EmbeddingGap("lite1")
    g = torch.Generator().manual_seed(0)
    L = 30 + 40 * torch.rand(2, 1, 64, 64, generator=g)
    truth = torch.nn.functional.interpolate(torch.randn(2, 2, 8, 8, generator=g) * 30, size=64, mode="bilinear")
    assert gap(L, truth, truth).item() < 1e-6
    gray = torch.zeros_like(truth, requires_grad=True)
    before = gap(L, gray, truth)
    assert before.item() > 1e-3
    before.backward()
    assert torch.isfinite(gray.grad).all() and gray.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in gap.parameters())
    stepped = gray.detach() - 5.0 * gray.grad / gray.grad.abs().max()  # at most 5 ab units anywhere
    assert gap(L, stepped, truth).item() < before.item()
    gap.train()
    assert not gap.training  # frozen: ImageNet's batch-norm statistics whatever its owner does


def test_the_embedding_gap_refuses_the_judge():
    from ensemble_color.train.losses import EmbeddingGap

    with pytest.raises(ValueError, match="Lite0"):
        EmbeddingGap("lite0")
