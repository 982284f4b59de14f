"""Several runs trained as one stack in one process: `pandalab train ... --seeds 0,1,2,3,4`, and
with ``--tasks reach:0,reach:1`` several relabelled tasks over the same data (every task with every
seed: one agent each).

Every agent is a complete run (a `learning.trainer.Trainer`) in its own directory, named as its
single run names it: ``runs/<algo>_<task>_<obs>_<seed>``, or ``DIR/<algo>_<task>_<obs>_<seed>``
with ``--out DIR``; each holds config.json (its own seed and task), checkpoint.pt, metrics.csv,
tb/ and report.json exactly as a single run's.  The agents of one task share one read of the data
and sample through views of it, each with its own generator seeded with its seed; the K
algorithms train as one `learning.stacked.StackedAlgorithm` (stacked parameters, one batched
matmul per layer), each agent's slice equal to its single run to float rounding (see there).

Checkpoints: every ``checkpoint_every`` updates all agents' checkpoints are written together
(`learning.checkpoint.write_checkpoints_together`), so a kill leaves every agent at the same update.
Re-running the same command (or ``--resume``) continues them all; on CPU (same thread count) a
run killed and resumed ends with exactly the parameters of an uninterrupted stacked run.  An
agent's checkpoint is a single run's: `pandalab eval` scores it, and `pandalab train --seed S`
with the same settings and directory continues it alone.  Evaluations run agent by agent.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from learning.checkpoint import (
    ctrl_c_held,
    find_resume_checkpoint,
    rng_state,
    settle_pending_checkpoints,
    write_checkpoints_together,
)
from learning.progress import LoopClock, MetricsLog, Progress, eval_text
from learning.stacked import MAX_AGENTS, StackedAlgorithm, StackError
from learning.train_config import TrainConfig, TrainError, check_algorithm, resolve_device
from learning.trainer import EVAL_METRICS, Trainer, load_dataset
from store import atomic_write_text

AGENT_FIELDS = ("seed", "task", "out")
"""The fields in which the agents of a stack differ; every other field is the same for all."""


def agent_configs(
    config: TrainConfig, seeds: list[int] | None = None, tasks: list[str] | None = None
) -> list[TrainConfig]:
    """The configs of a stack's agents: every task of ``tasks`` (default: the config's) with every
    seed of ``seeds`` (default: the config's), each in the directory its single run would use,
    under ``config.out`` when it is set."""
    seeds = seeds or [config.seed]
    tasks = tasks or [config.task]
    if len(set(seeds)) != len(seeds) or len(set(tasks)) != len(tasks):
        raise TrainError(f"each seed and each task once: seeds {seeds}, tasks {tasks}")
    if len(seeds) * len(tasks) > MAX_AGENTS:
        raise TrainError(
            f"{len(seeds)} seeds x {len(tasks)} tasks = {len(seeds) * len(tasks)} agents; "
            f"at most {MAX_AGENTS} train stacked in one process"
        )
    fields = config.model_dump()
    configs = []
    for task in tasks:
        for seed in seeds:
            single = TrainConfig.model_validate({**fields, "seed": seed, "task": task, "out": None})
            if config.out:
                single.out = str(Path(config.out) / single.run_dir().name)
            configs.append(single)
    return configs


class StackedTrainer:
    """The runs of ``configs`` (`agent_configs`) trained as one stack; `run` returns their reports."""

    def __init__(self, configs: list[TrainConfig], resume: bool | str | Path | None = None) -> None:
        from learning.algorithms import ALGORITHMS

        first = configs[0]
        shared = {k: v for k, v in first.model_dump().items() if k not in AGENT_FIELDS}
        for c in configs[1:]:
            if {k: v for k, v in c.model_dump().items() if k not in AGENT_FIELDS} != shared:
                raise TrainError("the agents of a stack differ only in seed, task and directory")
        if len({c.run_dir().resolve() for c in configs}) != len(configs):
            raise TrainError("two agents of the stack would share a run directory")
        check_algorithm(first.algo)
        kind = "image" if first.obs == "image" else "vector"
        if kind not in ALGORITHMS[first.algo].stackable:
            can = sorted(name for name, cls in ALGORITHMS.items() if kind in cls.stackable)
            raise TrainError(
                f"--seeds/--tasks: algorithm '{first.algo}' cannot train stacked agents on {first.obs} observations"
                f" (stackable on {kind} observations: {', '.join(can) or 'none'}); train its seeds one by one"
            )
        if resume not in (None, False, True):
            raise TrainError(
                "--resume PATH names one checkpoint; a stacked run resumes each agent from its own directory"
            )
        settle_pending_checkpoints([c.run_dir() / "checkpoint.pt" for c in configs])
        starts = [find_resume_checkpoint(c, resume) for c in configs]  # refused if mismatched, before any data
        steps = [0 if ckpt is None else int(ckpt["step"]) for ckpt in starts]
        if len(set(steps)) != 1:
            where = ", ".join(f"{c.run_dir()} at {step}" for c, step in zip(configs, steps, strict=True))
            raise TrainError(
                f"the agents' checkpoints are at different updates ({where}); stack the same seeds and tasks "
                "again, or continue them one by one"
            )
        self.configs = configs
        self.device = resolve_device(first.device)
        datasets: dict[str, Any] = {}
        self.agents: list[Trainer] = []
        self._rng: list[dict[str, Any]] = []
        for c in configs:
            if c.task not in datasets:
                datasets[c.task] = load_dataset(c, self.device)
            self.agents.append(Trainer(c, resume, dataset=datasets[c.task]))
            self._rng.append(rng_state())  # what its own run's global RNGs hold: nothing draws from them later
        self._eval_seconds = [0.0] * len(self.agents)  # since the last checkpoint
        self.step = 0
        self.saved_step: int | None = None
        self.stack: StackedAlgorithm | None = None

    def run(self) -> list[dict[str, Any]]:
        agents, first = self.agents, self.configs[0]
        for i, agent in enumerate(agents):
            agent._start()
            if agent.start_ckpt is not None:
                self._rng[i] = agent.start_ckpt["rng"]
        self.step = self.saved_step = agents[0].step
        if agents[0].start_ckpt is None:
            self.saved_step = None
        try:
            self.stack = StackedAlgorithm([a.algo for a in agents])
        except StackError as error:
            raise TrainError(f"--seeds/--tasks: {error}") from None
        metrics = [MetricsLog(a.run_dir, a.step) for a in agents]
        progress = Progress(first.progress, first.updates, self.step)
        if self.step < first.updates:
            progress.message(
                f"training {len(agents)} stacked {first.algo} agents on {self.device}, updates {self.step + 1}.."
                f"{first.updates}, batch {agents[0].batch_size} each -> {', '.join(str(a.run_dir) for a in agents)}"
            )
        sums: list[dict[str, float]] = [{} for _ in agents]
        count = 0
        clock = LoopClock()
        start_step = self.step
        try:
            while self.step < first.updates:
                losses = self.stack.update(self._batch())
                self.step += 1
                count += 1
                for agent, mine, agent_losses in zip(agents, sums, losses, strict=True):
                    agent.step = self.step
                    for k, v in agent_losses.items():
                        mine[k] = mine.get(k, 0.0) + float(v)
                last = self.step == first.updates
                info = None
                if self.step % first.log_every == 0 or last:
                    seconds = clock.window()
                    texts = [a._log_window(m, seconds, s, count) for a, m, s in zip(agents, metrics, sums, strict=True)]
                    info = f"{len(agents)} agents | {texts[0]}"
                    sums, count = [{} for _ in agents], 0
                progress.update(self.step, clock.training(), info, force=last)
                if first.eval_episodes > 0 and ((first.eval_every and self.step % first.eval_every == 0) or last):
                    self._evaluate(metrics, clock, progress)
                if self.step % first.checkpoint_every == 0 or last:
                    train_seconds, _ = clock.segment()
                    for i, (agent, m) in enumerate(zip(agents, metrics, strict=True)):
                        agent.train_seconds += train_seconds
                        agent.eval_seconds += self._eval_seconds[i]
                        self._eval_seconds[i] = 0.0
                        m.flush()
                    self.save_checkpoints()
        finally:
            progress.close()
            for m in metrics:
                m.close()
            for agent in agents:
                if agent._env is not None:
                    agent._env.close()
                    agent._env = None
        seconds = clock.training()
        reports = []
        for agent in agents:
            report = agent.report(updates_this_session=self.step - start_step, seconds_this_session=seconds)
            report["stacked"] = {
                "agents": len(agents),
                "run_dirs": [str(a.run_dir) for a in agents],
                "aggregate_updates_per_s": None
                if report["updates_per_s"] is None
                else report["updates_per_s"] * len(agents),
            }
            atomic_write_text(agent.run_dir / "report.json", json.dumps(report, indent=2))
            reports.append(report)
        return reports

    def _batch(self) -> dict[str, torch.Tensor]:
        """Each agent's batch, drawn with its own sampler, stacked: (K, B, ...)."""
        parts = [a.dataset.sample(a.batch_size) for a in self.agents]
        return {k: torch.stack([p[k] for p in parts]) for k in parts[0]}

    def _evaluate(self, metrics: list[MetricsLog], clock: LoopClock, progress: Progress) -> None:
        self.stack.to_agents()
        for i, (agent, m) in enumerate(zip(self.agents, metrics, strict=True)):
            name = f"{agent.config.task} seed {agent.config.seed}"

            def on_episode(done: int, n: int, episode: dict[str, Any], name: str = name) -> None:
                progress.note(f"evaluating {name} at update {self.step}: episode {done}/{n}")

            started = time.monotonic()
            result = agent.evaluate(on_episode)
            spent = time.monotonic() - started
            clock.evaluated(spent)
            self._eval_seconds[i] += spent
            for k in EVAL_METRICS:
                if k in result:
                    m.log(self.step, f"eval/{k}", result[k])
            progress.message(f"evaluation of {name} at update {self.step}: {eval_text(result)} ({spent:.1f} s)")

    def save_checkpoints(self) -> None:
        """Every agent's checkpoint, written together."""
        self.stack.to_agents()
        pairs = zip(self.agents, self._rng, strict=True)
        checkpoints = [(a.run_dir / "checkpoint.pt", a.checkpoint(rng)) for a, rng in pairs]
        with ctrl_c_held():
            write_checkpoints_together(checkpoints)
            for agent in self.agents:
                agent.saved_step = self.step
            self.saved_step = self.step
