"""K independent agents of one algorithm trained in one process with stacked parameters
(`pandalab train --seeds 0,1,2,3,4`, `--tasks reach:0,reach:1`; the loop is
`learning.stacked_trainer`).

The K agents' networks are ONE set of networks whose tensors carry a leading agent axis: each
nn.Linear of the K copies becomes a `StackedLinear` (weight (K, out, in), bias (K, out)) that
multiplies inputs (K, B, in) with one batched matmul (``torch.baddbmm``); the other parameters and
buffers (observation statistics, a log std) become (K, 1, ...) and broadcast over the batch.
The algorithm's own ``update`` then runs unchanged on batches of shape (K, B, ...): an algorithm
that declares itself `stackable` writes every loss as a mean over the batch axis that keeps the
agent axis, sums the K losses before ``backward`` (so agent k's parameters get agent k's gradient
and nothing else: no matmul mixes agents) and draws its noise with `nets.randn`, which takes the
list of the agents' generators.  Adam works element by element, so one Adam over stacked tensors
is K independent Adams.

Every agent stays a complete single-run `Algorithm` (`StackedAlgorithm.agents`): built as its own
run builds it (same seed: same initial weights, same generator), drawing its noise from its own
generator, and brought up to date by `StackedAlgorithm.to_agents` for checkpoints (an agent's
checkpoint IS a single run's: `pandalab eval` and a single `pandalab train` read it) and for
evaluation; `from_agents` loads them back into the stack after a resume.

Equality with the single runs, on CPU: the batch indices and every noise draw are bit for bit
the single run's (each agent samples with its own generators, seeded as its run seeds them), and
so are the reductions and element-wise maths; the stacked agent's parameters, optimiser state and
losses agree with its single run to float rounding, not bit for bit, for two reasons measured on
this CPU (torch 2.13, MKL): a batched matmul is another kernel than the single run's matmul (MKL
computes a 1-wide Q head as a matrix-vector product, and the weight gradient of a 7-wide layer in
the transposed order), and torch's fused Adam rounds its SIMD body and its scalar tail
differently, while an agent's 7 output biases are all tail in its own run and mostly body in a
stack.  The differences start at the last bit (1e-9) and training amplifies them as it does any
change of summation order: on random data, relative parameter differences of 1e-6 after 100
TD3+BC updates and tens of percent after 1000, the same as after flipping the last bit of one
weight of a single run; so over a long run a stacked agent is another sample of its seed
(tests/learning/test_stacked.py bounds the differences over 40 updates).  Agents never mix: agent
k of a stack is bit for bit the same whatever the other agents of a stack of that size are.

Choice of kernel, measured for TD3+BC (256-256 MLPs, batch 256, one CPU thread, 5 agents): one
``torch.baddbmm`` per layer 33 stacked updates/s; ``torch.func.vmap`` over ``functional_call`` of
`torch.func.stack_module_state` 30; a loop of ``F.linear`` per agent 29 (and then bit for bit
except Adam's tail); 1 agent with bmm 158 against 166 for the plain single run, which is why a
single run keeps its plain modules.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from learning.algorithms.base import Algorithm

MAX_AGENTS = 16
"""The most agents one process stacks (more gain nothing on a CPU, where the update is bound by
its matrix products; a typo should not start a hundred agents)."""

# modules whose forward works on any leading axes and who own no tensor (nn.Linear is replaced)
_PLAIN = (nn.Sequential, nn.ReLU, nn.Tanh, nn.Identity, nn.ModuleList, nn.ModuleDict)


class StackError(ValueError):
    """Agents that cannot train stacked (the message says why)."""


class StackedLinear(nn.Module):
    """K ``nn.Linear`` layers of one shape as one module: weight (K, out, in), bias (K, out);
    input (K, ..., in) -> (K, ..., out), agent k's slice through agent k's weights only."""

    def __init__(self, layers: Sequence[nn.Linear]) -> None:
        super().__init__()
        grad = layers[0].weight.requires_grad
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in layers]), requires_grad=grad)
        has_bias = layers[0].bias is not None
        bias = torch.stack([layer.bias.detach() for layer in layers]) if has_bias else None
        self.bias = nn.Parameter(bias, requires_grad=grad) if has_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        agents, out_dim = self.weight.shape[0], self.weight.shape[1]
        if x.shape[0] != agents:
            raise StackError(f"stacked layer of {agents} agents got an input of shape {tuple(x.shape)}")
        flat = x.reshape(agents, -1, x.shape[-1])
        if self.bias is None:
            y = torch.bmm(flat, self.weight.transpose(1, 2))
        else:
            y = torch.baddbmm(self.bias.unsqueeze(1), flat, self.weight.transpose(1, 2))
        return y.reshape(*x.shape[:-1], out_dim)


def stack_modules(modules: Sequence[nn.Module]) -> nn.Module:
    """One module of the same structure as ``modules`` (K copies of one architecture) whose forward
    takes and returns tensors with a leading axis of K agents; refuses parts it cannot stack."""
    first = modules[0]
    shapes = {k: v.shape for k, v in first.state_dict().items()}
    for m in modules[1:]:
        if {k: v.shape for k, v in m.state_dict().items()} != shapes:
            raise StackError(f"cannot stack {type(first).__name__} modules of different shapes")
    if isinstance(first, nn.Linear):
        return StackedLinear(modules)
    stacked = copy.deepcopy(first)
    for name, sub in list(stacked.named_modules()):
        parts = [m.get_submodule(name) for m in modules]
        if isinstance(sub, nn.Linear):
            parent, _, leaf = name.rpartition(".")
            setattr(stacked.get_submodule(parent), leaf, StackedLinear(parts))
            continue
        own = dict(sub.named_parameters(recurse=False)) | dict(sub.named_buffers(recurse=False))
        if type(sub).__module__.startswith("torch.nn") and not isinstance(sub, _PLAIN):
            raise StackError(f"cannot stack a {type(sub).__name__} ({name or type(first).__name__})")
        for key, tensor in own.items():
            if tensor.dim() == 0:
                raise StackError(f"cannot stack the scalar {key} of {type(sub).__name__}")
            values = torch.stack([part[key].detach() for part in _own_tensors(parts)]).unsqueeze(1)
            if isinstance(tensor, nn.Parameter):
                setattr(sub, key, nn.Parameter(values, requires_grad=tensor.requires_grad))
            else:
                sub._buffers[key] = values  # keeps the buffer's persistence
    return stacked


def _own_tensors(parts: Sequence[nn.Module]) -> list[dict[str, torch.Tensor]]:
    return [dict(p.named_parameters(recurse=False)) | dict(p.named_buffers(recurse=False)) for p in parts]


@torch.no_grad()
def copy_to_agents(stacked: nn.Module, modules: Sequence[nn.Module]) -> None:
    """Agent k's parameters and buffers := slice k of the stacked module's."""
    for k, module in enumerate(modules):
        mine = module.state_dict(keep_vars=True)
        for key, tensor in stacked.state_dict(keep_vars=True).items():
            mine[key].copy_(tensor[k].reshape(mine[key].shape))


@torch.no_grad()
def copy_from_agents(stacked: nn.Module, modules: Sequence[nn.Module]) -> None:
    """Slice k of the stacked module's parameters and buffers := agent k's."""
    for k, module in enumerate(modules):
        mine = module.state_dict(keep_vars=True)
        for key, tensor in stacked.state_dict(keep_vars=True).items():
            tensor[k].copy_(mine[key].reshape(tensor[k].shape))


class StackedAlgorithm:
    """K agents (single-run `Algorithm` objects of one class and config, built as their runs build
    them) trained as one: `update` takes a batch of shape (K, B, ...) and returns each agent's losses.

    The stacked instance is a shallow copy of agent 0 whose attributes are replaced: networks by
    `stack_modules`, optimisers by the same optimiser over the stacked parameters, an LR schedule
    by the same schedule on it, the generator by the list of the agents' generators, and a tensor
    attribute (running metrics) by the agents' values stacked on a LAST axis.  Other attributes
    (config, sizes, the ``updates`` counter) are the same for every agent."""

    def __init__(self, agents: Sequence[Algorithm]) -> None:
        if not agents:
            raise StackError("no agents to stack")
        if len(agents) > MAX_AGENTS:
            raise StackError(f"{len(agents)} agents: at most {MAX_AGENTS} train stacked in one process")
        first = agents[0]
        kind = first.observation.kind
        if kind not in getattr(type(first), "stackable", ()):
            raise StackError(f"algorithm '{first.name}' cannot train stacked agents on {kind} observations")
        for agent in agents[1:]:
            if type(agent) is not type(first) or agent.config != first.config or agent.updates != first.updates:
                raise StackError("stacked agents must share algorithm, config and update count")
        self.agents = list(agents)
        self.stacked: Algorithm = copy.copy(first)
        attrs = vars(first)
        self._modules = [a for a, v in attrs.items() if isinstance(v, nn.Module)]
        self._tensors = [a for a, v in attrs.items() if isinstance(v, torch.Tensor)]
        self._optimizers = [a for a, v in attrs.items() if isinstance(v, torch.optim.Optimizer)]
        self._schedules = [a for a, v in attrs.items() if isinstance(v, torch.optim.lr_scheduler.LRScheduler)]
        for attr in self._modules:
            setattr(self.stacked, attr, stack_modules([vars(a)[attr] for a in agents]))
        for attr, value in attrs.items():
            if isinstance(value, torch.Generator):
                setattr(self.stacked, attr, [vars(a)[attr] for a in agents])
        where = {id(p): (attr, key) for attr in self._modules for key, p in attrs[attr].named_parameters()}
        for attr in self._optimizers:
            opt = attrs[attr]
            groups = [
                {
                    **{k: v for k, v in g.items() if k != "params"},
                    "params": [self._param(*where[id(p)]) for p in g["params"]],
                }
                for g in opt.param_groups
            ]
            setattr(self.stacked, attr, type(opt)(groups, **opt.defaults))
        for attr in self._schedules:
            schedule = attrs[attr]
            if not isinstance(schedule, torch.optim.lr_scheduler.LambdaLR):
                raise StackError(f"cannot stack the LR schedule {type(schedule).__name__}")
            opt_attr = next(a for a in self._optimizers if attrs[a] is schedule.optimizer)
            setattr(
                self.stacked, attr, torch.optim.lr_scheduler.LambdaLR(vars(self.stacked)[opt_attr], schedule.lr_lambdas)
            )
        self.from_agents()

    def __len__(self) -> int:
        return len(self.agents)

    def _param(self, attr: str, key: str) -> nn.Parameter:
        return vars(self.stacked)[attr].get_parameter(key)

    def update(self, batch: dict[str, torch.Tensor]) -> list[dict[str, float]]:
        """One update of every agent on its slice of ``batch`` (K, B, ...); agent k's losses."""
        losses = self.stacked.update(batch)
        return [{k: v[i] if isinstance(v, list) else v for k, v in losses.items()} for i in range(len(self.agents))]

    # -- moving state between the stack and the agents

    @torch.no_grad()
    def to_agents(self) -> None:
        """Bring every agent up to date with the stack (networks, optimiser and schedule states,
        running metrics, update count): each is then what its own run would hold."""
        stacked = vars(self.stacked)
        for attr in self._modules:
            copy_to_agents(stacked[attr], [vars(a)[attr] for a in self.agents])
        for k, agent in enumerate(self.agents):
            for attr in self._tensors:
                setattr(agent, attr, stacked[attr][..., k].clone())
            for attr in self._optimizers:
                _optimizer_to_agent(stacked[attr], vars(agent)[attr], k)
            for attr in self._schedules:
                vars(agent)[attr].load_state_dict(stacked[attr].state_dict())
            agent.updates = self.stacked.updates

    @torch.no_grad()
    def from_agents(self) -> None:
        """Load the agents' states into the stack (after they were restored from checkpoints)."""
        if len({a.updates for a in self.agents}) != 1:
            raise StackError(f"agents at different update counts: {[a.updates for a in self.agents]}")
        stacked = vars(self.stacked)
        for attr in self._modules:
            copy_from_agents(stacked[attr], [vars(a)[attr] for a in self.agents])
        for attr in self._tensors:
            setattr(self.stacked, attr, torch.stack([vars(a)[attr] for a in self.agents], dim=-1))
        for attr in self._optimizers:
            _optimizer_from_agents(stacked[attr], [vars(a)[attr] for a in self.agents])
        for attr in self._schedules:
            stacked[attr].load_state_dict(vars(self.agents[0])[attr].state_dict())
        self.stacked.updates = self.agents[0].updates


