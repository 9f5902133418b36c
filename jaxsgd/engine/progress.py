"""Progress of a sweep: one tqdm bar over every optimizer step of every batch-size group.

The bar advances between chunks (the engine's only host synchronisations) and shows the group
being run, its number of runs, the training examples per second over all runs (from the end of
the group's first chunk, so compilation does not count), and tqdm's elapsed time and ETA. ``enabled=False`` (``run_sweep(progress=False)``, ``jaxsgd sweep
--no-progress``) turns it off for logs and notebooks; only process 0 of a multi-process sweep
shows it.
"""

from __future__ import annotations

import time

from tqdm import tqdm  # the text bar: tqdm.auto warns in notebooks without ipywidgets


class SweepProgress:
    """``start_group(B, runs, done_steps)``, ``advance(steps)``, ``skip(steps)``,
    ``write(line)``, ``close()``."""

    def __init__(self, total_steps: int, enabled: bool = True):
        self._bar = tqdm(total=total_steps, unit="step", disable=not enabled, dynamic_ncols=True,
                         desc="sweep", smoothing=0.1)
        self._batch_size = self._runs = 0
        self._examples = 0
        self._started: float | None = None

    def start_group(self, batch_size: int, runs: int, done_steps: int = 0) -> None:
        """A group begins (or resumes with ``done_steps`` already done)."""
        self._batch_size, self._runs = batch_size, runs
        self._bar.set_description(f"B={batch_size} x {runs} runs")
        if done_steps:
            self._bar.update(done_steps)
        self._examples, self._started = 0, None

    def advance(self, steps: int, batch_size: int | None = None) -> None:
        """``steps`` more optimizer steps of every run of the current group are done, at
        ``batch_size`` (default: the group's; a batch-size schedule's stage may differ)."""
        now = time.perf_counter()
        if self._started is None:  # the first chunk includes compilation: not in the rate
            self._started = now
        else:
            self._examples += steps * (batch_size or self._batch_size) * self._runs
            rate = self._examples / max(now - self._started, 1e-9)
            self._bar.set_postfix_str(f"{rate:,.0f} examples/s", refresh=False)
        self._bar.update(steps)

    def skip(self, steps: int) -> None:
        """Steps already finished in an earlier session (a resumed group)."""
        self._bar.update(steps)

    def write(self, line: str) -> None:
        """Print a line above the bar (or plainly when the bar is off)."""
        if self._bar.disable:
            print(line, flush=True)
        else:
            self._bar.write(line)

    def close(self) -> None:
        self._bar.close()
