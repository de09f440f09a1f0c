"""Several processes (``torchrun``): who am I, which images are mine, and one result for all.

Launched by ``torchrun --nproc_per_node N ...`` (or ``srun torchrun ...``, docs/DISTRIBUTED.md),
each process reads its rank from the environment torchrun sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``); :func:`process_group` joins them (gloo on CPU, NCCL on CUDA, the backends of
``torch.distributed``). Not launched so, everything here is a no-op for one process.

* :func:`shard_pairs` / :func:`shard_positions`: a rank's share of a dataset's ``(product,
  index)`` list: every product cut into the batches one process would make, the sequence of
  batches cut into ``N`` contiguous blocks (one per rank, sizes within one batch). Each rank's
  batches are the one-process batches, so its predictions are too, and concatenating the ranks'
  shares in rank order gives the one-process order.
* :func:`reduce_evaluator`: the evaluators of :mod:`dapo.metrics` gathered from every rank and
  merged in rank order (their ``merge``), so every rank holds the evaluator one process would
  have filled: the metrics are the one-process metrics (the exceptions are in the evaluators'
  ``merge`` docstrings: AUPRO's float weight sums on products with more distinct scores than
  the histograms' exact top).
* :func:`split_batches`, :func:`average_gradients`: data-parallel training (:mod:`dapo.engine.train`).
* :func:`my_jobs`: round-robin share of a list of jobs (:func:`dapo.experiments.sweep.sweep`).
* :func:`alone`: inside it this rank works as one process (a sweep job trains and evaluates
  alone on its rank).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")
_ALONE: ContextVar[bool] = ContextVar("dapo_distributed_alone", default=False)


@dataclass(frozen=True)
class World:
    """This process's place among the launched ones (``size == 1``: one process)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that prints and writes."""
        return self.rank == 0


SINGLE = World()


def launched() -> bool:
    """Whether torchrun (or an equivalent launcher) started several processes (``WORLD_SIZE > 1``)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def env_world() -> World:
    """The world torchrun describes in the environment (one process when not launched)."""
    if not launched():
        return SINGLE
    try:
        return World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    except KeyError as error:
        raise RuntimeError(f"WORLD_SIZE is set but {error.args[0]} is not: launch with torchrun, which sets "
                           f"RANK, WORLD_SIZE and LOCAL_RANK") from None


def current() -> World:
    """The world the collective helpers use: the process group's when one is initialised (and not
    inside :func:`alone`), else one process."""
    if _ALONE.get() or not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    rank, size = dist.get_rank(), dist.get_world_size()
    return World(rank, size, int(os.environ.get("LOCAL_RANK", rank)))


@contextlib.contextmanager
def alone() -> Iterator[World]:
    """Work as one process inside (no sharding, no reduction): for jobs spread over the ranks."""
    token = _ALONE.set(True)
    try:
        yield SINGLE
    finally:
        _ALONE.reset(token)


def backend_for(device: torch.device | str) -> str:
    """``nccl`` for CUDA devices, ``gloo`` otherwise (torch.distributed's backends for GPU and CPU)."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def rank_device(device: torch.device | str, world: World | None = None) -> torch.device:
    """The device of this rank: ``cuda`` without an index becomes ``cuda:LOCAL_RANK``."""
    device = torch.device(device)
    world = world or env_world()
    if device.type == "cuda" and device.index is None and world.size > 1:
        return torch.device("cuda", world.local_rank)
    return device


@contextlib.contextmanager
def process_group(device: torch.device | str = "cpu") -> Iterator[World]:
    """Join the launched processes for the duration (gloo on CPU, NCCL on CUDA); a no-op yielding
    one process when not launched or when a group already exists (then it is left as it is)."""
    if not launched() or dist.is_initialized():
        yield current()
        return
    device = rank_device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend_for(device))
    try:
        yield current()
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op for one process)."""
    if current().size > 1:
        dist.barrier()


def all_gather(value: T) -> list[T]:
    """``value`` of every rank, in rank order, on every rank (``[value]`` for one process)."""
    world = current()
    if world.size == 1:
        return [value]
    gathered: list[Any] = [None] * world.size
    dist.all_gather_object(gathered, value)
    return gathered


# ----------------------------------------------------------------------------- sharding


def _blocks(n: int, parts: int) -> list[range]:
    """``range(n)`` cut into ``parts`` contiguous blocks whose sizes differ by at most one (larger first)."""
    size, extra = divmod(n, parts)
    starts = [r * size + min(r, extra) for r in range(parts + 1)]
    return [range(starts[r], starts[r + 1]) for r in range(parts)]


def shard_pairs(pairs: Sequence[tuple[str, int]], batch_size: int = 1, world: World | None = None
                ) -> list[tuple[str, int]]:
    """This rank's share of ``(product, index)`` pairs (ordered as one process would visit them).

    Each product's pairs are cut into batches of ``batch_size`` (the last one of a product may
    be shorter, as a ``DataLoader`` over that product makes them); the sequence of all batches
    is cut into ``world.size`` contiguous blocks. Shares are disjoint, their union is ``pairs``,
    and concatenated in rank order they are ``pairs`` grouped by product in first-seen order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    world = world or current()
    grouped: dict[str, list[tuple[str, int]]] = {}
    for pair in pairs:
        grouped.setdefault(pair[0], []).append(pair)
    batches = [items[start:start + batch_size] for items in grouped.values()
               for start in range(0, len(items), batch_size)]
    mine = _blocks(len(batches), world.size)[world.rank]
    return [pair for batch in batches[mine.start:mine.stop] for pair in batch]


