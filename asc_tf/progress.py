"""A dependency-free progress line for long work (ingest, training, evaluation).

On a terminal it redraws one line; in a log (CI, nohup) it prints a new line at
most every `every_seconds`, so logs stay short but never silent.
"""

import sys
import time


def _format_seconds(seconds):
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class Progress:
    """Counts done units against an optional total, showing rate and ETA.

    Usage:
        progress = Progress(total=len(videos), desc="ingest", unit="videos")
        for video in videos:
            ...
            progress.update(1, extra="rejects=3")
        progress.close()
    """

    def __init__(self, total=None, desc="", unit="it", stream=None, every_seconds=5.0):
        self.total = total
        self.desc = desc
        self.unit = unit
        self.stream = stream or sys.stderr
        self.every_seconds = every_seconds
        self.done = 0
        self.start = time.monotonic()
        self._last_print = 0.0
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.extra = ""
        self._printed_done = None

    def line(self):
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        parts = [self.desc] if self.desc else []
        if self.total:
            percent = 100.0 * self.done / self.total
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            eta_text = _format_seconds(eta) if eta != float("inf") else "?"
            parts.append(f"{self.done}/{self.total} {self.unit} ({percent:5.1f}%)")
            parts.append(f"{rate:.2f} {self.unit}/s")
            parts.append(f"elapsed {_format_seconds(elapsed)} eta {eta_text}")
        else:
            parts.append(f"{self.done} {self.unit}")
            parts.append(f"{rate:.2f} {self.unit}/s")
            parts.append(f"elapsed {_format_seconds(elapsed)}")
        if self.extra:
            parts.append(self.extra)
        return "  ".join(parts)

    def update(self, n=1, extra=None):
        self.done += n
        if extra is not None:
            self.extra = extra
        now = time.monotonic()
        finished = self.total is not None and self.done >= self.total
        if self._tty:
            if finished or now - self._last_print >= 0.2:
                self.stream.write("\r" + self.line() + "\x1b[K")
                self.stream.flush()
                self._last_print = now
        elif finished or now - self._last_print >= self.every_seconds:
            self.stream.write(self.line() + "\n")
            self.stream.flush()
            self._last_print = now
            self._printed_done = self.done

    def close(self):
        if self._tty:
            self.stream.write("\r" + self.line() + "\x1b[K\n")
        elif self._printed_done != self.done:  # not already printed by the last update
            self.stream.write(self.line() + "\n")
        self.stream.flush()
