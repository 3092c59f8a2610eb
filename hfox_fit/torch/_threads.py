"""The worker threads of the CPU update: one pool, the block size, and running blocks on it.

On a CPU the update of a :class:`~hfox_fit.torch.WeakResetArray` runs block by
block (:data:`CPU_BLOCK` cells) on a pool of worker threads
(:func:`block_threads`: ``torch.get_num_threads()`` of them), each taking the
next block as it comes free; torch operations release the GIL, so the blocks run
in parallel. Every torch operation in a worker is single-threaded (its OpenMP
thread count is set to 1), so no operation goes to torch's intra-op thread pool,
whose barrier waits for every pool thread to be scheduled (which takes
milliseconds on a busy machine); and when the process gets no more than about
one core, the calls go to one thread (see :class:`_Balance`). On a GPU the whole
array is one block.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import torch

__all__ = ["CPU_BLOCK", "GRAIN_BLOCK", "block_threads"]

#: Cells per block of the CPU update. The blocks run on worker threads whose torch operations are
#: single-threaded (see :func:`block_threads`), a block at a time per thread (a multiple of 16 keeps
#: randn's layout the same for every block).
CPU_BLOCK = 131008
#: Largest operation that torch runs on one thread whatever its thread settings (its parallel grain
#: is 32768 elements): the size of the checks made on the calling thread, and the block size where
#: the worker threads cannot be made single-threaded (a torch build without OpenMP).
GRAIN_BLOCK = 32752

_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_POOL_SERIAL = False
_POOL_LOCK = threading.Lock()


def _drop_pool() -> None:  # a forked child has the pool object (and maybe a held lock) but not the threads
    global _POOL, _POOL_SIZE, _POOL_SERIAL, _POOL_LOCK
    _POOL, _POOL_SIZE, _POOL_SERIAL, _POOL_LOCK = None, 0, False, threading.Lock()
    # (nor the OpenMP runtime's threads, which it still counts: a pause would wait for them forever)
    _PAUSE[:] = [None]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_pool)


def block_threads() -> int:
    """Threads the CPU update of a :class:`WeakResetArray` runs its blocks on: ``torch.get_num_threads()``.

    The blocks run on a pool of worker threads (torch operations release the
    GIL), each taking the next block as it comes free; every torch operation
    in a worker is single-threaded, so no operation waits at a thread-pool
    barrier (which takes milliseconds on a busy machine). ``torch.set_num_threads(1)``
    makes the update serial. The results do not depend on the thread count:
    every block draws from its own generator.
    """
    return max(1, torch.get_num_threads())


def _openmp() -> bool:
    return "parallel backend: OpenMP" in torch.__config__.parallel_info()


def _pool(workers: int) -> tuple[ThreadPoolExecutor, bool]:
    """The worker threads (at least ``workers``), and whether their torch operations are single-threaded."""
    global _POOL, _POOL_SIZE, _POOL_SERIAL
    with _POOL_LOCK:
        if _POOL is None or _POOL_SIZE < workers:  # (a smaller pool's threads end once it is unused)
            pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hfox-cells")
            serial = False
            if _openmp():
                # torch's intra-op thread count is an OpenMP setting of each thread: set it to 1 in every
                # worker (the barrier makes each task run on its own thread), then give the process-wide
                # default (used by threads started later) back its value.
                before = torch.get_num_threads()
                barrier = threading.Barrier(workers)

                def one_thread():
                    torch.set_num_threads(1)
                    barrier.wait()
                    return torch.get_num_threads() == 1

                try:
                    serial = all(f.result() for f in [pool.submit(one_thread) for _ in range(workers)])
                finally:
                    torch.set_num_threads(before)
            _POOL, _POOL_SIZE, _POOL_SERIAL = pool, workers, serial
        return _POOL, _POOL_SERIAL


def _serial_workers() -> bool:
    """Whether the worker threads run torch operations on one thread (builds the pool once)."""
    return _pool(1)[1]


#: Whether :func:`_run_blocks` first hands back the OpenMP threads of torch's pool (see :func:`_release_openmp`),
#: for calls of at least :data:`RELEASE_BLOCKS` blocks: starting the threads again costs 100-150 us, more than
#: the spinning takes from a shorter call (the training study's 64-256-10 network, 2 blocks a pass, took
#: 10-40 % longer with every call releasing them).
RELEASE_OPENMP = True
RELEASE_BLOCKS = 4
_PAUSE: list = []  # [omp_pause_resource_all or None], looked up once per process


def _openmp_pause():
    """``omp_pause_resource_all`` of GNU libgomp (OpenMP 5.0: GCC 10 and later), the OpenMP runtime of torch's
    wheels, found among the libraries this process has mapped, torch's own first; None where there is none
    (another platform or runtime, an older libgomp, a torch without OpenMP). Only libgomp: its pause hands
    back the calling thread's threads alone (Intel's pauses the whole process)."""
    if not _PAUSE:
        found = None
        try:
            if _openmp():
                paths = set()
                with open("/proc/self/maps") as maps:
                    for line in maps:
                        parts = line.split(None, 5)  # (address, perms, offset, dev, inode[, path])
                        path = parts[5].strip() if len(parts) == 6 else ""
                        name = os.path.basename(path)
                        if name.startswith("libgomp") and ".so" in name:
                            paths.add(path)
                here = os.path.dirname(torch.__file__)
                ours = (here + os.sep, here + ".libs" + os.sep)  # (torch/lib, or the wheel's torch.libs)
                for path in sorted(paths, key=lambda p: (not p.startswith(ours), p)):
                    try:
                        fn = getattr(ctypes.CDLL(path), "omp_pause_resource_all", None)
                    except OSError:  # (a mapping whose file is gone)
                        continue
                    if fn is not None:
                        fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
                        found = fn
                        break
        except OSError:
            found = None
        _PAUSE.append(found)
    return _PAUSE[0]


def _release_openmp() -> None:
    """Hand back the OpenMP threads of torch's pool on this thread (``omp_pause_resource_all``, soft).

    After each parallel torch operation they spin for some milliseconds before they sleep (libgomp's
    ``GOMP_SPINCOUNT``: about 8 ms of a core on the 2-core machine here), taking a core from the worker
    threads of the blocks that follow (the step after ``optimizer.step()``). The next parallel operation
    starts them again (100-150 us with the pause). Inside a parallel region it does nothing."""
    if RELEASE_OPENMP:
        fn = _openmp_pause()
        if fn is not None:
            fn(1)  # (omp_pause_soft)


class _Balance:
    """How many worker threads a call uses: all it may while they run in parallel, one while they don't.

    On a machine busy with other work the process may get about one core: two
    threads then take turns at the GIL and at that core, and a call is slower
    than on one thread. A call on several threads that got less than
    :attr:`MIN_CORES` cores' worth of CPU time (the workers' own CPU time over
    the call's wall time) sends the next :attr:`SERIAL_CALLS` calls to one
    thread, after which the threads are tried again. The results are the same
    either way.
    """

    MIN_CORES = 1.3
    SERIAL_CALLS = 16

    def __init__(self):
        self.serial_left = 0

    def workers(self, wanted: int) -> int:
        return 1 if self.serial_left > 0 else wanted

    def report(self, workers: int, cpu_s: float, wall_s: float) -> None:
        if workers == 1:
            self.serial_left = max(0, self.serial_left - 1)
        elif cpu_s < self.MIN_CORES * wall_s:
            self.serial_left = self.SERIAL_CALLS


_BALANCE = _Balance()


def _run_blocks(fn, count: int, workers: int, balance: bool = False) -> None:
    """Run ``fn(b)`` for ``b = 0..count-1`` on up to ``workers`` worker threads; returns when all are done.

    The threads take the next block as they come free (a thread that the OS
    holds up delays the call by at most the block it holds), and torch
    operations release the GIL, so the blocks run in parallel. ``fn`` must not
    depend on the order. See :class:`_Balance` for the number of threads used
    (``balance``: this call's timing counts).
    """
    workers = _BALANCE.workers(max(1, min(workers, count)))
    if workers > 1 and count >= RELEASE_BLOCKS:
        _release_openmp()
    lock = threading.Lock()
    nxt = [0]
    failed = []

    def loop():
        cpu0 = time.thread_time()
        with torch.no_grad():
            while not failed:
                with lock:
                    b = nxt[0]
                    nxt[0] += 1
                if b >= count:
                    break
                try:
                    fn(b)
                except BaseException:
                    failed.append(True)
                    raise
        return time.thread_time() - cpu0

    pool, _ = _pool(workers)
    t0 = time.perf_counter()
    futures = [pool.submit(loop) for _ in range(workers)]
    errors = [f.exception() for f in futures]  # waits for every thread
    for err in errors:
        if err is not None:
            raise err
    if balance:
        _BALANCE.report(workers, sum(f.result() for f in futures), time.perf_counter() - t0)


def _block_size(dev: torch.device, num_devices: int) -> int:
    """Cells per block of the update: a GPU does the whole array at once."""
    if dev.type != "cpu":
        return num_devices
    return CPU_BLOCK if _serial_workers() else min(CPU_BLOCK, GRAIN_BLOCK)

