"""The maths of IQL (learning/algorithms/iql.py) pinned against the paper's equations.

One update on a tiny fixed batch, with every loss, target and weight evaluated here with plain
torch ops (functional layers on the weights copied before the update, `torch.distributions.Normal`
for the policy's likelihood, never the algorithm's own networks or helpers): the reported losses,
every parameter gradient (left in ``param.grad`` by each step), the Adam step of each network and
the Polyak step of the target critic.  The target critic is moved off its online copy first, so
using one where the other belongs shows.  Then the image variant (augmentation, which loss trains
the encoder), the acting rule, the actor's cosine learning-rate schedule, and a two-step offline
problem on which the expectile decides the answer: tau = 0.5 (SARSA) takes the path whose
behaviour is better on average, tau = 0.9 the path whose best dataset action is better.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal

import learning.algorithms.base as algorithm_base
import learning.algorithms.iql as iql_module
from learning.algorithms import ObservationSpec, algorithm_from_state, make_algorithm

from .update_maths_reference import (
    TOL,
    RecordingShift,
    adam_first_step,
    assert_params,
    dense,
    drq_encoder,
    drq_trunk,
    image_batch,
    one_torch_thread,  # noqa: F401 (an autouse fixture)
    params_of,
    perturb_,
    polyak,
    twin_q,
)

OBS_DIM, ACTION_DIM, BATCH = 3, 2, 8
MEAN = np.array([0.5, -1.0, 2.0], dtype=np.float32)
STD = np.array([2.0, 0.5, 1.0], dtype=np.float32)
EPS = 0.05  # the normaliser's eps, far from the default 1e-3
SPEC = ObservationSpec("vector", (OBS_DIM,), mean=MEAN, std=STD)
DONE = torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
GAMMA = 0.99
IQL = {
    "hidden_dims": [8],
    "actor_lr": 1e-2,  # three different rates: a step taken with another network's optimiser shows
    "critic_lr": 2e-2,
    "value_lr": 3e-2,
    "tau": 0.3,  # Polyak; far from 0.5 so that tau <-> 1 - tau shows
    "expectile": 0.8,  # far from 0.5 so that tau <-> 1 - tau shows
    "beta": 3.0,
    "max_weight": 2.0,  # low, so that some weights of the batch are clipped
    "max_steps": 4,
    "log_std_min": -0.5,
    "log_std_max": 0.5,
    "normalizer_eps": EPS,
}
IMAGE_SHAPE = (3, 16, 16)
IMAGE_IQL = {**IQL, "hidden_dims": [16], "encoder_channels": 4, "feature_dim": 8, "max_weight": 100.0}


# ---- independent functional networks -------------------------------------------------------------


def value(p: dict, x: torch.Tensor) -> torch.Tensor:
    return dense(p, "v_net", drq_trunk(p, x))[:, 0]


def policy_mean(p: dict, x: torch.Tensor) -> torch.Tensor:
    """mu(s) = tanh(MLP(s))."""
    return dense(p, "policy", drq_trunk(p, x), last="tanh")


def log_likelihood(p: dict, x: torch.Tensor, a: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """log pi(a | s) of the authors' IQL actor: N(mu(s), sigma^2), log sigma a clamped parameter."""
    sigma = torch.exp(torch.clamp(p["log_std"], low, high))
    return Normal(policy_mean(p, x), sigma).log_prob(a).sum(dim=-1)


def expectile_l2(u: torch.Tensor, tau: float) -> torch.Tensor:
    """L_2^tau(u) = |tau - 1(u < 0)| u^2 (eq. 5), written as a case split."""
    return torch.where(u < 0, (1.0 - tau) * u**2, tau * u**2)


def normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.as_tensor(MEAN)) / (torch.as_tensor(STD) + EPS)


def grads_of(loss: torch.Tensor, p: dict) -> dict:
    return dict(zip(p, torch.autograd.grad(loss, list(p.values()), allow_unused=True), strict=True))


