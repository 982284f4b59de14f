"""What a training run tells while it runs and when it ends: progress of the data loading
(`StageLog`) and of the updates (`Progress`) on stderr, where the time goes (`LoopClock`: training
or evaluation), the logged scalars (`MetricsLog`: TensorBoard and metrics.csv) and the one-screen
summary of a report (`summary_text`)."""

from __future__ import annotations

import csv
import io
import math
import sys
import time
from pathlib import Path
from typing import Any

from store import atomic_write_text


class StageLog:
    """Progress of set-up work (reading, checking and caching data) as plain lines on stderr: the
    first call of a stage, then at most one line every ``every_s`` seconds, and its end."""

    def __init__(self, enabled: bool, every_s: float = 5.0) -> None:
        self.enabled, self.every_s = enabled, every_s
        self.t0 = time.monotonic()
        self.stage: str | None = None
        self.last_print = 0.0

    def __call__(self, stage: str, done: int, total: int | None = None) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        finished = total is not None and done >= total
        if stage != self.stage or finished or now - self.last_print >= self.every_s:
            count = f"{done}/{total}" if total is not None and done <= total else f"{done}"
            print(f"data: {stage}: {count} ({now - self.t0:.0f} s)", file=sys.stderr, flush=True)
            self.stage, self.last_print = stage, now


class Progress:
    """Training progress on stderr: a rich bar (updates/s, ETA, losses) on a terminal; otherwise a
    line at the first update and then every ``every_s`` seconds. Updates/s count training time
    only (evaluations excluded). Messages (evaluations) go above the bar, or as lines."""

    def __init__(self, enabled: bool, total: int, start: int, every_s: float = 10.0) -> None:
        self.enabled, self.total, self.start, self.every_s = enabled, total, start, every_s
        self.last_print = 0.0
        self.last_refresh = 0.0
        self.info = ""
        self.rich = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.rich = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:.1f} upd/s"),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=Console(stderr=True),
                transient=True,
            )
            self.task = self.rich.add_task("train", total=total, completed=start, rate=0.0, info="")
            self.rich.start()

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.rich is not None:
            self.rich.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=sys.stderr, flush=True)

    def update(self, step: int, train_seconds: float, info: str | None = None, force: bool = False) -> None:
        """Called after every update: ``train_seconds`` is this session's training time so far."""
        if not self.enabled:
            return
        if info is not None:
            self.info = info
        now = time.monotonic()
        first = step == self.start + 1
        if not (force or first or now - self.last_refresh >= 0.25):
            return
        self.last_refresh = now
        rate = (step - self.start) / max(train_seconds, 1e-9)
        if self.rich is not None:
            self.rich.update(self.task, completed=step, rate=rate, info=self.info)
        elif force or first or now - self.last_print >= self.every_s:
            eta = _duration((self.total - step) / rate) if rate > 0 else "-"
            print(
                f"update {step}/{self.total} | {_rate(rate)} upd/s | ETA {eta} | {self.info}".rstrip(" |"),
                file=sys.stderr,
                flush=True,
            )
            self.last_print = now

    def note(self, text: str) -> None:
        """A passing state (an evaluation's episode): the bar's text, or a line every ``every_s``."""
        if not self.enabled:
            return
        now = time.monotonic()
        if self.rich is not None:
            self.rich.update(self.task, info=text)
        elif now - self.last_print >= self.every_s:
            print(text, file=sys.stderr, flush=True)
            self.last_print = now

    def close(self) -> None:
        if self.rich is not None:
            self.rich.stop()


class LoopClock:
    """Where a training session's time goes: training (updates, logging, checkpoints) or evaluation.
    Three spans start together: the session, the logging window and the segment since the last
    checkpoint; evaluation time is counted apart in each."""

    def __init__(self) -> None:
        self.started = self.window_start = self.segment_start = time.monotonic()
        self.eval_session = self.window_eval = self.segment_eval = 0.0

    def training(self) -> float:
        """Seconds of training this session so far."""
        return time.monotonic() - self.started - self.eval_session

    def evaluated(self, seconds: float) -> None:
        """An evaluation took ``seconds``."""
        self.eval_session += seconds
        self.window_eval += seconds
        self.segment_eval += seconds

    def window(self) -> float:
        """Seconds of training in the logging window that ends now (the next one starts)."""
        now = time.monotonic()
        seconds = now - self.window_start - self.window_eval
        self.window_start, self.window_eval = now, 0.0
        return seconds

    def segment(self) -> tuple[float, float]:
        """Seconds of training and of evaluation since the last checkpoint (a new segment starts)."""
        now = time.monotonic()
        spans = now - self.segment_start - self.segment_eval, self.segment_eval
        self.segment_start, self.segment_eval = now, 0.0
        return spans


