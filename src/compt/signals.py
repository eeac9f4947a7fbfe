"""How a command that writes resumable work answers SIGTERM and SIGINT (a cluster's preemption, `timeout`,
`docker stop`, Ctrl-C) wherever the signal lands.

For the whole of `compt train` (`compt.chain.train_run`) and `compt finetune`, a stop signal raises
`compt.errors.Stopped` at the point the process has reached (`interrupt_on_signals`): growing a member,
writing ``init.pt``, filling a teacher cache, evaluating. The run's own handlers then mark the unfinished work
interrupted, and the CLI prints one line and exits 2. Inside a stage's training loop the trainer takes the
signals over (`compt.train.stage_loop.stop_signals`): it only records them, and stops after the step with a
checkpoint. Signals repeated while the process unwinds are ignored, so that its last records get written.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

from compt.errors import Stopped

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def interrupt_on_signals(resume: str) -> Iterator[None]:
    """While the block runs, the first SIGTERM/SIGINT raises ``Stopped("stopped by SIGTERM; <resume>")``
    and later ones are ignored; the previous handlers come back after it (off the main thread, where Python
    cannot set handlers: nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = []

    def handler(signum: int, _frame: Any) -> None:
        if not fired:
            fired.append(signum)
            raise Stopped(f"stopped by {signal.Signals(signum).name}; {resume}")

    old = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