def assert_grads(module: torch.nn.Module, expected: dict, what: str) -> None:
    """The gradients the algorithm left on ``module`` are those of the expected loss (and only it)."""
    for k, param in module.named_parameters():
        want = expected[k] if expected[k] is not None else torch.zeros_like(param)
        got = param.grad if param.grad is not None else torch.zeros_like(param)
        torch.testing.assert_close(got, want, **TOL, msg=lambda m, k=k: f"{what} {k} grad: {m}")


def vector_batch(seed: int = 10) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mean, std = torch.as_tensor(MEAN), torch.as_tensor(STD)
    return {
        "obs": mean + std * torch.randn(BATCH, OBS_DIM, generator=g),
        "next_obs": mean + std * torch.randn(BATCH, OBS_DIM, generator=g),
        "action": (torch.rand(BATCH, ACTION_DIM, generator=g) * 2 - 1) * 0.9,
        "reward": torch.randn(BATCH, generator=g),
        "discount": GAMMA * (1.0 - DONE),  # gamma^n (1 - done), as the batch contract writes it
    }


def build(seed: int = 0, spec: ObservationSpec = SPEC, config=None, action_dim: int = ACTION_DIM):
    torch.manual_seed(seed)
    return make_algorithm("iql", config or IQL, spec, action_dim, "cpu")


def prepared_vector_algo():
    """IQL with its target critic off the online one (and raised, so that min Q' - V takes both
    signs on the batch) and one log std beyond its clamp."""
    algo = build()
    perturb_(algo.critic_target, seed=2, scale=0.3)
    with torch.no_grad():
        algo.critic_target.q1_net[-1].bias.add_(1.0)
        algo.critic_target.q2_net[-1].bias.add_(1.0)
        algo.actor.log_std.copy_(torch.tensor([0.8, -0.2]))  # 0.8 is clamped to log_std_max = 0.5
    return algo


# ---- one vector update ---------------------------------------------------------------------------