def _optimizer_to_agent(stacked: torch.optim.Optimizer, agent: torch.optim.Optimizer, k: int) -> None:
    """Agent k's optimiser state := slice k of the stacked one's (the step count is shared)."""
    for sg, ag in zip(stacked.param_groups, agent.param_groups, strict=True):
        ag.update({key: value for key, value in sg.items() if key != "params"})  # the lr of a schedule
        for sp, ap in zip(sg["params"], ag["params"], strict=True):
            state = stacked.state.get(sp)
            if not state:
                agent.state.pop(ap, None)
                continue
            agent.state[ap] = {
                key: _slice(v, k, ap.shape) if isinstance(v, torch.Tensor) and v.shape == sp.shape else _copy(v)
                for key, v in state.items()
            }


def _optimizer_from_agents(stacked: torch.optim.Optimizer, agents: Sequence[torch.optim.Optimizer]) -> None:
    """The stacked optimiser's state := the agents' states stacked (their step counts are equal)."""
    for g, sg in enumerate(stacked.param_groups):
        groups = [opt.param_groups[g] for opt in agents]
        sg.update({key: value for key, value in groups[0].items() if key != "params"})
        for i, sp in enumerate(sg["params"]):
            shape = groups[0]["params"][i].shape
            states = [opt.state.get(group["params"][i]) for opt, group in zip(agents, groups, strict=True)]
            if not states[0]:
                stacked.state.pop(sp, None)
                continue
            stacked.state[sp] = {
                key: torch.stack([s[key] for s in states]).reshape(sp.shape)
                if isinstance(v, torch.Tensor) and v.shape == shape
                else _copy(v)
                for key, v in states[0].items()
            }


def _slice(value: torch.Tensor, k: int, shape: torch.Size) -> torch.Tensor:
    return value[k].reshape(shape).clone()


def _copy(value: Any) -> Any:
    return value.clone() if isinstance(value, torch.Tensor) else value
