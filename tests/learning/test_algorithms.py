"""d3rlpy-style tests of the offline algorithms (TD3+BC, BCQ, DrQ+BC, IQL, CQL, BC) and the shared networks:
a short fit on vector and image observations, save/load round trips, exact resume, learning sanity
on tiny synthetic datasets, and refusal of wrong observation kinds and foreign checkpoints."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import nets
from learning.algorithms import ALGORITHMS, ObservationSpec, algorithm_from_state, make_algorithm, make_config

OBS_DIM, ACTION_DIM = 5, 2
IMAGE_SHAPE = (9, 24, 24)  # 3 stacked RGB frames, small for CPU (full size is 84x84)
VECTOR = ObservationSpec("vector", (OBS_DIM,), mean=np.full(OBS_DIM, 0.5), std=np.full(OBS_DIM, 2.0))
IMAGE = ObservationSpec("image", IMAGE_SHAPE)

SMALL = {  # small networks so the file runs in seconds on two cores
    "td3bc": {"hidden_dims": [32, 32]},
    "bcq": {"vae_hidden": [32, 32], "actor_hidden": [32, 32], "critic_hidden": [32, 32], "n_act_samples": 10},
    "bc": {"hidden_dims": [32, 32]},
    "drqbc": {"hidden_dim": 32, "encoder_channels": 8, "feature_dim": 16},
    # one config for both kinds (vectors ignore the image fields); a short cosine schedule so that a
    # resume that lost the actor's lr schedule shows in the parameters
    "iql": {"hidden_dims": [32, 32], "encoder_channels": 8, "feature_dim": 16, "max_steps": 8},
    # a BC warm-up of 3 updates, so the short fit and the resume cross into the CQL actor loss;
    # the Lagrange multiplier on, so its parameter and optimiser are in the resumed state
    "cql": {
        "hidden_dims": [32, 32],
        "encoder_channels": 8,
        "feature_dim": 16,
        "cql_n_actions": 4,
        "bc_steps": 3,
        "cql_lagrange": True,
    },
}
SMALL_IMAGE_BC = {"hidden_dims": [32, 32], "encoder_channels": 8, "feature_dim": 16}
CASES = [
    ("td3bc", "vector"),
    ("bcq", "vector"),
    ("bc", "vector"),
    ("iql", "vector"),
    ("cql", "vector"),
    ("drqbc", "image"),
    ("bc", "image"),
    ("iql", "image"),
    ("cql", "image"),
]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These networks are tiny: one intra-op thread is fastest and immune to a busy machine (two
    spinning OpenMP threads on two shared cores ran these updates 10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def spec(kind: str) -> ObservationSpec:
    return VECTOR if kind == "vector" else IMAGE


def small_config(name: str, kind: str) -> dict:
    return SMALL_IMAGE_BC if (name, kind) == ("bc", "image") else SMALL[name]


def make_batch(kind: str, size: int, seed: int, obs_shape=None) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = obs_shape or (IMAGE_SHAPE if kind == "image" else (OBS_DIM,))
    if kind == "image":
        obs = torch.randint(0, 256, (size, *shape), generator=g, dtype=torch.uint8)
        next_obs = torch.randint(0, 256, (size, *shape), generator=g, dtype=torch.uint8)
    else:
        obs, next_obs = torch.randn(size, *shape, generator=g), torch.randn(size, *shape, generator=g)
    return {
        "obs": obs,
        "next_obs": next_obs,
        "action": torch.rand(size, ACTION_DIM, generator=g) * 2 - 1,
        "reward": torch.randn(size, generator=g),
        "discount": (torch.rand(size, generator=g) > 0.1).float() * 0.99,
    }


def build(name: str, kind: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return make_algorithm(name, {**small_config(name, kind), **overrides}, spec(kind), ACTION_DIM, "cpu")


def roundtrip(state: dict) -> dict:
    """Through bytes as a checkpoint file would go, loadable without unpickling arbitrary objects."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def flat_state(algo) -> dict[str, torch.Tensor]:
    """Every tensor of an algorithm's state, by path (networks, targets, optimiser moments, RNG)."""
    out: dict[str, torch.Tensor] = {}

    def walk(prefix, value):
        if isinstance(value, torch.Tensor):
            out[prefix] = value.detach().clone()
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}/{k}", v)
        elif isinstance(value, list | tuple):
            for i, v in enumerate(value):
                walk(f"{prefix}/{i}", v)

    walk("", algo.state_dict())
    return out


