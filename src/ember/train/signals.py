"""SIGTERM ends a fit cleanly: the step in progress finishes, a final checkpoint is written, the run
is marked ``interrupted``, and the process exits 143 (128 + SIGTERM, the shell's convention).

SIGTERM is what Kubernetes, Slurm and systemd send before they kill; by default Python dies of it
at once, leaving the run ``running`` and the last epoch's work lost. Instead, the
loop's :func:`stop_on_signals` catches it while a fit runs (in the main thread; elsewhere signals
cannot be caught): the loop stops after the current optimizer step, skips validation, writes its
``final`` checkpoint, then raises :class:`Interrupted`, a ``KeyboardInterrupt``, so the run is
recorded as interrupted and nothing after fit (final weights) pretends it completed. A second
SIGTERM while stopping raises at once.

Example:
    >>> import os, signal, torch
    >>> from ember.train import Trainer
    >>> class Stop:  # this process sends itself SIGTERM at the first step
    ...     def on_step_end(self, state): os.kill(os.getpid(), signal.SIGTERM)
    >>> trainer = Trainer(torch.nn.Linear(4, 2), epochs=3, callbacks=[Stop()])  # doctest: +SKIP
    >>> trainer.fit((torch.randn(8, 4), torch.randint(0, 2, (8,))))  # doctest: +SKIP
    Traceback (most recent call last):
    ember.train.signals.Interrupted: stopped by SIGTERM at optimizer step 1; final checkpoint written
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from ember.train.state import TrainState


class Interrupted(KeyboardInterrupt):
    """A fit stopped by a signal after its final checkpoint; ``signum`` says which."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum

    def __str__(self) -> str:
        return str(self.args[0])


@contextlib.contextmanager
def stop_on_signals(state: TrainState, signums: tuple[int, ...] = (signal.SIGTERM,)) -> Iterator[None]:
    """While the block runs, a signal in ``signums`` asks ``state`` to stop after the current step
    (``state.interrupted`` names it); a second one raises :class:`Interrupted` at once. The previous
    handlers are back when the block ends, however it ends. Outside the main thread: no change."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if state.interrupted:
            raise Interrupted(f"stopped by {name} (a second time, during the final checkpoint)", signum)
        state.should_stop, state.interrupted, state.stop_reason = True, name, f"stopped by {name}"

    previous = {signum: signal.signal(signum, handle) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def deferred_signals(signums: tuple[int, ...] = (signal.SIGTERM,)) -> Iterator[None]:
    """A signal in ``signums`` while the block runs (a fit's final writes: the weights, the run's
    status) waits for the block to end, then raises :class:`Interrupted`: the writes finish and the
    run says ``completed`` rather than dying half-way. The training loop's own handler
    (:func:`stop_on_signals`) takes over inside it. Outside the main thread: no change."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {
        signum: signal.signal(signum, lambda signum, frame: received.append(signum)) for signum in signums
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        name = signal.Signals(received[0]).name
        raise Interrupted(
            f"stopped by {name} as the run completed (its final writes were finished first)", received[0]
        )


def raise_if_interrupted(state: TrainState) -> None:
    """Raise :class:`Interrupted` when a signal stopped the fit (called once its final checkpoint is written)."""
    if state.interrupted:
        signum = int(signal.Signals[state.interrupted])
        raise Interrupted(
            f"stopped by {state.interrupted} at optimizer step {state.step}; final checkpoint written", signum
        )
