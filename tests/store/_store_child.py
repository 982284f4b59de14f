"""Child process for test_store_kill9.py: records episodes in a loop until it is killed.

    python _store_child.py DATA_ROOT SESSION_ID PROGRESS_FILE SEED

Every step's values encode (episode index, step): obs/q = index * 1000 + step. The child appends
JSON lines to PROGRESS_FILE (one `write` each, O_APPEND; a kill -9 does not lose the page cache):
  {"ev": "open", "next": n}             after SessionStore.open (salvage done)
  {"ev": "begin", "index": i}           after begin_episode
  {"ev": "flushed", "index": i, "steps": n}   from the writer thread, after the fsync of a chunk
  {"ev": "finished", "index": i, "steps": n}  after finish returned
So a "flushed n" line proves the .partial held n steps durably; a "finished" line proves the
episode was complete and listed.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time

import numpy as np

from store import SessionStore


def main() -> None:
    root, sid, progress, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    fd = os.open(progress, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def note(**rec) -> None:
        os.write(fd, (json.dumps(rec) + "\n").encode())

    rng = random.Random(seed)
    store = SessionStore.open(root, sid, flush_every_steps=8, flush_interval_s=0.05, free_space_floor_bytes=0)
    note(ev="open", next=store.next_index)
    print("ready", flush=True)
    image = np.zeros((16, 16, 3), np.uint8)
    while True:
        rec = store.begin_episode(
            {"seed": seed}, on_flush=lambda n, i=store.next_index: note(ev="flushed", index=i, steps=n)
        )
        note(ev="begin", index=rec.index)
        steps = rng.randint(1, 60)
        for s in range(steps):
            v = rec.index * 1000.0 + s
            image[:] = s % 256
            rec.append({"time": 0.01 * s, "obs/q": np.full(7, v), "obs/images/front": image, "command": np.zeros(7)})
            time.sleep(rng.choice([0.0, 0.001, 0.003]))
        info = rec.finish("complete")
        note(ev="finished", index=rec.index, steps=info.steps if info else 0)


if __name__ == "__main__":
    main()