def assert_same_state(a, b) -> None:
    sa, sb = flat_state(a), flat_state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# ---- registry and configs ------------------------------------------------------------------------


def test_registry_names_and_defaults() -> None:
    assert set(ALGORITHMS) == {"td3bc", "bcq", "drqbc", "iql", "cql", "bc"}
    td3 = make_config("td3bc")
    assert (td3.hidden_dims, td3.actor_lr, td3.batch_size, td3.tau, td3.alpha) == ((256, 256), 3e-4, 256, 0.005, 2.5)
    assert (td3.policy_noise, td3.noise_clip, td3.policy_freq) == (0.2, 0.5, 2)
    bcq = make_config("bcq")
    assert (bcq.vae_hidden, bcq.actor_hidden, bcq.phi, bcq.lmbda, bcq.lr) == ((750, 750), (400, 300), 0.05, 0.75, 1e-3)
    assert (bcq.n_target_samples, bcq.n_act_samples, bcq.kl_weight, bcq.batch_size) == (10, 100, 0.5, 100)
    drq = make_config("drqbc")
    assert (drq.hidden_dim, drq.feature_dim, drq.lr, drq.tau, drq.stddev_clip, drq.alpha) == (
        1024,
        50,
        1e-4,
        0.01,
        0.3,
        2.5,
    )
    iql = make_config("iql")
    assert (iql.expectile, iql.beta, iql.max_weight, iql.tau, iql.batch_size) == (0.7, 3.0, 100.0, 0.005, 256)
    assert (iql.actor_lr, iql.critic_lr, iql.value_lr, iql.max_steps, iql.cosine_schedule) == (
        3e-4,
        3e-4,
        3e-4,
        1_000_000,
        True,
    )
    cql = make_config("cql")  # None: per observation kind (CORL on vectors, DrQ+BC on images)
    assert (cql.cql_alpha, cql.cql_n_actions, cql.cql_temp, cql.cql_importance_sample, cql.cql_lagrange) == (
        10.0,
        10,
        1.0,
        True,
        False,
    )
    assert (cql.backup_entropy, cql.automatic_entropy_tuning, cql.bc_steps, cql.batch_size) == (False, True, 0, 256)
    vec = make_algorithm("cql", {}, VECTOR, ACTION_DIM)
    assert (vec.actor_lr, vec.critic_lr, vec.alpha_lr, vec.tau, vec.target_entropy) == (3e-5, 3e-4, 3e-5, 0.005, -2.0)
    assert [m.out_features for m in vec.critic.q1_net if isinstance(m, torch.nn.Linear)] == [256, 256, 256, 1]
    img = make_algorithm("cql", {}, ObservationSpec("image", (9, 84, 84)), ACTION_DIM)
    assert (img.actor_lr, img.critic_lr, img.alpha_lr, img.tau) == (1e-4, 1e-4, 1e-4, 0.01)
    assert [m.out_features for m in img.critic.q1_net if isinstance(m, torch.nn.Linear)] == [1024, 1024, 1]


def test_unknown_algorithm_and_field_are_named() -> None:
    with pytest.raises(ValueError, match="'sac'"):
        make_algorithm("sac", {}, VECTOR, ACTION_DIM)
    with pytest.raises(ValueError, match="learning_rate"):
        make_algorithm("td3bc", {"learning_rate": 1e-3}, VECTOR, ACTION_DIM)
    with pytest.raises(ValueError, match="alpha"):
        make_config("td3bc", {"alpha": "lots"})


