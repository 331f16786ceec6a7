"""Memory helpers for benchmark subprocesses: prepend :data:`RSS_HELPERS` to the code a fresh
interpreter runs (``python -c``), so each measurement starts from its own clean process.

``rss_now()``: resident bytes now (``/proc/self/status`` VmRSS); ``peak()``: the process's peak
resident bytes so far (VmHWM).  Not ``getrusage``'s ru_maxrss: Linux carries a parent's peak
over fork and exec into the child, so a child started by a large parent would report at least
the parent's peak."""

RSS_HELPERS = r"""
def _status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
def rss_now():
    return _status("VmRSS")
def peak():
    return _status("VmHWM")
"""
