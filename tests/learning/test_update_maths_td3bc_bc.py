"""The update maths of TD3+BC and BC pinned against the papers' equations.

Every expected value here is computed with plain torch ops (matmul, ReLU, tanh, min, clamp) from
the algorithm's own weights read before the update, never through `nets`' ``td3_*`` helpers, so a
planted mistake in those helpers or in learning/algorithms/ shows up as a mismatch.  Gradients are
compared through ``param.grad``, which each update leaves behind (``zero_grad`` runs before
``backward``), so a loss with the right value but the wrong gradient (an undetached lambda) fails
too.  Then two short learning checks on one-dimensional offline problems whose answer is known.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import learning.algorithms.td3bc as td3bc_module
import nets
from learning.algorithms import ObservationSpec, make_algorithm
from learning.dataset import nstep_targets

from .update_maths_reference import (
    one_torch_thread,  # noqa: F401 (an autouse fixture)
    record_critic_targets,
)

OBS_DIM, ACTION_DIM, BATCH = 3, 2, 6
MEAN = np.array([0.5, -1.0, 2.0], dtype=np.float32)
STD = np.array([2.0, 0.5, 1.0], dtype=np.float32)
EPS = 0.05  # far from the default 1e-3, so a Normalizer that ignores or misplaces eps is visible
SPEC = ObservationSpec("vector", (OBS_DIM,), mean=MEAN, std=STD)
LR = 1e-2
TD3 = {
    "hidden_dims": [8],
    "actor_lr": LR,
    "critic_lr": LR,
    "tau": 0.3,  # far from 0.5, so tau <-> 1 - tau is visible
    "policy_noise": 0.6,
    "noise_clip": 0.25,  # well below policy_noise: most noise draws are clipped
    "policy_freq": 2,
    "alpha": 2.5,
    "normalizer_eps": EPS,
}
BC = {"hidden_dims": [8], "lr": LR, "normalizer_eps": EPS}

Layers = list[tuple[torch.Tensor, torch.Tensor]]


@pytest.fixture
def critic_targets(monkeypatch) -> list[torch.Tensor]:
    """The target y that TD3+BC hands to its critic loss, recorded at each update."""
    return record_critic_targets(monkeypatch, td3bc_module)


# ---- independent maths ---------------------------------------------------------------------------


def layers(module: nn.Module, prefix: str) -> Layers:
    """Copies of the (weight, bias) of the Linear layers named ``prefix<i>`` in order."""
    sd = module.state_dict()
    index = sorted({int(k.split(".")[-2]) for k in sd if k.startswith(prefix) and k.endswith(".weight")})
    return [(sd[f"{prefix}{i}.weight"].clone(), sd[f"{prefix}{i}.bias"].clone()) for i in index]


def params_of(module: nn.Module, prefix: str) -> list[torch.Tensor]:
    named = dict(module.named_parameters())
    index = sorted({int(k.split(".")[-2]) for k in named if k.startswith(prefix) and k.endswith(".weight")})
    return [named[f"{prefix}{i}.{kind}"] for i in index for kind in ("weight", "bias")]


def leaves(ls: Layers) -> Layers:
    return [(w.clone().requires_grad_(True), b.clone().requires_grad_(True)) for w, b in ls]


def flat(ls: Layers) -> list[torch.Tensor]:
    return [t for pair in ls for t in pair]


def mlp(ls: Layers, x: torch.Tensor) -> torch.Tensor:
    for i, (w, b) in enumerate(ls):
        x = x @ w.T + b
        if i < len(ls) - 1:
            x = x.clamp(min=0.0)  # ReLU
    return x


def policy(ls: Layers, s: torch.Tensor) -> torch.Tensor:
    """pi(s) = tanh(MLP(s)): actions in [-1, 1]."""
    return torch.tanh(mlp(ls, s))


def q_value(ls: Layers, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Q(s, a) = MLP([s, a])."""
    return mlp(ls, torch.cat([s, a], dim=1))[:, 0]


def normalise(obs: torch.Tensor, mean=MEAN, std=STD, eps=EPS) -> torch.Tensor:
    """TD3+BC sec. 5: s <- (s - mu) / (sigma + eps), dataset statistics."""
    return (obs - torch.as_tensor(mean)) / (torch.as_tensor(std) + eps)


def snapshot(algo) -> dict:
    """Every TD3+BC weight (as copies) and the state of its noise generator."""
    return {
        "actor": layers(algo.actor, "policy."),
        "actor_target": layers(algo.actor_target, "policy."),
        "q1": layers(algo.critic, "q1_net."),
        "q2": layers(algo.critic, "q2_net."),
        "q1_target": layers(algo.critic_target, "q1_net."),
        "q2_target": layers(algo.critic_target, "q2_net."),
        "generator": algo.generator.get_state(),
    }


