"""The maths of BCQ (learning/algorithms/bcq.py) and DrQ+BC (learning/algorithms/drqbc.py), pinned.

For each algorithm: one update on a tiny fixed batch, checked against the paper's equations
evaluated here with plain torch ops (functional layers on the weights copied before the update,
never the algorithm's own networks or helpers): every reported loss, the critic target, every
parameter gradient, the Adam step and the Polyak target step; then the acting rule; then a short
learning check on a tiny offline bandit whose answer is known, where the critic extrapolates to
the action bound and only the algorithm's constraint keeps the policy on the data.

Randomness: BCQ's three Gaussian draws (VAE latent, target latents, actor latents) are replayed
here from a copy of the algorithm's generator, in the code's order; DrQ+BC's augmentation is
replaced by a recording, deterministic shift, so its generator only gives the two policy-noise
draws, which are replayed the same way.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import learning.algorithms.bcq as bcq_module
import learning.algorithms.drqbc as drqbc_module
from learning.algorithms import ObservationSpec, make_algorithm

from .update_maths_reference import (
    TOL,
    RecordingShift,
    adam_first_step,
    assert_params,
    dense,
    drq_encoder,
    image_batch,
    one_torch_thread,  # noqa: F401 (an autouse fixture)
    params_of,
    perturb_,
    record_critic_targets,
)

OBS_DIM, ACTION_DIM, BATCH = 3, 2, 6
GAMMA = 0.99
DONE = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0, 1.0])
OBS_MEAN, OBS_STD = np.array([0.5, -1.0, 2.0]), np.array([2.0, 0.5, 1.0])

BCQ_SMALL = {
    "vae_hidden": [16, 16],
    "actor_hidden": [16, 16],
    "critic_hidden": [16, 16],
    "n_target_samples": 5,
    "n_act_samples": 20,
    "phi": 0.2,  # larger than the default 0.05 so that the perturbation moves actions visibly
}
IMAGE_SHAPE = (3, 16, 16)  # one RGB frame, just above DrQEncoder's 15x15 minimum
DRQ_SMALL = {"hidden_dim": 16, "encoder_channels": 4, "feature_dim": 8}


# ---- independent functional networks -------------------------------------------------------------
# (the rest in update_maths_reference; the trunk here is strict, so a DrQ+BC network without one fails)


def drq_trunk(p: dict, x: torch.Tensor) -> torch.Tensor:
    """DrQ-v2's trunk: Linear -> LayerNorm -> tanh."""
    x = x @ p["trunk.0.weight"].T + p["trunk.0.bias"]
    x = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5)
    return torch.tanh(x * p["trunk.1.weight"] + p["trunk.1.bias"])


def twin_q(p: dict, x: torch.Tensor, a: torch.Tensor, with_trunk: bool = False):
    h = torch.cat([drq_trunk(p, x) if with_trunk else x, a], dim=-1)
    return dense(p, "q1_net", h)[:, 0], dense(p, "q2_net", h)[:, 0]


def grads_of(loss: torch.Tensor, p: dict) -> dict:
    return dict(zip(p, torch.autograd.grad(loss, list(p.values())), strict=True))


def polyak(target: dict, source: dict, tau: float) -> dict:
    return {k: target[k] + tau * (source[k] - target[k]) for k in target}


def assert_grads(module: torch.nn.Module, expected: dict, what: str) -> None:
    """The gradients the algorithm left on ``module`` are those of the expected loss (and only it)."""
    for k, param in module.named_parameters():
        assert param.grad is not None, f"{what} {k}: no gradient"
        torch.testing.assert_close(param.grad, expected[k], **TOL, msg=lambda m, k=k: f"{what} {k} grad: {m}")


def generator_copy(generator: torch.Generator) -> torch.Generator:
    g = torch.Generator()
    g.set_state(generator.get_state())
    return g


# ---- BCQ -----------------------------------------------------------------------------------------


