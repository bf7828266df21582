"""The shared training loop's weight EMA: what is validated, saved and returned, and that it resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
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


def test_compact_resume_point_continues_step_schedule_and_batches(tmp_path):
    """A run stopped, compacted (fp16 weights, no optimiser moments) and resumed on a 'fresh machine' (the full
    checkpoint deleted) continues at the same step, learning rate and batch sequence as the uninterrupted run."""
    import numpy as np

    from ensemble_color.train import loop

    def run(run_dir, stop_at=None, resume=False):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        rng = {"g": np.random.default_rng(0)}
        seen = []

        def step_fn(step):
            x = torch.from_numpy(rng["g"].random((4, 3))).float()
            seen.append((step, float(x.sum())))
            return model(x).pow(2).mean(), 4, {}

        def sampler_state():
            return json.dumps(rng["g"].bit_generator.state)

        def set_sampler_state(s):
            rng["g"].bit_generator.state = json.loads(s)

        cfg = loop.LoopConfig(steps=6, warmup=2, val_every=100, ckpt_every=2, stop_at=stop_at, ema=0.9, amp=False,
                              log_every=1)
        state = loop.train(model, run_dir, cfg, step_fn, lambda: {"v": 0.0}, "v", (sampler_state, set_sampler_state),
                           resume=resume)
        lrs = [json.loads(line)["lr"] for line in (run_dir / "log.jsonl").read_text().splitlines()
               if "lr" in json.loads(line)]
        return state, seen, lrs

    full_state, full_seen, full_lrs = run(tmp_path / "full")
    run(tmp_path / "half", stop_at=2)
    compact = loop.compact_checkpoint(tmp_path / "half")
    (tmp_path / "half" / "checkpoint.pt").unlink()
    state, seen, lrs = run(tmp_path / "half", resume=True)
    assert compact.name == loop.COMPACT and state.step == full_state.step == 6
    assert seen == full_seen[2:]  # the batch sampler continued where it stopped
    assert lrs == pytest.approx(full_lrs)  # ... and so did the learning-rate schedule


def test_compact_resume_point_keeps_the_best_checkpoint_chosen_so_far(tmp_path):
    """On a fresh machine (checkpoint.pt and best.pt gone) the compact point restores best.pt: without it the
    resumed run would export its last weights whenever no later validation beat the recorded best."""
    from ensemble_color.train import loop

    def run(resume=False, stop_at=None):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        vals = iter([1.0, 5.0, 6.0])  # the first validation (step 2) stays the best

        def step_fn(step):
            return model(torch.ones(4, 3) * (step + 1)).pow(2).mean(), 4, {}

        cfg = loop.LoopConfig(steps=6, warmup=1, val_every=2, ckpt_every=2, stop_at=stop_at, amp=False)
        state = loop.train(model, tmp_path, cfg, step_fn, lambda: {"v": next(vals)}, "v",
                           (lambda: "", lambda s: None), resume=resume)
        return state

    run(stop_at=2)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    loop.compact_checkpoint(tmp_path)
    (tmp_path / "checkpoint.pt").unlink()
    (tmp_path / "best.pt").unlink()
    state = run(resume=True)
    assert (state.best_step, state.step) == (2, 6)
    restored = torch.load(tmp_path / "best.pt", weights_only=True)
    for k, v in best.items():
        torch.testing.assert_close(restored[k], v.half().float(), msg=k)
        assert restored[k].dtype == v.dtype


def test_train_compact_cli_writes_a_resume_point_and_names_a_folder_without_checkpoint(tmp_path, capsys):
    from ensemble_color.cli import main
    from ensemble_color.train import loop

    cfg = loop.LoopConfig(steps=2, warmup=1, val_every=100, ckpt_every=1, amp=False)
    loop.train(torch.nn.Linear(3, 1), tmp_path / "run", cfg, lambda s: (torch.ones(()).requires_grad_(), 1, {}),
               lambda: {"v": 0.0}, "v", (lambda: "", lambda s: None))
    assert main(["train", "compact", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / loop.COMPACT).is_file()
    with pytest.raises(SystemExit, match=r"empty: no checkpoint\.pt"):
        main(["train", "compact", str(tmp_path / "empty")])
