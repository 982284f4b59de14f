"""The explorer study: does task-agnostic exploration yield data from which tasks chosen later can be
learned offline?  Seed 003's comparison (Fig. 5 coverage, Fig. 7 downstream success) and seed 001's
(Table 1, closest reach distance), in simulation, for a list of explorers and seeds.

For every (explorer, seed) the real collector records a dataset in the cube scene (seed 003's
protocol, configs/sim_cube_tip.yaml: tool-tip displacements, 200-step episodes, cube reset
yellow-face-up); each dataset is then judged the two ways the papers do:

1. **coverage** (003 Fig. 5): occupied 2 cm cells of the cube's x-y positions, the distribution of
   the cube's top-face colour and its entropy (bits), occupied 5 cm cells of the tool-tip workspace
   (`pandalab.data.coverage`, whose figure style the PNGs use: one per explorer, its seeds together);
2. **downstream offline RL**: TD3+BC and BCQ on ``reach:0..3`` scored by the closest tool-tip
   distance from the (perturbed) home pose (001 Table 1), and BCQ on ``push``, ``flip:<colour>`` and
   ``push+flip:<colour>`` scored by success rate (003 Fig. 7); each cell is the mean and spread over
   seeds, every policy evaluated in simulation by the trainer's own evaluation.

It writes ``report.md`` (the table), ``report.json`` (every number) and the PNGs to ``--out``.

**Resumable**: every job (a collection, a training) records its result under ``<out>/jobs/`` when
done.  Killed at any point, rerunning the same command skips what is done and continues the rest:
a collection resumes its session (the store salvages it; `stop.steps` counts what is recorded), a
training resumes from its checkpoint.  Independent jobs run ``--jobs`` at a time (default: the
cores), each training on one torch thread.

**Budgets** (``--budget``; ``--transitions``, ``--updates``, ``--seeds``, ``--explorers`` override):

- ``small``: a smoke run of minutes (one seed, 600 transitions, one reach and one cube task);
- ``medium``: sized for a 2-core CPU machine, about two hours (see `BUDGETS`; what it cuts
  relative to the papers is printed with the report);
- ``full``: the papers' (003: 300K transitions x 5 datasets, images; 001: 200K), for a GPU
  machine or a cluster.

Observations: explorers see ``--observation`` (``image``: the 84x84 front camera, as 003's
agents; ``proprio+object``: joint state and cube pose, a cheaper ablation, labelled as such in
the report).  The downstream policies see ``proprio+object`` (the cube tasks need the cube).

    .venv/bin/python benchmarks/explorer_study.py --budget small --out out/study_small
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import json
import math
import os
import pathlib
import subprocess
import sys
import threading
import time
import warnings

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # benchmarks/_cli.py: both ways to run it

import numpy as np
import yaml

from benchmarks._cli import REPO, run_script

EXPLORERS = ("random", "random_linear", "gep", "rnd", "gcrnd", "sse", "diayn")
"""The study's explorers in report order (those not registered in this checkout are left out)."""
REACH_TASKS = ("reach:0", "reach:1", "reach:2", "reach:3")
FLIP_COLOUR = "red"
"""The colour of the flip tasks: a face that starts sideways (the cube resets yellow-face-up)."""
CUBE_TASKS = ("push", f"flip:{FLIP_COLOUR}", f"push+flip:{FLIP_COLOUR}")
TRAIN_OBSERVATION = "proprio+object"


@dataclasses.dataclass(frozen=True)
class Budget:
    """How big one study is."""

    transitions: int
    """Recorded steps per dataset (one dataset per explorer and seed)."""
    seeds: tuple[int, ...]
    updates: int
    """Gradient updates per offline training (TD3+BC)."""
    bcq_updates: int
    """Gradient updates per BCQ training (BCQ's update is ~7x TD3+BC's on a CPU: its 750-wide VAE)."""
    eval_episodes: int
    """Evaluation episodes per trained policy."""
    reach: tuple[tuple[str, str], ...]
    """(algorithm, task) trainings scored by the closest tool-tip distance (001 Table 1)."""
    cube: tuple[tuple[str, str], ...]
    """(algorithm, task) trainings scored by success rate (003 Fig. 7)."""
    observation: str
    """What the explorers see."""
    cut: str
    """What this budget leaves out relative to the papers (printed in the report)."""


