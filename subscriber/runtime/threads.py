"""How many threads torch and numpy's BLAS may use, in the process and in each of our threads.

A node serves small policies: intra-op threads gain it nothing, and their spinning steals
the two cores of a small machine from Redis and the requests. :func:`limit_threads` sets
torch's intra-op threads and numpy's BLAS threads (OpenBLAS, through ``threadpoolctl``) for
the process (``FKS_TORCH_THREADS``).

torch's limit is also per thread: OpenMP keeps the team size of each thread apart, and a
thread that calls a BLAS kernel (``F.linear``) before any op of torch's own thread pool runs
it with the machine's default team. :func:`inherit_torch_threads` passes the process's limit
on; the load lane runs it in each worker it starts. Without it, the probe's four
``F.linear`` took ~10 ms instead of ~0.4 on the 2-core machine (bench/swap_latency.py), with
an OpenMP thread spinning against the requests.
"""

from __future__ import annotations

import torch
from threadpoolctl import threadpool_limits

__all__ = ["inherit_torch_threads", "limit_threads"]


def limit_threads(threads: int) -> None:
    """At most ``threads`` intra-op threads for torch and for numpy's BLAS (0: leave them)."""
    if threads > 0:
        torch.set_num_threads(threads)
        threadpool_limits(threads, user_api="blas")


def inherit_torch_threads() -> None:
    """Give the calling thread the process's torch thread limit (call it first thing)."""
    torch.set_num_threads(torch.get_num_threads())
