"""Stacked agents on CUDA: the same code path as on CPU (learning/stacked.py, one batched matmul
per layer, each agent's generators on the GPU); skipped on a machine without a CUDA GPU.

On CUDA the agents are compared with their single runs to float rounding (cuBLAS's batched and
single GEMMs are different kernels, as MKL's are), their batches and noise exactly (the
generators' states), and a resumed stacked run with an uninterrupted one to float rounding (the
trainer promises exact resumes on CPU only)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from learning.algorithms import algorithm_from_state
from learning.checkpoint import load_checkpoint
from learning.trainer import train

from .helpers import write_session
from .test_stacked import TINY_BY_ALGO, compare, config, stacked

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (stacked agents on CUDA)")


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    return write_session(root, "s", [30, 25, 30], tip_fn=lambda e, t: (0.45 + 0.01 * t, 0.05 * e, 0.1))


@pytest.mark.parametrize("algo", ["td3bc", "iql"])
def test_stacked_agents_on_cuda_train_as_their_single_runs(session, tmp_path, algo):
    tiny = dict(algo=algo, algo_config=TINY_BY_ALGO[algo], device="cuda")
    reports = stacked(session, tmp_path / "stack", seeds=[0, 1, 2], **tiny)
    assert all(r["device"].startswith("cuda") for r in reports)
    for report in reports:
        single = tmp_path / f"single_{report['seed']}"
        train(config(session, single, seed=report["seed"], **tiny))
        compare(single / "checkpoint.pt", Path(report["run_dir"]) / "checkpoint.pt", exact=False)


def test_stacked_cuda_run_continues_after_a_stop_and_its_agents_act_on_cpu(session, tmp_path):
    tiny = dict(algo="td3bc", algo_config=TINY_BY_ALGO["td3bc"], device="cuda")
    stacked(session, tmp_path / "straight", seeds=[3, 4], **tiny)
    stacked(session, tmp_path / "split", seeds=[3, 4], updates=20, **tiny)
    stacked(session, tmp_path / "split", seeds=[3, 4], **tiny)
    for seed in (3, 4):
        name = f"td3bc_reach-0_proprio_{seed}/checkpoint.pt"
        compare(tmp_path / "straight" / name, tmp_path / "split" / name, exact=False)
        algo = algorithm_from_state(load_checkpoint(tmp_path / "split" / name)["algorithm"], "cpu")
        action = algo.act(torch.zeros(1, 14))
        assert action.shape == (1, 7) and bool(action.abs().le(1).all())
