"""The one exception type a user can act on: bad input or environment, reported as one line, never a traceback."""


class UserError(Exception):
    """A problem with the user's input or environment: reported as one line on stderr, never as a traceback."""


def check_regular_file(path, kind, missing='no such file'):
    """One clear UserError unless `path` is an existing regular file: a directory, a device such as /dev/zero
    (which never ends) or a pipe (which blocks) is refused before anything reads it.  `kind` names what the file
    should be, e.g. 'model file'."""
    import os
    import stat
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        if not os.path.lexists(path):
            raise UserError('%s: %s' % (path, missing))
        raise UserError('%s: cannot read (%s)' % (path, error.strerror or error))
    if stat.S_ISDIR(mode):
        raise UserError('%s: is a directory, not a %s' % (path, kind))
    if not stat.S_ISREG(mode):
        raise UserError('%s: is not a regular file (a device, pipe or socket), not a %s' % (path, kind))