BUDGETS = {
    "small": Budget(
        transitions=600,
        seeds=(0,),
        updates=300,
        bcq_updates=300,
        eval_episodes=2,
        reach=(("td3bc", "reach:0"),),
        cube=(("bcq", "push"),),
        observation="proprio+object",
        cut="everything: a smoke run that the pipeline works, not a result",
    ),
    "medium": Budget(
        transitions=10_000,
        seeds=(0, 1),
        updates=10_000,
        bcq_updates=3_000,
        eval_episodes=10,
        reach=tuple(("td3bc", t) for t in REACH_TASKS) + (("bcq", "reach:0"),),
        cube=tuple(("bcq", t) for t in CUBE_TASKS),
        observation="proprio+object",
        cut="10K transitions per dataset (003: 300K, 001: 200K), 2 seeds (003: 5), 10K TD3+BC and 3K BCQ updates "
        "(001/003: 1M), BCQ on reach:0 only, explorers on proprio+object instead of 003's images",
    ),
    "full": Budget(
        transitions=300_000,
        seeds=(0, 1, 2, 3, 4),
        updates=1_000_000,
        bcq_updates=1_000_000,
        eval_episodes=20,
        reach=tuple((a, t) for t in REACH_TASKS for a in ("td3bc", "bcq")),
        cube=tuple(("bcq", t) for t in CUBE_TASKS),
        observation="image",
        cut="none (the papers' budgets; for a GPU machine or a cluster)",
    ),
}


@dataclasses.dataclass(frozen=True)
class Job:
    """One unit of work with a result file: a collection or a training."""

    kind: str
    explorer: str
    seed: int
    algo: str = ""
    task: str = ""

    @property
    def dataset(self) -> str:
        return f"{self.explorer}_s{self.seed}"

    @property
    def name(self) -> str:
        if self.kind == "collect":
            return f"collect_{self.dataset}"
        return f"train_{self.dataset}_{self.algo}_{self.task.replace(':', '-').replace('+', '_')}"


