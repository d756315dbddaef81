"""What a seed, an image size and the memory of a command may be: the one definition every script, setting and
library check uses."""
import numbers
import os

from nodules.util.errors import UserError

SEED_LIMIT = 2 ** 32  # NumPy's RandomState takes seeds 0 .. 2**32 - 1
SEED_RANGE = 'a whole number from 0 to 2**32 - 1'


def is_whole(value):
    """An integer (Python or NumPy), but not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_seed(value):
    return is_whole(value) and 0 <= value < SEED_LIMIT


def is_power_of_two(value, minimum=4, maximum=None):
    """Whether `value` is a whole power of two from `minimum` to `maximum` (no upper limit when None): the side of
    every image a progressive GAN or a pyramid of halvings works with."""
    return (is_whole(value) and value >= minimum and (maximum is None or value <= maximum)
            and value & (value - 1) == 0)


FALLBACK_MEMORY_BYTES = 64 << 30  # when the machine does not say how much memory it has
# Where a container or a login session says how much memory this process may use (cgroup v2, then v1).
_CGROUP_LIMITS = ('/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory/memory.limit_in_bytes')


def memory_bytes():
    """The memory this process may use: the machine's physical memory, or less where a container (cgroup) or an
    address-space limit (ulimit -v) allows less; FALLBACK_MEMORY_BYTES when the machine cannot tell."""
    try:
        limits = [os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')]
    except (AttributeError, ValueError, OSError):
        limits = [FALLBACK_MEMORY_BYTES]
    for path in _CGROUP_LIMITS:
        try:
            with open(path) as f:
                limits.append(int(f.read().strip()))  # 'max' (no limit) is not a number
        except (OSError, ValueError):
            pass
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            limits.append(soft)
    except (ImportError, OSError, ValueError):
        pass
    return min(limits)


def gigabytes(count):
    return '%.3g GB' % (count / 1e9)


def check_memory(needed, what):
    """UserError unless `needed` bytes fit in memory_bytes(); `what` says what needs them and which option sets
    its size, e.g. '--batch-size 20000: generating 20000 images at once'."""
    available = memory_bytes()
    if needed > available:
        raise UserError('%s needs about %s of memory, more than the %s available here'
                        % (what, gigabytes(needed), gigabytes(available)))