def same(a: Layers, b: Layers) -> bool:
    return all(torch.equal(x, y) for x, y in zip(flat(a), flat(b), strict=True))


def assert_all_close(actual, expected, what: str, atol: float = 1e-6) -> None:
    for i, (x, y) in enumerate(zip(actual, expected, strict=True)):
        assert x is not None, f"{what}[{i}]: no gradient"
        assert torch.allclose(x, y, rtol=1e-4, atol=atol), f"{what}[{i}]: {x} != {y}"


def assert_adam_first_step(before: Layers, after: list[torch.Tensor], grads, lr: float, what: str) -> None:
    """Adam's first step is -lr * m_hat / (sqrt(v_hat) + eps) = -lr * g / (|g| + 1e-8): descent on the loss."""
    for i, (p0, p1, g) in enumerate(zip(flat(before), after, grads, strict=True)):
        sure = g.abs() > 1e-5
        step = (p1.detach() - p0)[sure]
        assert torch.allclose(step, -lr * g.sign()[sure], rtol=1e-3, atol=1e-6), f"{what}[{i}] is not a descent step"


def make_batch(seed: int) -> dict[str, torch.Tensor]:
    """Raw (unnormalised) observations around the dataset statistics, actions in [-1, 1], and
    discounts gamma * (1 - done) with two terminals."""
    g = torch.Generator().manual_seed(seed)
    mean, std = torch.as_tensor(MEAN), torch.as_tensor(STD)
    return {
        "obs": mean + std * torch.randn(BATCH, OBS_DIM, generator=g),
        "next_obs": mean + std * torch.randn(BATCH, OBS_DIM, generator=g),
        "action": torch.rand(BATCH, ACTION_DIM, generator=g) * 2 - 1,
        "reward": torch.randn(BATCH, generator=g),
        "discount": torch.tensor([0.99, 0.0, 0.99, 0.99, 0.0, 0.99]),
    }


def build_td3bc(**overrides):
    torch.manual_seed(0)
    algo = make_algorithm("td3bc", {**TD3, **overrides}, SPEC, ACTION_DIM, "cpu")
    with torch.no_grad():  # push the target actor's 2nd action near +1 so a' = clip(., -1, 1) bites
        [p for n, p in algo.actor_target.named_parameters() if n.endswith("bias")][-1][1] = 1.5
    return algo


def smoothing_noise(generator_state: torch.Tensor, sigma: float) -> torch.Tensor:
    """The N(0, sigma^2) draw of the update, reproduced from the algorithm's generator state."""
    g = torch.Generator()
    g.set_state(generator_state)
    return torch.randn((BATCH, ACTION_DIM), generator=g) * sigma


def expected_critic_step(before: dict, batch: dict, policy_noise: float, noise_clip: float):
    """TD3 (Fujimoto et al. 2018, Alg. 1 and eq. 15):
    a' = clip(pi_targ(s') + clip(eps, -c, c), -1, 1), eps ~ N(0, sigma^2);
    y = r + gamma (1 - done) min(Q1_targ(s', a'), Q2_targ(s', a'))  (gamma (1 - done) = batch discount);
    L = MSE(Q1(s, a), y) + MSE(Q2(s, a), y).  Returns y, L, mean Q1(s, a), dL/d(Q1, Q2 weights)."""
    s, s2 = normalise(batch["obs"]), normalise(batch["next_obs"])
    eps = smoothing_noise(before["generator"], policy_noise)
    with torch.no_grad():
        pi2 = policy(before["actor_target"], s2)
        a2 = (pi2 + eps.clamp(-noise_clip, noise_clip)).clamp(-1.0, 1.0)
        q1_t, q2_t = q_value(before["q1_target"], s2, a2), q_value(before["q2_target"], s2, a2)
        y = batch["reward"] + batch["discount"] * torch.minimum(q1_t, q2_t)
    # the batch is built so that each piece of the target matters
    assert bool((eps.abs() > noise_clip).any()), "no noise draw is clipped"
    assert bool(((pi2 + eps.clamp(-noise_clip, noise_clip)).abs() > 1).any()), "no a' is clipped to [-1, 1]"
    assert bool(((q1_t - q2_t).abs() > 1e-3)[batch["discount"] > 0].any()), "twin target critics agree"
    assert bool((q1_t.abs() > 1e-3)[batch["discount"] == 0].any()), "terminals would not matter"
    q1_w, q2_w = leaves(before["q1"]), leaves(before["q2"])
    q1, q2 = q_value(q1_w, s, batch["action"]), q_value(q2_w, s, batch["action"])
    loss = ((q1 - y) ** 2).mean() + ((q2 - y) ** 2).mean()
    grads = torch.autograd.grad(loss, flat(q1_w) + flat(q2_w))
    return y, loss.item(), q1.mean().item(), grads


