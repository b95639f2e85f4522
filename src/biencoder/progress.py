"""Progress of long work: a tqdm bar in a terminal, a log line at a steady interval elsewhere.

A run whose output goes to a file (CI, ``make main > log 2>&1``, a scheduler) cannot show a bar:
tqdm would either print nothing useful or fill the file with carriage returns. There,
:class:`Progress` logs one line every ``BIENCODER_PROGRESS_SECONDS`` (30 by default) with what
is done of what, the speed, the time left and any figures the caller sets (the loss), plus a
last line when work that logged anything ends::

    Training: 120/1500 steps (8%), loss 0.4132, 3.21 s/step, 1:13:49 left

The lines go to the ``biencoder.progress`` logger at INFO; the CLI shows them, a library caller
sees them when it configures logging.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

T = TypeVar("T")
ENV_INTERVAL = "BIENCODER_PROGRESS_SECONDS"
DEFAULT_INTERVAL = 30.0


def interval_seconds() -> float:
    """The log interval: ``BIENCODER_PROGRESS_SECONDS`` when set to a number >= 0, else 30."""
    raw = os.environ.get(ENV_INTERVAL)
    if raw is None:
        return DEFAULT_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{ENV_INTERVAL}={raw!r}: expected a number of seconds") from None
    if value < 0:
        raise ValueError(f"{ENV_INTERVAL}={raw!r}: expected a number of seconds >= 0")
    return value


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """``total`` units of work: a bar when ``show`` (default: when stderr is a terminal), else log lines.

    ``show=False`` turns the bar off, never the log lines (they are logging's to filter).
    """

    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str = "step",
        *,
        initial: int = 0,
        show: bool | None = None,
        interval: float | None = None,
    ) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self._start = initial
        self.interval = interval_seconds() if interval is None else interval
        self.postfix: dict[str, str] = {}
        self._began = self._last = time.perf_counter()
        self._logged = False
        use_bar = sys.stderr.isatty() if show is None else show
        self.bar: Any = (
            tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True) if use_bar else None
        )

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.perf_counter()
        if now - self._last >= self.interval:
            self._last = now
            self._log()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = {k: f"{v:.4f}" if isinstance(v, float) else str(v) for k, v in values.items()}
        if self.bar is not None:
            self.bar.set_postfix(self.postfix, refresh=False)

    def line(self) -> str:
        """What a log line says now."""
        done = self.n - self._start
        elapsed = time.perf_counter() - self._began
        parts = [self._count(), *(f"{k} {v}" for k, v in self.postfix.items())]
        if done > 0 and elapsed > 0:
            per = elapsed / done
            parts.append(f"{per:.2f} s/{self.unit}" if per >= 1 else f"{1 / per:.1f} {self.unit}s/s")
            if self.total:
                parts.append(f"{format_duration(per * max(0, self.total - self.n))} left")
        return f"{self.desc}: " + ", ".join(parts)

    def _count(self) -> str:
        if not self.total:
            return f"{self.n} {self.unit}s"
        return f"{self.n}/{self.total} {self.unit}s ({100 * self.n / self.total:.0f}%)"

    def _log(self) -> None:
        self._logged = True
        logger.info("%s", self.line())

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self._logged and self.n - self._start > 0:
            elapsed = format_duration(time.perf_counter() - self._began)
            logger.info("%s: %s (done in %s)", self.desc, self._count(), elapsed)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def track(
    items: Iterable[T],
    desc: str,
    unit: str = "item",
    *,
    total: int | None = None,
    show: bool | None = None,
    weight: Any = None,
) -> Iterator[T]:
    """Iterate ``items`` under a :class:`Progress`; ``weight(item)`` units per item (default 1)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(total, desc, unit, show=show) as progress:
        for item in items:
            yield item
            progress.update(1 if weight is None else int(weight(item)))
