"""A SIGTERM during a fit's final writes waits for them, then stops the process as Interrupted."""

from __future__ import annotations

import os
import signal

import pytest

from ember.train.signals import Interrupted, deferred_signals


def test_a_sigterm_in_the_block_waits_for_its_end() -> None:
    done = []
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted, match="SIGTERM as the run completed"), deferred_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        done.append("the final writes")
    assert done == ["the final writes"]
    assert signal.getsignal(signal.SIGTERM) is before


def test_no_signal_no_interruption() -> None:
    with deferred_signals():
        pass