def check_critic_step(algo, before, batch, out, seen_targets) -> None:
    y, loss, q_mean, grads = expected_critic_step(before, batch, TD3["policy_noise"], TD3["noise_clip"])
    assert len(seen_targets) == 1, "TD3+BC no longer hands its target to td3_critic_loss: update this spy"
    assert torch.allclose(seen_targets.pop(), y, rtol=1e-5, atol=1e-6), "TD3 target y"
    assert out["critic_loss"] == pytest.approx(loss, rel=1e-5), "critic loss"
    assert out["q_mean"] == pytest.approx(q_mean, rel=1e-5, abs=1e-7), "reported mean Q1(s, a)"
    critic_params = params_of(algo.critic, "q1_net.") + params_of(algo.critic, "q2_net.")
    assert_all_close([p.grad for p in critic_params], grads, "critic gradient")


# ---- TD3+BC ---------------------------------------------------------------------------------------


def test_td3bc_update_matches_the_papers_equations(critic_targets) -> None:
    """Two updates with policy_freq 2.  Both: the TD3 critic step (see `expected_critic_step`).
    The 2nd also: TD3+BC actor step (Fujimoto & Gu 2021, sec. 4, lambda as in the authors' code),
    on the critic just updated (TD3 Alg. 1 updates the critic first):
        lambda = alpha / mean|Q1(s, pi(s))|  (detached);
        L_actor = -lambda * mean Q1(s, pi(s)) + mean (pi(s) - a)^2;
    then the Polyak update of both targets: theta' <- tau theta + (1 - tau) theta'."""
    algo = build_td3bc()
    tau, alpha = TD3["tau"], TD3["alpha"]

    # update 1: critic only (delayed actor)
    batch = make_batch(1)
    before = snapshot(algo)
    out = algo.update(batch)
    check_critic_step(algo, before, batch, out, critic_targets)
    after = snapshot(algo)
    critic_grads = [p.grad for p in params_of(algo.critic, "q1_net.") + params_of(algo.critic, "q2_net.")]
    assert_adam_first_step(before["q1"] + before["q2"], flat(after["q1"] + after["q2"]), critic_grads, LR, "critic")
    for key in ("actor", "actor_target", "q1_target", "q2_target"):
        assert same(before[key], after[key]), f"{key} moved on a critic-only update"

    # update 2: critic, then actor, then targets
    batch = make_batch(2)
    before = snapshot(algo)
    out = algo.update(batch)
    check_critic_step(algo, before, batch, out, critic_targets)
    after = snapshot(algo)
    assert not same(before["q1"], after["q1"])

    s, a = normalise(batch["obs"]), batch["action"]
    actor_w = leaves(before["actor"])
    pi = policy(actor_w, s)
    q1 = q_value(after["q1"], s, pi)  # the critic after this update's critic step
    lmbda = alpha / q1.abs().mean().detach()
    bc = ((pi - a) ** 2).mean()
    actor_loss = -lmbda * q1.mean() + bc
    actor_grads = torch.autograd.grad(actor_loss, flat(actor_w))
    assert out["lambda"] == pytest.approx(lmbda.item(), rel=1e-5), "lambda"
    assert out["bc_loss"] == pytest.approx(bc.item(), rel=1e-5), "BC term"
    assert out["actor_loss"] == pytest.approx(actor_loss.item(), rel=1e-5), "actor loss"
    actor_params = params_of(algo.actor, "policy.")
    assert_all_close([p.grad for p in actor_params], actor_grads, "actor gradient")
    assert_adam_first_step(before["actor"], flat(after["actor"]), actor_grads, LR, "actor")

    for net, target in (("actor", "actor_target"), ("q1", "q1_target"), ("q2", "q2_target")):
        expected = [tau * p + (1 - tau) * p0 for p, p0 in zip(flat(after[net]), flat(before[target]), strict=True)]
        assert_all_close(flat(after[target]), expected, f"Polyak {target}")


