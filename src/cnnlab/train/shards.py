"""Data parallelism across CPU cores inside one process: one batch shard per core.

PyTorch's own CPU parallelism splits each operation across threads, with a fork and join per
operation. The lecture nets are made of small operations (10 to 88 channels at 4x4 to 24x24),
whose kernels scale poorly that way: on 2 cores the backward kernels gain little from the second
thread. Running one whole forward and backward per core on a slice of the batch, single-threaded,
and adding the slices' gradients keeps both cores busy with no per-operation synchronisation
(``benchmarks/train_throughput.py`` measures the difference).

This is exact for models whose output for one image depends on that image alone, with no random
numbers drawn during the forward pass: the full-batch mean loss is the sum of the shards' mean
losses weighted by their share of the batch, so its gradient is the sum of the shards' gradients.
Batch norm (statistics over the batch), dropout and drop-path (a shared random stream) and any
custom layer that couples images break that. So shards are opt-in (``cpu_shards``) and allowed
only for the models of :data:`SHARD_SAFE_MODELS` whose layers are all of :data:`PER_SAMPLE_LAYERS`:
an allow-list, since a deny-list misses every layer nobody thought of.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

import torch
from torch import nn

T = TypeVar("T")

# Registry models whose images are independent of each other in training mode at their defaults.
SHARD_SAFE_MODELS = frozenset({"lecture-simple", "lecture-inception", "lecture-residual"})
# Leaf layers that compute each image from that image alone and draw no random numbers.
PER_SAMPLE_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.Identity, nn.Flatten,
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh,
    nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
    nn.LocalResponseNorm, nn.ZeroPad2d, nn.ConstantPad2d,
)  # fmt: skip


def shard_blocker(model: nn.Module, model_name: str | None = None) -> str | None:
    """Why ``model`` cannot be trained in batch shards, or None when it can.

    ``model_name`` (the registry name) must be in :data:`SHARD_SAFE_MODELS`; every leaf layer must
    be one of :data:`PER_SAMPLE_LAYERS` (dropout only with p=0), so an option that adds batch norm
    or dropout to an allowed model is caught too.
    """
    if model_name is not None and model_name not in SHARD_SAFE_MODELS:
        return (
            f"{model_name} is not among the models known to compute each image independently "
            f"({', '.join(sorted(SHARD_SAFE_MODELS))})"
        )
    for name, module in model.named_modules():
        if next(module.children(), None) is not None:
            continue  # containers: their leaves decide
        if isinstance(module, nn.Dropout) and module.p == 0:
            continue
        if not isinstance(module, PER_SAMPLE_LAYERS):
            return (
                f"layer {name} ({type(module).__name__}) is not known to compute each image independently "
                "(batch norm couples the batch; dropout and drop-path draw from one shared random stream)"
            )
    return None


class CoreShards:
    """A fixed set of worker threads, each running PyTorch with its own, smaller thread count.

    :meth:`map` runs one call per worker and returns the results in order. Use :func:`core_shards`
    to get the process-wide pool for a given size instead of building one per run.
    """

    def __init__(self, workers: int, threads_per_worker: int = 1) -> None:
        if workers < 1 or threads_per_worker < 1:
            raise ValueError(
                f"need at least one worker and one thread each, got {workers}, {threads_per_worker}"
            )
        self.workers = workers
        self.threads_per_worker = threads_per_worker
        self._queues: list[queue.SimpleQueue] = [queue.SimpleQueue() for _ in range(workers)]
        restore = torch.get_num_threads()
        # A new thread takes PyTorch's process-wide thread count the first time it runs a parallel
        # kernel (and OpenMP's team size is per thread), so the workers settle theirs while the
        # process-wide count is theirs, and only then is the caller's count put back.
        torch.set_num_threads(threads_per_worker)
        ready = threading.Barrier(workers + 1)
        try:
            for index, jobs in enumerate(self._queues):
                threading.Thread(
                    target=self._serve, args=(jobs, ready), name=f"cnnlab-shard-{index}", daemon=True
                ).start()
            ready.wait()
        finally:
            torch.set_num_threads(restore)

    def _serve(self, jobs: queue.SimpleQueue, ready: threading.Barrier) -> None:
        torch.set_num_threads(self.threads_per_worker)
        torch.ones(1 << 17).add_(1)  # a parallel kernel: fixes this thread's count now
        ready.wait()
        while True:
            fn, args, future = jobs.get()
            try:
                future.set_result(fn(*args))
            except BaseException as err:  # noqa: BLE001 - handed to the caller, who re-raises it
                future.set_exception(err)

    @contextlib.contextmanager
    def coordinating(self) -> Iterator[None]:
        """Run the caller's own operations (batch preparation, optimiser step) with the workers' thread count.

        Those operations are small; with more threads, OpenMP keeps the caller's helper threads
        spinning after each one, on the cores the workers need (measured: 30% slower steps).
        """
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads_per_worker)
        try:
            yield
        finally:
            torch.set_num_threads(previous)

    def submit(self, fn: Callable[..., T], arguments: Sequence[tuple[Any, ...]]) -> list[Future]:
        """Start ``fn(*args)`` for each ``args``, the i-th on worker i; returns their futures at once."""
        if len(arguments) > self.workers:
            raise ValueError(f"{len(arguments)} calls for {self.workers} workers")
        futures: list[Future] = []
        for jobs, args in zip(self._queues, arguments):
            future: Future = Future()
            jobs.put((fn, args, future))
            futures.append(future)
        return futures

    def map(self, fn: Callable[..., T], arguments: Sequence[tuple[Any, ...]]) -> list[T]:
        """``[fn(*args) for args in arguments]``, the i-th call on worker i (at most ``workers`` calls)."""
        return [future.result() for future in self.submit(fn, arguments)]


@functools.cache
def core_shards(workers: int, threads_per_worker: int = 1) -> CoreShards:
    """The process-wide :class:`CoreShards` of this size (its threads live as long as the process)."""
    return CoreShards(workers, threads_per_worker)
