"""The maths of CQL (learning/algorithms/cql.py) pinned against the paper's and CORL's equations.

One update on a tiny fixed batch, with every loss, target and weight evaluated here with plain
torch ops (functional layers on the weights copied before the update, the tanh-Gaussian density
written out, never the algorithm's own networks or helpers), and with every random draw replayed
from a copy of the algorithm's generator: the reported losses, every parameter gradient (left in
``param.grad`` by each step), the Adam step of each network and temperature, and the Polyak step
of the target critics.  Three configurations cover the SAC target with and without its entropy
term, the penalty with and without importance sampling, its log-sum-exp temperature, the Lagrange
multiplier, the behaviour-cloning warm-up and a fixed temperature.  Both critics and both target
critics are moved off each other first, so min <-> max and online <-> target show.  Then the image
variant (augmentation, which loss trains the encoder), the acting rule, and a one-step offline
problem on which the penalty decides the answer: without it (cql_alpha = 0, offline SAC) the
critic extrapolates the data's trend to the action bound and the policy follows it there; with it
the policy and the critic's optimum stay in the data.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal

import learning.algorithms.base as algorithm_base
import learning.algorithms.cql as cql_module
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

OBS_DIM, ACTION_DIM, BATCH, N_ACT = 3, 2, 8, 3
MEAN = np.array([0.5, -1.0, 2.0], dtype=np.float32)
STD = np.array([2.0, 0.5, 1.0], dtype=np.float32)
EPS = 0.05  # the normaliser's eps, far from the default 1e-3
SPEC = ObservationSpec("vector", (OBS_DIM,), mean=MEAN, std=STD)
DONE = torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
GAMMA = 0.99
BASE = {
    "hidden_dims": [8],
    "actor_lr": 1e-2,  # four different rates: a step taken with another optimiser's rate shows
    "critic_lr": 2e-2,
    "alpha_lr": 3e-2,
    "tau": 0.3,  # Polyak; far from 0.5 so that tau <-> 1 - tau shows
    "cql_alpha": 3.0,
    "cql_n_actions": N_ACT,
    "target_entropy": -1.3,  # not -|A|, so that a wrong constant shows
    "log_std_min": -3.0,
    "log_std_max": 0.3,  # some log stds are clamped
    "normalizer_eps": EPS,
}
VARIANTS = {
    # SAC target with its entropy term, importance-sampled penalty, learned temperature
    "sac_backup": {**BASE, "backup_entropy": True},
    # CORL's target (no entropy term), penalty without importance sampling at temperature T = 2,
    # Lagrange multiplier, first update a behaviour-cloning one
    "lagrange_bc": {
        **BASE,
        "cql_importance_sample": False,
        "cql_temp": 2.0,
        "cql_lagrange": True,
        "cql_target_action_gap": 0.7,
        "bc_steps": 1,
    },
    # a fixed temperature alpha_ent = alpha_multiplier, never stepped
    "fixed_temperature": {**BASE, "backup_entropy": True, "automatic_entropy_tuning": False, "alpha_multiplier": 0.3},
}
IMAGE_SHAPE = (3, 16, 16)
IMAGE_CQL = {**BASE, "hidden_dims": [16], "encoder_channels": 4, "feature_dim": 8, "backup_entropy": True}


# ---- independent functional networks -------------------------------------------------------------


def twin_q_many(p: dict, x: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q_1, Q_2 of (B, K, |A|) actions, each at its own state: (B, K) each."""
    b, k, _ = a.shape
    xs = x.unsqueeze(1).expand(b, k, x.shape[-1]).reshape(b * k, -1)
    q1, q2 = twin_q(p, xs, a.reshape(b * k, -1))
    return q1.reshape(b, k), q2.reshape(b, k)


def policy(p: dict, x: torch.Tensor, low: float, high: float) -> tuple[torch.Tensor, torch.Tensor]:
    """CORL's TanhGaussianPolicy head: [mu, raw] = MLP(s), log sigma = clamp(m raw + o, low, high)."""
    out = dense(p, "policy", drq_trunk(p, x))
    mu, raw = out[:, :ACTION_DIM], out[:, ACTION_DIM:]
    return mu, torch.clamp(p["log_std_multiplier"] * raw + p["log_std_offset"], low, high)