@pytest.mark.parametrize("policy_freq", [1, 3])
def test_td3bc_actor_and_targets_move_once_every_policy_freq_updates(policy_freq: int) -> None:
    """TD3's delayed policy update (Fujimoto et al. 2018, sec. 5.2): the critic every update, the
    actor and both targets only when the update count is a multiple of policy_freq."""
    algo = build_td3bc(policy_freq=policy_freq)
    for k in range(1, 8):
        before = snapshot(algo)
        algo.update(make_batch(10 + k))
        after = snapshot(algo)
        due = k % policy_freq == 0
        assert not same(before["q1"], after["q1"]) and not same(before["q2"], after["q2"]), k
        for key in ("actor", "actor_target", "q1_target", "q2_target"):
            assert same(before[key], after[key]) != due, (k, key)


@pytest.mark.parametrize("pi_value", [0.0, 0.9])
def test_td3_target_policy_smoothing_noise_is_clipped(pi_value: float) -> None:
    """The smoothing of `nets.td3_target` alone, with stub networks: pi_targ(s') = const,
    Q1_targ = a', Q2_targ = a' + 1, r = 0, discount 1, so y = a' = clip(pi + clip(eps, -c, c), -1, 1)
    with eps ~ N(0, sigma^2), sigma = 10 >> c = 0.3: every a' lies in [pi - c, pi + c] and in [-1, 1]."""

    class ConstActor(nn.Module):
        def forward(self, s):
            return torch.full((s.shape[0], 1), pi_value)

    class EchoCritic(nn.Module):
        def forward(self, s, a):
            return a[:, 0], a[:, 0] + 1.0

    n, sigma, c = 2000, 10.0, 0.3
    y = nets.td3_target(
        ConstActor(), EchoCritic(), torch.zeros(n, 1), torch.zeros(n), torch.ones(n), sigma, c,
        torch.Generator().manual_seed(5),
    )  # fmt: skip
    eps = torch.randn((n, 1), generator=torch.Generator().manual_seed(5))[:, 0] * sigma
    assert torch.allclose(y, (pi_value + eps.clamp(-c, c)).clamp(-1.0, 1.0), atol=1e-6)
    low, high = pi_value - c, min(pi_value + c, 1.0)
    assert float(y.min()) >= low - 1e-6 and float(y.max()) <= high + 1e-6
    assert float((y - low).abs().lt(1e-6).float().mean()) > 0.4  # most draws sit on a clip boundary
    assert float((y - high).abs().lt(1e-6).float().mean()) > 0.4


def test_td3_done_mask_lives_in_the_batch_discount() -> None:
    """The (1 - done) of y = r + gamma (1 - done) min Q' reaches the algorithms as the batch's
    ``discount`` = gamma * (1 - done) (n = 1), built by `nstep_targets`; a last state has none."""
    reward_next = np.array([1.0, 2.0, 3.0, 0.0, 5.0, 6.0, 0.0])
    terminal_next = np.array([False, True, False, False, False, False, False])
    ep_last = np.array([3, 3, 3, 3, 6, 6, 6])
    ret, nxt, disc = nstep_targets(reward_next, terminal_next, ep_last, 1, 0.9)
    assert np.allclose(ret, [1, 2, 3, 0, 5, 6, 0])
    assert nxt.tolist() == [1, 2, 3, 3, 5, 6, 6]
    assert np.allclose(disc, [0.9, 0.0, 0.9, 0.0, 0.9, 0.9, 0.0])


# ---- BC -------------------------------------------------------------------------------------------


def test_bc_update_is_the_mse_to_the_dataset_actions() -> None:
    """BC (bc.py: "trained by MSE to the dataset actions", the TD3+BC paper's BC baseline):
    L = mean over batch and action dims of (pi(s) - a)^2, pi(s) = tanh(MLP((s - mu) / (sigma + eps)))."""
    torch.manual_seed(0)
    algo = make_algorithm("bc", BC, SPEC, ACTION_DIM, "cpu")
    batch = make_batch(3)
    before = layers(algo.actor, "policy.")
    out = algo.update(batch)
    w = leaves(before)
    loss = ((policy(w, normalise(batch["obs"])) - batch["action"]) ** 2).mean()
    grads = torch.autograd.grad(loss, flat(w))
    assert out["bc_loss"] == pytest.approx(loss.item(), rel=1e-5)
    params = params_of(algo.actor, "policy.")
    assert_all_close([p.grad for p in params], grads, "BC gradient")
    assert_adam_first_step(before, params, grads, LR, "BC actor")


