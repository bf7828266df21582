import torch

from ensemble_color.train import adversarial
from ensemble_color.train.adversarial import Adversary, PatchCritic, adaptive_weight


def test_the_critic_judges_patches_of_the_training_size():
    out = PatchCritic(width=8)(torch.rand(2, 1, 64, 96) * 100, torch.zeros(2, 2, 64, 96))
    assert out.shape == (2, 1, 8, 12)


def test_pretraining_teaches_the_critic_to_tell_true_colour_from_gray():
    torch.manual_seed(0)
    L = torch.rand(8, 1, 32, 32) * 100
    real = (torch.rand(8, 2, 1, 1) - 0.5) * 120 * torch.ones(1, 1, 32, 32)  # one strong colour per photo
    adv = Adversary(lr=1e-3, width=8, seed=0)
    before = adversarial.critic_hinge(adv.critic(L, real), adv.critic(L, torch.zeros_like(real))).item()
    after = adv.pretrain(lambda: (L, real, torch.zeros_like(real)), steps=60)
    assert before > 1.5 and after < 0.8 * before


def test_the_balance_cancels_the_scale_of_the_adversarial_term():
    layer = torch.randn(4, 3, requires_grad=True)
    x = torch.randn(5, 4)
    rec = (x @ layer).pow(2).mean()
    adv = (x @ layer).sin().mean()
    w1 = adaptive_weight(rec, adv, layer, factor=0.5)
    w10 = adaptive_weight(rec, 10 * adv, layer, factor=0.5)
    assert torch.allclose(w1, 10 * w10, rtol=1e-3)
    g_rec = torch.autograd.grad(rec, layer, retain_graph=True)[0].norm()
    g_adv = torch.autograd.grad(w1 * adv, layer)[0].norm()
    assert torch.allclose(g_adv, 0.5 * g_rec, rtol=1e-3)  # the critic pulls with half the reconstruction's force
