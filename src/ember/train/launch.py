"""``ember train ... --nproc N``: the same command, run by torchrun as N processes on this machine.

ember never starts ranks itself: it runs ``python -m torch.distributed.run --standalone
--nproc-per-node N [--max-restarts R] -m ember train ...`` (the same as typing ``torchrun``), whose
workers find their rank in the environment (`ember.train.distributed`). Several machines are
torchrun's job too: run ``torchrun --nnodes ... -m ember train ...`` on each (see the README).

Restarts (``--max-restarts``) need one setting, which this launcher makes:
``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``. By default torchrun's agent hosts one TCPStore for its
workers and keeps it for the whole job, across restarts (the rendezvous handler caches the server
in ``DynamicRendezvousHandler._shared_tcp_store_server``; ``torch.distributed.rendezvous`` then
adds no per-attempt prefix, on the assumption, written in ``_create_c10d_store``, that every retry
gets a new store). The keys a gloo process group publishes there while connecting (rank r's
listening addresses under ``default_pg/0//cpu//0/<r>``) have the same names in every attempt, so
the restarted workers find the dead workers' entries already present: ``store.wait`` returns at
once, a rank reads a dead peer's address, and connecting to it fails ("connectFullMesh failed")
or waits for a peer that connects elsewhere (a hang). Whether a new worker overwrites its key
before its peer reads it is a race, hence "fails in most tries".
With the variable set, the workers' rank 0 hosts a new store each attempt on a fresh port (its
address published through the rendezvous, whose keys carry the round number): nothing stale.

Example:
    >>> torchrun_command(["train", "configs/digits-cnn.yaml"], nproc=2)[1:6]
    ['-m', 'torch.distributed.run', '--standalone', '--nproc-per-node', '2']
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from types import FrameType

__all__ = ["launch", "launcher_environment", "torchrun_command"]


def torchrun_command(ember_args: list[str], *, nproc: int, max_restarts: int = 0) -> list[str]:
    """The torchrun command line that runs ``ember <ember_args>`` as ``nproc`` local processes."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # c10d rendezvous on a free local port, a new job id each launch
        "--nproc-per-node",
        str(nproc),
        "--max-restarts",
        str(max_restarts),
        "-m",
        "ember",
        *ember_args,
    ]


def launcher_environment(nproc: int) -> dict[str, str]:
    """The workers' environment: each restart gets a fresh store (see the module docstring), and
    the CPU threads are divided between the processes."""
    env = dict(os.environ)
    env.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return env


def launch(ember_args: list[str], *, nproc: int, max_restarts: int = 0) -> int:
    """Run ``ember <ember_args>`` under torchrun as ``nproc`` processes; torchrun's exit status."""
    if nproc < 1:
        raise ValueError(f"--nproc takes a number of processes >= 1; got {nproc}")
    command = torchrun_command(ember_args, nproc=nproc, max_restarts=max_restarts)
    job = subprocess.Popen(command, env=launcher_environment(nproc))
    # SIGTERM to this process is torchrun's: it passes it to the workers, which end their fit with
    # a final checkpoint (`ember.train.signals`), and exits once they have (printing the
    # SignalException it stopped with); the exit status is then 143, as a single process's
    stopped: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        stopped.append(signum)
        job.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        status = job.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 128 + stopped[0] if stopped else status