@pytest.mark.parametrize(("name", "kind"), [("td3bc", "image"), ("bcq", "image"), ("drqbc", "vector")])
def test_wrong_observation_kind_refused(name: str, kind: str) -> None:
    with pytest.raises(ValueError, match=f"'{name}'.*not '{kind}'"):
        make_algorithm(name, {}, spec(kind), ACTION_DIM)


@pytest.mark.parametrize("name", ["drqbc", "bc", "iql", "cql"])
def test_non_square_images(name: str) -> None:
    shape = (6, 20, 28)  # two stacked frames, not square: DrQ-v2's own augmentation asserts h == w
    torch.manual_seed(0)
    algo = make_algorithm(name, small_config(name, "image"), ObservationSpec("image", shape), ACTION_DIM)
    batch = make_batch("image", 8, seed=0, obs_shape=shape)
    assert all(isinstance(v, float) and np.isfinite(v) for v in algo.update(batch).values())
    assert algo.act(batch["obs"]).shape == (8, ACTION_DIM)


def test_too_small_images_refused() -> None:
    with pytest.raises(ValueError, match="at least 15x15"):
        make_algorithm("drqbc", SMALL["drqbc"], ObservationSpec("image", (9, 12, 12)), ACTION_DIM)


# ---- a short fit -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_short_fit_finite(name: str, kind: str) -> None:
    algo = build(name, kind)
    updates = 50 if kind == "vector" else 20
    for i in range(updates):
        losses = algo.update(make_batch(kind, 32, seed=i))
        assert losses and all(np.isfinite(v) for v in losses.values()), losses
    assert algo.updates == updates
    actions = algo.act(make_batch(kind, 7, seed=99)["obs"])
    assert actions.shape == (7, ACTION_DIM) and actions.dtype == torch.float32
    assert bool(actions.abs().le(1.0).all())


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_default_config_shapes(name: str, kind: str) -> None:
    """The paper-size networks (DrQ+BC at 84x84, 3 stacked frames) take one update and act."""
    obs_spec = ObservationSpec("image", (9, 84, 84)) if kind == "image" else VECTOR
    torch.manual_seed(0)
    algo = make_algorithm(name, {}, obs_spec, ACTION_DIM, "cpu")
    batch = make_batch(kind, 4, seed=1, obs_shape=obs_spec.shape)
    assert all(np.isfinite(v) for v in algo.update(batch).values())
    assert algo.act(batch["obs"]).shape == (4, ACTION_DIM)
    if name == "drqbc":
        assert algo.encoder.repr_dim == 32 * 35 * 35  # DrQ-v2's size at 84x84


# ---- save / load / resume --------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_save_load_roundtrip(name: str, kind: str) -> None:
    algo = build(name, kind)
    for i in range(5):
        algo.update(make_batch(kind, 16, seed=i))
    state = roundtrip(algo.state_dict())
    assert state["algorithm"] == name and state["observation"]["kind"] == kind
    loaded = algorithm_from_state(state)
    obs = make_batch(kind, 9, seed=50)["obs"]
    assert torch.equal(algo.act(obs), loaded.act(obs))
    batch = make_batch(kind, 16, seed=51)
    assert algo.update(batch) == loaded.update(batch)
    assert_same_state(algo, loaded)


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_resume_equals_uninterrupted(name: str, kind: str) -> None:
    n, m = 5, 4  # n odd: the delayed actor update's phase must survive the resume
    whole = build(name, kind, seed=3)
    for i in range(n + m):
        whole.update(make_batch(kind, 16, seed=i))

    first = build(name, kind, seed=3)
    for i in range(n):
        first.update(make_batch(kind, 16, seed=i))
    state = roundtrip(first.state_dict())
    del first
    resumed = build(name, kind, seed=12345)  # a different seed: everything must come from the state
    resumed.load_state_dict(state)
    assert resumed.updates == n
    for i in range(n, n + m):
        resumed.update(make_batch(kind, 16, seed=i))
    assert resumed.updates == n + m
    assert_same_state(whole, resumed)


