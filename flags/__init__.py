"""Flag plumbing shared by the binaries in tools/.

Every binary is started with `flags.run(main)`. A flag that absl cannot parse,
or that a binary's own validation rejects through `fail`, ends the process
before any work with exit code 2 and one line on stderr naming the flag:

    build_tfrecords: error: --num_shards: must be positive, got -1

Presets (`*.cfg`) beside this file are absl flagfiles: `--flagfile=flags/x.cfg`.

Neither flags/ nor a binary's module level imports TensorFlow (seconds to
load, minutes on a loaded machine), so that --help and a bad flag answer at
once: enum flags take their choices from asc_tf/choices.py, and a binary
imports what needs TensorFlow inside main(), after the checks that do not.
"""

import os
import sys
import tempfile

# TensorFlow's C++ INFO lines (tf.data notes, ...) drown a binary's own progress. Warnings stay
# visible: a skipped corrupt record is reported at that level. Set before TensorFlow is first
# imported. The start-up lines no log level silences are dropped by flags/startup_noise.py.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

# Before anything can import TensorFlow: `import asc_tf` sets its environment (oneDNN on; asc_tf/cpu.py).
import asc_tf  # noqa: F401

from absl import app
from absl import flags as absl_flags
from absl import logging

from flags import startup_noise


FLAGS = absl_flags.FLAGS
EXIT_BAD_FLAG = 2


class FlagError(Exception):
    """A flag value was rejected; `flag` names it without the dashes."""

    def __init__(self, flag, message):
        super().__init__(f"--{flag}: {message}")
        self.flag = flag


def _program():
    return os.path.basename(sys.argv[0]).removesuffix(".py") if sys.argv else "asc_tf"


def fail(flag, message):
    """Exit with code 2 and a one-line message naming `flag`."""
    raise FlagError(flag, message)


def require_positive(*names):
    """Each named integer flag must be at least 1."""
    for name in names:
        value = getattr(FLAGS, name)
        if value < 1:
            fail(name, f"must be positive, got {value}")


def require_writable(name, path=None):
    """The folder of flag `name` (or `path`, e.g. a file's folder) can be created and written into.

    Checked by creating it and a file in it, both removed again, so that an
    unwritable location fails as a bad flag before any work instead of after
    it. URLs (gs://, ...) are left to the file system that serves them.
    """
    path = getattr(FLAGS, name) if path is None else path
    if not path or "://" in path:
        return
    path = os.path.abspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        fail(name, f"exists and is not a folder: {path}")
    for attempt in range(3):
        created, head = [], path
        while not os.path.exists(head):
            created.append(head)
            head = os.path.dirname(head)
        try:
            for folder in reversed(created):
                os.makedirs(folder, exist_ok=True)  # exist_ok: the other workers of a multi-host run check too
            descriptor, probe = tempfile.mkstemp(prefix=".write_check_", dir=path)
            os.close(descriptor)
            os.remove(probe)
            return
        except FileNotFoundError as error:
            # Another worker removed the folder it had made for its own check: try again.
            if attempt == 2 or not os.path.exists(head):
                fail(name, f"cannot create or write {path}: {error.strerror or error}")
        except OSError as error:
            fail(name, f"cannot create or write {path}: {error.strerror or error}")
        finally:
            for folder in created:  # deepest first; a folder someone else filled meanwhile stays
                try:
                    os.rmdir(folder)
                except OSError:
                    pass


def _one_line(text):
    return " ".join(str(text).split())


def _parse(argv):
    try:
        return FLAGS(argv)
    except absl_flags.UnrecognizedFlagError as error:
        # absl names an unknown flag without its dashes; keep its "Did you mean" tip.
        _, _, tip = str(error).partition(". Did you mean: ")
        hint = f"; did you mean {tip.rstrip(' ?')}?" if tip else ""
        sys.stderr.write(f"{_program()}: error: --{error.flagname}: unknown flag{hint}\n")
        sys.exit(EXIT_BAD_FLAG)
    except absl_flags.Error as error:
        # absl's messages already read "flag --name=value: reason".
        sys.stderr.write(f"{_program()}: error: {_one_line(error)}\n")
        sys.exit(EXIT_BAD_FLAG)


HELP_ARGS = ("-h", "-?", "--help", "-help", "--helpshort", "-helpshort")


def _help():
    """--help: the binary's docstring and every flag it defines, its own and those of flags/."""
    main = sys.modules.get("__main__")
    lines = [((main.__doc__ if main else None) or "").strip(), ""]
    # The binary's own flags first (its module is named by its path under `python -m`), then flags/'s.
    modules = [m for m in FLAGS.flags_by_module_dict() if m.split(".")[0] != "absl"]
    for module in sorted(modules, key=lambda m: m.startswith("flags.")):
        lines += [FLAGS.module_help(module).strip(), ""]
    lines.append("--flagfile=FILE reads flags from FILE (the presets in flags/*.cfg); "
                 "--helpfull adds absl's own flags.")
    sys.stdout.write("\n".join(lines) + "\n")


def run(main):
    """`absl.app.run` with one-line flag errors and exit code 2 for bad flags; --help exits 0."""
    if any(arg in HELP_ARGS for arg in sys.argv[1:]):
        _help()
        sys.exit(0)

    def guarded(argv):
        # Quiet by default: TensorFlow logs every file it saves at INFO. --verbosity=0 brings INFO back.
        if not FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)
        startup_noise.start()  # TensorFlow's C++ start-up lines, which no log level silences
        try:
            return main(argv)
        except FlagError as error:
            sys.stderr.write(f"{_program()}: error: {_one_line(error)}\n")
            sys.exit(EXIT_BAD_FLAG)

    app.run(guarded, flags_parser=_parse)
