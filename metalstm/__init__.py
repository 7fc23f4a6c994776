"""metalstm: the Meta-Learner LSTM of Ravi & Larochelle (ICLR 2017), rebuilt for a course."""
import sys as _sys

__version__ = "0.1.0"

INTERRUPTED = "interrupted (Ctrl-C); no result was written as complete"


def _quiet_interrupts() -> None:
    """For `python -m metalstm.*` only: a Ctrl-C at any moment - during the imports, the work,
    or the exit's cleanup (atexit) - ends the process with one line and exit code 130, never a
    traceback. Every file the package writes is written atomically, so what an interrupt stops
    is never left half-written; commands that keep partial work (train) say so themselves."""
    import os

    def leave() -> None:
        try:
            _sys.stdout.flush()
        except Exception:
            pass
        try:
            _sys.stderr.write(f"\n{INTERRUPTED}\n")
            _sys.stderr.flush()
        except Exception:
            pass
        os._exit(130)

    previous_hook, previous_unraisable = _sys.excepthook, _sys.unraisablehook

    def hook(kind, value, tb):
        if issubclass(kind, KeyboardInterrupt):
            leave()
        previous_hook(kind, value, tb)

    def unraisable(info):                 # e.g. a Ctrl-C inside an atexit callback
        if info.exc_type is not None and issubclass(info.exc_type, KeyboardInterrupt):
            leave()
        previous_unraisable(info)

    _sys.excepthook, _sys.unraisablehook = hook, unraisable

    def ignore_late_interrupts() -> None:       # the last exit step: Python would put back the
        import signal                           # default action (killed, exit -2, not 130)
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    import atexit
    atexit.register(ignore_late_interrupts)    # registered first, so it runs after the others


if _sys.argv[:1] == ["-m"]:        # `python -m metalstm.<module>`, while Python finds the module
    _quiet_interrupts()
