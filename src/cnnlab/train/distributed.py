"""Data-parallel training across processes: torch.distributed with DistributedDataParallel (DDP).

One process per rank, launched by ``torchrun`` (``torchrun --nproc-per-node N -m cnnlab train ...``,
on one node or several) or by ``cnnlab train --nproc N``, which runs the same elastic launcher
(:func:`launch`). The entry point (the CLI) joins the process group once, before anything is built
(:func:`setup_process`: gloo on CPUs, NCCL on GPUs, one thread share per rank); the trainer reads
the group it finds (:func:`current`) and never creates one.

What each rank does (docs/distributed.md says it for users):

* **Data**: the global batch is the ``batch_size`` the user sets. Each global batch of the epoch's
  seeded permutation (:class:`cnnlab.data.BatchLoader`) is cut into ``world_size`` contiguous parts,
  ``torch.tensor_split`` style, and rank ``r`` trains on part ``r``: disjoint parts whose union is the
  global batch. A final global batch smaller than the number of ranks is left out of the epoch
  (at most ``world_size - 1`` images), since a rank with no images could not join the step.
* **Gradients**: each rank's loss is weighted by its share of the global batch (times ``world_size``,
  which DDP's averaging divides out), so the update is that of the whole global batch in one process,
  also for a final, smaller batch whose parts differ in size. The learning rate is never rescaled.
* **Writes**: rank 0 alone writes the run directory (config, metrics, plots, checkpoints).
* **Evaluation**: each rank evaluates its parts of every evaluation batch; loss sums and confusion
  matrices are summed across ranks.
* **Stops**: every step, the ranks sum a stop vote with their loss, so Ctrl-C or SIGTERM on any
  rank stops all of them after the same step, with a checkpoint. A rank that dies breaks the next
  collective on the others (gloo at once, otherwise within :func:`collective_timeout`), and the
  elastic agent stops the remaining ranks.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cnnlab.errors import CnnlabError, UsageError

# Seconds a collective (or joining the group) may wait for the other ranks before failing; the
# longest legitimate wait is rank 0 writing a checkpoint and plots while the others wait.
DEFAULT_TIMEOUT_S = 300.0
TIMEOUT_ENV = "CNNLAB_DIST_TIMEOUT"
# Environment torchrun sets for each worker (torch.distributed.run).
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(CnnlabError):
    """Another rank failed, died or stopped answering; the job ends (exit 1)."""


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job: rank, world size and the device its collectives use."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def active(self) -> bool:
        """Whether other ranks take part (a process group of more than one rank)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this rank writes the run's files (rank 0)."""
        return self.rank == 0

    # -- collectives, each turning a broken peer into one clear line --------------------------

    def sum_values(self, values: Sequence[float]) -> list[float]:
        """``values`` summed over the ranks (float64), in one all-reduce."""
        if not self.active:
            return [float(v) for v in values]
        tensor = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        with collective("summing the step's loss and stop vote"):
            torch.distributed.all_reduce(tensor)
        return tensor.tolist()

    def sum_tensors_(self, *tensors: torch.Tensor, what: str = "summing the evaluation") -> None:
        """Sum each tensor over the ranks, in place (``what``: the collective, named if it fails)."""
        if not self.active:
            return
        with collective(what):
            for tensor in tensors:
                moved = tensor.to(self.device)
                torch.distributed.all_reduce(moved)
                if moved is not tensor:
                    tensor.copy_(moved)

    def broadcast_state(self, module: nn.Module, buffers_only: bool = False) -> None:
        """Give every rank rank 0's weights (or only its buffers: batch-norm running statistics)."""
        if not self.active:
            return
        tensors = list(module.buffers()) if buffers_only else list(module.state_dict().values())
        with collective("sharing rank 0's weights"), torch.no_grad():
            for tensor in tensors:
                moved = tensor.to(self.device)
                torch.distributed.broadcast(moved, 0)
                if moved is not tensor:
                    tensor.copy_(moved)

    def gather_bytes(self, state: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's ``state`` (a uint8 tensor of one size on all ranks, e.g. an RNG state), by rank."""
        if not self.active:
            return [state]
        moved = state.to(self.device)
        parts = [torch.empty_like(moved) for _ in range(self.world_size)]
        with collective("gathering the ranks' random-number states"):
            torch.distributed.all_gather(parts, moved)
        return [p.cpu() for p in parts]

    def barrier(self) -> None:
        """Wait for every rank (an all-reduce, so that the collective timeout applies on every backend)."""
        self.sum_values([0.0])

    def agree(self, error: BaseException | None) -> None:
        """Raise on every rank when any rank failed the step before this call (one failure, one exit).

        A rank passes the error it caught (or None); the failing rank re-raises its own, the others
        raise :class:`DistributedError` with the same exit status, so no rank waits on a dead peer.
        """
        code = 0 if error is None else getattr(error, "exit_code", 1)
        if not self.active:
            if error is not None:
                raise error
            return
        worst = int(max(self.all_max(code), code))
        if error is not None:
            raise error
        if worst:
            failure = DistributedError(
                f"rank {self.rank}: stopped because another rank failed (see its error)"
            )
            failure.exit_code = worst
            failure.follows_peer = True  # leave_process_group lets the failing rank exit first
            raise failure

    def all_max(self, value: float) -> float:
        """The largest ``value`` over the ranks."""
        tensor = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        with collective("agreeing on the ranks' outcome"):
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return float(tensor.item())


SINGLE = DistContext()


@contextlib.contextmanager
def collective(what: str) -> Iterator[None]:
    """Turn a collective that fails (a peer died or timed out) into a :class:`DistributedError`."""
    try:
        yield
    except (RuntimeError, ValueError) as err:  # DistBackendError, DistNetworkError derive from RuntimeError
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DistributedError(
            f"rank {rank}: lost the other ranks while {what} ({reason[:200]}); another rank died or "
            f"stopped answering within {collective_timeout():g} s. Continue the run with --resume"
        ) from None


def collective_timeout() -> float:
    """Seconds a collective waits for the other ranks: ``$CNNLAB_DIST_TIMEOUT`` or :data:`DEFAULT_TIMEOUT_S`."""
    text = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        raise UsageError(f"${TIMEOUT_ENV} must be a number of seconds, got {text!r}") from None
    if not value > 0:
        raise UsageError(f"${TIMEOUT_ENV} must be greater than 0, got {text!r}")
    return value


def launched_by_torchrun() -> bool:
    """Whether this process is a worker of a torchrun (or ``--nproc``) job of more than one rank."""
    return all(name in os.environ for name in TORCHRUN_ENV) and int(os.environ["WORLD_SIZE"]) > 1


def current() -> DistContext:
    """The job this process belongs to (rank 0 of 1 without a process group)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return SINGLE
    world = torch.distributed.get_world_size()
    if world == 1:
        return SINGLE
    backend = torch.distributed.get_backend()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    return DistContext(torch.distributed.get_rank(), world, local, device)


def no_cuda(device: str) -> UsageError:
    """The refusal of a CUDA ``device`` on a machine without a CUDA GPU."""
    return UsageError(
        f"device {device} was asked for, but no CUDA GPU is available; use --device cpu or auto"
    )


def setup_process(device: str = "auto", threads: int | None = None) -> DistContext:
    """Join the process group torchrun describes (an entry point's call; a no-op outside torchrun).

    NCCL when this rank trains on CUDA (each rank on GPU ``LOCAL_RANK``), gloo otherwise; joining
    and every collective time out after :func:`collective_timeout` seconds. On CPUs, a rank with
    no ``threads`` given takes its share of the cores (cores / ranks on this node), since every
    rank running as many threads as there are cores slows all of them down.
    """
    if not launched_by_torchrun():
        return current()
    timeout = datetime.timedelta(seconds=collective_timeout())
    local = int(os.environ["LOCAL_RANK"])
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise no_cuda(device)
        if local >= torch.cuda.device_count():
            raise UsageError(
                f"local rank {local} has no GPU: this node has {torch.cuda.device_count()}; "
                "start at most that many processes per node"
            )
        torch.cuda.set_device(local)
    elif threads is None:
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // per_node))
    if not torch.distributed.is_initialized():
        try:
            torch.distributed.init_process_group("nccl" if use_cuda else "gloo", timeout=timeout)
        except (RuntimeError, ValueError) as err:
            raise DistributedError(
                f"cannot join the process group at {os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} "
                f"within {timeout.total_seconds():g} s: {str(err).splitlines()[0][:200]}"
            ) from None
    return current()


# How long a rank that stops because another failed waits before exiting, so that the failing rank
# (which prints why) exits first and the launcher stops this one (a SIGTERM it does not count).
FOLLOWER_GRACE_S = 10.0
# How long a rank other than 0 holds back its error: the ranks check the same command line and read the
# same data, so rank 0 almost always meets the same error, says it and exits, and the launcher stops this
# rank before it repeats the line. An error of this rank's own is said after the wait.
REPEAT_GRACE_S = 3.0


@dataclass(frozen=True)
class DeferredError:
    """An error line a rank says only after ``wait_s`` seconds, unless the launcher has stopped it by then."""

    line: str
    wait_s: float

    def say(self) -> None:
        """Wait, then write the line (one write: the ranks share stderr)."""
        time.sleep(self.wait_s)
        sys.stderr.write(self.line)
        sys.stderr.flush()


def deferred_error(line: str, err: BaseException) -> DeferredError | None:
    """How a rank of a multi-process job holds back ``line`` (the error ``err`` ends it with), or None
    (say it now): a rank stopped only because a peer failed waits for the peer's own line; a rank other
    than 0 waits for rank 0 to say the error they share (a mistyped flag, missing data)."""
    if not launched_by_torchrun():
        return None
    if getattr(err, "follows_peer", False):
        return DeferredError(line, FOLLOWER_GRACE_S)
    if os.environ.get("RANK") != "0":
        return DeferredError(line, REPEAT_GRACE_S)
    return None


#: Where :func:`launch` asks rank 0 to write its exit status. torch's launcher, stopped by Ctrl-C or SIGTERM,
#: raises without the ranks' statuses, and a rank in its final evaluation finishes its run all the same.
STATUS_FILE_ENV = "CNNLAB_LAUNCH_STATUS_FILE"


def report_status_to_launcher(status: int) -> None:
    """Rank 0 of a job :func:`launch` started writes the command's exit status where the launcher reads it."""
    path = os.environ.get(STATUS_FILE_ENV)
    if path and os.environ.get("RANK") == "0":
        with contextlib.suppress(OSError):  # the launcher then reports the interrupt as it is
            with open(path, "w") as f:
                f.write(str(status))


def launched_status(path: str) -> int | None:
    """The exit status rank 0 wrote to ``path`` (:func:`report_status_to_launcher`), None if it wrote none."""
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def leave_process_group(status: int, deferred: DeferredError | None = None) -> None:
    """End a rank: leave the process group and exit the process with ``status`` (the entry point's last call;
    it returns only where this process joined no group), after saying ``deferred`` (:func:`deferred_error`).

    A rank never goes through the interpreter's shutdown. gloo's worker threads release the tensors of the
    last collectives a moment after the collective returns; one that releases a tensor Python created while
    the interpreter shuts down cannot take the GIL and aborts the process ("terminate called without an
    active exception", SIGABRT), which the launcher reports as a crash of that rank; seen on loaded
    machines. After a failure the peers may be gone too, and gloo's teardown aborts the same way. So a rank
    that completed destroys the group (every rank got here after the same last collective), a failing
    rank leaves it as it is, and each then flushes its output and logs and exits at once (``os._exit``: rank
    0 has written every file with atomic renames before this point). One that holds its error back waits
    first: a rank that stopped only because a peer failed gives that peer :data:`FOLLOWER_GRACE_S` seconds
    to exit first and say why, and the launcher then stops this rank before its own line.
    """
    report_status_to_launcher(status)
    joined = torch.distributed.is_available() and torch.distributed.is_initialized()
    if joined:
        if status == 0:
            torch.distributed.destroy_process_group()
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    if deferred is not None:
        deferred.say()
    if joined:
        os._exit(status)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s random stream (dropout, drop-path): ``seed`` itself for rank 0, as in
    one process; for the others a number mixed from (seed, rank), so that no two ranks draw alike."""
    if rank == 0:
        return seed
    import numpy as np

    state = np.random.SeedSequence([seed & 0xFFFFFFFF, seed >> 32, rank]).generate_state(2, np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


def check_world(batch_size: int, world_size: int) -> None:
    """Refuse a global batch the ranks cannot share equally."""
    if world_size > 1 and batch_size % world_size:
        raise UsageError(
            f"the batch size {batch_size} is the global batch, shared equally by {world_size} processes; "
            f"choose a multiple of {world_size} (e.g. {batch_size - batch_size % world_size or world_size})"
        )


# ------------------------------------------------------------------------------------- launching


#: the refusal of CPU shards inside a data-parallel job (each rank already has its share of the cores)
SHARDS_WITH_RANKS = "CPU batch shards (--cpu-shards) and data-parallel processes (torchrun, --nproc) do not combine; choose one"


def check_launch(cfg: Any, nproc: int) -> None:
    """Refuse, before any process starts, a ``--nproc`` job that its ranks would each refuse: a global batch
    they cannot share, CPU shards beside the ranks, more ranks than this machine's cores with no GPU."""
    # the number of processes first: a batch fitted to a number this machine cannot run helps nobody
    cores = os.cpu_count() or 1
    if nproc > cores and not torch.cuda.is_available():
        raise UsageError(
            f"--nproc {nproc} is more processes than this machine's {cores} cores; each rank needs a core "
            f"of its own, so use at most {cores}"
        )
    if (cfg.cpu_shards or 1) > 1:
        raise UsageError(SHARDS_WITH_RANKS)
    check_world(cfg.batch_size, nproc)


def launch(nproc: int, argv: Sequence[str], *, shutdown_timeout: int = 30) -> int:
    """Run ``python -m cnnlab ARGV`` as ``nproc`` ranks on this machine through torch's elastic launcher
    (what ``torchrun --standalone --nproc-per-node NPROC -m cnnlab ARGV`` does); the exit status.

    A rank that fails or dies makes the agent stop the others (SIGTERM, then SIGKILL after
    ``shutdown_timeout`` seconds); that is reported as one line naming the rank, and exit 1
    (130 when the ranks stopped on Ctrl-C or SIGTERM, 0 when rank 0 says its run completed all the same:
    a stop in the last step or the final evaluation lets the run finish).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nproc < 1:
        raise UsageError(f"--nproc must be at least 1, got {nproc}")
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",  # a free loopback port: a local job needs no network
        max_restarts=0,
        monitor_interval=0.1,
        shutdown_timeout=shutdown_timeout,
        local_addr="127.0.0.1",
    )
    # torchrun's own default: one OpenMP thread per worker unless told otherwise (setup_process
    # then gives each rank its share of the cores through torch.set_num_threads).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # the agent's own log lines (a rank's exit code, the signals it sends) repeat what the ranks and
    # _report_failure say in one line each; each of torch's elastic modules sets its own logger's level
    for name in [n for n in logging.root.manager.loggerDict if n.startswith("torch.distributed.elastic")]:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    status_dir = tempfile.mkdtemp(prefix="cnnlab-launch-")
    status_file = os.environ[STATUS_FILE_ENV] = os.path.join(status_dir, "rank0-status")
    try:
        elastic_launch(config, sys.executable)("-u", "-m", "cnnlab", *argv)
    except ChildFailedError as err:
        return _report_failure(err)
    except SignalException:  # Ctrl-C or SIGTERM reached the agent: the ranks stop and save, as asked
        ended = launched_status(status_file)
        if ended == 0:  # they were past their last step: the run completed
            return 0
        if ended != 130:  # rank 0, stopped as asked, has said where its checkpoint is; else say this much
            print("cnnlab: interrupted", file=sys.stderr)
        return 130
    finally:
        os.environ.pop(STATUS_FILE_ENV, None)
        shutil.rmtree(status_dir, ignore_errors=True)
    return 0


def _report_failure(err: BaseException) -> int:
    """The job's exit status from the launcher's ChildFailedError, with one line per rank that died.

    A rank that exits 1, 2 or 130 has printed its own line (an error, or where its checkpoint is);
    a rank the agent stopped with SIGTERM on the way out is no failure of its own. A rank killed by
    any other signal, or ending with another status, gets a line here. The status is 130 when the
    ranks stopped on request, 2 when they all refused the command line, else 1.
    """
    failures = getattr(err, "failures", {}) or {}
    codes = {rank: failures[rank].exitcode for rank in sorted(failures)}
    died = False
    for rank, code in codes.items():
        if code in (1, 2, 130, -signal.SIGTERM):
            continue
        died = True
        how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        print(
            f"cnnlab: error: rank {rank} (pid {failures[rank].pid}) {how}; the other ranks were stopped",
            file=sys.stderr,
        )
    exited = [code for code in codes.values() if code > 0]
    if not died and not exited:
        print(
            "cnnlab: error: every rank was stopped by SIGTERM before it could stop cleanly", file=sys.stderr
        )
    if died or not exited:
        return 1
    if all(code == 130 for code in exited):
        return 130
    return 2 if all(code == 2 for code in exited) else 1


# ----------------------------------------------------------------------------- synchronised batch norm


class _SummedOverRanks(torch.autograd.Function):
    """``all_reduce`` (sum) as a differentiable operation: the gradient of a sum over the ranks is the
    sum of the ranks' gradients (each rank's loss depends on every rank's input through it)."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        summed = tensor.clone(memory_format=torch.contiguous_format)
        torch.distributed.all_reduce(summed)
        return summed

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        summed = grad.clone(memory_format=torch.contiguous_format)
        torch.distributed.all_reduce(summed)
        return summed


def summed_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over every rank, differentiably."""
    return _SummedOverRanks.apply(tensor)


class CrossRankBatchNorm2d(nn.BatchNorm2d):
    """Batch norm whose training statistics are those of the global batch, over every rank.

    torch's :class:`torch.nn.SyncBatchNorm` runs on GPUs only; this one runs on any device and
    backend, with two differentiable all-reduces per layer (the sum, then the sum of squared
    deviations from the global mean: the two-pass variance, as exact as batch norm in one process).
    Its parameters and buffers are those of :class:`torch.nn.BatchNorm2d` (same checkpoints).
    Outside training, or in a single process, it is plain batch norm.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (
            self.training and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1
        ):
            return super().forward(x)
        self._check_input_dim(x)
        dims = (0, 2, 3)
        count = torch.tensor([float(x.numel() // x.shape[1])], device=x.device, dtype=torch.float32)
        sums = summed_over_ranks(torch.cat([x.float().sum(dims), count]))
        total = sums[-1]
        mean = sums[:-1] / total
        centred = x.float() - mean.view(1, -1, 1, 1)
        var = summed_over_ranks(centred.pow(2).sum(dims)) / total
        y = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = var * (total / (total - 1).clamp(min=1))
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        return y.to(x.dtype)


def sync_batch_norm(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` with every BatchNorm2d computing global-batch statistics over the ranks (``--sync-bn``):
    torch's SyncBatchNorm on CUDA, :class:`CrossRankBatchNorm2d` elsewhere; the weights and running
    statistics carry over, so do checkpoints."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in list(model.named_children()):
        if type(child) is nn.BatchNorm2d:
            replacement = CrossRankBatchNorm2d(
                child.num_features,
                child.eps,
                child.momentum,
                child.affine,
                child.track_running_stats,
                device=child.running_mean.device if child.running_mean is not None else None,
            )
            replacement.load_state_dict(child.state_dict())
            replacement.train(child.training)
            setattr(model, name, replacement)
        else:
            sync_batch_norm(child, device)
    return model