class Study:
    """The jobs of one study under ``out``, their results, and the report."""

    def __init__(self, out: pathlib.Path, budget: Budget, explorers: tuple[str, ...], jobs: int) -> None:
        self.out, self.budget, self.explorers, self.parallel = out, budget, explorers, jobs
        self.data_root = out / "data"
        self.lock = threading.Lock()
        for folder in ("jobs", "configs", "logs", "runs", "data", "ipc"):
            (out / folder).mkdir(parents=True, exist_ok=True)

    # ---- jobs ---------------------------------------------------------------------------------
    def collections(self) -> list[Job]:
        return [Job("collect", e, s) for e in self.explorers for s in self.budget.seeds]

    def trainings(self) -> list[Job]:
        """Every training, the reach tasks of every dataset before the cube tasks: a study stopped
        early has the whole reach table (001 Table 1) first."""
        b = self.budget
        return [
            Job("train", e, s, a, t)
            for pairs in (b.reach, b.cube)
            for e in self.explorers
            for s in b.seeds
            for a, t in pairs
        ]

    def result(self, job: Job) -> dict | None:
        path = self.out / "jobs" / f"{job.name}.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def _record(self, job: Job, result: dict) -> None:
        from store import atomic_write_text

        atomic_write_text(self.out / "jobs" / f"{job.name}.json", json.dumps(result, indent=2))

    def session_dir(self, job: Job) -> pathlib.Path:
        return self.data_root / job.dataset

    def session_config(self, job: Job) -> pathlib.Path:
        config = yaml.safe_load((REPO / "configs" / "sim_cube_tip.yaml").read_text())
        key = f"{self.out.resolve()}/{job.dataset}".encode()
        short = hashlib.sha256(key).hexdigest()[:12]  # ipc paths have a length limit; stable across runs
        config.update(
            {
                "session_id": job.dataset,
                "data_root": str(self.data_root),
                "seed": job.seed,
                "explorer": {"name": job.explorer, "observation": self.budget.observation},
                "stop": {"steps": self.budget.transitions},
                "control_address": f"ipc:///tmp/study_{short}_control",
                "telemetry_address": f"ipc:///tmp/study_{short}_telemetry",
            }
        )
        if self.budget.observation != "image":
            config["robot"]["options"]["cameras"] = []  # nothing looks at frames: no rendering
        path = self.out / "configs" / f"{job.dataset}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def updates(self, algo: str) -> int:
        return self.budget.bcq_updates if algo == "bcq" else self.budget.updates

    def run_dir(self, job: Job) -> pathlib.Path:
        return self.out / "runs" / job.dataset / f"{job.algo}_{job.task.replace(':', '-').replace('+', '_')}"

    def command(self, job: Job) -> list[str]:
        pandalab = [sys.executable, "-m", "pandalab"]
        if job.kind == "collect":
            return [*pandalab, "collect", "--config", str(self.session_config(job))]
        return [
            *pandalab,
            "train",
            "--data",
            str(self.data_root / job.dataset),
            "--task",
            job.task,
            "--algo",
            job.algo,
            "--obs",
            TRAIN_OBSERVATION,
            "--updates",
            str(self.updates(job.algo)),
            "--out",
            str(self.run_dir(job)),
            "--eval-every",
            "0",
            "--eval-episodes",
            str(self.budget.eval_episodes),
            "--checkpoint-every",
            str(max(1000, self.updates(job.algo) // 20)),
            "--seed",
            str(job.seed),
            "--threads",
            "1",
            "--no-progress",
        ]

    def run_job(self, job: Job) -> dict:
        """Run ``job`` to its end (resuming what an earlier run left), record and return its result."""
        done = self.result(job)
        if done is not None:
            return done
        started = time.monotonic()
        self._say(f"{job.name}: started")
        log = self.out / "logs" / f"{job.name}.log"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        with open(log, "a") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(self.command(job))}\n")
            out.flush()
            code = subprocess.run(self.command(job), cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
        if code != 0:
            raise StudyError(f"{job.name} exited with status {code}: see {log}")
        result = self._collected(job) if job.kind == "collect" else self._trained(job)
        result["wall_s"] = round(time.monotonic() - started, 1)
        self._record(job, result)
        self._say(f"{job.name}: done in {result['wall_s']:.0f} s")
        return result

    def _collected(self, job: Job) -> dict:
        from pandalab.data import coverage
        from store import read_events, read_manifest

        session = self.session_dir(job)
        steps = sum(e.steps for e in read_manifest(session))
        if steps < self.budget.transitions:
            raise StudyError(f"{job.name}: {steps} steps recorded, {self.budget.transitions} asked")
        ends = [e for e in read_events(session) if e["kind"] == "episode_end"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            counts = coverage([session], self.out / f"coverage_{job.dataset}.png", console=_quiet_console())
        faces = np.array(list(counts.get("top_face_counts", {}).values()), dtype=np.float64)
        return {
            "steps": steps,
            "episodes": len(ends),
            "train_s_per_episode": float(np.mean([e.get("train_s", 0.0) for e in ends])) if ends else 0.0,
            "tip_cells": counts["tip_cells"],
            "cube_cells": counts.get("cube_cells", 0),
            "top_face_counts": counts.get("top_face_counts", {}),
            "top_face_entropy_bits": _entropy_bits(faces),
        }

    def _trained(self, job: Job) -> dict:
        report = json.loads((self.run_dir(job) / "report.json").read_text())
        last = report.get("last") or {}
        return {
            "updates": report["updates"],
            "success_rate": last.get("success_rate"),
            "closest_distance_m": last.get("closest_distance_mean_m"),
            "behaviour": report.get("behaviour"),
        }

    def _say(self, line: str) -> None:
        with self.lock:
            print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)

    # ---- running ------------------------------------------------------------------------------
    def run(self) -> None:
        """Collections first (jobs at a time), then the trainings of the datasets that are done."""
        for phase in (self.collections(), self.trainings()):
            todo = [job for job in phase if self.result(job) is None]
            self._say(f"{len(phase) - len(todo)} of {len(phase)} {phase[0].kind} jobs done before; {len(todo)} to run")
            with concurrent.futures.ThreadPoolExecutor(max_workers=self.parallel) as pool:
                failures = [f.exception() for f in [pool.submit(self.run_job, job) for job in todo] if f.exception()]
            if failures:
                raise StudyError("; ".join(str(f) for f in failures))

    # ---- the report ---------------------------------------------------------------------------
    def report(self) -> dict:
        """Every number, and the table and PNGs, from the recorded job results."""
        rows = {}
        for explorer in self.explorers:
            row: dict = {"explorer": explorer}
            collected = [self.result(Job("collect", explorer, s)) for s in self.budget.seeds]
            collected = [c for c in collected if c is not None]
            for key in ("steps", "tip_cells", "cube_cells", "top_face_entropy_bits", "train_s_per_episode"):
                row[key] = _spread([c[key] for c in collected])
            sideways = [1.0 - c["top_face_counts"].get("yellow", 0) / max(1, c["steps"]) for c in collected]
            row["not_yellow_up"] = _spread(sideways)
            sessions = [self.session_dir(Job("collect", explorer, s)) for s in self.budget.seeds]
            row["steps_beside_cube"] = _spread(
                [steps_beside_cube(s) for s in sessions if (s / "manifest.jsonl").exists()]
            )
            for algo, task in self.budget.reach:
                results = [self.result(Job("train", explorer, s, algo, task)) for s in self.budget.seeds]
                row[f"{algo} {task}"] = _spread([r["closest_distance_m"] for r in results if r])
            for task in dict.fromkeys(t for _, t in self.budget.reach):  # the data itself, once per task
                closest = []
                for seed in self.budget.seeds:
                    done = [self.result(Job("train", explorer, seed, a, t)) for a, t in self.budget.reach if t == task]
                    closest += [r["behaviour"]["closest_distance_m"] for r in done if r and r.get("behaviour")][:1]
                row[f"data {task}"] = _spread(closest)
            for algo, task in self.budget.cube:
                results = [self.result(Job("train", explorer, s, algo, task)) for s in self.budget.seeds]
                row[f"{algo} {task}"] = _spread([r["success_rate"] for r in results if r])
            rows[explorer] = row
            self._explorer_png(explorer)
        return {"budget": dataclasses.asdict(self.budget), "explorers": list(self.explorers), "rows": rows}

    def _explorer_png(self, explorer: str) -> None:
        from pandalab.data import coverage

        sessions = [self.session_dir(Job("collect", explorer, s)) for s in self.budget.seeds]
        sessions = [s for s in sessions if (s / "manifest.jsonl").exists()]
        if sessions:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                coverage(sessions, self.out / f"coverage_{explorer}.png", console=_quiet_console())

    def markdown(self, report: dict) -> str:
        b = self.budget
        reach = [f"{a} {t}" for a, t in b.reach]
        cube = [f"{a} {t}" for a, t in b.cube]
        coverage_head = (
            "| explorer | tip cells (5 cm) | cube cells (2 cm) | top-face entropy, bits | not yellow-up "
            "| steps beside the cube |"
        )
        lines = [
            f"Explorer study: {b.transitions:,} transitions x {len(b.seeds)} seeds per explorer, explorers on "
            f"`{b.observation}`{' (ablation: 003 used images)' if b.observation != 'image' else ''}; "
            f"{b.updates:,} TD3+BC and {b.bcq_updates:,} BCQ updates per policy on `{TRAIN_OBSERVATION}`, "
            f"{b.eval_episodes} evaluation episodes; "
            f"mean ± std over seeds. Cut relative to the papers: {b.cut}.",
            "",
            coverage_head,
            "|---|--:|--:|--:|--:|--:|",
        ]
        for row in report["rows"].values():
            lines.append(
                f"| {row['explorer']} | {_cell(row['tip_cells'], 0)} | {_cell(row['cube_cells'], 0)} | "
                f"{_cell(row['top_face_entropy_bits'], 2)} | {_cell(row['not_yellow_up'], 3)} | "
                f"{_cell(row.get('steps_beside_cube'), 0)} |"
            )
        lines += [
            "",
            "Steps beside the cube: recorded steps with the tool tip below the cube's top face and within "
            f"{BESIDE_CUBE_M * 100:g} cm of its sides (where a push can happen). Closest state: the dataset's own "
            "closest tool-tip position to the task's goal over every recorded step (what the behaviour reached).",
        ]
        if reach:
            lines += ["", "| explorer | " + " | ".join(f"{c}: closest (m)" for c in reach) + " |"]
            lines.append("|---|" + "--:|" * len(reach))
            for row in report["rows"].values():
                lines.append(f"| {row['explorer']} | " + " | ".join(_cell(row[c], 3) for c in reach) + " |")
            tasks = list(dict.fromkeys(t for _, t in b.reach))
            lines += ["", "| explorer (the data) | " + " | ".join(f"{t}: closest state (m)" for t in tasks) + " |"]
            lines.append("|---|" + "--:|" * len(tasks))
            for row in report["rows"].values():
                cells = " | ".join(_cell(row.get(f"data {t}"), 3) for t in tasks)
                lines.append(f"| {row['explorer']} | {cells} |")
        if cube:
            lines += ["", "| explorer | " + " | ".join(f"{c}: success" for c in cube) + " |"]
            lines.append("|---|" + "--:|" * len(cube))
            for row in report["rows"].values():
                lines.append(f"| {row['explorer']} | " + " | ".join(_cell(row[c], 2) for c in cube) + " |")
        lines += ["", "Coverage plots: " + ", ".join(f"coverage_{e}.png" for e in report["rows"])]
        return "\n".join(lines) + "\n"


BESIDE_CUBE_M = 0.01
"""How near the cube's sides the tool tip counts as beside it, m."""


def steps_beside_cube(session_dir: pathlib.Path) -> int | None:
    """Recorded steps with the tool tip below the cube's top face and within `BESIDE_CUBE_M` of
    its sides (axis-aligned: the cube's yaw is ignored), where the closed fingers can push it;
    None for a session without the cube's position."""
    from sim.scene import CUBE_EDGE
    from store import iter_episodes

    count = 0
    for episode in iter_episodes([session_dir]):
        if "privileged/cube_pos" not in episode.fields or "obs/tip_pos" not in episode.fields:
            return None
        arrays = episode.arrays()
        offset = arrays["obs/tip_pos"] - arrays["privileged/cube_pos"]
        reach = CUBE_EDGE / 2 + BESIDE_CUBE_M
        beside = (np.abs(offset[:, :2]) < reach).all(axis=1) & (offset[:, 2] < CUBE_EDGE / 2)
        count += int(beside.sum())
    return count


class StudyError(RuntimeError):
    """A job that failed: one line naming it and its log."""


def _entropy_bits(counts: np.ndarray) -> float:
    total = counts.sum()
    if total <= 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum())


def _spread(values: list) -> dict | None:
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not values:
        return None
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values)}


