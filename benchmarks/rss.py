"""Memory helpers for benchmark subprocesses: prepend :data:`RSS_HELPERS` to the code a fresh
interpreter runs (``python -c``), so each measurement starts from its own clean process.

``rss_now()``: resident bytes now (``/proc/self/status`` VmRSS); ``peak()``: the process's peak
resident bytes so far (``getrusage`` ru_maxrss, KiB on Linux)."""

RSS_HELPERS = r"""
import resource
def rss_now():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
"""