def shard_positions(n: int, batch_size: int = 1, world: World | None = None) -> list[int]:
    """:func:`shard_pairs` of one product's positions ``0..n-1``."""
    return [index for _, index in shard_pairs([("", i) for i in range(n)], batch_size, world)]


def split_batches(batches: Sequence[Sequence[int]], world: World | None = None
                  ) -> tuple[list[list[int]], list[tuple[int, int]]]:
    """Data-parallel training: each of one process's ``batches`` cut into ``world.size`` contiguous
    parts; this rank's parts (some may be empty) and, per step, (its part's size, the batch's size)."""
    world = world or current()
    local, shares = [], []
    for batch in batches:
        part = _blocks(len(batch), world.size)[world.rank]
        local.append(list(batch[part.start:part.stop]))
        shares.append((len(part), len(batch)))
    return local, shares


def my_jobs(n: int, world: World | None = None) -> range:
    """This rank's jobs among ``n`` (round robin: jobs ``rank, rank + size, ...``)."""
    world = world or current()
    return range(world.rank, n, world.size)


# ----------------------------------------------------------------------------- reduction


def reduce_evaluator(evaluator: T) -> T:
    """Every rank's evaluator merged in rank order (``evaluator.merge``), on every rank; for one
    process the evaluator itself. With :func:`shard_pairs` shares, the result is the evaluator
    one process would have filled."""
    parts = all_gather(evaluator)
    if len(parts) == 1:
        return evaluator
    merged = parts[0]
    for part in parts[1:]:
        merged.merge(part)
    return merged


def average_gradients(params: Sequence[torch.nn.Parameter], local_n: int, global_n: int) -> None:
    """Data-parallel gradient: each rank's gradient of its mean loss, weighted by its share
    ``local_n / global_n`` of the global batch, summed over the ranks (all-reduce).

    For a loss that is a mean over samples (DAPO's: :mod:`dapo.methods.dapo.losses`) this is the gradient of
    the global batch's mean loss; only the order of the float additions differs from one
    process. A rank without samples (``local_n == 0``) contributes zeros.
    """
    if current().size == 1 or not params:
        return
    used = [p.grad is not None and local_n > 0 for p in params]
    grads = [p.grad.reshape(-1) if use else torch.zeros(p.numel(), device=p.device) for p, use in zip(params, used)]
    flat = torch.cat(grads).float() * (local_n / global_n)
    flat = torch.cat([flat, torch.tensor(used, dtype=flat.dtype, device=flat.device)])  # who has a gradient
    dist.all_reduce(flat)
    offset, anywhere = 0, flat[-len(params):]
    for index, param in enumerate(params):
        count = param.numel()
        # a parameter no rank used keeps no gradient, so that Adam skips it as in one process
        param.grad = flat[offset:offset + count].view_as(param).clone() if anywhere[index] > 0 else None
        offset += count


def average_values(values: dict[str, float], local_n: int, global_n: int) -> dict[str, float]:
    """``values`` (e.g. loss terms, means over a rank's samples) as the global batch's mean."""
    if current().size == 1:
        return values
    names = sorted(values)
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"  # NCCL reduces CUDA tensors only
    tensor = torch.tensor([values[name] * local_n / global_n for name in names], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return dict(zip(names, tensor.tolist()))


def broadcast_parameters(params: Sequence[torch.nn.Parameter]) -> None:
    """Copy rank 0's parameter values to every rank (as DDP does at its start)."""
    if current().size == 1:
        return
    with torch.no_grad():
        for param in params:
            dist.broadcast(param.data, src=0)