def _cell(value: dict | None, digits: int) -> str:
    if value is None:
        return "-"
    if value["n"] == 1:
        return f"{value['mean']:.{digits}f}"
    return f"{value['mean']:.{digits}f} ± {value['std']:.{digits}f}"


def _quiet_console():
    import io

    from rich.console import Console

    return Console(file=io.StringIO())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="small")
    parser.add_argument("--out", default=None, help="study folder (default out/study_<budget>); rerun to continue")
    parser.add_argument("--explorers", nargs="+", help=f"default: {' '.join(EXPLORERS)} (those registered)")
    parser.add_argument("--seeds", nargs="+", type=int, help="override the budget's seeds")
    parser.add_argument("--transitions", type=int, help="override the budget's transitions per dataset")
    parser.add_argument("--updates", type=int, help="override the budget's updates per training")
    parser.add_argument("--observation", choices=("image", "proprio+object", "proprio"), help="the explorers'")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="jobs at a time (default: the cores)")
    parser.add_argument("--report-only", action="store_true", help="write the report from what is done; run nothing")
    args = parser.parse_args()
    from collector.explorers import EXPLORERS as REGISTERED

    budget = BUDGETS[args.budget]
    overrides = {
        "seeds": tuple(args.seeds) if args.seeds else None,
        "transitions": args.transitions,
        "updates": args.updates,
        "bcq_updates": args.updates,
        "observation": args.observation,
    }
    budget = dataclasses.replace(budget, **{k: v for k, v in overrides.items() if v is not None})
    explorers = tuple(args.explorers or [e for e in EXPLORERS if e in REGISTERED])
    unknown = [e for e in explorers if e not in REGISTERED]
    if unknown:
        print(f"explorer_study: unknown explorer(s) {unknown}; known: {sorted(REGISTERED)}", file=sys.stderr)
        return 2
    out = pathlib.Path(args.out or f"out/study_{args.budget}")
    study = Study(out, budget, explorers, max(1, args.jobs))
    settings = out / "study.json"
    wanted = json.loads(json.dumps({"budget": dataclasses.asdict(budget), "explorers": list(explorers)}))
    if settings.exists() and json.loads(settings.read_text()) != wanted:
        print(
            f"explorer_study: {out} holds a study with other settings ({settings}); use another --out", file=sys.stderr
        )
        return 2
    settings.write_text(json.dumps(wanted, indent=2))
    started = time.monotonic()
    if not args.report_only:
        try:
            study.run()
        except StudyError as error:
            print(f"explorer_study: {error}", file=sys.stderr)
            return 1
    report = study.report()
    report["wall_s_this_run"] = round(time.monotonic() - started, 1)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    text = study.markdown(report)
    (out / "report.md").write_text(text)
    print(text)
    print(f"report: {out / 'report.md'} ({report['wall_s_this_run']:.0f} s this run)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("MUJOCO_GL", "egl")
    run_script(main)