class MetricsLog:
    """The scalars of a run: TensorBoard event files in ``tb/`` and rows (step, tag, value) of
    ``metrics.csv``. Opened at ``step``, it drops what was logged after it (the updates a kill lost)."""

    def __init__(self, run_dir: Path, step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        _trim_csv(run_dir / "metrics.csv", step)
        self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=step if step else None)
        self.csv_file = open(run_dir / "metrics.csv", "a", newline="")
        self.csv = csv.writer(self.csv_file)
        if self.csv_file.tell() == 0:
            self.csv.writerow(["step", "tag", "value"])

    def log(self, step: int, tag: str, value: float) -> None:
        self.writer.add_scalar(tag, value, step)
        self.csv.writerow([step, tag, f"{value:.9g}"])

    def flush_csv(self) -> None:
        self.csv_file.flush()  # `tail -f metrics.csv` follows a run (one small write per log_every)

    def flush(self) -> None:
        self.csv_file.flush()
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
        self.csv_file.close()


def _trim_csv(path: Path, step: int) -> None:
    """Drop CSV rows logged after ``step``."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    kept = [r for r in rows[1:] if len(r) == 3 and r[0].isdigit() and int(r[0]) <= step]
    if len(kept) != len(rows) - 1:
        text = io.StringIO()
        csv.writer(text).writerows([["step", "tag", "value"], *kept])
        atomic_write_text(path, text.getvalue())


# ---------------------------------------------------------------------------------- text


def _duration(seconds: float) -> str:
    """A duration for people: 42 s, 7 min 05 s, 3 h 12 min."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds // 60 % 60:02d} min"


def _rate(value: float) -> str:
    """Updates per second for people: whole numbers from 10 up, one decimal below, two below 1."""
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}" if value >= 1 else f"{value:.2f}"


def _fmt(value: Any, unit: str = "", digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def eval_text(result: dict[str, Any]) -> str:
    """One evaluation in a few words: success rate, return, closest and final distance."""
    text = f"success {result['success_rate']:.2f}, return {result['return_mean']:.1f}"
    if "closest_distance_mean_m" in result:
        text += f", closest {result['closest_distance_mean_m']:.3f} m, final {result['final_distance_mean_m']:.3f} m"
    return text


def summary_text(report: dict[str, Any]) -> str:
    """A one-screen summary of a report."""
    b = report["behaviour"]
    ds = report["dataset"]
    lines = [
        f"run        {report['run_dir']}  ({report['algo']}, {report['task']}, obs {report['obs']}, "
        f"seed {report['seed']})",
        f"data       {ds['episodes']} episodes, {ds['transitions']} transitions from {len(ds['sessions'])} session(s); "
        f"outcomes {ds['outcomes']}",
        f"training   {report['updates']} updates on {report['device']}, batch {report['batch_size']}: "
        f"{_fmt(report['train_seconds'], ' s', 1)} of training"
        + (f", {_rate(report['updates_per_s'])} upd/s" if report.get("updates_per_s") else ""),
        (
            f"evaluation {report.get('evaluations', 0)} x {report['eval']['episodes']} episodes x "
            f"{report['eval']['episode_steps']} steps in {report['eval']['backend']} (home noise "
            f"{report['eval']['home_noise_rad']} rad): {_fmt(report.get('eval_seconds'), ' s', 1)}"
            if report.get("evaluations") and report["eval"]["episodes"]
            else "evaluation none (--eval-episodes 0)"
        ),
    ]
    header = f"{'':12}{'success':>9}{'return':>10}{'closest m':>11}{'final m':>9}"
    lines.append(header)
    for name, e in (("last", report["last"]), ("best", report["best"])):
        if e is None:
            continue
        lines.append(
            f"{name + ' @' + str(e['step']):12}{_fmt(e['success_rate'], '', 2):>9}{_fmt(e['return_mean'], '', 1):>10}"
            f"{_fmt(e.get('closest_distance_mean_m')):>11}{_fmt(e.get('final_distance_mean_m')):>9}"
        )
    if "closest_distance_m" in b:
        lines.append(
            f"{'behaviour':12}{_fmt(b['success_rate'], '', 2):>9}{_fmt(b['episode_return_mean'], '', 1):>10}"
            f"{_fmt(b['episode_closest_distance_mean_m']):>11}{_fmt(b['final_distance_mean_m']):>9}"
            f"   (closest over the whole dataset {b['closest_distance_m']:.3f} m)"
        )
    lines.append(f"files      {report['checkpoint']}  {report['tensorboard']}  {report['metrics_csv']}")
    return "\n".join(lines)
