"""Progress reports from library code.  Functions that run long take `progress`, a factory called as
progress(total, desc, unit=...) that returns a context manager with update(n); the scripts pass cli.progress (a
bar on the terminal), and without one nothing is shown (quiet)."""


class _Quiet(object):
    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False

    def update(self, n=1):
        pass


def quiet(total=None, desc=None, unit=None, **kwargs):
    """A progress factory that shows nothing: the default of library functions."""
    return _Quiet()