def tanh_normal(mu: torch.Tensor, log_std: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """a = tanh(mu + sigma eps) and log pi(a) = sum [log N(u; mu, sigma) - log(1 - tanh(u)^2)]
    (change of variables, written naively); mu / log_std broadcast over a sample axis of eps."""
    if eps.dim() == 3:
        mu, log_std = mu.unsqueeze(1), log_std.unsqueeze(1)
    u = mu + torch.exp(log_std) * eps
    return torch.tanh(u), (Normal(mu, torch.exp(log_std)).log_prob(u) - log_one_minus_tanh_sq(u)).sum(-1)


def tanh_normal_log_prob(mu: torch.Tensor, log_std: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """log pi(a) of given actions: u = atanh(a) (a clamped to +-(1 - 1e-6)), as above."""
    a = torch.clamp(a, -(1 - 1e-6), 1 - 1e-6)
    u = 0.5 * torch.log((1 + a) / (1 - a))
    return (Normal(mu, torch.exp(log_std)).log_prob(u) - log_one_minus_tanh_sq(u)).sum(-1)


def log_one_minus_tanh_sq(u: torch.Tensor) -> torch.Tensor:
    """log(1 - tanh(u)^2) = log sech(u)^2 = -2 log cosh(u) (exact in float32 where 1 - tanh^2 is not)."""
    return -2.0 * torch.log(torch.cosh(u))


def normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.as_tensor(MEAN)) / (torch.as_tensor(STD) + EPS)


def grads_of(loss: torch.Tensor, p: dict) -> dict:
    grads = torch.autograd.grad(loss, list(p.values()), allow_unused=True)
    return {k: torch.zeros_like(v) if gr is None else gr for (k, v), gr in zip(p.items(), grads, strict=True)}


def assert_grads(module: torch.nn.Module, expected: dict, what: str) -> None:
    """The gradients the algorithm left on ``module`` are those of the expected loss (and only it)."""
    for k, param in module.named_parameters():
        got = param.grad if param.grad is not None else torch.zeros_like(param)
        torch.testing.assert_close(got, expected[k], **TOL, msg=lambda m, k=k: f"{what} {k} grad: {m}")


def vector_batch(seed: int = 10) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mean, std = torch.as_tensor(MEAN), torch.as_tensor(STD)
    action = (torch.rand(BATCH, ACTION_DIM, generator=g) * 2 - 1) * 0.9
    action[0, 0] = 1.0  # a dataset action at the limit (the BC warm-up's clamp)
    return {
        "obs": mean + std * torch.randn(BATCH, OBS_DIM, generator=g),
        "next_obs": mean + std * torch.randn(BATCH, OBS_DIM, generator=g),
        "action": action,
        "reward": torch.randn(BATCH, generator=g),
        "discount": GAMMA * (1.0 - DONE),  # gamma^n (1 - done), as the batch contract writes it
    }


def build(config: dict, seed: int = 0, spec: ObservationSpec = SPEC, action_dim: int = ACTION_DIM):
    torch.manual_seed(seed)
    return make_algorithm("cql", config, spec, action_dim, "cpu")


def prepare_(algo) -> None:
    """Critics apart from each other and from their targets (CORL's 0.01-gain output layers start
    every Q near 0), policy means and log stds spread (some clamped), temperature and Lagrange
    multiplier off their initial values."""
    perturb_(algo.critic, seed=1, scale=0.3)
    perturb_(algo.critic_target, seed=2, scale=0.3)
    perturb_(algo.actor.policy, seed=3, scale=0.4)
    with torch.no_grad():
        algo.critic_target.q1_net[-1].bias.add_(0.5)
        algo.log_alpha.value.fill_(-0.4)
        algo.log_alpha_prime.value.fill_(0.2)


def replay_draws(generator: torch.Generator, n: int = N_ACT) -> dict[str, torch.Tensor]:
    """The update's random draws, in the documented order, from a copy of its generator."""
    g = torch.Generator()
    g.set_state(generator.get_state())
    return {
        "eps_pi": torch.randn((BATCH, ACTION_DIM), generator=g),
        "eps_next": torch.randn((BATCH, ACTION_DIM), generator=g),
        "rand": torch.rand((BATCH, n, ACTION_DIM), generator=g) * 2 - 1,
        "eps_cur": torch.randn((BATCH, n, ACTION_DIM), generator=g),
        "eps_nxt": torch.randn((BATCH, n, ACTION_DIM), generator=g),
    }


def expected_update(c, batch, s, s2, draws, p: dict, bc: bool, encoder: dict | None = None) -> dict:
    """Every loss and gradient of one CQL update (Kumar et al. 2020 eq. 4, CQL(H); CORL's
    ContinuousCQL.train), from the parameters ``p`` before it; ``encoder``: the image encoder's
    parameters ``s`` was computed from, whose gradient is the critic loss's."""
    actor0, critic0, critic_t0 = p["actor"], p["critic"], p["critic_target"]
    log_alpha0, log_alpha_prime0 = p["log_alpha"], p["log_alpha_prime"]
    a, r, disc = batch["action"], batch["reward"], batch["discount"]
    n_act, dim_a = draws["rand"].shape[1], a.shape[1]
    sd = s.detach()
    lo, hi = c.log_std_min, c.log_std_max
    out: dict = {}

    # temperature and actor (the actor on detached features)
    mu, log_std = policy(actor0, sd, lo, hi)
    a_pi, log_pi = tanh_normal(mu, log_std, draws["eps_pi"])
    if c.automatic_entropy_tuning:
        alpha_loss = -(log_alpha0["value"] * (log_pi.detach() + c.target_entropy)).mean()
        alpha = torch.exp(log_alpha0["value"]).detach() * c.alpha_multiplier
        out["alpha_grads"] = grads_of(alpha_loss, log_alpha0)
    else:
        alpha_loss, alpha = torch.tensor(0.0), torch.tensor(c.alpha_multiplier)
        out["alpha_grads"] = {"value": torch.zeros(())}
    if bc:
        actor_loss = (alpha * log_pi - tanh_normal_log_prob(mu, log_std, a)).mean()
    else:
        frozen_critic = {k: v.detach() for k, v in critic0.items()}  # the actor loss trains no critic
        actor_loss = (alpha * log_pi - torch.minimum(*twin_q(frozen_critic, sd, a_pi))).mean()
    out["actor_grads"] = grads_of(actor_loss, actor0)

    # critic: SAC target with the TARGET critics at s', clipped double Q
    with torch.no_grad():
        mu2, log_std2 = policy(actor0, s2, lo, hi)
        a2, log_pi2 = tanh_normal(mu2, log_std2, draws["eps_next"])
        q_next = torch.minimum(*twin_q(critic_t0, s2, a2))
        if c.backup_entropy:
            q_next = q_next - alpha * log_pi2
        y = r + disc * q_next
        # the penalty's actions: uniform, pi(.|s), pi(.|s'), all evaluated at s
        a_cur, log_pi_cur = tanh_normal(mu.detach(), log_std.detach(), draws["eps_cur"])
        a_nxt, log_pi_nxt = tanh_normal(mu2, log_std2, draws["eps_nxt"])
    q1, q2 = twin_q(critic0, s, a)
    q1_rand, q2_rand = twin_q_many(critic0, s, draws["rand"])
    q1_cur, q2_cur = twin_q_many(critic0, s, a_cur)
    q1_nxt, q2_nxt = twin_q_many(critic0, s, a_nxt)
    log_uniform = math.log(0.5**dim_a)  # density of U([-1, 1]^|A|)
    diffs = []
    for q, q_rand, q_cur, q_nxt in ((q1, q1_rand, q1_cur, q1_nxt), (q2, q2_rand, q2_cur, q2_nxt)):
        if c.cql_importance_sample:
            terms = torch.cat([q_rand - log_uniform, q_nxt - log_pi_nxt, q_cur - log_pi_cur], dim=1)
            assert terms.shape[1] == 3 * n_act
        else:
            terms = torch.cat([q_rand, q.unsqueeze(1), q_nxt, q_cur], dim=1)
        t = c.cql_temp
        lse = t * torch.log(torch.exp(terms / t).sum(dim=1))  # T log sum_k exp(term_k / T)
        diffs.append((lse - q).mean())
    if c.cql_lagrange:
        alpha_prime = torch.clamp(torch.exp(log_alpha_prime0["value"]), 0.0, 1e6)
        # CORL: alpha_prime_loss = -(penalty_1 + penalty_2) / 2, stepping alpha' only
        gaps = [d.detach() - c.cql_target_action_gap for d in diffs]
        alpha_prime_loss = -(alpha_prime * c.cql_alpha * gaps[0] + alpha_prime * c.cql_alpha * gaps[1]) * 0.5
        out["alpha_prime_grads"] = grads_of(alpha_prime_loss, log_alpha_prime0)
        penalty = alpha_prime.detach() * c.cql_alpha * (diffs[0] - c.cql_target_action_gap)
        penalty = penalty + alpha_prime.detach() * c.cql_alpha * (diffs[1] - c.cql_target_action_gap)
    else:
        alpha_prime = alpha_prime_loss = torch.tensor(0.0)
        out["alpha_prime_grads"] = {"value": torch.zeros(())}
        penalty = c.cql_alpha * (diffs[0] + diffs[1])
    td_loss = ((q1 - y) ** 2).mean() + ((q2 - y) ** 2).mean()
    critic_loss = td_loss + penalty
    grads = grads_of(critic_loss, {**critic0, **{f"enc:{k}": v for k, v in (encoder or {}).items()}})
    out["critic_grads"] = {k: v for k, v in grads.items() if not k.startswith("enc:")}
    out["encoder_grads"] = {k[4:]: v for k, v in grads.items() if k.startswith("enc:")}
    out["losses"] = {
        "critic_loss": critic_loss,
        "td_loss": td_loss,
        "cql_diff": (diffs[0] + diffs[1]) / 2,
        "actor_loss": actor_loss,
        "alpha_loss": alpha_loss,
        "alpha": alpha,
        "log_pi": log_pi.mean(),
        "q_mean": q1.mean(),
        "target_q": q_next.mean(),
        "alpha_prime": alpha_prime,
        "alpha_prime_loss": alpha_prime_loss,
    }
    out["pieces"] = dict(
        entropy_backup=(disc * alpha * log_pi2).detach(),
        q_next_gap=(torch.maximum(*twin_q(critic_t0, s2, a2)) - torch.minimum(*twin_q(critic_t0, s2, a2))).detach(),
        terms_std=terms.detach().std(dim=1),
        log_pi_cur=log_pi_cur,
    )
    return out


# ---- one vector update ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_one_update_matches_the_paper(variant: str) -> None:
    """One CQL(H) update (module docstring, steps 1-7), s normalised by mean / (std + eps):

    a_pi = tanh(mu(s) + sigma(s) eps),  log pi = sum log N(u) - log(1 - tanh(u)^2)
    L_alpha = -mean log_alpha (log pi(a_pi|s) + target_entropy)
    L_pi = mean (alpha_ent log pi(a_pi|s) - min(Q_1, Q_2)(s, a_pi))   [BC: - log pi(a|s)]
    y = r + discount (min(Q'_1, Q'_2)(s', a') [- alpha_ent log pi(a'|s')])   (Q' the TARGETS)
    diff_i = mean (T logsumexp([Q_i(s, a_rand) - log 0.5^|A|, Q_i(s, a_nxt) - log pi(a_nxt|s'),
                                Q_i(s, a_cur) - log pi(a_cur|s)] / T) - Q_i(s, a))
    L_Q = sum_i mean (Q_i(s, a) - y)^2 + alpha_cql diff_i  [Lagrange: alpha' alpha_cql (diff_i - gap)]
    Q' <- (1 - tau) Q' + tau Q1
    """
    algo = build(VARIANTS[variant])
    prepare_(algo)
    c, batch = algo.config, vector_batch()
    p = {name: params_of(getattr(algo, name), True) for name in ("actor", "critic", "log_alpha", "log_alpha_prime")}
    p["critic_target"] = params_of(algo.critic_target)
    draws = replay_draws(algo.generator)
    out = algo.update(batch)

    s, s2 = normalise(batch["obs"]), normalise(batch["next_obs"])
    want = expected_update(c, batch, s, s2, draws, p, bc=c.bc_steps >= 1)

    # the batch is built so that each piece matters
    pieces = want["pieces"]
    assert pieces["q_next_gap"].min() > 0.05, "min and max of the target critics agree"
    assert pieces["terms_std"].min() > 0.05, "log-sum-exp, mean and max would agree"
    assert pieces["log_pi_cur"].std() > 0.3, "the importance weights would not matter"
    if c.backup_entropy:
        assert pieces["entropy_backup"].abs().max() > 0.05, "the entropy term would not matter"
    assert want["losses"]["log_pi"].abs() > 0.1 and abs(want["losses"]["log_pi"] + c.target_entropy) > 0.1

    assert out.keys() == want["losses"].keys()
    for k, v in want["losses"].items():
        assert out[k] == pytest.approx(v.item(), rel=1e-4, abs=1e-5), k

    assert_grads(algo.critic, want["critic_grads"], "critic")
    assert_grads(algo.actor, want["actor_grads"], "actor")
    assert_grads(algo.log_alpha, want["alpha_grads"], "log_alpha")
    assert_grads(algo.log_alpha_prime, want["alpha_prime_grads"], "log_alpha_prime")
    critic1 = adam_first_step(p["critic"], want["critic_grads"], c.critic_lr)
    assert_params(algo.critic, critic1, "critic")
    assert_params(algo.actor, adam_first_step(p["actor"], want["actor_grads"], c.actor_lr), "actor")
    tuned = c.automatic_entropy_tuning
    log_alpha1 = adam_first_step(p["log_alpha"], want["alpha_grads"], c.alpha_lr) if tuned else p["log_alpha"]
    assert_params(algo.log_alpha, log_alpha1, "log_alpha")
    lagrange = c.cql_lagrange
    log_ap1 = (
        adam_first_step(p["log_alpha_prime"], want["alpha_prime_grads"], c.critic_lr)
        if lagrange
        else p["log_alpha_prime"]
    )
    assert_params(algo.log_alpha_prime, log_ap1, "log_alpha_prime")
    assert_params(algo.critic_target, polyak(p["critic_target"], critic1, c.tau), "critic_target")


@pytest.mark.parametrize("target_entropy", [5.0, -20.0])
def test_temperature_follows_the_entropy_gap_and_bc_warm_up_ends(target_entropy: float) -> None:
    """SAC's rule: alpha_ent rises while the policy's entropy -log pi is below the target and falls
    while above (the gradient of -log_alpha (log pi + target) is -(log pi + target)); and the actor
    loss is behaviour cloning, alpha_ent log pi(a_pi|s) - log pi(a|s), for exactly the first
    `bc_steps` updates."""
    algo = build({**BASE, "bc_steps": 2, "target_entropy": target_entropy})
    alphas, is_bc = [], []
    for k in range(4):
        batch = vector_batch(k)
        draws = replay_draws(algo.generator)
        mu, log_std = policy(params_of(algo.actor), normalise(batch["obs"]), BASE["log_std_min"], BASE["log_std_max"])
        out = algo.update(batch)
        _, log_pi = tanh_normal(mu, log_std, draws["eps_pi"])
        assert (-out["log_pi"] < target_entropy) == (target_entropy > 0), out["log_pi"]
        bc_loss = (out["alpha"] * log_pi - tanh_normal_log_prob(mu, log_std, batch["action"])).mean().item()
        is_bc.append(out["actor_loss"] == pytest.approx(bc_loss, rel=1e-4, abs=1e-5))
        alphas.append(out["alpha"])
    alphas.append(math.exp(algo.log_alpha.value.item()))
    steps = np.diff(alphas)
    assert bool((steps > 0).all()) if target_entropy > 0 else bool((steps < 0).all()), alphas
    assert is_bc == [True, True, False, False]


# ---- images --------------------------------------------------------------------------------------


def test_image_update_trains_the_encoder_by_the_critic_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Images (V-D4RL's DrQ-v2 setting): h = f(aug(o)), h' = f(aug(o')) (independent shifts, pad 4,
    the encoder before the update, h' without gradient); the temperature and actor losses of
    `test_one_update_matches_the_paper` on sg(h); the critic loss (TD + penalty, every Q at h) on h,
    so the encoder's gradient is the critic loss's alone, stepped with the critic's Adam."""
    algo = build(IMAGE_CQL, spec=ObservationSpec("image", IMAGE_SHAPE))
    perturb_(algo.critic_target, seed=3, scale=0.05)
    c, batch = algo.config, image_batch(BATCH, IMAGE_SHAPE, ACTION_DIM, GAMMA * (1.0 - DONE))
    enc0 = params_of(algo.encoder, True)
    p = {name: params_of(getattr(algo, name), True) for name in ("actor", "critic", "log_alpha", "log_alpha_prime")}
    p["critic_target"] = params_of(algo.critic_target)
    draws = replay_draws(algo.generator)
    shift = RecordingShift()
    monkeypatch.setattr(algorithm_base, "random_shift", shift)
    out = algo.update(batch)

    assert [pad for _, pad, _ in shift.calls] == [4, 4], "one shift of obs and one of next_obs, pad 4"
    h = drq_encoder(enc0, shift.output_for(batch["obs"]))
    with torch.no_grad():
        h2 = drq_encoder(enc0, shift.output_for(batch["next_obs"]))
    want = expected_update(c, batch, h, h2, draws, p, bc=False, encoder=enc0)
    enc_grads = want["encoder_grads"]
    for k in ("critic_loss", "actor_loss", "alpha_loss", "td_loss", "cql_diff"):
        assert out[k] == pytest.approx(want["losses"][k].item(), rel=1e-4, abs=1e-5), k
    assert_grads(algo.encoder, enc_grads, "encoder")
    assert_grads(algo.actor, want["actor_grads"], "actor")
    assert_grads(algo.critic, want["critic_grads"], "critic")
    assert algo.actor.trunk[0].weight.grad.abs().sum() > 0
    assert_params(algo.encoder, adam_first_step(enc0, enc_grads, c.critic_lr), "encoder")
    assert_params(algo.actor, adam_first_step(p["actor"], want["actor_grads"], c.actor_lr), "actor")
    critic1 = adam_first_step(p["critic"], want["critic_grads"], c.critic_lr)
    assert_params(algo.critic, critic1, "critic")
    assert_params(algo.critic_target, polyak(p["critic_target"], critic1, c.tau), "critic_target")


# ---- acting ---------------------------------------------------------------------------------------


def test_acts_with_the_squashed_mean() -> None:
    """act(s) = tanh(mu((s - mean) / (std + eps))): the tanh-Gaussian's mode-like deterministic
    action (CORL), on raw observations, float32, in [-1, 1], the same on every call."""
    algo = build(VARIANTS["sac_backup"])
    prepare_(algo)
    for seed in range(3):  # trained weights, not only the initial ones
        algo.update(vector_batch(seed))
    g = torch.Generator().manual_seed(4)
    obs = torch.as_tensor(MEAN) + torch.as_tensor(STD) * torch.randn(16, OBS_DIM, generator=g)
    obs = torch.cat([obs, torch.tensor([[1e4, -1e4, 1e4], [-1e4, 1e4, -1e4]])]).double()
    got = algo.act(obs)
    mu, _ = policy(params_of(algo.actor), normalise(obs.float()), -20.0, 2.0)
    assert got.dtype == torch.float32 and got.shape == (18, ACTION_DIM)
    torch.testing.assert_close(got, torch.tanh(mu), **TOL)
    assert bool(got.abs().le(1.0).all()) and bool(got[-2:].abs().gt(0.99).all())
    assert torch.equal(got, algo.act(obs))
    state = algorithm_from_state(algo.state_dict())
    assert torch.equal(state.act(obs), got)


def test_image_acting_uses_unaugmented_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    algo = build(IMAGE_CQL, spec=ObservationSpec("image", IMAGE_SHAPE))
    algo.update(image_batch(BATCH, IMAGE_SHAPE, ACTION_DIM, GAMMA * (1.0 - DONE)))
    shift = RecordingShift()
    monkeypatch.setattr(algorithm_base, "random_shift", shift)
    obs = image_batch(BATCH, IMAGE_SHAPE, ACTION_DIM, GAMMA * (1.0 - DONE))["next_obs"]
    mu, _ = policy(params_of(algo.actor), drq_encoder(params_of(algo.encoder), obs), -20.0, 2.0)
    torch.testing.assert_close(algo.act(obs), torch.tanh(mu), **TOL)
    assert shift.calls == []


def test_tanh_gaussian_density_is_stable_at_large_pre_activations() -> None:
    """The algorithm's log-density equals torch's TanhTransform one (same u, cached), also where
    the naive log(1 - tanh(u)^2) underflows."""
    from torch.distributions import TanhTransform, TransformedDistribution

    mu = torch.tensor([[0.0, 3.0], [-9.0, 12.0]])
    log_std = torch.tensor([[-1.0, 0.5], [-2.0, 0.0]])
    eps = torch.tensor([[0.3, -1.0], [0.5, 2.0]])
    u = mu + log_std.exp() * eps
    got = cql_module.tanh_gaussian_log_prob(u, eps, log_std)
    dist = TransformedDistribution(Normal(mu, log_std.exp()), TanhTransform(cache_size=1))
    a = dist.transforms[0](u)  # caches u for a
    torch.testing.assert_close(got, dist.log_prob(a).sum(-1), rtol=1e-5, atol=1e-4)
    assert bool(torch.isfinite(got).all())


# ---- learning on a tiny offline problem ------------------------------------------------------------


def one_step_batch(g: torch.Generator, n: int) -> dict[str, torch.Tensor]:
    """One state, one step: actions a ~ U(-0.3, 0.3), reward r = a, terminal. The data say "more
    is better" only inside [-0.3, 0.3]; what lies beyond is unknown."""
    action = torch.rand(n, 1, generator=g) * 0.6 - 0.3
    obs = torch.zeros(n, 1)
    return {"obs": obs, "next_obs": obs, "action": action, "reward": action[:, 0], "discount": torch.zeros(n)}


def train_one_step(cql_alpha: float):
    g = torch.Generator().manual_seed(0)
    config = {
        "hidden_dims": [32, 32],
        "actor_lr": 3e-3,
        "critic_lr": 3e-3,
        "alpha_lr": 3e-3,
        "cql_alpha": cql_alpha,
        "cql_n_actions": 10,
    }
    algo = build(config, spec=ObservationSpec("vector", (1,)), action_dim=1)
    for _ in range(600):
        algo.update(one_step_batch(g, 64))
    state = torch.zeros(1, 1)
    grid = torch.linspace(-1, 1, 41)[:, None]
    with torch.no_grad():
        q = torch.min(*algo.critic(state.expand(41, 1), grid))
    return algo.act(state)[0, 0].item(), grid[q.argmax(), 0].item(), q


def conservative(act: float, q_argmax: float, q: torch.Tensor) -> bool:
    """The policy acts inside (or at the edge of) the data, the critic's best action is there too,
    and the critic values the action bounds below the best dataset action (Q(0.3) = 0.3)."""
    in_data = torch.linspace(-1, 1, 41).abs() <= 0.3
    return abs(act) <= 0.35 and abs(q_argmax) <= 0.35 and bool(q[~in_data][[0, -1]].max() < q[in_data].max())


def test_the_penalty_keeps_policy_and_critic_in_the_data() -> None:
    """Offline SAC (cql_alpha = 0) fits Q = a on the data and extrapolates it: its critic's best
    action and its policy run to the bound a = 1 the data never visited. CQL (cql_alpha = 10) pushes
    Q down wherever the uniform and policy samples land outside the data, so both stay in it."""
    act, q_argmax, q = train_one_step(10.0)
    assert conservative(act, q_argmax, q), (act, q_argmax, q)
    act0, q_argmax0, q0 = train_one_step(0.0)
    assert act0 > 0.5 and q_argmax0 > 0.9, (act0, q_argmax0, q0)
    assert not conservative(act0, q_argmax0, q0)