def test_one_update_matches_the_paper() -> None:
    """One IQL update (Kostrikov et al. 2021, eqs. 5-7, Algorithm 1; the authors' learner.py order:
    value, actor, critic, target), s normalised by the dataset mean / (std + eps):

        value:  u = min(Q'_1, Q'_2)(s, a) - V_psi(s),  L_V = mean L_2^tau(u)     (Q' the TARGET critic)
        actor:  A = min(Q'_1, Q'_2)(s, a) - V_psi1(s)  (V_psi1: after this update's value step)
                w = min(exp(beta A), max_weight)  (no gradient)
                L_pi = -mean w log N(a; tanh(MLP(s)), exp(clamp(log_std))^2)
        critic: y = r + discount V_psi1(s')  (no gradient; discount = gamma (1 - done) from the batch)
                L_Q = mean (Q_1(s, a) - y)^2 + mean (Q_2(s, a) - y)^2              (the ONLINE critics)
        target: theta' <- (1 - tau_p) theta' + tau_p theta1
    """
    algo = prepared_vector_algo()
    c, batch = algo.config, vector_batch()
    tau, beta, max_w = c.expectile, c.beta, c.max_weight
    value0, actor0, critic0 = params_of(algo.value, True), params_of(algo.actor, True), params_of(algo.critic, True)
    critic_t0 = params_of(algo.critic_target)
    out = algo.update(batch)

    s, s2 = normalise(batch["obs"]), normalise(batch["next_obs"])
    a, r, disc = batch["action"], batch["reward"], batch["discount"]
    # value
    with torch.no_grad():
        q_target = torch.minimum(*twin_q(critic_t0, s, a))
    v0 = value(value0, s)
    u = q_target - v0
    value_loss = expectile_l2(u, tau).mean()
    value_grads = grads_of(value_loss, value0)
    value1 = adam_first_step(value0, value_grads, c.value_lr)
    # actor
    with torch.no_grad():
        advantage = q_target - value(value1, s)
        weight = torch.clamp(torch.exp(beta * advantage), max=max_w)
    log_pi = log_likelihood(actor0, s, a, c.log_std_min, c.log_std_max)
    actor_loss = -(weight * log_pi).mean()
    actor_grads = grads_of(actor_loss, actor0)
    actor1 = adam_first_step(actor0, actor_grads, c.actor_lr)
    # critic
    with torch.no_grad():
        y = r + disc * value(value1, s2)
    q1, q2 = twin_q(critic0, s, a)
    critic_loss = ((q1 - y) ** 2).mean() + ((q2 - y) ** 2).mean()
    critic_grads = grads_of(critic_loss, critic0)
    critic1 = adam_first_step(critic0, critic_grads, c.critic_lr)

    # the batch is built so that each piece matters
    assert bool((u > 0.05).any() and (u < -0.05).any()), "the expectile's two sides"
    assert bool((torch.exp(beta * advantage) > max_w * 1.2).any()), "no weight is clipped"
    assert bool((weight < max_w * 0.8).any()), "every weight is clipped"
    with torch.no_grad():
        q_online = torch.minimum(*twin_q(critic0, s, a))
        assert (q_online - q_target).abs().min() > 0.05, "online and target critics agree"
        assert (value(value1, s) - v0).abs().min() > 1e-3, "the value step did not move V(s)"
        assert (value(value1, s2) - value(value0, s2)).abs().min() > 1e-3, "nor V(s')"
        assert value(value1, s2)[DONE == 1].abs().min() > 0.05, "terminals would not matter"
        bootstrap_by_q = torch.minimum(*twin_q(critic_t0, s2, a))  # a max-Q / SARSA-like target instead
        assert ((bootstrap_by_q - value(value1, s2)) * disc).abs().max() > 0.1, "V(s') would not matter"
        assert advantage.abs().max() > 0.3, "the advantage's sign would not matter"

    expected = {
        "value_loss": value_loss,
        "actor_loss": actor_loss,
        "critic_loss": critic_loss,
        "q_mean": q1.mean(),
        "v_mean": v0.mean(),
        "adv_mean": advantage.mean(),
        "weight_mean": weight.mean(),
        "actor_lr": torch.tensor(c.actor_lr),
    }
    assert out.keys() == expected.keys()
    for k, v in expected.items():
        assert out[k] == pytest.approx(v.item(), rel=1e-4, abs=1e-6), k

    assert_grads(algo.value, value_grads, "value")
    assert_grads(algo.actor, actor_grads, "actor")
    assert_grads(algo.critic, critic_grads, "critic")
    assert actor_grads["log_std"][0] == 0.0 and actor_grads["log_std"][1] != 0.0  # the clamp
    assert_params(algo.value, value1, "value")
    assert_params(algo.actor, actor1, "actor")
    assert_params(algo.critic, critic1, "critic")
    assert_params(algo.critic_target, polyak(critic_t0, critic1, c.tau), "critic_target")


def test_expectile_loss_is_asymmetric() -> None:
    """L_2^tau(u) = |tau - 1(u < 0)| u^2: tau u^2 above the target, (1 - tau) u^2 below; its
    minimiser over a constant V is the tau-expectile (0.5: the mean; tau -> 1: the max)."""
    u = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0])
    expected = torch.tensor([0.2 * 4, 0.2 * 0.25, 0.0, 0.8 * 0.25, 0.8 * 4]).mean()
    torch.testing.assert_close(iql_module.expectile_loss(u, 0.8), expected)
    samples = torch.tensor([0.0, 0.0, 0.0, 1.0])
    grid = torch.linspace(0, 1, 1001)
    for tau, want in ((0.5, 0.25), (0.9, 0.9 * 0.25 / (0.9 * 0.25 + 0.1 * 0.75))):
        losses = torch.stack([iql_module.expectile_loss(samples - v, tau) for v in grid])
        assert grid[losses.argmin()].item() == pytest.approx(want, abs=1e-3), tau


# ---- images --------------------------------------------------------------------------------------


