"""Episode store throughput: what `store` sustains, and what the control loop waits.

For one 84x84 camera + proprioception and for three cameras, records episodes through
`SessionStore` (writer thread, chunked fsynced .partial, atomic .h5 at finish) and through a naive
reference that writes the same arrays synchronously with h5py inside the loop (resizable datasets,
one resize + write per key per step, no fsync: it is also *not* crash-safe). Prints a table:

- steps/s, MB/s: steps (payload bytes) recorded per second of wall time, from the first append
  until the last episode is on disk (store: `finish` returned; naive: file closed);
- append mean / p99 / max: microseconds the caller spends in `append` (naive: in its per-step
  writes) -- what the control loop pays;
- finish ms: mean time of `finish` (store) or of closing the file (naive) per episode;
- MB/ep: size of one episode file.

"flat out" rows append as fast as possible (the producer can outrun the writer; the queue is left
unbounded so nothing holds). "@500Hz" rows pace the loop like a fast control loop; their latency
is the relevant one for the collector. Frames are synthetic, simulator-like images (smooth
background, a moving cube), so compression ratios are realistic; `lzf` rows measure compressing
frames in the episode file.

    .venv/bin/python benchmarks/store_throughput.py [--steps 1000] [--episodes 3] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/_cli.py: both ways to run it

import numpy as np

from benchmarks._cli import run_script
from store import SessionStore


def make_frames(n: int, size: int = 84, seed: int = 0) -> np.ndarray:
    """Simulator-like RGB frames: a vertical gradient with a faint texture on the lower two thirds (the
    table), a darker arm band, a moving coloured cube. lzf compresses them ~1.8x, as it does 84x84
    robosuite frames of the cube scene (1.5-1.8x; PyBullet's flat-shaded frames: 11-18x)."""
    rng = np.random.default_rng(seed)
    texture = np.zeros((size, size, 3), np.float32)
    top = size - int(0.65 * size)
    texture[top:] = rng.integers(-2, 3, (size - top, size, 3))
    y = np.linspace(0, 1, size)[:, None]
    base = np.zeros((size, size, 3), np.float32)
    base[..., 0] = 120 + 60 * y
    base[..., 1] = 110 + 50 * y
    base[..., 2] = 100 + 30 * y
    base[size // 3 : size // 3 + 6, :, :] *= 0.5
    base += texture
    frames = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        f = base.copy()
        cx, cy = (np.array([0.5, 0.5]) + 0.3 * np.array([np.cos(i / 9), np.sin(i / 7)])) * size
        x0, y0 = int(cx) - 6, int(cy) - 6
        f[max(y0, 0) : y0 + 12, max(x0, 0) : x0 + 12] = rng.choice([[200, 30, 30], [30, 200, 30], [30, 30, 200]])
        frames[i] = f.clip(0, 255).astype(np.uint8)
    return frames


def make_steps(n_cams: int, n: int = 64) -> list[dict]:
    """A cycle of `n` collector-like steps (float64 proprio/actions, uint8 frames, sim privileged state)."""
    frames = [make_frames(n, seed=c) for c in range(n_cams)]
    rng = np.random.default_rng(1)
    steps = []
    for i in range(n):
        s = {
            "time": 0.05 * i,
            "obs/q": rng.normal(size=7),
            "obs/dq": rng.normal(size=7),
            "obs/tip_pos": rng.normal(size=3),
            "action": rng.normal(size=7),
            "command": rng.normal(size=7),
            "privileged/cube_pos": rng.normal(size=3),
            "privileged/cube_quat": rng.normal(size=4),
            "privileged/cube_top_face": np.int64(i % 6),
            "safety/intervened": bool(i % 5 == 0),
        }
        for c in range(n_cams):
            s[f"obs/images/cam{c}"] = frames[c][i]
        steps.append(s)
    return steps


def step_bytes(step: dict) -> int:
    return sum(np.asarray(v).nbytes for v in step.values())


def _pace(t_next: float, period: float) -> float:
    """Sleep until `t_next` (as a paced control loop does), return the next deadline."""
    if period:
        delay = t_next - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        return t_next + period
    return t_next


def run_store(root: Path, steps: list[dict], n_steps: int, episodes: int, rate: float, compression: str | None):
    lat = []
    finish = []
    period = 1.0 / rate if rate else 0.0
    with SessionStore.open(
        root,
        f"store_{time.monotonic_ns()}",
        free_space_floor_bytes=0,
        queue_max_steps=10**9,
        image_compression=compression,
    ) as store:
        t0 = time.perf_counter()
        size = 0
        for _ in range(episodes):
            rec = store.begin_episode({"bench": True})
            t_next = time.perf_counter()
            for i in range(n_steps):
                t_next = _pace(t_next, period)
                s = steps[i % len(steps)]
                a = time.perf_counter_ns()
                rec.append(s)
                lat.append(time.perf_counter_ns() - a)
            a = time.perf_counter()
            info = rec.finish("complete")
            finish.append(time.perf_counter() - a)
            size = info.bytes
        total = time.perf_counter() - t0
    return total, np.array(lat) / 1e3, float(np.mean(finish)), size


def run_naive(root: Path, steps: list[dict], n_steps: int, episodes: int, rate: float):
    import h5py

    lat = []
    finish = []
    period = 1.0 / rate if rate else 0.0
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    size = 0
    for e in range(episodes):
        path = root / f"naive_{time.monotonic_ns()}_{e}.h5"
        f = h5py.File(path, "w")
        dsets = {}
        for k, v in steps[0].items():
            v = np.asarray(v)
            chunk = (1, *v.shape) if v.nbytes >= 4096 else (256, *v.shape)
            dsets[k] = f.create_dataset(k, shape=(0, *v.shape), maxshape=(None, *v.shape), dtype=v.dtype, chunks=chunk)
        t_next = time.perf_counter()
        for i in range(n_steps):
            t_next = _pace(t_next, period)
            s = steps[i % len(steps)]
            a = time.perf_counter_ns()
            for k, ds in dsets.items():
                ds.resize(i + 1, axis=0)
                ds[i] = s[k]
            lat.append(time.perf_counter_ns() - a)
        a = time.perf_counter()
        f.close()
        finish.append(time.perf_counter() - a)
        size = path.stat().st_size
    total = time.perf_counter() - t0
    return total, np.array(lat) / 1e3, float(np.mean(finish)), size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1000, help="steps per episode (default 1000)")
    ap.add_argument("--episodes", type=int, default=3, help="episodes per row (default 3)")
    ap.add_argument("--dir", default=None, help="where to write (default: a temp dir under /tmp, removed after)")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="store_bench_", dir=args.dir))
    rows = []
    try:
        for n_cams in (1, 3):
            steps = make_steps(n_cams)
            nbytes = step_bytes(steps[0])
            case = f"{n_cams} cam 84x84 + proprio ({nbytes / 1e3:.1f} kB/step)"
            runs = [
                ("store", "flat out", lambda s=steps: run_store(base / "s", s, args.steps, args.episodes, 0, None)),
                (
                    "store lzf",
                    "flat out",
                    lambda s=steps: run_store(base / "s", s, args.steps, args.episodes, 0, "lzf"),
                ),
                ("naive h5py", "flat out", lambda s=steps: run_naive(base / "n", s, args.steps, args.episodes, 0)),
                ("store", "@500Hz", lambda s=steps: run_store(base / "s", s, args.steps, 1, 500, None)),
                ("naive h5py", "@500Hz", lambda s=steps: run_naive(base / "n", s, args.steps, 1, 500)),
            ]
            for name, mode, fn in runs:
                print(f"{case}: {name} {mode}...", file=sys.stderr, flush=True)
                total, lat, fin, size = fn()
                n = len(lat)
                rows.append(
                    (
                        case,
                        f"{name} {mode}",
                        n / total,
                        n * nbytes / total / 1e6,
                        lat.mean(),
                        np.percentile(lat, 99),
                        lat.max(),
                        fin * 1e3,
                        size / 1e6,
                    )
                )
                shutil.rmtree(base, ignore_errors=True)
                base.mkdir(parents=True, exist_ok=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    head = ("case", "writer", "steps/s", "MB/s", "append mean us", "p99 us", "max us", "finish ms", "MB/ep")
    widths = [max(len(head[0]), *(len(r[0]) for r in rows)), 22, 9, 7, 14, 8, 8, 9, 6]
    print(f"{args.episodes} episodes x {args.steps} steps per flat-out row, 1 episode per paced row")
    print("  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths, strict=True))))
    for r in rows:
        cells = [r[0], r[1], f"{r[2]:.0f}", f"{r[3]:.1f}", f"{r[4]:.1f}", f"{r[5]:.1f}", f"{r[6]:.0f}", f"{r[7]:.1f}"]
        cells.append(f"{r[8]:.2f}")
        print(
            "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
        )


if __name__ == "__main__":
    run_script(main)