def bcq_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(10)
    mean, std = torch.tensor(OBS_MEAN, dtype=torch.float32), torch.tensor(OBS_STD, dtype=torch.float32)
    return {
        "obs": mean + std * torch.randn(BATCH, OBS_DIM, generator=g),
        "next_obs": mean + std * torch.randn(BATCH, OBS_DIM, generator=g),
        "action": (torch.rand(BATCH, ACTION_DIM, generator=g) * 2 - 1) * 0.9,
        "reward": torch.randn(BATCH, generator=g),
        "discount": GAMMA * (1.0 - DONE),  # gamma (1 - done), as the batch contract writes it
    }


def build_bcq(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    obs_spec = ObservationSpec("vector", (OBS_DIM,), mean=OBS_MEAN, std=OBS_STD)
    return make_algorithm("bcq", {**BCQ_SMALL, **overrides}, obs_spec, ACTION_DIM, "cpu")


def normalise(x: torch.Tensor) -> torch.Tensor:
    """Dataset mean / (std + 1e-3), the documented deviation (TD3+BC's normalisation)."""
    mean, std = torch.tensor(OBS_MEAN, dtype=torch.float32), torch.tensor(OBS_STD, dtype=torch.float32)
    return (x - mean) / (std + 1e-3)


def vae_decode(p: dict, s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return dense(p, "decoder", torch.cat([s, z], dim=-1), last="tanh")


def perturb(p: dict, s: torch.Tensor, a: torch.Tensor, phi: float) -> torch.Tensor:
    """BCQ's perturbation model: a + xi_phi(s, a), xi in [-phi, phi], kept in [-1, 1]."""
    return (a + phi * dense(p, "net", torch.cat([s, a], dim=-1), last="tanh")).clamp(-1.0, 1.0)


def test_bcq_one_update_matches_the_paper(monkeypatch: pytest.MonkeyPatch) -> None:
    """One BCQ update (Fujimoto, Meger & Precup 2019, Algorithm 1; authors' BCQ.py order: VAE, critics,
    actor, targets):

        VAE:    mu, sigma = E_w1(s, a);  z = mu + sigma eps;  a~ = D_w2(s, z)
                L_VAE = mean (a~ - a)^2 + 0.5 KL(N(mu, sigma) || N(0, 1))   (sec. 4; 0.5 from the authors' code)
        target: a_i ~ D_w2(s', clip(z_i, -0.5, 0.5)),  i = 1..n  (the freshly updated VAE)
                a_i <- a_i + xi_phi'(s', a_i)  in [-Phi, Phi]
                y = r + gamma (1 - done) max_i [lambda min_j Q'_j(s', a_i) + (1 - lambda) max_j Q'_j(s', a_i)],
                lambda = 0.75                                                     (eq. 13)
        critic: L = mean (Q1(s, a) - y)^2 + mean (Q2(s, a) - y)^2
        actor:  L = -mean Q1(s, a + xi_phi(s, a)),  a ~ D_w2(s, clip(z))           (the updated critic)
        targets: theta' <- tau theta + (1 - tau) theta'
    """
    algo = build_bcq()
    perturb_(algo.critic_target, seed=1)
    perturb_(algo.actor_target, seed=2)
    c, batch = algo.config, bcq_batch()
    n, latent, lr, tau, phi, lam = c.n_target_samples, algo.vae.latent_dim, c.lr, c.tau, c.phi, 0.75
    vae0, actor0, critic0 = params_of(algo.vae, True), params_of(algo.actor, True), params_of(algo.critic, True)
    actor_t0, critic_t0 = params_of(algo.actor_target), params_of(algo.critic_target)
    g = generator_copy(algo.generator)
    critic_targets = record_critic_targets(monkeypatch, bcq_module)
    out = algo.update(batch)

    s, s2 = normalise(batch["obs"]), normalise(batch["next_obs"])
    a, r, disc = batch["action"], batch["reward"], batch["discount"]
    # (1) VAE, on its weights before the update
    h = dense(vae0, "encoder", torch.cat([s, a], dim=-1), last="relu")
    mu = h @ vae0["mean.weight"].T + vae0["mean.bias"]
    sigma = torch.exp((h @ vae0["log_std.weight"].T + vae0["log_std.bias"]).clamp(-4.0, 15.0))
    z = mu + sigma * torch.randn((BATCH, latent), generator=g)
    recon = vae_decode(vae0, s, z)
    recon_loss = ((recon - a) ** 2).mean()
    kl = (-0.5 * (1.0 + torch.log(sigma**2) - mu**2 - sigma**2)).mean()
    vae_loss = recon_loss + 0.5 * kl
    vae_grads = grads_of(vae_loss, vae0)
    vae1 = adam_first_step(vae0, vae_grads, lr)
    # (2) target: n decoded, perturbed actions per next state, soft clipped double-Q, max over the n
    s2_rep = s2[:, None, :].expand(BATCH, n, OBS_DIM).reshape(BATCH * n, OBS_DIM)
    z2 = torch.randn((BATCH * n, latent), generator=g).clamp(-0.5, 0.5)
    a2 = perturb(actor_t0, s2_rep, vae_decode(vae1, s2_rep, z2), phi)
    tq1, tq2 = twin_q(critic_t0, s2_rep, a2)
    soft = lam * torch.minimum(tq1, tq2) + (1.0 - lam) * torch.maximum(tq1, tq2)
    y = (r + disc * soft.reshape(BATCH, n).max(dim=1).values).detach()
    q1, q2 = twin_q(critic0, s, a)
    critic_loss = ((q1 - y) ** 2).mean() + ((q2 - y) ** 2).mean()
    critic_grads = grads_of(critic_loss, critic0)
    critic1 = adam_first_step(critic0, critic_grads, lr)
    # (3) perturbation actor through Q1 of the updated critic
    z3 = torch.randn((BATCH, latent), generator=g).clamp(-0.5, 0.5)
    sampled = vae_decode(vae1, s, z3).detach()
    actor_loss = -twin_q(critic1, s, perturb(actor0, s, sampled, phi))[0].mean()
    actor_grads = grads_of(actor_loss, actor0)
    actor1 = adam_first_step(actor0, actor_grads, lr)

    expected = {
        "critic_loss": critic_loss,
        "actor_loss": actor_loss,
        "vae_loss": vae_loss,
        "recon_loss": recon_loss,
        "kl_loss": kl,
        "q_mean": q1.mean(),
    }
    assert out.keys() == expected.keys()
    for k, v in expected.items():
        assert out[k] == pytest.approx(v.item(), rel=1e-4, abs=1e-5), k
    assert len(critic_targets) == 1, "one loss of both critics against the target"
    for t in critic_targets:
        torch.testing.assert_close(t, y, **TOL)
    assert bool((soft.reshape(BATCH, n).max(1).values != soft.reshape(BATCH, n).min(1).values).all())

    assert_grads(algo.vae, vae_grads, "vae")
    assert_grads(algo.critic, critic_grads, "critic")
    assert_grads(algo.actor, actor_grads, "actor")
    assert_params(algo.vae, vae1, "vae")
    assert_params(algo.critic, critic1, "critic")
    assert_params(algo.actor, actor1, "actor")
    assert_params(algo.critic_target, polyak(critic_t0, critic1, tau), "critic_target")
    assert_params(algo.actor_target, polyak(actor_t0, actor1, tau), "actor_target")


def test_bcq_acts_by_argmax_q1_over_perturbed_vae_samples() -> None:
    """Acting (Algorithm 1, authors' select_action): for each s draw n = n_act_samples actions
    a_i ~ D(s, clip(z_i, -0.5, 0.5)), perturb them, a_i + xi_phi(s, a_i), and return
    argmax_i Q1(s, a_i + xi_phi(s, a_i)); the latents come from a generator seeded with act_seed."""
    algo = build_bcq(seed=4)
    for i in range(3):  # trained networks, not only the initial ones
        algo.update({**bcq_batch(), "reward": torch.randn(BATCH, generator=torch.Generator().manual_seed(i))})
    obs = bcq_batch()["next_obs"]
    n, latent = algo.config.n_act_samples, algo.vae.latent_dim
    vae, actor, critic = params_of(algo.vae), params_of(algo.actor), params_of(algo.critic)

    s = normalise(obs)
    s_rep = s[:, None, :].expand(BATCH, n, OBS_DIM).reshape(BATCH * n, OBS_DIM)
    z = torch.randn((BATCH * n, latent), generator=torch.Generator().manual_seed(algo.config.act_seed))
    candidates = perturb(actor, s_rep, vae_decode(vae, s_rep, z.clamp(-0.5, 0.5)), algo.config.phi)
    q1 = twin_q(critic, s_rep, candidates)[0].reshape(BATCH, n)
    expected = candidates.reshape(BATCH, n, ACTION_DIM)[torch.arange(BATCH), q1.argmax(dim=1)]

    got = algo.act(obs)
    torch.testing.assert_close(got, expected, **TOL)
    assert bool((q1.max(dim=1).values - q1.min(dim=1).values > 1e-4).all())  # the argmax is not a tie
    assert bool(got.abs().le(1.0).all())


def test_bcq_stays_on_the_data_and_bootstraps_the_best_supported_action() -> None:
    """A bandit with a bootstrapped target: r = a, gamma = 0.5 (s' random, never terminal), behaviour
    actions in two clusters at -0.5 and +0.5 (std 0.03), nothing elsewhere. BCQ must act at the top
    of the data (the +0.5 cluster, within Phi of what its VAE decodes), although its own Q1 grows
    towards the unseen bound a = 1; and its Q1 must satisfy the Bellman equation of that choice,
    Q(s, a) = a + gamma V with V = max_i Q(s', a_i) = a* / (1 - gamma). Taking the min over the
    sampled actions instead gives V = a_min / (1 - gamma), far below."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    gamma, n = 0.5, 64
    small = {"vae_hidden": [32, 32], "actor_hidden": [32, 32], "critic_hidden": [32, 32], "n_act_samples": 10}
    algo = make_algorithm("bcq", {**small, "tau": 0.05}, ObservationSpec("vector", (1,)), 1, "cpu")
    for _ in range(500):
        cluster = torch.where(torch.rand(n, 1, generator=g) < 0.5, -0.5, 0.5)
        action = cluster + 0.03 * torch.randn(n, 1, generator=g)
        s, s2 = torch.rand(n, 1, generator=g) * 2 - 1, torch.rand(n, 1, generator=g) * 2 - 1
        algo.update(
            {"obs": s, "next_obs": s2, "action": action, "reward": action[:, 0], "discount": torch.full((n,), gamma)}
        )

    probe = torch.linspace(-0.8, 0.8, 5)[:, None]
    act = algo.act(probe)[:, 0]
    assert bool((act > 0.25).all() and (act < 0.6).all()), act  # the upper cluster, not the bound
    with torch.no_grad():
        grid = torch.linspace(-1, 1, 41)[:, None]
        q_grid = algo.critic.q1(algo.normalizer(torch.zeros(41, 1)), grid)
        q_data = algo.critic.q1(algo.normalizer(probe), torch.full((5, 1), 0.5))
    assert grid[q_grid.argmax(), 0] > 0.7, q_grid  # unconstrained, argmax Q would leave the data
    bellman = 0.5 + gamma * act.mean() / (1.0 - gamma)
    torch.testing.assert_close(q_data, bellman.expand(5), atol=0.1, rtol=0.0)


def bandit_batch(g: torch.Generator, size: int, obs: torch.Tensor) -> dict[str, torch.Tensor]:
    """One-step bandit: reward r = a (one-dimensional action), behaviour actions clustered at 0
    (std 0.1, within +-0.3). A critic fitted on it extrapolates r = a to a = 1, where nothing was seen."""
    action = (0.1 * torch.randn(size, 1, generator=g)).clamp(-0.3, 0.3)
    s = obs.expand(size, *obs.shape[1:])
    return {"obs": s, "next_obs": s, "action": action, "reward": action[:, 0], "discount": torch.zeros(size)}


# ---- DrQ+BC --------------------------------------------------------------------------------------


def drq_batch() -> dict[str, torch.Tensor]:
    return image_batch(BATCH, IMAGE_SHAPE, ACTION_DIM, GAMMA * (1.0 - DONE))


def build_drq(seed: int = 0, shape=IMAGE_SHAPE, action_dim: int = ACTION_DIM, **overrides):
    torch.manual_seed(seed)
    return make_algorithm("drqbc", {**DRQ_SMALL, **overrides}, ObservationSpec("image", shape), action_dim, "cpu")


def drq_actor(p: dict, h: torch.Tensor) -> torch.Tensor:
    return dense(p, "policy", drq_trunk(p, h), last="tanh")


def clip_st(x: torch.Tensor) -> torch.Tensor:
    """DrQ-v2's TruncatedNormal sample clamp: value in (-1 + 1e-6, 1 - 1e-6), gradient straight through."""
    return x - x.detach() + x.detach().clamp(-1.0 + 1e-6, 1.0 - 1e-6)


def test_drqbc_one_update_matches_the_paper(monkeypatch: pytest.MonkeyPatch) -> None:
    """One DrQ+BC update (Lu et al. 2022, V-D4RL sec. 3.2 / app. C.2: DrQ-v2 with TD3+BC's actor loss,
    as in the authors' drqbc/drqv2.py):

        h = f_xi(aug(o)),  h' = f_xi(aug(o'))   (independent random shifts of BOTH, pad 4; h' no grad)
        a' = clip(pi(h') + clip(eps', -c, c), -1, 1),  eps' ~ N(0, s^2),  c = 0.3
        y = r + gamma^n (1 - done) min(Q'_1, Q'_2)(h', a')                    (clipped double-Q)
        L_critic = mean (Q1(h, a) - y)^2 + mean (Q2(h, a) - y)^2    (trains critic AND encoder)
        a_pi = clip(pi(sg(h)) + clip(eps, -c, c)),  Q = min(Q1, Q2)(sg(h), a_pi)  (updated critic)
        L_actor = -lambda mean Q + mean (a_pi - a)^2,  lambda = alpha / mean|Q| (no grad), alpha = 2.5
        critic target: theta' <- tau theta + (1 - tau) theta', tau = 0.01
    """
    algo = build_drq()
    perturb_(algo.critic_target, seed=3)
    c, batch = algo.config, drq_batch()
    std, lr, tau, alpha, clip = c.stddev_init, c.lr, c.tau, 2.5, 0.3
    enc0, actor0, critic0 = params_of(algo.encoder, True), params_of(algo.actor, True), params_of(algo.critic, True)
    critic_t0 = params_of(algo.critic_target)
    g = generator_copy(algo.generator)
    shift = RecordingShift()
    monkeypatch.setattr(drqbc_module, "random_shift", shift)
    loss_calls = record_critic_targets(monkeypatch, drqbc_module)
    out = algo.update(batch)

    pads = [pad for _, pad, _ in shift.calls]
    assert pads == [4, 4], f"random_shift calls with pads {pads}: want one for obs and one for next_obs, pad 4"
    aug_obs, aug_next = shift.output_for(batch["obs"]), shift.output_for(batch["next_obs"])
    a, r, disc = batch["action"], batch["reward"], batch["discount"]
    # critic (and encoder)
    h = drq_encoder(enc0, aug_obs)
    with torch.no_grad():
        h2 = drq_encoder(enc0, aug_next)
        eps2 = torch.randn((BATCH, ACTION_DIM), generator=g) * std
        a2 = clip_st(drq_actor(actor0, h2) + eps2.clamp(-clip, clip))
        y = r + disc * torch.minimum(*twin_q(critic_t0, h2, a2, with_trunk=True))
    q1, q2 = twin_q(critic0, h, a, with_trunk=True)
    critic_loss = ((q1 - y) ** 2).mean() + ((q2 - y) ** 2).mean()
    enc_critic = {**{f"e.{k}": v for k, v in enc0.items()}, **{f"c.{k}": v for k, v in critic0.items()}}
    grads = grads_of(critic_loss, enc_critic)
    stepped = adam_first_step(enc_critic, grads, lr)
    enc_grads, critic_grads = ({k[2:]: v for k, v in grads.items() if k[0] == p} for p in "ec")
    enc1, critic1 = ({k[2:]: v for k, v in stepped.items() if k[0] == p} for p in "ec")
    # actor, on detached features through the updated critic
    hd = h.detach()
    eps = torch.randn((BATCH, ACTION_DIM), generator=g) * std
    pi = clip_st(drq_actor(actor0, hd) + eps.clamp(-clip, clip))
    q = torch.minimum(*twin_q(critic1, hd, pi, with_trunk=True))
    lam = alpha / q.detach().abs().mean()
    bc_loss = ((pi - a) ** 2).mean()
    actor_loss = -lam * q.mean() + bc_loss
    actor_grads = grads_of(actor_loss, actor0)
    actor1 = adam_first_step(actor0, actor_grads, lr)

    expected = {
        "critic_loss": critic_loss,
        "q_mean": q1.mean(),
        "actor_loss": actor_loss,
        "bc_loss": bc_loss,
        "lambda": lam,
        "stddev": torch.tensor(std),
    }
    assert out.keys() == expected.keys()
    for k, v in expected.items():
        assert out[k] == pytest.approx(v.item(), rel=1e-4, abs=1e-5), k
    assert len(loss_calls) == 1
    torch.testing.assert_close(loss_calls[0], y, **TOL)
    assert bc_loss.item() > 0.05 and lam.item() * q.mean().abs().item() > 0.05  # both terms matter

    assert_grads(algo.encoder, enc_grads, "encoder")  # the critic's gradient only
    assert_grads(algo.critic, critic_grads, "critic")
    assert_grads(algo.actor, actor_grads, "actor")
    assert_params(algo.encoder, enc1, "encoder")
    assert_params(algo.critic, critic1, "critic")
    assert_params(algo.actor, actor1, "actor")
    assert_params(algo.critic_target, polyak(critic_t0, critic1, tau), "critic_target")


def test_drqbc_acts_with_the_mean_on_unaugmented_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    """Acting (DrQ-v2 act(eval_mode=True)): a = pi(f_xi(o)) = tanh(MLP(trunk(f_xi(o)))), the policy's
    mean on the raw frame: no augmentation, no noise."""
    algo = build_drq(seed=5)
    for _ in range(2):
        algo.update(drq_batch())
    shift = RecordingShift()
    monkeypatch.setattr(drqbc_module, "random_shift", shift)
    obs = drq_batch()["next_obs"]
    expected = drq_actor(params_of(algo.actor), drq_encoder(params_of(algo.encoder), obs))
    got = algo.act(obs)
    torch.testing.assert_close(got, expected, **TOL)
    torch.testing.assert_close(algo.act(obs), got, rtol=0.0, atol=0.0)
    assert shift.calls == []


def test_drqbc_bc_term_keeps_the_policy_on_the_data() -> None:
    """One-step bandit on a constant 16x16 frame, r = 5 + a, data a ~ N(0, 0.1^2) in [-0.3, 0.3].
    With Q = 5 + a on the data, TD3+BC's actor loss -lambda Q + (pi - a)^2, lambda = 2.5 / |Q| ~ 0.5,
    is minimised at pi = mean(a) + lambda / 2 ~ 0.25: near the data although the critic's own argmax
    is at the unseen bound a = 1 (where a policy without the BC term goes)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    cfg = {**DRQ_SMALL, "hidden_dim": 32, "lr": 3e-3, "stddev_init": 0.1, "stddev_steps": 1}
    algo = build_drq(seed=0, action_dim=1, **cfg)
    frame = torch.full((1, *IMAGE_SHAPE), 128, dtype=torch.uint8)
    for _ in range(300):
        batch = bandit_batch(g, 32, obs=frame)
        out = algo.update({**batch, "reward": 5.0 + batch["reward"]})

    act = algo.act(frame)[0, 0].item()
    assert 0.4 < out["lambda"] < 0.6, out
    assert abs(act - out["lambda"] / 2) < 0.1, (act, out)  # pi* = mean(a) + lambda / 2, mean(a) = 0
    with torch.no_grad():
        h = algo.encoder(frame.expand(41, *IMAGE_SHAPE))
        grid = torch.linspace(-1, 1, 41)[:, None]
        q_grid = torch.min(*algo.critic(h, grid))
        q_data = torch.min(*algo.critic(h[:3], torch.tensor([[-0.2], [0.0], [0.2]])))
    assert grid[q_grid.argmax(), 0] > 0.7, q_grid
    torch.testing.assert_close(q_data, torch.tensor([4.8, 5.0, 5.2]), atol=0.1, rtol=0.0)