@pytest.mark.parametrize(("name", "kind"), [("td3bc", "vector"), ("drqbc", "image")])
def test_same_seed_same_parameters(name: str, kind: str) -> None:
    runs = []
    for _ in range(2):
        algo = build(name, kind, seed=7)
        for i in range(6):
            algo.update(make_batch(kind, 16, seed=i))
        runs.append(algo)
    assert_same_state(*runs)
    other = build(name, kind, seed=8)
    for i in range(6):
        other.update(make_batch(kind, 16, seed=i))
    assert not torch.equal(other.actor.policy[0].weight, runs[0].actor.policy[0].weight)


def test_foreign_checkpoints_refused() -> None:
    td3 = build("td3bc", "vector")
    bc_vector, bc_image = build("bc", "vector"), build("bc", "image")
    with pytest.raises(ValueError, match="algorithm 'td3bc', not 'bc'"):
        bc_vector.load_state_dict(td3.state_dict())
    with pytest.raises(ValueError, match="'vector' observations, not 'image'"):
        bc_image.load_state_dict(bc_vector.state_dict())
    with pytest.raises(ValueError, match="observation shape"):
        wide = make_algorithm("bc", SMALL["bc"], ObservationSpec("vector", (OBS_DIM + 1,)), ACTION_DIM)
        wide.load_state_dict(bc_vector.state_dict())
    with pytest.raises(ValueError, match="known algorithm"):
        algorithm_from_state({"algorithm": "dqn"})


def test_bcq_act_is_deterministic() -> None:
    algo = build("bcq", "vector")
    obs = make_batch("vector", 4, seed=0)["obs"]
    assert torch.equal(algo.act(obs), algo.act(obs))


def test_normaliser_in_checkpoint() -> None:
    algo = build("td3bc", "vector")
    assert torch.allclose(algo.normalizer.std, torch.full((OBS_DIM,), 2.001))
    state = roundtrip(algo.state_dict())
    assert state["observation"]["mean"] == [0.5] * OBS_DIM
    no_stats = make_algorithm("td3bc", SMALL["td3bc"], ObservationSpec("vector", (OBS_DIM,)), ACTION_DIM)
    no_stats.load_state_dict(state)  # the statistics come back with the networks
    assert torch.equal(no_stats.normalizer.mean, algo.normalizer.mean)


def test_drqbc_noise_schedule() -> None:
    algo = build("drqbc", "image")
    assert algo.stddev(0) == 1.0
    assert algo.stddev(125_000) == pytest.approx(0.55)
    assert algo.stddev(250_000) == pytest.approx(0.1) and algo.stddev(10**7) == pytest.approx(0.1)


def test_drqbc_warns_when_its_noise_schedule_outlasts_the_run() -> None:
    algo = build("drqbc", "image")  # stddev_steps 250000 (Table 8)
    (advice,) = algo.run_advice(20_000)
    assert "stddev_steps=250000" in advice and '"stddev_steps": 10000' in advice
    assert f"{algo.stddev(20_000):.2f}" in advice
    assert algo.run_advice(250_000) == [] and algo.run_advice(10**6) == []
    assert build("td3bc", "vector").run_advice(10) == []


# ---- learning sanity -------------------------------------------------------------------------------


def test_bc_regresses_the_dataset_policy() -> None:
    torch.manual_seed(0)
    w = torch.randn(OBS_DIM, ACTION_DIM) * 0.5
    algo = make_algorithm("bc", {"hidden_dims": [64, 64], "lr": 3e-3}, ObservationSpec("vector", (OBS_DIM,)), 2)
    g = torch.Generator().manual_seed(0)
    first = last = None
    for _ in range(300):
        obs = torch.randn(64, OBS_DIM, generator=g)
        loss = algo.update({"obs": obs, "action": torch.tanh(obs @ w)})["bc_loss"]
        first = first if first is not None else loss
        last = loss
    test_obs = torch.randn(256, OBS_DIM, generator=g)
    error = F.mse_loss(algo.act(test_obs), torch.tanh(test_obs @ w)).item()
    assert last < 0.1 * first and error < 0.01, (first, last, error)


