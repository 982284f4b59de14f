"""Independent functional re-implementations shared by the update-maths tests (test_update_maths_*.py).

Each of those tests checks one algorithm's update against its paper's equations, evaluated with
plain torch ops on copies of the algorithm's weights, never through its own networks or helpers.
The pieces common to several algorithms live here: functional layers (a ReLU MLP, DrQ-v2's trunk
and encoder, twin critics), Adam's first step and the Polyak step written out, the comparisons of
weights, a deterministic stand-in for DrQ-v2's random shift, a spy on the TD3-style critic loss,
and the fixed batches.  What is particular to one algorithm stays in its test file.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

ADAM_EPS = 1e-8  # torch's default, which the algorithms use
TOL = dict(rtol=1e-4, atol=1e-5)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Each test on one torch thread (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- functional networks --------------------------------------------------------------------------


def params_of(module: torch.nn.Module, requires_grad: bool = False) -> dict[str, torch.Tensor]:
    """A detached copy of a module's parameters by name (optionally as fresh autograd leaves)."""
    return {k: v.detach().clone().requires_grad_(requires_grad) for k, v in module.named_parameters()}


def dense(p: dict, prefix: str, x: torch.Tensor, last: str | None = None) -> torch.Tensor:
    """Linear layers ``prefix.0``, ``prefix.2``, ... with ReLU between them, then ``last`` ("tanh",
    "relu" or None) after the final one."""
    idx = sorted(int(k.split(".")[-2]) for k in p if k.startswith(prefix + ".") and k.endswith(".weight"))
    for n, i in enumerate(idx):
        x = x @ p[f"{prefix}.{i}.weight"].T + p[f"{prefix}.{i}.bias"]
        if n < len(idx) - 1:
            x = torch.relu(x)
    return {"tanh": torch.tanh, "relu": torch.relu, None: lambda v: v}[last](x)


def drq_trunk(p: dict, x: torch.Tensor) -> torch.Tensor:
    """DrQ-v2's trunk: Linear -> LayerNorm -> tanh (identity when the network has none)."""
    if "trunk.0.weight" not in p:
        return x
    x = x @ p["trunk.0.weight"].T + p["trunk.0.bias"]
    x = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5)
    return torch.tanh(x * p["trunk.1.weight"] + p["trunk.1.bias"])


def twin_q(p: dict, x: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q_1, Q_2 of (B, |A|) actions: (B,) each (through the trunk where the critic has one)."""
    h = torch.cat([drq_trunk(p, x), a], dim=-1)
    return dense(p, "q1_net", h)[:, 0], dense(p, "q2_net", h)[:, 0]


def drq_encoder(p: dict, images: torch.Tensor) -> torch.Tensor:
    """DrQ-v2's encoder: uint8 / 255 - 0.5, conv 3x3/2, then three conv 3x3/1, ReLU after each."""
    x = images.float() / 255.0 - 0.5
    idx = sorted(int(k.split(".")[1]) for k in p if k.endswith(".weight"))
    for n, i in enumerate(idx):
        x = torch.relu(F.conv2d(x, p[f"convnet.{i}.weight"], p[f"convnet.{i}.bias"], stride=2 if n == 0 else 1))
    return x.reshape(x.shape[0], -1)


# ---- optimiser steps and comparisons ---------------------------------------------------------------


def adam_first_step(p: dict, grads: dict, lr: float) -> dict:
    """Adam's first step from zero moments: m_hat = g, v_hat = g^2, p - lr g / (|g| + eps)."""
    return {k: (v - lr * grads[k] / (grads[k].abs() + ADAM_EPS)).detach() for k, v in p.items()}


def polyak(target: dict, source: dict, tau: float) -> dict:
    """theta' <- (1 - tau) theta' + tau theta."""
    return {k: (1.0 - tau) * target[k] + tau * source[k] for k in target}


def assert_params(module: torch.nn.Module, expected: dict, what: str) -> None:
    got = dict(module.named_parameters())
    assert got.keys() == expected.keys(), what
    for k, v in expected.items():
        torch.testing.assert_close(got[k].detach(), v.detach(), **TOL, msg=lambda m, k=k: f"{what} {k}: {m}")


def perturb_(module: torch.nn.Module, seed: int, scale: float = 0.05) -> None:
    """Move a network off its twin / its online copy, so that using one for the other shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(scale * torch.randn(param.shape, generator=g))


def record_critic_targets(monkeypatch: pytest.MonkeyPatch, module) -> list[torch.Tensor]:
    """Wraps ``module.td3_critic_loss`` so that each target y handed to it is recorded (a copy);
    returns the record, to compare with the target computed from the paper's equations."""
    seen: list[torch.Tensor] = []
    original = module.td3_critic_loss

    def spy(q, target):
        seen.append(target.detach().clone())
        return original(q, target)

    monkeypatch.setattr(module, "td3_critic_loss", spy)
    return seen


# ---- images ----------------------------------------------------------------------------------------


def shift_images(images: torch.Tensor, shifts: torch.Tensor, pad: int) -> torch.Tensor:
    """DrQ-v2's shift for known integer shifts (dy, dx) in [-pad, pad]: replicate-pad by ``pad``,
    crop H x W at offset (pad + dy, pad + dx)."""
    _, _, h, w = images.shape
    padded = F.pad(images.float(), (pad,) * 4, mode="replicate")
    out = [padded[i, :, pad + dy : pad + dy + h, pad + dx : pad + dx + w] for i, (dy, dx) in enumerate(shifts.tolist())]
    return torch.stack(out).to(images.dtype)


class RecordingShift:
    """Stands in for `random_shift`: records each call and applies a known shift per call (so the
    algorithm's own generator serves only its other random draws)."""

    def __init__(self) -> None:
        self.calls: list[tuple[torch.Tensor, int, torch.Tensor]] = []

    def __call__(self, images, pad=4, generator=None):
        g = torch.Generator().manual_seed(100 + len(self.calls))
        shifts = torch.randint(-pad, pad + 1, (images.shape[0], 2), generator=g)
        out = shift_images(images, shifts, pad)
        self.calls.append((images.clone(), pad, out.clone()))
        return out

    def output_for(self, images: torch.Tensor) -> torch.Tensor:
        outs = [out for inp, _, out in self.calls if torch.equal(inp, images)]
        assert len(outs) == 1, f"{len(outs)} augmentations of this batch, not 1"
        assert not torch.equal(outs[0], images)
        return outs[0]


def image_batch(
    batch: int, image_shape: tuple[int, ...], action_dim: int, discount: torch.Tensor, seed: int = 20
) -> dict[str, torch.Tensor]:
    """Random uint8 frames, actions in [-0.9, 0.9], N(0, 1) rewards, and the given discounts
    gamma^n (1 - done), as the batch contract writes them."""
    g = torch.Generator().manual_seed(seed)
    return {
        "obs": torch.randint(0, 256, (batch, *image_shape), generator=g, dtype=torch.uint8),
        "next_obs": torch.randint(0, 256, (batch, *image_shape), generator=g, dtype=torch.uint8),
        "action": (torch.rand(batch, action_dim, generator=g) * 2 - 1) * 0.9,
        "reward": torch.randn(batch, generator=g),
        "discount": discount,
    }
