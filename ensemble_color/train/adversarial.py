"""An adversarial phase for the specialists: a small conditional patch critic on (L, ab) and its losses.

Why: a pixel or bin loss still prefers a safe colour when the object could be several; a critic that has learnt
what real (L, ab) pairs look like penalises the drab, blotchy average where the photo's own structure says it
should be a bird's plumage, and it judges colour *distributions*, which is what the Fréchet and palette
distances measure. Recipe after DeOldify's "NoGAN": the generator is pre-trained (the shipped specialist, or a
context specialist), the critic is then pre-trained alone against it (``pretrain``), and a short joint phase
follows; longer joint phases are where GANs turn skin orange.

* The critic (``PatchCritic``) is a 4-layer spectral-normalised PatchGAN (Isola et al. 2017) on the *clean* L
  and ab: each ~46 px patch is judged real or produced, conditioned on the gray structure under it.
* Hinge losses (Miyato et al. 2018).
* The generator's adversarial term is balanced against its reconstruction loss by the gradient-norm ratio at a
  shared layer (Esser et al. 2021, VQGAN), times ``factor``: one number that means "this share of the
  reconstruction's pull", whatever the critic's current scale.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ..color import AB_RANGE


class PatchCritic(nn.Module):
    """(L 0..100, ab) at training size -> a map of real/produced logits, one per ~46 px patch (stride 8)."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        w = width

        def conv(i: int, o: int, stride: int) -> nn.Module:
            return spectral_norm(nn.Conv2d(i, o, 4, stride, 1))

        self.net = nn.Sequential(conv(3, w, 2), nn.LeakyReLU(0.2, inplace=True),
                                 conv(w, 2 * w, 2), nn.LeakyReLU(0.2, inplace=True),
                                 conv(2 * w, 4 * w, 2), nn.LeakyReLU(0.2, inplace=True),
                                 spectral_norm(nn.Conv2d(4 * w, 1, 3, 1, 1)))

    def forward(self, L: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([(L.float() - 50.0) / 50.0, ab.float() / AB_RANGE], 1))


def critic_hinge(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The critic's hinge loss on its logits for real and produced pairs."""
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def generator_hinge(fake: torch.Tensor) -> torch.Tensor:
    """The generator's hinge loss: raise the critic's score of its own pairs."""
    return -fake.mean()


def adaptive_weight(rec: torch.Tensor, adv: torch.Tensor, layer: torch.Tensor, factor: float,
                    cap: float = 1e4) -> torch.Tensor:
    """``factor`` x ||d rec / d layer|| / ||d adv / d layer|| (VQGAN's balance), detached and capped."""
    g_rec = torch.autograd.grad(rec, layer, retain_graph=True)[0].norm()
    g_adv = torch.autograd.grad(adv, layer, retain_graph=True)[0].norm()
    return (factor * g_rec / (g_adv + 1e-4)).clamp(max=cap).detach()


class Adversary:
    """The critic and its optimiser, as a training phase holds them (``state_dict`` for the run's checkpoint)."""

    def __init__(self, lr: float = 2e-4, width: int = 32, seed: int = 0) -> None:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.critic = PatchCritic(width)
        self.opt = torch.optim.Adam(self.critic.parameters(), lr=lr, betas=(0.5, 0.999))

    def update(self, L: torch.Tensor, real_ab: torch.Tensor, fake_ab: torch.Tensor) -> float:
        """One critic step on clean L with the true ab against the produced ab (detached); returns its loss."""
        self.critic.train()
        loss = critic_hinge(self.critic(L, real_ab), self.critic(L, fake_ab.detach()))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.item()

    def generator_loss(self, L: torch.Tensor, fake_ab: torch.Tensor) -> torch.Tensor:
        """The hinge term for the generator; the critic's own gradients from it are dropped at its next step."""
        return generator_hinge(self.critic(L, fake_ab))

    def pretrain(self, batches: Callable[[], tuple[torch.Tensor, torch.Tensor, torch.Tensor]], steps: int,
                 log: Callable[[int, float], None] | None = None) -> float:
        """``steps`` critic updates against a fixed generator; ``batches()`` gives (clean L, true ab, produced
        ab). Returns the mean loss of the last tenth (hinge: 2 = guessing, 0 = separating every patch)."""
        losses = []
        for i in range(steps):
            losses.append(self.update(*batches()))
            if log is not None and (i + 1) % 20 == 0:
                log(i + 1, sum(losses[-20:]) / len(losses[-20:]))
        tail = losses[-max(1, steps // 10):]
        return sum(tail) / len(tail)

    def state_dict(self) -> dict:
        return {"critic": self.critic.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.critic.load_state_dict(state["critic"])
        self.opt.load_state_dict(state["opt"])


def shared_layer(model: nn.Module) -> torch.Tensor:
    """The weight the adaptive balance measures gradients at: the first decoder stage's convolution, which
    every head of a specialist reads."""
    convs = [m.weight for m in model.decoder[0].modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    if not convs:
        raise ValueError("the model's first decoder stage has no convolution")
    return convs[-1]