# ---- acting ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["td3bc", "bc"])
def test_act_is_the_deterministic_policy_on_normalised_raw_observations(name: str) -> None:
    """act(s) = pi(s) = tanh(MLP((s - mu) / (sigma + eps))): deterministic, float32, in [-1, 1],
    taking raw observations (the algorithm normalises them itself)."""
    torch.manual_seed(0)
    algo = make_algorithm(name, TD3 if name == "td3bc" else BC, SPEC, ACTION_DIM, "cpu")
    for _ in range(3):  # trained weights, not just the initial ones
        algo.update(make_batch(20))
    g = torch.Generator().manual_seed(4)
    obs = torch.as_tensor(MEAN) + torch.as_tensor(STD) * torch.randn(16, OBS_DIM, generator=g)
    obs = torch.cat([obs, torch.tensor([[1e4, -1e4, 1e4], [-1e4, 1e4, -1e4]])]).double()
    got = algo.act(obs)
    expected = policy(layers(algo.actor, "policy."), normalise(obs.float()))
    assert got.dtype == torch.float32 and got.shape == (18, ACTION_DIM)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert bool(got.abs().le(1.0).all()) and bool(got[-2:].abs().gt(0.99).all())
    assert torch.equal(got, algo.act(obs))


# ---- learning on tiny offline problems ------------------------------------------------------------


def one_step_data(n: int, seed: int):
    """1-D states s ~ U(-1, 1), behaviour actions a ~ N(0.2, 0.1^2) (never near the edges -1, 1)."""
    g = torch.Generator().manual_seed(seed)
    s = torch.rand(n, 1, generator=g) * 2 - 1
    a = (0.2 + 0.1 * torch.randn(n, 1, generator=g)).clamp(-1, 1)
    return g, s, a


def test_td3bc_stays_near_the_data_on_a_one_step_task() -> None:
    """One step (done = 1, discount 0), r = 1 + 0.2 a: Q(s, a) = 1 + 0.2 a rises to the edge a = 1,
    which the data (a ~ N(0.2, 0.1^2)) never visit, so an unconstrained actor runs to a = 1.
    TD3+BC maximises lambda Q(s, pi) - E(pi - a)^2 with lambda = 2.5 / |Q|: the optimum is
    pi = 0.2 + 0.2 lambda / 2 = 0.43 (lambda = 2.5 / 1.086), and Q(s, 0.2) = 1.04 (no bootstrap)."""
    g, s, a = one_step_data(2048, seed=0)
    n = len(s)
    reward = (1 + 0.2 * a)[:, 0]
    data = {"obs": s, "action": a, "next_obs": s.roll(1, 0), "reward": reward, "discount": torch.zeros(n)}
    spec = ObservationSpec("vector", (1,), mean=s.mean(0).numpy(), std=s.std(0).numpy())
    torch.manual_seed(0)
    config = {"hidden_dims": [16, 16], "actor_lr": 3e-3, "critic_lr": 3e-3, "tau": 0.05}
    algo = make_algorithm("td3bc", config, spec, 1, "cpu")
    for _ in range(600):
        idx = torch.randint(0, n, (64,), generator=g)
        algo.update({k: v[idx] for k, v in data.items()})
    probe = torch.linspace(-0.9, 0.9, 7)[:, None]
    act = algo.act(probe)[:, 0]
    # the mean over states sits at the optimum (seeds 0-5: 0.41-0.47); single states scatter more
    assert abs(float(act.mean()) - 0.43) < 0.07 and bool(((act - 0.43).abs() < 0.25).all()), act
    with torch.no_grad():
        q_data = algo.critic.q1(algo.normalizer(probe), torch.full((7, 1), 0.2))
    assert bool(((q_data - 1.04).abs() < 0.05).all()), q_data


def test_bc_recovers_the_behaviour_policy_on_a_one_dimensional_task() -> None:
    """Data a = 0.5 s + N(0, 0.1^2): the MSE minimiser is the conditional mean pi(s) = 0.5 s and
    the loss falls to the noise variance 0.01."""
    g, s, _ = one_step_data(2048, seed=1)
    a = 0.5 * s + 0.1 * torch.randn(s.shape, generator=g)
    spec = ObservationSpec("vector", (1,), mean=s.mean(0).numpy(), std=s.std(0).numpy())
    torch.manual_seed(0)
    algo = make_algorithm("bc", {"hidden_dims": [16, 16], "lr": 3e-3}, spec, 1, "cpu")
    losses = []
    for _ in range(400):
        idx = torch.randint(0, len(s), (64,), generator=g)
        losses.append(algo.update({"obs": s[idx], "action": a[idx]})["bc_loss"])
    probe = torch.linspace(-0.9, 0.9, 7)[:, None]
    assert torch.allclose(algo.act(probe), 0.5 * probe, atol=0.05), algo.act(probe)
    assert 0.006 < np.mean(losses[-100:]) < 0.015, np.mean(losses[-100:])
