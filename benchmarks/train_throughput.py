"""Training throughput of the offline algorithms: updates/s with the default configs (ALGORITHMS.md),
on CPU and on CUDA when present; TD3+BC side by side with a REFERENCE loop written the way the
authors' TD3_BC.py does it (numpy replay buffer, `torch.FloatTensor(x[ind]).to(device)` per batch,
one update per call, separate Adam steps, a Python loop for the target update), same device and
network sizes. Ours keeps the dataset on the device and samples by index.

Ours and the reference run in alternating rounds so a busy machine slows both alike; the table gives
the median over rounds. DrQ+BC (84x84, 3 stacked RGB frames) gets images/s (observations trained on
per second: batch x updates/s) and the memory per 100K transitions computed from array sizes.

Stacked agents (`learning.stacked`, `pandalab train --seeds`): K agents of one algorithm trained
as one stack (K = 1, 3, 5 by default) against the same K runs trained one after another, each a
plain single run: updates/s per agent and in aggregate (agent-updates/s), in alternating rounds
with the single run; on CPU and on CUDA ("no CUDA here" when there is none).

    .venv/bin/python benchmarks/train_throughput.py [--seconds 2] [--rounds 3] [--threads N] [--device cpu]
        [--stack-sizes 1,3,5] [--stack-algos td3bc,bc] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/_cli.py: both ways to run it

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks._cli import run_script
from learning.algorithms import ObservationSpec, make_algorithm
from learning.stacked import StackedAlgorithm

OBS_DIM, ACTION_DIM = 14, 7  # 001's proprio observation (q, dq) and joint-velocity action
DATASET = 100_000
IMAGE = (9, 84, 84)


# ---- the reference: TD3+BC as in the authors' TD3_BC.py / utils.py -----------------------------------


class RefActor(nn.Module):
    def __init__(self, state_dim, action_dim, max_action):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(state_dim, 256), nn.Linear(256, 256), nn.Linear(256, action_dim)
        self.max_action = max_action

    def forward(self, state):
        a = F.relu(self.l1(state))
        a = F.relu(self.l2(a))
        return self.max_action * torch.tanh(self.l3(a))


class RefCritic(nn.Module):
    def __init__(self, state_dim, action_dim):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(state_dim + action_dim, 256), nn.Linear(256, 256), nn.Linear(256, 1)
        self.l4, self.l5, self.l6 = nn.Linear(state_dim + action_dim, 256), nn.Linear(256, 256), nn.Linear(256, 1)

    def forward(self, state, action):
        sa = torch.cat([state, action], 1)
        q1 = self.l3(F.relu(self.l2(F.relu(self.l1(sa)))))
        q2 = self.l6(F.relu(self.l5(F.relu(self.l4(sa)))))
        return q1, q2

    def Q1(self, state, action):  # the authors' name
        sa = torch.cat([state, action], 1)
        return self.l3(F.relu(self.l2(F.relu(self.l1(sa)))))


class RefReplayBuffer:
    def __init__(self, state, action, next_state, reward, not_done, device):
        self.state, self.action, self.next_state = state, action, next_state
        self.reward, self.not_done, self.size, self.device = reward, not_done, len(state), device

    def sample(self, batch_size):
        ind = np.random.randint(0, self.size, size=batch_size)  # noqa: NPY002 - as the authors' utils.py
        return (
            torch.FloatTensor(self.state[ind]).to(self.device),
            torch.FloatTensor(self.action[ind]).to(self.device),
            torch.FloatTensor(self.next_state[ind]).to(self.device),
            torch.FloatTensor(self.reward[ind]).to(self.device),
            torch.FloatTensor(self.not_done[ind]).to(self.device),
        )


class RefTD3BC:
    def __init__(self, state_dim, action_dim, device, discount=0.99, tau=0.005, alpha=2.5):
        self.actor = RefActor(state_dim, action_dim, 1.0).to(device)
        self.actor_target = copy.deepcopy(self.actor)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=3e-4)
        self.critic = RefCritic(state_dim, action_dim).to(device)
        self.critic_target = copy.deepcopy(self.critic)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=3e-4)
        self.max_action, self.discount, self.tau, self.alpha = 1.0, discount, tau, alpha
        self.policy_noise, self.noise_clip, self.policy_freq, self.total_it = 0.2, 0.5, 2, 0

    def train(self, replay_buffer, batch_size=256):
        self.total_it += 1
        state, action, next_state, reward, not_done = replay_buffer.sample(batch_size)
        with torch.no_grad():
            noise = (torch.randn_like(action) * self.policy_noise).clamp(-self.noise_clip, self.noise_clip)
            next_action = (self.actor_target(next_state) + noise).clamp(-self.max_action, self.max_action)
            target_q1, target_q2 = self.critic_target(next_state, next_action)
            target_q = reward + not_done * self.discount * torch.min(target_q1, target_q2)
        current_q1, current_q2 = self.critic(state, action)
        critic_loss = F.mse_loss(current_q1, target_q) + F.mse_loss(current_q2, target_q)
        self.critic_optimizer.zero_grad()
        critic_loss.backward()
        self.critic_optimizer.step()
        if self.total_it % self.policy_freq == 0:
            pi = self.actor(state)
            q = self.critic.Q1(state, pi)
            lmbda = self.alpha / q.abs().mean().detach()
            actor_loss = -lmbda * q.mean() + F.mse_loss(pi, action)
            self.actor_optimizer.zero_grad()
            actor_loss.backward()
            self.actor_optimizer.step()
            for param, target_param in zip(self.critic.parameters(), self.critic_target.parameters(), strict=True):
                target_param.data.copy_(self.tau * param.data + (1 - self.tau) * target_param.data)
            for param, target_param in zip(self.actor.parameters(), self.actor_target.parameters(), strict=True):
                target_param.data.copy_(self.tau * param.data + (1 - self.tau) * target_param.data)


# ---- measurement ------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCK = time.perf_counter
"""What `rate` measures with: wall time, or with ``--clock cpu`` this process's CPU time (updates per
CPU-second: on a machine that other work shares, the cost of an update whatever the others do; with
one intra-op thread it is the updates/s of an idle core)."""


def rate(step: Callable[[], None], device: torch.device, seconds: float, min_steps: int = 3) -> float:
    """Steps per second of ``step`` over about ``seconds`` (after two warm-up steps)."""
    for _ in range(2):
        step()
    sync(device)
    n, start = 0, CLOCK()
    while n < min_steps or CLOCK() - start < seconds:
        step()
        n += 1
    sync(device)
    return n / (CLOCK() - start)


def vector_data(device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    data = {
        "obs": torch.randn(DATASET, OBS_DIM, generator=g),
        "next_obs": torch.randn(DATASET, OBS_DIM, generator=g),
        "action": torch.rand(DATASET, ACTION_DIM, generator=g) * 2 - 1,
        "reward": torch.randn(DATASET, generator=g),
        "discount": torch.full((DATASET,), 0.99),
    }
    return {k: v.to(device) for k, v in data.items()}


def ours_step(name: str, data: dict[str, torch.Tensor], device: torch.device, config: dict | None = None):
    spec = ObservationSpec("vector", (OBS_DIM,), mean=np.zeros(OBS_DIM), std=np.ones(OBS_DIM))
    algo = make_algorithm(name, config or {}, spec, ACTION_DIM, device)
    batch_size = algo.config.batch_size

    def step() -> None:
        idx = torch.randint(0, DATASET, (batch_size,), device=device)
        algo.update({k: v[idx] for k, v in data.items()})

    return step, batch_size


STACK_LABELS = {"td3bc": "TD3+BC", "bc": "BC", "iql": "IQL", "bcq": "BCQ"}


def stacked_step(name: str, data: dict[str, torch.Tensor], device: torch.device, agents: int):
    """One update of ``agents`` stacked agents (seeds 0..K-1) on batches drawn by index, (K, B, ...)."""
    spec = ObservationSpec("vector", (OBS_DIM,), mean=np.zeros(OBS_DIM), std=np.ones(OBS_DIM))
    algos = []
    for seed in range(agents):
        torch.manual_seed(seed)
        algos.append(make_algorithm(name, {}, spec, ACTION_DIM, device))
    stack = StackedAlgorithm(algos)
    batch_size = algos[0].config.batch_size

    def step() -> None:
        idx = torch.randint(0, DATASET, (agents, batch_size), device=device)
        stack.update({k: v[idx] for k, v in data.items()})

    return step


def stacked_rows(name: str, device: torch.device, sizes: list[int], seconds: float, rounds: int) -> list[tuple]:
    """(K, stacked updates/s, single-run updates/s) for each stack size K, measured in alternation."""
    data = vector_data(device)
    steps = {"single": ours_step(name, data, device)[0]}
    steps.update({f"K{k}": stacked_step(name, data, device, k) for k in sizes})
    rates = median_rates(steps, device, seconds, rounds)
    return [(k, rates[f"K{k}"], rates["single"]) for k in sizes]


def reference_step(data: dict[str, torch.Tensor], device: torch.device):
    arrays = {k: v.cpu().numpy() for k, v in data.items()}
    buffer = RefReplayBuffer(
        arrays["obs"],
        arrays["action"],
        arrays["next_obs"],
        arrays["reward"].reshape(-1, 1),
        (arrays["discount"] > 0).astype(np.float32).reshape(-1, 1),
        device,
    )
    ref = RefTD3BC(OBS_DIM, ACTION_DIM, device)
    return lambda: ref.train(buffer, 256)


def median_rates(steps: dict[str, Callable[[], None]], device, seconds: float, rounds: int) -> dict[str, float]:
    results: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(rounds):  # alternate so that background load hits every entry alike
        for k, step in steps.items():
            results[k].append(rate(step, device, seconds))
    return {k: statistics.median(v) for k, v in results.items()}


MATMUL_OPS = ("aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm")


def matmul_share(step: Callable[[], None], steps: int = 50) -> float:
    """Fraction of ``step``'s CPU time spent inside matrix multiplications (torch profiler, self time).
    Work that every implementation of the same update must do: 1 / share bounds the speed-up that
    removing all other overhead could give at fp32 on this device."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(5):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    return sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS) / total


