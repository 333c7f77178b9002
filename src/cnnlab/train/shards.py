"""Data parallelism across CPU cores inside one process: one batch shard per core.

PyTorch's own CPU parallelism splits each operation across threads, with a fork and join per
operation. The lecture nets are made of small operations (10 to 88 channels at 4x4 to 24x24),
whose kernels scale poorly that way: on 2 cores the backward kernels gain little from the second
thread. Running one whole forward and backward per core on a slice of the batch, single-threaded,
and adding the slices' gradients keeps both cores busy with no per-operation synchronisation
(``benchmarks/train_throughput.py`` measures the difference).

This is exact for models whose output for one image does not depend on the rest of the batch or
on random numbers drawn during the forward pass: the full-batch mean loss is the sum of the
shards' mean losses weighted by their share of the batch, so its gradient is the sum of the
shards' gradients. Batch norm (statistics over the batch) and dropout (a shared random stream)
break that, so :func:`shard_blocker` keeps such models on operation-level threading.
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

MIN_SHARD_IMAGES = 32  # below this a shard's kernels are too small to be worth a core of their own


def shard_blocker(model: nn.Module) -> str | None:
    """Why ``model`` cannot be trained in batch shards (a batch-norm or active dropout layer), or None."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            return f"layer {name} is batch norm, whose statistics span the whole batch"
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0:
            return f"layer {name} is dropout, which draws from one random stream shared by all shards"
    return None


def auto_shards(
    model: nn.Module, device: torch.device, batch_size: int, threads: int | None = None, bf16: bool = False
) -> int:
    """How many shards to use by default: one per CPU thread, each with at least MIN_SHARD_IMAGES images.

    1 (no sharding) on CUDA, with fewer than two threads, for a model :func:`shard_blocker` refuses,
    or under bf16 autocast: on a 2-core Xeon with AMX, oneDNN's bf16 kernels threaded across both
    cores beat one single-threaded shard per core by 3-20% on the lecture nets (5 interleaved rounds).
    """
    threads = threads or torch.get_num_threads()
    if device.type != "cpu" or bf16 or threads < 2 or shard_blocker(model) is not None:
        return 1
    return max(1, min(threads, batch_size // MIN_SHARD_IMAGES))


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
