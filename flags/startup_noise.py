"""Drops TensorFlow's C++ start-up lines from a binary's stderr; every other line passes.

TensorFlow 2.21 prints, on every CPU-only machine, before its logging is set up
and so regardless of TF_CPP_MIN_LOG_LEVEL:

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 ... port.cc:153] oneDNN custom operations are on. ...
    I0000 ... cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
    E0000 ... cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: ... (303)

the first three twice over (TensorFlow and Keras each load the library);
later come tf.data's warning that it cannot optimise a Python generator's
dataset and oneDNN's error line that it leaves uint8 ops to Eigen. None says
anything a user of a CPU machine can act on, and two read as errors. `start`
points file descriptor 2 at a pipe read by a forked filter process that writes
every line to the real stderr except those above (matched by source file and
message, nothing looser). A process, not a thread: it outlives its parent, so a
message printed just before a crash (a C++ `Check failed`, an abort) still
arrives. Set TF_CPP_MIN_LOG_LEVEL=0 to see everything, these lines included.
"""

import atexit
import io
import os
import re
import signal
import sys
import time

# glog-style prefix: severity, date, time, thread id, then "file:line] message".
_PREFIX = r"[IWEF]\d{4} [\d:.]+ +\d+ "
NOISE = tuple(re.compile(pattern) for pattern in (
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$",
    _PREFIX + r"port\.cc:\d+\] oneDNN custom operations are on\.",
    _PREFIX + r"cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine, GPU will not be used\.$",
    _PREFIX + r"cuda_platform\.cc:\d+\] failed call to cuInit: ",
    _PREFIX + r"cuda_executor\.cc:\d+\] failed call to cuInit: ",
    _PREFIX + r"cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized to use available CPU",
    r"^To enable the following instructions: .* in other operations, rebuild TensorFlow with the "
    r"appropriate compiler flags\.$",
    # Not start-up, but as little to act on: tf.data cannot rewrite a Python generator's dataset, and
    # oneDNN leaves uint8 ops (the decoded frames' casts) to Eigen, printed as an error even on AVX-512.
    _PREFIX + r"dataset\.cc:\d+\] Input of GeneratorDatasetOp::Dataset will not be optimized because",
    _PREFIX + r"util\.cc:\d+\] oneDNN supports DT_UINT8 only on platforms with AVX-512\. Falling back",
))

# A line without its newline yet is held only while it may still become one of the lines above.
_GLOG_START = re.compile(rb"[IWEF](?:\d|$)")
_PLAIN_STARTS = (b"WARNING: All log messages before", b"To enable the following instructions")


def _may_become_noise(partial):
    return bool(_GLOG_START.match(partial)) or any(
        start.startswith(partial[:len(start)]) for start in _PLAIN_STARTS)


_started = False


class _Terminal(io.TextIOWrapper):
    """sys.stderr once fd 2 is the filter's pipe, where the real stderr is a terminal: progress bars
    that ask isatty() keep redrawing their line."""

    def isatty(self):
        return True


def is_noise(line):
    """True for one of TensorFlow's start-up lines (`line` without its newline)."""
    return any(pattern.search(line) for pattern in NOISE)


def _filter(read_fd, write_fd):
    """The filter process: copies lines from `read_fd` to `write_fd`, dropping noise, until EOF."""
    pending = b""
    while True:
        try:
            chunk = os.read(read_fd, 65536)
        except InterruptedError:
            continue
        except OSError:
            chunk = b""
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        kept = [line + b"\n" for line in lines if not is_noise(line.decode("utf-8", "replace"))]
        if pending and not _may_become_noise(pending):  # a progress bar's "\r..." redraw goes at once
            kept.append(pending)
            pending = b""
        if kept:
            try:
                os.write(write_fd, b"".join(kept))
            except OSError:  # the real stderr is gone (a closed terminal): nothing left to do
                break
    if pending:  # a last line without a newline is never noise
        try:
            os.write(write_fd, pending)
        except OSError:
            pass


def start():
    """Filters this process's stderr (fd 2) from here on; False where it does not apply.

    Not applied when TF_CPP_MIN_LOG_LEVEL is 0 (the user asked for everything),
    on systems without fork, or twice in one process. Child processes inherit
    the filtered stderr.
    """
    global _started
    if _started or not hasattr(os, "fork") or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        return False
    sys.stderr.flush()
    try:
        read_fd, write_fd = os.pipe()
    except OSError:
        return False
    try:
        real_stderr = os.dup(2)
    except OSError:  # no fd 2 at all: nothing to filter
        os.close(read_fd)
        os.close(write_fd)
        return False
    try:
        pid = os.fork()
    except OSError:
        for fd in (read_fd, write_fd, real_stderr):
            os.close(fd)
        return False
    if pid == 0:  # the filter: outlives a Ctrl-C or a SIGTERM to the group, ends at its input's EOF
        try:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
                signal.signal(sig, signal.SIG_IGN)
            os.close(write_fd)
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 0)
            os.dup2(null, 1)
            _filter(read_fd, real_stderr)
        finally:
            os._exit(0)
    os.close(read_fd)
    terminal = os.isatty(real_stderr)
    os.dup2(write_fd, 2)
    os.close(write_fd)
    _started = True
    if terminal:
        sys.stderr = _Terminal(open(2, "wb", buffering=0, closefd=False), encoding=sys.stderr.encoding,
                               errors=sys.stderr.errors, line_buffering=True, write_through=True)

    def finish():
        # At exit: hand fd 2 back and wait (briefly) for the filter to write what it holds, so that
        # the last lines come before the shell's prompt. Children still holding the pipe keep it open.
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(real_stderr, 2)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                return
            if done:
                return
            time.sleep(0.01)

    atexit.register(finish)
    return True