def test_td3bc_learns_point_mass() -> None:
    """1-D point mass x' = x + 0.2 a, reward -|x'|: the dataset acts noisily around the optimal
    a* = clip(-5 x) (noise std 0.3); TD3+BC recovers the optimal action's sign and its BC loss falls."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    n = 4096
    x = torch.rand(n, 1, generator=g) * 2 - 1
    a = (-5 * x + 0.3 * torch.randn(n, 1, generator=g)).clamp(-1, 1)
    x_next = x + 0.2 * a
    data = {"obs": x, "action": a, "next_obs": x_next, "reward": -x_next.abs()[:, 0], "discount": torch.full((n,), 0.9)}
    obs_spec = ObservationSpec("vector", (1,), mean=x.mean(0).numpy(), std=x.std(0).numpy())
    algo = make_algorithm("td3bc", {"hidden_dims": [64, 64], "actor_lr": 1e-3, "critic_lr": 1e-3}, obs_spec, 1)
    bc_losses = []
    for _ in range(600):
        idx = torch.randint(0, n, (128,), generator=g)
        out = algo.update({k: v[idx] for k, v in data.items()})
        bc_losses.append(out["bc_loss"])
    probe = torch.tensor([[-0.6], [-0.3], [0.3], [0.6]])
    act = algo.act(probe)[:, 0]
    assert bool((act[:2] > 0.5).all() and (act[2:] < -0.5).all()), act
    assert np.mean(bc_losses[-50:]) < 0.5 * np.mean(bc_losses[1:51]), (bc_losses[1:5], bc_losses[-5:])


# ---- networks ----------------------------------------------------------------------------------------


def _grid_sample_shift(x: torch.Tensor, dy: int, dx: int, pad: int) -> torch.Tensor:
    """DrQ-v2's RandomShiftsAug for one known shift (replicate pad, grid_sample at pixel centres)."""
    n, _, h, _ = x.shape
    padded = F.pad(x, (pad,) * 4, mode="replicate")
    eps = 1.0 / (h + 2 * pad)
    arange = torch.linspace(-1.0 + eps, 1.0 - eps, h + 2 * pad)[:h]
    base = torch.stack(torch.meshgrid(arange, arange, indexing="xy"), dim=-1).unsqueeze(0).repeat(n, 1, 1, 1)
    shift = torch.tensor([dx, dy], dtype=torch.float32) * 2.0 / (h + 2 * pad)
    return F.grid_sample(padded, base + shift, padding_mode="zeros", align_corners=False)


def test_random_shift_matches_drqv2() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 16, 16), generator=g, dtype=torch.uint8)
    shifted = nets.random_shift(images, pad=4, generator=torch.Generator().manual_seed(1))
    assert shifted.dtype == torch.uint8 and shifted.shape == images.shape
    for i in range(len(images)):
        candidates = [
            (dy, dx)
            for dy in range(9)
            for dx in range(9)
            if torch.allclose(
                _grid_sample_shift(images[i : i + 1].float(), dy, dx, 4), shifted[i : i + 1].float(), atol=1e-3
            )
        ]
        assert candidates, f"sample {i} is not a DrQ-v2 shift"
    assert not torch.equal(shifted, images)


def test_soft_update_and_frozen() -> None:
    src, dst = nets.mlp(3, [4], 2), nets.mlp(3, [4], 2)
    expected = [0.9 * d.detach() + 0.1 * s.detach() for d, s in zip(dst.parameters(), src.parameters(), strict=True)]
    nets.soft_update(dst, src, 0.1)
    for e, d in zip(expected, dst.parameters(), strict=True):
        assert torch.allclose(e, d)
    x = torch.randn(5, 3, requires_grad=True)
    with nets.frozen(src):
        src(x).sum().backward()
    assert x.grad is not None and all(p.grad is None and p.requires_grad for p in src.parameters())