def test_image_update_trains_the_encoder_by_the_critic_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Images (V-D4RL's DrQ-v2 setting): h = f(aug(o)), h' = f(aug(o')) (independent shifts, pad 4,
    the encoder before the update, h' without gradient); the value and actor steps of
    `test_one_update_matches_the_paper` on sg(h), each network with its own trunk; the critic step
    on h, so the encoder's gradient is the critic loss's alone, stepped with the critic's Adam."""
    algo = build(spec=ObservationSpec("image", IMAGE_SHAPE), config=IMAGE_IQL)
    perturb_(algo.critic_target, seed=3, scale=0.05)
    c, batch = algo.config, image_batch(BATCH, IMAGE_SHAPE, ACTION_DIM, GAMMA * (1.0 - DONE))
    enc0, value0 = params_of(algo.encoder, True), params_of(algo.value, True)
    actor0, critic0 = params_of(algo.actor, True), params_of(algo.critic, True)
    critic_t0 = params_of(algo.critic_target)
    shift = RecordingShift()
    monkeypatch.setattr(algorithm_base, "random_shift", shift)
    out = algo.update(batch)

    assert [pad for _, pad, _ in shift.calls] == [4, 4], "one shift of obs and one of next_obs, pad 4"
    aug, aug_next = shift.output_for(batch["obs"]), shift.output_for(batch["next_obs"])
    a, r, disc = batch["action"], batch["reward"], batch["discount"]
    h = drq_encoder(enc0, aug)
    hd = h.detach()
    with torch.no_grad():
        h2 = drq_encoder(enc0, aug_next)
        q_target = torch.minimum(*twin_q(critic_t0, hd, a))
    value_loss = expectile_l2(q_target - value(value0, hd), c.expectile).mean()
    value_grads = grads_of(value_loss, value0)
    value1 = adam_first_step(value0, value_grads, c.value_lr)
    with torch.no_grad():
        weight = torch.clamp(torch.exp(c.beta * (q_target - value(value1, hd))), max=c.max_weight)
        y = r + disc * value(value1, h2)
    actor_loss = -(weight * log_likelihood(actor0, hd, a, c.log_std_min, c.log_std_max)).mean()
    actor_grads = grads_of(actor_loss, actor0)
    q1, q2 = twin_q(critic0, h, a)
    critic_loss = ((q1 - y) ** 2).mean() + ((q2 - y) ** 2).mean()
    enc_critic = {**{f"e.{k}": v for k, v in enc0.items()}, **{f"c.{k}": v for k, v in critic0.items()}}
    grads = grads_of(critic_loss, enc_critic)
    stepped = adam_first_step(enc_critic, grads, c.critic_lr)
    enc_grads, critic_grads = ({k[2:]: v for k, v in grads.items() if k[0] == p} for p in "ec")
    enc1, critic1 = ({k[2:]: v for k, v in stepped.items() if k[0] == p} for p in "ec")

    for k, v in {"value_loss": value_loss, "actor_loss": actor_loss, "critic_loss": critic_loss}.items():
        assert out[k] == pytest.approx(v.item(), rel=1e-4, abs=1e-6), k
    assert_grads(algo.encoder, enc_grads, "encoder")
    assert_grads(algo.value, value_grads, "value")
    assert_grads(algo.actor, actor_grads, "actor")
    assert_grads(algo.critic, critic_grads, "critic")
    assert algo.value.trunk[0].weight.grad.abs().sum() > 0 and algo.actor.trunk[0].weight.grad.abs().sum() > 0
    assert_params(algo.encoder, enc1, "encoder")
    assert_params(algo.value, value1, "value")
    assert_params(algo.actor, adam_first_step(actor0, actor_grads, c.actor_lr), "actor")
    assert_params(algo.critic, critic1, "critic")
    assert_params(algo.critic_target, polyak(critic_t0, critic1, c.tau), "critic_target")


# ---- acting ---------------------------------------------------------------------------------------


def test_acts_with_the_policy_mean_clipped() -> None:
    """act(s) = clip(tanh(MLP((s - mu) / (sigma + eps))), -1, 1): the Gaussian's mean, no sample
    (the authors' evaluation: temperature 0, then clip), on raw observations, float32."""
    algo = prepared_vector_algo()
    for seed in range(3):  # trained weights, not only the initial ones
        algo.update(vector_batch(seed))
    g = torch.Generator().manual_seed(4)
    obs = torch.as_tensor(MEAN) + torch.as_tensor(STD) * torch.randn(16, OBS_DIM, generator=g)
    obs = torch.cat([obs, torch.tensor([[1e4, -1e4, 1e4], [-1e4, 1e4, -1e4]])]).double()
    got = algo.act(obs)
    expected = policy_mean(params_of(algo.actor), normalise(obs.float())).clamp(-1.0, 1.0)
    assert got.dtype == torch.float32 and got.shape == (18, ACTION_DIM)
    torch.testing.assert_close(got, expected, **TOL)
    assert bool(got.abs().le(1.0).all()) and bool(got[-2:].abs().gt(0.99).all())
    assert torch.equal(got, algo.act(obs))


def test_image_acting_uses_unaugmented_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    algo = build(spec=ObservationSpec("image", IMAGE_SHAPE), config=IMAGE_IQL)
    algo.update(image_batch(BATCH, IMAGE_SHAPE, ACTION_DIM, GAMMA * (1.0 - DONE)))
    shift = RecordingShift()
    monkeypatch.setattr(algorithm_base, "random_shift", shift)
    obs = image_batch(BATCH, IMAGE_SHAPE, ACTION_DIM, GAMMA * (1.0 - DONE))["next_obs"]
    expected = policy_mean(params_of(algo.actor), drq_encoder(params_of(algo.encoder), obs)).clamp(-1, 1)
    torch.testing.assert_close(algo.act(obs), expected, **TOL)
    assert shift.calls == []


# ---- the actor's learning-rate schedule ------------------------------------------------------------


def test_actor_lr_follows_the_cosine_decay_and_survives_a_resume() -> None:
    """optax.cosine_decay_schedule(lr, T): the k-th update (from 0) steps the actor with
    lr * 0.5 (1 + cos(pi min(k, T) / T)), so 0 from update T on (the actor then stays put), and the
    value and critic rates are constant. A checkpoint taken mid-schedule continues it."""
    algo = prepared_vector_algo()
    lr, steps = IQL["actor_lr"], IQL["max_steps"]
    want = [lr * 0.5 * (1 + math.cos(math.pi * min(k, steps) / steps)) for k in range(7)]
    seen, resumed_seen = [], []
    for k in range(7):
        if k == 2:
            resumed = algorithm_from_state(algo.state_dict())
        before = params_of(algo.actor)
        seen.append(algo.update(vector_batch(k))["actor_lr"])
        moved = any(not torch.equal(v, before[n]) for n, v in algo.actor.named_parameters())
        assert moved == (k < steps), k
        assert algo.value_opt.param_groups[0]["lr"] == IQL["value_lr"]
        assert algo.critic_opt.param_groups[0]["lr"] == IQL["critic_lr"]
        if k >= 2:
            resumed_seen.append(resumed.update(vector_batch(k))["actor_lr"])
    assert seen == pytest.approx(want, abs=1e-12)
    assert resumed_seen == pytest.approx(want[2:], abs=1e-12)
    constant = build(config={**IQL, "cosine_schedule": False})
    assert [constant.update(vector_batch(k))["actor_lr"] for k in range(6)] == [lr] * 6


def test_run_advice_names_a_schedule_that_does_not_fit_the_run() -> None:
    algo = build(config={**IQL, "max_steps": 1000})
    assert algo.run_advice(1000) == []
    (short,) = algo.run_advice(4000)
    assert "max_steps=1000" in short and "stops learning after update 1000" in short
    assert '"max_steps": 4000' in short
    (long,) = algo.run_advice(500)
    assert "0.50 x actor_lr" in long and '"max_steps": 500' in long
    assert build(config={**IQL, "cosine_schedule": False}).run_advice(10) == []


# ---- learning on a tiny offline problem ------------------------------------------------------------


def two_path_batch(g: torch.Generator, n: int) -> dict[str, torch.Tensor]:
    """Start state S (obs [1, 0, 0]): a ~ +-0.5 (half each). a > 0 leads (r = 0, gamma = 0.9) to B,
    where the behaviour acts well (a ~ +0.5, r = 1) 40% of the time and badly (a ~ -0.5, r = 0)
    otherwise, then the episode ends; a < 0 leads to C, where every action earns r = 0.6 and the
    episode ends. On average the B path is worse (0.4 < 0.6), at its best better (1 > 0.6)."""
    which = torch.randint(0, 4, (n,), generator=g)  # 0, 1: S; 2: B; 3: C
    obs = F.one_hot(torch.where(which < 2, 0, which - 1), 3).float()
    sign = torch.where(torch.rand(n, generator=g) < 0.5, 1.0, -1.0)
    sign = torch.where(which == 2, torch.where(torch.rand(n, generator=g) < 0.4, 1.0, -1.0), sign)
    action = (0.5 * sign + 0.05 * torch.randn(n, generator=g)).clamp(-1, 1)
    action = torch.where(which == 3, 0.3 * torch.randn(n, generator=g), action).clamp(-1, 1)
    next_obs = torch.where((which < 2)[:, None], F.one_hot(torch.where(sign > 0, 1, 2), 3).float(), obs)
    reward = torch.where(which == 2, (sign > 0).float(), torch.where(which == 3, 0.6, 0.0))
    discount = torch.where(which < 2, 0.9, 0.0)
    return {"obs": obs, "next_obs": next_obs, "action": action[:, None], "reward": reward, "discount": discount}


@pytest.mark.parametrize(("expectile", "goes_to_b"), [(0.9, True), (0.5, False)])
def test_the_expectile_picks_the_path_with_the_better_best_action(expectile: float, goes_to_b: bool) -> None:
    """V(B) fits the tau-expectile of r over B's dataset actions: 0.4 at tau = 0.5 (the behaviour's
    mean: SARSA), 0.9 * 0.4 / (0.9 * 0.4 + 0.1 * 0.6) = 0.857 at tau = 0.9, an in-sample soft max.
    So Q(S, +0.5) = 0.9 V(B) is 0.36 or 0.77 against Q(S, -0.5) = 0.9 * 0.6 = 0.54, and the
    advantage-weighted policy (beta = 10) goes to B only with the upper expectile; at B it takes
    the rewarded action whatever tau. A flipped advantage sign or a mirrored expectile fails too."""
    g = torch.Generator().manual_seed(0)
    updates = 500
    config = {"hidden_dims": [32, 32], "actor_lr": 3e-3, "critic_lr": 3e-3, "value_lr": 3e-3, "tau": 0.05}
    config |= {"expectile": expectile, "beta": 10.0, "max_steps": updates}
    algo = build(spec=ObservationSpec("vector", (3,)), config=config, action_dim=1)
    for _ in range(updates):
        algo.update(two_path_batch(g, 128))
    states = torch.eye(3)
    act = algo.act(states)[:, 0]
    with torch.no_grad():
        v = algo.value(states)
        q = torch.min(*algo.critic(states[[0, 0]], torch.tensor([[0.5], [-0.5]])))
    want_v_b = expectile * 0.4 / (expectile * 0.4 + (1 - expectile) * 0.6)
    assert v[1].item() == pytest.approx(want_v_b, abs=0.08), v
    assert v[2].item() == pytest.approx(0.6, abs=0.05), v
    torch.testing.assert_close(q, torch.tensor([0.9 * want_v_b, 0.54]), atol=0.08, rtol=0.0)
    assert act[1].item() > 0.3, act  # B: the rewarded action
    assert (act[0].item() > 0.2) if goes_to_b else (act[0].item() < -0.2), act