def drq_rate(device: torch.device, batch_size: int, updates: int) -> float:
    spec = ObservationSpec("image", IMAGE)
    algo = make_algorithm("drqbc", {"batch_size": batch_size}, spec, ACTION_DIM, device)
    g = torch.Generator().manual_seed(0)
    n = max(4 * batch_size, 1024)
    frames = torch.randint(0, 256, (n, *IMAGE), generator=g, dtype=torch.uint8).to(device)
    actions = (torch.rand(n, ACTION_DIM, generator=g) * 2 - 1).to(device)

    def step() -> None:
        idx = torch.randint(0, n - 1, (batch_size,), device=device)
        batch = {"obs": frames[idx], "next_obs": frames[idx + 1], "action": actions[idx]}
        batch["reward"], batch["discount"] = (
            torch.zeros(batch_size, device=device),
            torch.full((batch_size,), 0.97, device=device),
        )
        algo.update(batch)

    step()  # warm-up
    sync(device)
    start = CLOCK()
    for _ in range(updates):
        step()
    sync(device)
    return updates / (CLOCK() - start)


def print_stacked(table: dict[tuple[str, int], dict[str, tuple[float, float]]], threads: int) -> None:
    print()
    print(f"K stacked agents against K single runs one after another ({threads} intra-op threads):")
    head = "{:>8} {:>10} {:>10}".format("per agt", "aggregate", "vs single")
    print(f"{'algorithm':10} {'agents':>6} | cpu: {head} | cuda: {head}")
    for (name, k), by_device in table.items():
        cells = []
        for dev_name in ("cpu", "cuda"):
            if dev_name not in by_device:
                absent = dev_name == "cuda" and not torch.cuda.is_available()
                cells.append(f"{'no CUDA here' if absent else 'not measured':>30}")
                continue
            stacked, single = by_device[dev_name]
            cells.append(f"{stacked:8.1f} {k * stacked:10.1f} {k * stacked / single:9.2f}x")
        print(f"{STACK_LABELS[name]:10} {k:6d} | cpu: {cells[0]} | cuda: {cells[1]}")
    for name in dict.fromkeys(n for n, _ in table):
        by_device = next(v for (n, _), v in table.items() if n == name)
        singles = ", ".join(f"{dev} {v[1]:.1f}" for dev, v in by_device.items())
        print(f"  {STACK_LABELS[name]} single run (plain modules, median of its rounds): {singles} updates/s")
    print("per agt = updates/s of each agent (stacked updates/s); aggregate = agent-updates/s of the K agents;")
    print("vs single = aggregate / single run's updates/s (the aggregate of K single runs one after another)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="measuring time per entry and round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", action="append", help="cpu and/or cuda (default: cpu, and cuda if present)")
    parser.add_argument("--drq-updates", type=int, default=3, help="timed DrQ+BC updates at batch 256 on CPU")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="measure wall time (default) or this process's CPU time (steadier on a shared machine; CPU only)",
    )
    parser.add_argument("--stack-sizes", default="1,3,5", help="numbers of stacked agents K (default 1,3,5)")
    parser.add_argument(
        "--stack-algos", default="td3bc,bc", help="algorithms of the stacked comparison (td3bc, bc, iql, bcq)"
    )
    args = parser.parse_args()
    sizes = [int(k) for k in args.stack_sizes.split(",")]
    stack_algos = [a.strip() for a in args.stack_algos.split(",") if a.strip()]
    if unknown := [a for a in stack_algos if a not in STACK_LABELS]:
        parser.error(f"--stack-algos: unknown {', '.join(unknown)}; choose from {', '.join(STACK_LABELS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    global CLOCK
    if args.clock == "cpu":
        CLOCK = time.process_time
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() and args.clock == "wall" else ["cpu"])
    if args.clock == "cpu" and "cuda" in devices:
        parser.error("--clock cpu measures CPU time: use it with --device cpu")
    print(f"torch {torch.__version__}, intra-op threads: {torch.get_num_threads()}, clock: {args.clock}")
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002 - the reference buffer samples from numpy's global RNG

    rows = []
    shares: dict[str, float] = {}  # CPU time share of matrix multiplications, TD3+BC
    stack_table: dict[tuple[str, int], dict[str, tuple[float, float]]] = {
        (name, k): {} for name in stack_algos for k in sizes
    }

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    for dev_name in devices:
        device = torch.device(dev_name)
        say(f"{dev_name}: TD3+BC, ours and the reference, {args.rounds} rounds of {args.seconds:g} s each...")
        data = vector_data(device)
        td3_ours, _ = ours_step("td3bc", data, device)
        td3_ref = reference_step(data, device)
        rates = median_rates({"ours": td3_ours, "ref": td3_ref}, device, args.seconds, args.rounds)
        rows.append((dev_name, "TD3+BC", 256, rates["ours"], rates["ref"]))
        if dev_name == "cpu":
            shares = {"ours": matmul_share(td3_ours), "reference": matmul_share(td3_ref)}
        for name, label in (("bcq", "BCQ"), ("bc", "BC")):
            say(f"{dev_name}: {label}...")
            step, batch_size = ours_step(name, data, device)
            rows.append((dev_name, label, batch_size, median_rates({"x": step}, device, args.seconds, 1)["x"], None))
        drq_batches = [(256, args.drq_updates), (32, 10)] if dev_name == "cpu" else [(256, 50)]
        for batch_size, updates in drq_batches:
            say(f"{dev_name}: DrQ+BC, {updates} updates at batch {batch_size}...")
            rows.append((dev_name, "DrQ+BC 84x84x9", batch_size, drq_rate(device, batch_size, updates), None))
        for name in stack_algos:
            say(f"{dev_name}: {STACK_LABELS[name]}, stacks of {args.stack_sizes} agents and the single run...")
            for k, stacked, single in stacked_rows(name, device, sizes, args.seconds, args.rounds):
                stack_table[(name, k)][dev_name] = (stacked, single)

    print()
    print(
        f"{'device':6} {'algorithm':16} {'batch':>5} {'updates/s':>10} {'images/s':>9} {'reference':>10} {'ratio':>6}"
    )
    for dev_name, label, batch_size, ours, ref in rows:
        images = f"{ours * batch_size:9.0f}" if label.startswith("DrQ") else f"{'':9}"
        ref_s, ratio = (f"{ref:10.1f}", f"{ours / ref:5.2f}x") if ref else (f"{'':10}", "")
        print(f"{dev_name:6} {label:16} {batch_size:5d} {ours:10.1f} {images} {ref_s} {ratio:>6}")
    print("reference = the authors' TD3_BC.py loop (numpy buffer, tensors built per batch, same networks)")
    print("images/s = observations trained on per second (batch x updates/s; each also encodes its next obs)")
    if shares:
        print()
        print("CPU time of a TD3+BC update inside matrix multiplications (profiler self time, fp32):")
        for name, share in shares.items():
            print(f"  {name:9}  {100 * share:4.0f}%   (removing everything else: at most {1 / share:.2f}x faster)")

    if stack_table:
        print_stacked(stack_table, torch.get_num_threads())

    frame = 84 * 84 * 3
    per_100k = 100_000 * frame
    print()
    print("DrQ+BC memory per 100K transitions (uint8 84x84x3):")
    print(f"  single frames, stack of 3 rebuilt at sample time: {per_100k / 2**30:.2f} GiB ({frame} B per step)")
    print(f"  a stored stack of 3 per transition:               {3 * per_100k / 2**30:.2f} GiB")
    print(f"  stored stacks for obs and next_obs:               {6 * per_100k / 2**30:.2f} GiB")
    vec = 100_000 * (ACTION_DIM + 1 + 1) * 4
    print(f"  plus actions, rewards, discounts (float32):       {vec / 2**20:.1f} MiB")


if __name__ == "__main__":
    run_script(main)
