"""The one exception type a user can act on: bad input or environment, reported as one line, never a traceback."""
import os
import stat


class UserError(Exception):
    """A problem with the user's input or environment: reported as one line on stderr, never as a traceback."""


def describe_path(path):
    """What is at `path`, for messages about a path of the wrong type: 'a directory', 'a regular file', 'a named
    pipe (FIFO)', 'a device', 'a socket', 'a broken symbolic link' or 'nothing'."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return 'a broken symbolic link' if os.path.islink(path) else 'nothing'
    if stat.S_ISDIR(mode):
        return 'a directory'
    if stat.S_ISREG(mode):
        return 'a regular file'
    if stat.S_ISFIFO(mode):
        return 'a named pipe (FIFO)'
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return 'a device'
    if stat.S_ISSOCK(mode):
        return 'a socket'
    return 'not a regular file'


def check_regular_file(path, kind, missing='no such file'):
    """One clear UserError unless `path` is an existing regular file: a directory, a device such as /dev/zero
    (which never ends) or a pipe (which blocks) is refused before anything reads it.  `kind`
    names what the file should be, e.g. 'model file'."""
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


def check_folder_exists(path, kind, missing='no such folder'):
    """One clear UserError unless `path` is an existing folder: a file, pipe or device there is named as such.
    `kind` names what the folder should be, e.g. 'image folder'."""
    if os.path.isdir(path):
        return
    if not os.path.lexists(path):
        raise UserError('%s: %s' % (path, missing))
    raise UserError('%s: is %s, not a %s' % (path, describe_path(path), kind))
