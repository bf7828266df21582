"""The shared training loop's weight EMA: what is validated, saved and returned, and that it resumes."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ensemble_color.train import loop


def _run(run_dir: Path, steps: int, ema: float = 0.0, stop_at: int | None = None, resume: bool = False
         ) -> tuple[nn.Module, list[torch.Tensor]]:
    """Train a BatchNorm'd linear model on fixed random batches; return it and the weights each validation saw."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    data = torch.randn(64, 4, generator=torch.Generator().manual_seed(1))

    def step_fn(step: int):
        x = data[(step * 8) % 64:(step * 8) % 64 + 8]
        return (model(x) - x.flip(1)).pow(2).mean(), 8, {}

    seen: list[torch.Tensor] = []

    def validate():
        seen.append(model[0].weight.detach().clone())
        return {"loss": float(seen[-1].abs().sum())}

    cfg = loop.LoopConfig(steps=steps, lr=0.05, warmup=1, val_every=1, ckpt_every=1, amp=False, ema=ema,
                          stop_at=stop_at, log_every=1)
    loop.train(model, run_dir, cfg, step_fn, validate, "loss", (lambda: "", lambda s: None), resume=resume)
    return model, seen


def test_ema_weights_are_validated_saved_and_returned(tmp_path: Path) -> None:
    one_step, _ = _run(tmp_path / "plain", steps=1)
    frozen, seen = _run(tmp_path / "ema", steps=4, ema=1.0)  # decay 1: the average never leaves step 1
    moved, _ = _run(tmp_path / "moved", steps=4)
    w1 = one_step[0].weight.detach()
    assert not torch.allclose(moved[0].weight, w1)  # training does move the live weights
    torch.testing.assert_close(frozen[0].weight.detach(), w1)
    assert all(torch.allclose(s, w1) for s in seen)  # every validation saw the average, not the live model
    best = torch.load(tmp_path / "ema" / "best.pt", weights_only=True)
    torch.testing.assert_close(best["0.weight"], w1)


def test_ema_run_resumes_to_the_same_weights(tmp_path: Path) -> None:
    full, _ = _run(tmp_path / "full", steps=6, ema=0.7)
    _run(tmp_path / "half", steps=6, ema=0.7, stop_at=3)
    resumed, _ = _run(tmp_path / "half", steps=6, ema=0.7, resume=True)
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=k)


def test_checkpoint_weights_are_the_average_when_there_is_one(tmp_path: Path) -> None:
    model, _ = _run(tmp_path / "ema", steps=3, ema=0.5)
    ckpt = torch.load(tmp_path / "ema" / "checkpoint.pt", weights_only=True)
    shipped = loop.checkpoint_weights(ckpt)
    assert shipped.keys() == ckpt["model"].keys()
    for k, v in model.state_dict().items():  # the finished run returned the average
        torch.testing.assert_close(shipped[k], v, msg=k)
    assert not torch.allclose(ckpt["model"]["0.weight"], shipped["0.weight"])
    _run(tmp_path / "plain", steps=1)
    plain = torch.load(tmp_path / "plain" / "checkpoint.pt", weights_only=True)
    assert loop.checkpoint_weights(plain) is plain["model"]
