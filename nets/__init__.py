"""The one network library of pandalab: every offline algorithm (learning/algorithms/) and the
collector's learned explorers build their networks from these parts.

A LEAF module: it imports nothing of ours (DESIGN.md), only torch.

Parts
- `mlp`: a multi-layer perceptron (hidden sizes, activation, optional LayerNorm / output activation).
- `DrQEncoder`: the DrQ-v2 conv encoder (Yarats et al. 2021; seed 004 appendix D.2): 4 conv layers,
  32 channels, 3x3, the first with stride 2, on uint8 frames scaled to [-0.5, 0.5]; flattened
  output. Works for any image size of at least 15x15 (84x84 gives 32 * 35 * 35 features).
- `trunk`: Linear -> feature_dim (50) + LayerNorm + tanh, DrQ-v2's projection of encoder features.
- `random_shift`: DrQ-v2's random-shift augmentation (pad 4, replicate, integer shift per sample)
  as one index gather on the uint8 images; equal to DrQ-v2's `grid_sample` version (whose sampling
  points fall exactly on pixel centres) without padding a float copy, and fast on CPU.
- `DeterministicActor`: (optional trunk) -> MLP -> tanh, actions in [-1, 1].
- `TwinQ`: two Q heads on one (optional) shared trunk; returns Q1, Q2 of shape (B,).
- `Normalizer`: fixed observation mean/std held as buffers (saved with the networks).
- `ConvEncoder`: a plain conv stack, by default the Nature-DQN one (Mnih et al. 2015: 32 8x8/4,
  64 4x4/2, 64 3x3/1), which seed 003 used for its TD3 agent ("DQN + Dense", appendix Table I)
  and, with leaky ReLUs, the RND paper (Burda et al. 2018) for its target and predictor.
- `soft_update`: Polyak averaging of target networks in one fused call; `frozen`: a context in
  which a module's parameters get no gradient (an actor loss differentiates through the critic
  without computing the critic's weight gradients, which the original code computes and discards).
- TD3 maths (Fujimoto et al. 2018), shared by the offline TD3+BC and the collector's learned
  explorers (`rnd`, `gcrnd`): `td3_target` (target policy smoothing + clipped double-Q),
  `td3_critic_loss`, `td3_policy_q` (the actor's Q1(s, pi(s)) through a frozen critic) and
  `td3_actor_due` (the delayed actor / target update schedule).

Randomness: every random draw takes an explicit `torch.Generator` (or the global one when None),
so an algorithm that stores its generator resumes exactly.  `randn` also takes a list of
generators, one per agent of a stack (learning/stacked.py trains K agents with stacked parameters):
each agent's slice is then drawn from its own generator, as in its own run.

Shapes: every part works on inputs with leading dimensions before the batch (features and actions
on the last axis; `td3_critic_loss` averages over the last axis only), so the same code runs one
agent on (B, D) and K stacked agents on (K, B, D).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

__all__ = [
    "DQN_CONV_LAYERS",
    "ConvEncoder",
    "DeterministicActor",
    "DrQEncoder",
    "Normalizer",
    "TwinQ",
    "frozen",
    "gaussian_kl",
    "mlp",
    "orthogonal_init",
    "randn",
    "random_shift",
    "soft_update",
    "straight_through_clamp",
    "td3_actor_due",
    "td3_critic_loss",
    "td3_policy_q",
    "td3_target",
    "trunk",
]


def mlp(
    in_dim: int,
    hidden: Sequence[int],
    out_dim: int,
    activation: type[nn.Module] = nn.ReLU,
    layer_norm: bool = False,
    output_activation: type[nn.Module] | None = None,
) -> nn.Sequential:
    """Linear layers of sizes ``in_dim -> hidden... -> out_dim`` with ``activation`` between them
    (after an optional LayerNorm), and ``output_activation`` (e.g. nn.Tanh) after the last."""
    layers: list[nn.Module] = []
    last = in_dim
    for size in hidden:
        layers.append(nn.Linear(last, size))
        if layer_norm:
            layers.append(nn.LayerNorm(size))
        layers.append(activation())
        last = size
    layers.append(nn.Linear(last, out_dim))
    if output_activation is not None:
        layers.append(output_activation())
    return nn.Sequential(*layers)


def orthogonal_init(module: nn.Module) -> None:
    """DrQ-v2's `utils.weight_init`: orthogonal weights (gain sqrt(2) for convs), zero biases.
    Use as ``net.apply(orthogonal_init)``."""
    if isinstance(module, nn.Linear):
        nn.init.orthogonal_(module.weight.data)
        if module.bias is not None:
            module.bias.data.fill_(0.0)
    elif isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.orthogonal_(module.weight.data, nn.init.calculate_gain("relu"))
        if module.bias is not None:
            module.bias.data.fill_(0.0)


def trunk(in_dim: int, feature_dim: int = 50) -> nn.Sequential:
    """DrQ-v2's trunk: Linear -> feature_dim + LayerNorm + tanh."""
    return nn.Sequential(nn.Linear(in_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())


class DrQEncoder(nn.Module):
    """DrQ-v2 encoder. Input: uint8 (B, C, H, W) (C = 3 x frame stack); output: float (B, repr_dim)."""

    MIN_SIZE = 15  # 3x3/2 then three 3x3/1 convolutions leave at least one pixel

    def __init__(
        self, obs_shape: Sequence[int], channels: int = 32, layers: int = 4, channels_last: bool = True
    ) -> None:
        super().__init__()
        if len(obs_shape) != 3:
            raise ValueError(f"DrQEncoder takes (C, H, W) images, got shape {tuple(obs_shape)}")
        c, h, w = obs_shape
        if min(h, w) < self.MIN_SIZE:
            raise ValueError(f"DrQEncoder needs images of at least {self.MIN_SIZE}x{self.MIN_SIZE}, got {h}x{w}")
        convs: list[nn.Module] = [nn.Conv2d(c, channels, 3, stride=2), nn.ReLU()]
        for _ in range(layers - 1):
            convs += [nn.Conv2d(channels, channels, 3, stride=1), nn.ReLU()]
        self.convnet = nn.Sequential(*convs)
        out_h, out_w = (h - 3) // 2 + 1 - 2 * (layers - 1), (w - 3) // 2 + 1 - 2 * (layers - 1)
        self.repr_dim = channels * out_h * out_w
        self.channels_last = channels_last
        self.apply(orthogonal_init)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.float() / 255.0 - 0.5
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        h = self.convnet(x)
        return h.reshape(h.shape[0], -1)


DQN_CONV_LAYERS: tuple[tuple[int, int, int], ...] = ((32, 8, 4), (64, 4, 2), (64, 3, 1))
"""(channels, kernel, stride) of the Nature-DQN conv stack (Mnih et al. 2015)."""


class ConvEncoder(nn.Module):
    """A conv stack without padding, ``layers`` = ((channels, kernel, stride), ...), each followed by
    ``activation``; flattened output of size ``repr_dim``.  Input (B, C, H, W): uint8 frames are
    scaled to [-0.5, 0.5] (as `DrQEncoder`) when ``uint8_input``, else taken as floats (RND feeds
    whitened observations).  Too small an image for the stack is refused with its size named."""

    def __init__(
        self,
        obs_shape: Sequence[int],
        layers: Sequence[Sequence[int]] = DQN_CONV_LAYERS,
        activation: type[nn.Module] = nn.ReLU,
        uint8_input: bool = True,
    ) -> None:
        super().__init__()
        if len(obs_shape) != 3:
            raise ValueError(f"ConvEncoder takes (C, H, W) images, got shape {tuple(obs_shape)}")
        c, h, w = (int(v) for v in obs_shape)
        modules: list[nn.Module] = []
        for channels, kernel, stride in layers:
            h, w = (h - kernel) // stride + 1, (w - kernel) // stride + 1
            if h < 1 or w < 1:
                raise ValueError(f"image {tuple(obs_shape)[1:]} too small for conv layers {[tuple(x) for x in layers]}")
            modules += [nn.Conv2d(c, channels, kernel, stride=stride), activation()]
            c = channels
        self.convnet = nn.Sequential(*modules)
        self.repr_dim = c * h * w
        self.uint8_input = uint8_input

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.float() / 255.0 - 0.5 if self.uint8_input else obs
        h = self.convnet(x)
        return h.reshape(h.shape[0], -1)


def random_shift(images: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ-v2 random shift: pad each image by ``pad`` pixels (replicating the border) and crop back
    to H x W at a random integer offset in [0, 2 * pad] per sample, the same for all channels.

    Replicate padding is index clamping, so the crop is one gather on the input (any dtype, uint8
    included) with no padded copy."""
    if pad == 0:
        return images
    n, c, h, w = images.shape
    device = images.device
    shift = torch.randint(0, 2 * pad + 1, (n, 2), device=device, generator=generator) - pad
    rows = (torch.arange(h, device=device).unsqueeze(0) + shift[:, :1]).clamp_(0, h - 1)  # (n, h)
    cols = (torch.arange(w, device=device).unsqueeze(0) + shift[:, 1:]).clamp_(0, w - 1)  # (n, w)
    index = (rows.unsqueeze(2) * w + cols.unsqueeze(1)).reshape(n, 1, h * w).expand(n, c, h * w)
    return images.reshape(n, c, h * w).gather(2, index).reshape(n, c, h, w)


class DeterministicActor(nn.Module):
    """a = tanh(MLP(features)), optionally after a DrQ trunk (``feature_dim``)."""

    def __init__(self, in_dim: int, action_dim: int, hidden: Sequence[int], feature_dim: int | None = None) -> None:
        super().__init__()
        self.trunk = trunk(in_dim, feature_dim) if feature_dim else nn.Identity()
        self.policy = mlp(feature_dim or in_dim, hidden, action_dim, output_activation=nn.Tanh)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.policy(self.trunk(x))


class TwinQ(nn.Module):
    """Clipped double-Q critic: Q1, Q2 = MLP_i([features, action]), on one optional shared trunk
    (DrQ-v2's critic has one trunk feeding both heads; TD3's and BCQ's have none)."""

    def __init__(self, in_dim: int, action_dim: int, hidden: Sequence[int], feature_dim: int | None = None) -> None:
        super().__init__()
        self.trunk = trunk(in_dim, feature_dim) if feature_dim else nn.Identity()
        head_in = (feature_dim or in_dim) + action_dim
        self.q1_net = mlp(head_in, hidden, 1)
        self.q2_net = mlp(head_in, hidden, 1)

    def forward(self, x: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.cat([self.trunk(x), action], dim=-1)
        return self.q1_net(h).squeeze(-1), self.q2_net(h).squeeze(-1)

    def q1(self, x: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.q1_net(torch.cat([self.trunk(x), action], dim=-1)).squeeze(-1)


class Normalizer(nn.Module):
    """(x - mean) / (std + eps) with mean and std fixed buffers (TD3+BC's dataset statistics; the
    authors' code adds eps = 1e-3 to the std). Identity when built without statistics."""

    def __init__(
        self,
        dim: int,
        mean: Sequence[float] | torch.Tensor | None = None,
        std: Sequence[float] | torch.Tensor | None = None,
        eps: float = 1e-3,
    ) -> None:
        super().__init__()
        mean_t = torch.zeros(dim) if mean is None else torch.as_tensor(mean, dtype=torch.float32).reshape(dim)
        std_t = torch.ones(dim) if std is None else torch.as_tensor(std, dtype=torch.float32).reshape(dim) + eps
        if not bool(torch.isfinite(mean_t).all() and torch.isfinite(std_t).all() and (std_t > 0).all()):
            raise ValueError("observation statistics must be finite with a positive std")
        self.register_buffer("mean", mean_t.clone())
        self.register_buffer("std", std_t.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """target <- (1 - tau) target + tau source for every parameter (one fused foreach call);
    buffers are copied."""
    t_params = [p for p in target.parameters()]
    s_params = [p for p in source.parameters()]
    torch._foreach_lerp_(t_params, s_params, tau)
    for tb, sb in zip(target.buffers(), source.buffers(), strict=True):
        tb.copy_(sb)


@contextlib.contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Within the block the modules' parameters take no gradient (inputs still do)."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def straight_through_clamp(x: torch.Tensor, low: float = -1.0, high: float = 1.0, eps: float = 1e-6) -> torch.Tensor:
    """DrQ-v2's TruncatedNormal clamp: the value clamped to (low, high), the gradient passed through."""
    return x - x.detach() + x.detach().clamp(low + eps, high - eps)


def randn(
    shape: Sequence[int],
    generator: torch.Generator | list[torch.Generator] | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Standard normal draws of ``shape`` from ``generator``.  With a list of K generators (K
    stacked agents) ``shape`` is (K, ...) and slice k is drawn from generator k alone, exactly the
    draw of ``randn(shape[1:], generator_k)``: an agent's noise does not depend on its stack."""
    if isinstance(generator, list):
        if shape[0] != len(generator):
            raise ValueError(f"{len(generator)} generators for a leading dimension of {shape[0]}")
        return torch.stack([torch.randn(tuple(shape[1:]), device=device, generator=g) for g in generator])
    return torch.randn(tuple(shape), device=device, generator=generator)


def gaussian_kl(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Mean over elements of KL(N(mean, std) || N(0, 1)) as BCQ's code writes it, over the last two
    axes (batch, latent): one value per agent of a stack."""
    return -0.5 * (1 + torch.log(std.pow(2)) - mean.pow(2) - std.pow(2)).mean((-2, -1))


# ---- TD3 (Fujimoto et al. 2018), shared by learning/algorithms/td3bc.py and collector/explorers/rnd.py


@torch.no_grad()
def td3_target(
    actor_target: nn.Module,
    critic_target: nn.Module,
    next_obs: torch.Tensor,
    reward: torch.Tensor,
    discount: torch.Tensor,
    policy_noise: float,
    noise_clip: float,
    generator: torch.Generator | list[torch.Generator] | None = None,
) -> torch.Tensor:
    """TD3's critic target: r + discount * min(Q1', Q2')(s', a'), a' = clip(pi'(s') + clip(eps,
    -noise_clip, noise_clip), -1, 1), eps ~ N(0, policy_noise^2) (target policy smoothing with
    actions in [-1, 1]; clipped double-Q).  ``discount`` is gamma (times 1 - done)."""
    next_action = actor_target(next_obs)
    noise = randn(next_action.shape, generator, next_action.device) * policy_noise
    next_action = (next_action + noise.clamp(-noise_clip, noise_clip)).clamp(-1.0, 1.0)
    target_q = torch.min(*critic_target(next_obs, next_action))
    return reward + discount * target_q


def td3_critic_loss(q: tuple[torch.Tensor, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """Sum of both critics' mean squared errors to the (detached) target, averaged over the batch
    (the last axis): a scalar for (B,) values, one loss per agent for stacked (K, B) values (bit for
    bit what ``F.mse_loss`` gives on (B,))."""
    return (q[0] - target).pow(2).mean(-1) + (q[1] - target).pow(2).mean(-1)


def td3_policy_q(actor: nn.Module, critic: nn.Module, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """pi(s) and Q1(s, pi(s)), differentiable in the actor only (the critic is `frozen`); TD3's
    actor loss is ``-q.mean()`` (TD3+BC adds its BC term).  ``critic`` must have a ``q1`` method."""
    pi = actor(obs)
    with frozen(critic):
        q = critic.q1(obs, pi)
    return pi, q


def td3_actor_due(critic_updates: int, policy_freq: int) -> bool:
    """TD3's delayed update: the actor and the targets move once every ``policy_freq`` critic
    updates (``critic_updates`` counts the update just done, from 1)."""
    return critic_updates % policy_freq == 0
