"""Offline algorithms by name: TD3+BC, BCQ, DrQ+BC, IQL, CQL and BC, all meeting the contract in base.py.

algo = make_algorithm("td3bc", {"batch_size": 128}, obs_spec, action_dim, device)
algo = algorithm_from_state(torch.load(path), device)   # rebuild a checkpoint's algorithm
"""

from __future__ import annotations

from typing import Any

import pydantic
import torch

from learning.algorithms.base import (
    Algorithm,
    AlgorithmConfig,
    ObservationSpec,
    observation_spec_from_state,
)
from learning.algorithms.bc import BC, BCConfig
from learning.algorithms.bcq import BCQ, BCQConfig
from learning.algorithms.cql import CQL, CQLConfig
from learning.algorithms.drqbc import DrQBC, DrQBCConfig
from learning.algorithms.iql import IQL, IQLConfig
from learning.algorithms.td3bc import TD3BC, TD3BCConfig

ALGORITHMS: dict[str, type[Algorithm]] = {
    "td3bc": TD3BC,
    "bcq": BCQ,
    "drqbc": DrQBC,
    "iql": IQL,
    "cql": CQL,
    "bc": BC,
}

__all__ = [
    "ALGORITHMS",
    "BC",
    "BCQ",
    "CQL",
    "IQL",
    "TD3BC",
    "Algorithm",
    "AlgorithmConfig",
    "BCConfig",
    "BCQConfig",
    "CQLConfig",
    "DrQBC",
    "DrQBCConfig",
    "IQLConfig",
    "ObservationSpec",
    "TD3BCConfig",
    "algorithm_from_state",
    "make_algorithm",
    "make_config",
]


def make_config(name: str, config: dict[str, Any] | AlgorithmConfig | None = None) -> AlgorithmConfig:
    """The validated config of algorithm ``name``; unknown names and fields raise ValueError naming them."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm '{name}'; choose from {', '.join(sorted(ALGORITHMS))}")
    cls = ALGORITHMS[name].config_class
    if isinstance(config, cls):
        return config
    try:
        return cls.model_validate(dict(config or {}))
    except pydantic.ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(config)'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"invalid config for algorithm '{name}': {problems}") from exc


def make_algorithm(
    name: str,
    config: dict[str, Any] | AlgorithmConfig | None,
    observation: ObservationSpec,
    action_dim: int,
    device: torch.device | str = "cpu",
) -> Algorithm:
    """Build algorithm ``name`` with ``config`` overrides of its defaults (ALGORITHMS.md); refuses an
    observation kind the algorithm cannot take."""
    config = make_config(name, config)  # raises first on an unknown name
    return ALGORITHMS[name](config, observation, action_dim, device)


def algorithm_from_state(state: dict[str, Any], device: torch.device | str = "cpu") -> Algorithm:
    """Rebuild the algorithm a checkpoint (``Algorithm.state_dict()``) was saved from and load it."""
    if not isinstance(state, dict) or state.get("algorithm") not in ALGORITHMS:
        found = state.get("algorithm") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"checkpoint names no known algorithm (found {found!r})")
    algo = make_algorithm(
        state["algorithm"], state["config"], observation_spec_from_state(state), state["action_dim"], device
    )
    algo.load_state_dict(state)
    return algo
