"""Writing results without ever leaving half-written files, replacing another command's results or deleting a
user's files: the one home of atomic writing for every script and library of this project.

Three shapes of output, one mechanism:
  * write_file_atomic(path, data): one file (a snapshot, a mosaic, config.json), replaced whole.
  * FileSet(paths, overwrite): the files of one command (the PNGs and mosaic of 2-inference.py, say) that land
    together among whatever else their folders hold; identical existing files are left alone, different ones
    stop the set unless `overwrite`.
  * OutputFolder(path, owned, overwrite): a folder whose whole contents one command writes (a dataset).  With
    `overwrite` it replaces only a folder that holds nothing but files `owned` says this tool writes; a folder
    with anything else in it is refused before any work (check_folder).

Staging.  Everything is first written into a hidden staging folder `.LABEL.nodules-PID-XXXXXXXX.tmp` (LABEL
names the target, PID the writing process), whose first file `.nodules-stage` records the folder's own name.
remove_stale_temporaries() removes a folder only when its name has exactly this form, its process no longer runs
and it holds that record (or nothing at all): a user's `.staging-backup/` or `.new.20240101.old/`, or a copied
or renamed staging folder, is never touched.

Commit.  Ctrl-C and SIGTERM are held back while a set lands, and the parent folder of every folder that changes
is locked (flock) so that two commands of this project never commit into the same place at once.  Under the lock
every target is checked again against what the command saw when it started: a file or folder that another
command created or changed meanwhile stops the commit with one line, and is left as it is.  Then, by folder:
  * a folder that did not exist is renamed into place onto a fresh name (renameat2 RENAME_NOREPLACE: the rename
    itself fails if the name was taken meanwhile): a hard kill leaves no folder or the complete one;
  * a folder replaced whole (`overwrite`, and it holds only files this command writes; not the working
    directory, a mount point or a symbolic link) is swapped with the new one in one atomic exchange of the two
    names (RENAME_EXCHANGE; where the file system lacks it, two renames, see docs/outputs.md): a hard kill
    leaves the old folder or the complete new one, and the old one is removed afterwards;
  * files landing in a folder that also holds other things (or the working directory, a mount point, an empty
    folder the user made) are renamed in one by one, the command's files in their order, new names with
    RENAME_NOREPLACE.  Ctrl-C cannot stop this half-way, but a hard kill (kill -9, power loss) during these
    renames leaves the first files of the set new and the others as they were (old, or absent); the old
    versions of files it had replaced are removed by the next command that writes there.
docs/outputs.md says exactly what each kind of interruption can leave.
"""
import contextlib
import ctypes
import errno
import fcntl
import io
import json
import os
import re
import shutil
import signal
import stat
import threading
import time

import numpy as np
from PIL import Image

from nodules.util.errors import UserError, describe_path

STAGE_MARKER = '.nodules-stage'
_STAGE_NAME = re.compile(r'^\.(?P<label>.*)\.nodules-(?P<pid>\d+)-[0-9a-f]{8}\.tmp$')
_NEW, _OLD = 'new', 'old'   # inside a staging folder: what lands, and what it replaced
LOCK_TIMEOUT_SECONDS = 60   # how long a commit waits for another command's commit into the same place


# ---------------------------------------------------------------------------------------------------------------
# Output folders


def _folder_problem(path):
    """Why `path` can never become a writable folder (a sentence), or None when it can."""
    if os.path.exists(path) and not os.path.isdir(path):
        return 'output directory is an existing %s' % (
            'file' if os.path.isfile(path) else '%s, not a directory' % describe_path(path)[2:])
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return 'cannot create output directory under %s, which is %s' % (existing, describe_path(existing))
    if not os.access(existing, os.W_OK | os.X_OK):
        return 'output directory is not writable'
    return None


def check_outdir(path):
    """Fail early, before any work, when `path` can never become a writable output directory."""
    problem = _folder_problem(path)
    if problem:
        raise UserError('%s: %s' % (path, problem))


def prepare_outdir(path):
    """Create `path` (and parents) if needed; refuse a path that is a file or cannot be written."""
    check_outdir(path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise UserError('%s: cannot create output directory (%s)' % (path, error.strerror or error))
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError('%s: output directory is not writable' % path)
    return path


def _make_dirs(path):
    """os.makedirs(path); returns the folders it created, deepest first (so they can be removed again)."""
    missing = []
    current = os.path.abspath(path)
    while not os.path.isdir(current):
        missing.append(current)
        current = os.path.dirname(current)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise UserError('%s: cannot create output directory (%s)' % (path, error.strerror or error))
    return missing


def _real(path):
    return os.path.normcase(os.path.realpath(path))


def check_apart(out_path, inputs, what='OUT_DIR'):
    """Refuse an output that is one of the command's inputs or a folder holding one (replacing it would delete
    the input).  `inputs` is [(how the command line names it, path)], e.g. [('IMAGE_DIR', 'images/')]."""
    out = _real(out_path)
    for name, path in inputs:
        source = _real(path)
        if source == out:
            raise UserError('%s: %s is also the input %s (%s); nothing was written' % (out_path, what, name, path))
        if source.startswith(out.rstrip(os.sep) + os.sep):
            raise UserError('%s: %s contains the input %s (%s); nothing was written' % (out_path, what, name, path))


# ---------------------------------------------------------------------------------------------------------------
# Staging folders, and what killed processes leave behind


def _process_alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except OSError as error:
        return error.errno == errno.EPERM  # exists, but belongs to someone else
    return True


def _label(name):
    """A short, harmless rendering of a target's name for the name of its staging folder."""
    return re.sub(r'[^A-Za-z0-9_.+-]', '_', name)[:64] or 'output'


def _make_stage(directory, label, swap_of=None):
    """A new, marked staging folder in `directory` holding an empty `new/` folder; returns its path.

    `swap_of` names the folder of `directory` whose old contents this stage may come to hold (see _swap).
    The folders get the permissions of any folder the user makes (0777 minus the umask): `new/` may be renamed
    into the finished output and keep its mode.
    """
    for _ in range(100):
        name = '.%s.nodules-%d-%08x.tmp' % (_label(label), os.getpid(), int.from_bytes(os.urandom(4), 'big'))
        path = os.path.join(directory, name)
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        record = json.dumps({'made_by': 'nodules', 'stage': name, 'swap_of': swap_of})
        assert record.encode('utf-8').startswith(_record_start(name))  # what _partial_record recognises
        fd = os.open(os.path.join(path, STAGE_MARKER), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            f.write(record + '\n')
        os.mkdir(os.path.join(path, _NEW))
        return path
    raise FileExistsError(errno.EEXIST, 'no unused staging folder name', directory)


def _remove_stage(stage):
    """Remove a staging folder, its record last: a removal cut short by a hard kill leaves it still marked (and
    so still removable by the next command)."""
    for name in os.listdir(stage):
        path = os.path.join(stage, name)
        if name == STAGE_MARKER:
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    if os.path.lexists(os.path.join(stage, STAGE_MARKER)):
        os.remove(os.path.join(stage, STAGE_MARKER))
    os.rmdir(stage)


def _stage_record(path, name):
    """The record of a staging folder this module made (a dict), or None when it cannot be shown to be one."""
    marker = os.path.join(path, STAGE_MARKER)
    try:
        info = os.lstat(marker)
        if not stat.S_ISREG(info.st_mode) or info.st_size > 65536:
            return None
        with open(marker, encoding='utf-8') as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get('made_by') != 'nodules' or record.get('stage') != name:
        return None
    return record


def _partial_record(path, name):
    """Whether the staging folder holds nothing but a record cut short: a process killed while marking the folder
    it had just made (the record's first bytes, or none, name this very folder)."""
    if os.listdir(path) != [STAGE_MARKER]:
        return False
    marker = os.path.join(path, STAGE_MARKER)
    info = os.lstat(marker)
    if not stat.S_ISREG(info.st_mode) or info.st_size > 65536:
        return False
    with open(marker, 'rb') as f:
        written = f.read()
    start = _record_start(name)
    return start.startswith(written) or written.startswith(start)


def _record_start(name):
    """The first bytes of the record _make_stage writes into the staging folder `name`."""
    return ('{"made_by": "nodules", "stage": %s' % json.dumps(name)).encode('utf-8')


def _stage_owner(directory, name):
    """The process id of a staging folder this module made, or None for any other entry (a user's)."""
    match = _STAGE_NAME.match(name)
    path = os.path.join(directory, name)
    if not match or os.path.islink(path) or not os.path.isdir(path):
        return None
    if _stage_record(path, name) is None and os.listdir(path) and not _partial_record(path, name):
        return None
    return int(match.group('pid'))


def remove_stale_temporaries(directory):
    """Remove the staging folders in `directory` that this module made for processes that no longer run.

    Returns the names removed.  Only exact staging names holding their own record (or nothing: a process killed
    between making the folder and marking it) are removed; those of running processes (this one too) stay.
    A swap that a hard kill interrupted between its two renames is completed backwards first: the old folder
    goes back to its name.
    """
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        try:
            owner = _stage_owner(directory, name)
            if owner is None or _process_alive(owner):
                continue
            path = os.path.join(directory, name)
            record = _stage_record(path, name)
            if record is None:  # empty, or holding a record cut short
                if os.path.lexists(os.path.join(path, STAGE_MARKER)):
                    os.remove(os.path.join(path, STAGE_MARKER))
                os.rmdir(path)
            else:
                _put_back(directory, path, record)
                _remove_stage(path)
            removed.append(name)
        except OSError:
            pass  # someone else removed it first, or we may not: not our problem to report
    return removed


def _put_back(directory, stage, record):
    """After a hard kill between the two renames of an emulated swap, the old folder sits in the stage and its
    name is free: give it its name back."""
    target = record.get('swap_of')
    if not isinstance(target, str) or os.path.basename(target) != target or target in ('', '.', '..'):
        return
    old, path = os.path.join(stage, _OLD), os.path.join(directory, target)
    if os.path.isdir(old) and not os.path.lexists(path):
        _rename_noreplace(old, path)


# ---------------------------------------------------------------------------------------------------------------
# Renames that check their target atomically, and the lock between commits


_AT_FDCWD = -100
_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2


def _find_renameat2():
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_renameat2 = _find_renameat2()


def _rename2(source, target, flags):
    """renameat2(2): True when done, False when the system or file system does not offer `flags`."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), flags) == 0:
        return True
    number = ctypes.get_errno()
    if number in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(number, os.strerror(number), target)


def _rename_noreplace(source, target):
    """Rename `source` to `target`, raising FileExistsError if `target` exists (atomically where the system can;
    elsewhere a look first, which the commit lock makes safe against this project's own commands)."""
    if not _rename2(source, target, _RENAME_NOREPLACE):
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), target)
        os.rename(source, target)


def _swap(new, target, old):
    """Put the folder `new` at `target` and the folder that was there at `old` (`old` must not exist).

    One atomic exchange of the two names where the file system offers it; elsewhere `target` -> `old`, then
    `new` -> `target` (a hard kill between the two leaves `target` free and the old folder at `old`, which
    remove_stale_temporaries puts back).
    """
    if _rename2(new, target, _RENAME_EXCHANGE):
        os.rename(new, old)   # `new` now names the old folder; inside the stage, where nobody looks
        return
    os.rename(target, old)
    try:
        os.rename(new, target)
    except OSError:
        os.rename(old, target)
        raise


@contextlib.contextmanager
def _locked(folders, timeout=None):
    """Hold an exclusive flock on each of `folders` (in sorted order, so two commits never wait on each other).

    The lock is advisory: it orders the commits of this project's commands (and a kill releases it).  A folder
    that cannot be opened or locked (no read permission, a file system without locks) is passed over: the
    renames still check their targets themselves.
    """
    timeout = LOCK_TIMEOUT_SECONDS if timeout is None else timeout
    descriptors = []
    try:
        for folder in sorted(set(folders)):
            try:
                fd = os.open(folder, os.O_RDONLY)
            except OSError:
                continue
            descriptors.append(fd)
            deadline = time.time() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as error:
                    if error.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                        break
                    if time.time() > deadline:
                        raise UserError('%s: another command has been writing here for %g s; nothing was written'
                                        % (folder, timeout))
                    time.sleep(0.02)
        yield
    finally:
        for fd in descriptors:
            os.close(fd)


def _entry_state(path):
    """What identifies a file or folder entry at `path` (None when there is none): a replacement or an edit
    changes it."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    return (info.st_dev, info.st_ino, info.st_mode, info.st_size, info.st_mtime_ns)


def _entries(folder, skip=()):
    """{name: state} of everything in `folder` but the names in `skip`."""
    return dict((name, _entry_state(os.path.join(folder, name))) for name in os.listdir(folder) if name not in skip)


# ---------------------------------------------------------------------------------------------------------------
# Interrupts


@contextlib.contextmanager
def interrupts_deferred():
    """Hold SIGINT and SIGTERM back while the block runs, then act on the first one that arrived.

    Used around the renames that commit a set of files, so that Ctrl-C or a polite kill cannot stop them
    half-way.  Outside the main thread signal handlers cannot be changed, and the block runs unprotected.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.getsignal(signum)
        signal.signal(signum, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        if received:
            # Delivered now, to whatever handled it before.  To this thread, not the process: a process signal
            # may land on one of TensorFlow's threads and reach Python only after the block has been left.
            signal.pthread_kill(threading.get_ident(), received[0])


# ---------------------------------------------------------------------------------------------------------------
# One folder of a commit


def _busy(folder):
    """Why the folder itself must stay where it is (it cannot be swapped for a new one), or None."""
    if os.path.islink(folder):
        return 'a symbolic link'
    if os.path.ismount(folder):
        return 'a mount point'
    here, real = _real(os.getcwd()), _real(folder)
    if here == real or here.startswith(real.rstrip(os.sep) + os.sep):
        return 'the working directory'
    return None


class _Landing(object):
    """What one command lands in one folder, and how (see the module's docstring):

      'new'    the folder does not exist: it is staged whole beside its place and renamed onto the free name;
      'swap'   `overwrite`, and it holds only names `owned` accepts: staged whole beside it and exchanged with it;
      'files'  anything else: the files are staged inside the folder and renamed in one by one.

    `owned(name)` says which existing names this command may replace; with `whole` (a dataset) the owned files
    the command does not write again are removed, so the folder ends up holding exactly the new set.
    """

    def __init__(self, folder, owned, overwrite=False, whole=False, may_swap=True):
        self.folder = os.path.abspath(folder)
        self.owned, self.overwrite, self.whole, self.may_swap = owned, overwrite, whole, may_swap
        self.mode = self.stage = None
        self.created = []     # folders made for this landing, deepest first
        self.before = None    # the folder's entries as first seen ('swap', whole 'files')
        self.states = {}      # name -> state of the target when the command looked at it ('files')
        self.order = []       # staged names, in the order they were written
        self._done = []       # what the commit changed, for undoing it

    def foreign(self):
        """The folder's entries that this command may not replace: all but regular files `owned` accepts (and
        staging folders of ended processes, which are removed anyway)."""
        return sorted(name for name in os.listdir(self.folder)
                      if not (self.owned(name) and os.path.isfile(os.path.join(self.folder, name))
                              and not os.path.islink(os.path.join(self.folder, name)))
                      and not _is_stale_stage(self.folder, name))

    def open(self):
        """Choose the mode, make the staging folder; returns self."""
        parent = os.path.dirname(self.folder)
        if not os.path.isdir(self.folder):
            self.mode = 'new'
            self.created = _make_dirs(parent)
            where, swap_of = parent, None
        else:
            self.mode = 'files'
            if self.overwrite and self.may_swap and not _busy(self.folder) and os.access(parent, os.W_OK | os.X_OK):
                remove_stale_temporaries(self.folder)
                if os.listdir(self.folder) and not self.foreign():
                    self.mode = 'swap'
            where, swap_of = (parent, os.path.basename(self.folder)) if self.mode == 'swap' else (self.folder, None)
        remove_stale_temporaries(where)
        try:
            self.stage = _make_stage(where, os.path.basename(self.folder) or 'output', swap_of)
        except OSError as error:
            self.abandon()
            raise UserError('%s: cannot write here (%s)' % (where, error.strerror or error))
        if self.mode == 'swap':
            os.chmod(self.staged(''), stat.S_IMODE(os.stat(self.folder).st_mode))
            self.before = (_entry_state(self.folder), _entries(self.folder))
        elif self.mode == 'files' and self.whole:
            self.before = _entries(self.folder, skip=(os.path.basename(self.stage),))
        return self

    def staged(self, name):
        """Where the file `name` of this folder is written before the commit."""
        return os.path.join(self.stage, _NEW, name)

    def look(self, name):
        """Note the state of the target `name` as the command sees it now (compared again at the commit)."""
        self.states[name] = _entry_state(os.path.join(self.folder, name))

    def add(self, name):
        """The file `name` is staged (in the order the command writes its files)."""
        if name not in self.states:
            self.look(name)
        self.order.append(name)

    def keep(self, name):
        """The existing file `name` is already right: kept (in a swap, hard-linked into the new folder)."""
        if self.mode == 'swap':
            source = os.path.join(self.folder, name)
            try:
                os.link(source, self.staged(name))
            except OSError:
                shutil.copy2(source, self.staged(name))

    # The commit, with the folder's parent locked and interrupts deferred by the caller.

    def commit(self):
        getattr(self, '_commit_' + self.mode)()

    def _changed(self, what=None):
        raise UserError('%s: was %s by another command while this one ran; it is left as it is and nothing was '
                        'written' % (what or self.folder, 'created or changed' if what else 'changed'))

    def _commit_new(self):
        try:
            _rename_noreplace(self.staged(''), self.folder)
        except FileExistsError:
            raise UserError('%s: was created by another command while this one ran; it is left as it is and '
                            'nothing was written' % self.folder)
        self._done.append(lambda: os.rename(self.folder, self.staged('')))

    def _commit_swap(self):
        old = os.path.join(self.stage, _OLD)
        if (_entry_state(self.folder), _entries(self.folder)) != self.before:
            self._changed()
        _swap(self.staged(''), self.folder, old)
        self._done.append(lambda: _swap(old, self.folder, self.staged('')))
        if _entries(old) != self.before[1]:  # something came in between the check and the swap: undo at once
            self.undo()
            self._changed()

    def _commit_files(self):
        stage_name = os.path.basename(self.stage)
        if self.whole and _entries(self.folder, skip=(stage_name,)) != self.before:
            self._changed()
        for name, state in sorted(self.states.items()):
            if _entry_state(os.path.join(self.folder, name)) != state:
                self._changed(os.path.join(self.folder, name))
        os.mkdir(os.path.join(self.stage, _OLD))
        retired = [name for name in sorted(self.before or ()) if name not in self.order and self.owned(name)]
        for name in self.order:
            self._land(name)
        for name in retired:  # a dataset's files the new one does not have (a higher resolution, labels)
            target, backup = os.path.join(self.folder, name), os.path.join(self.stage, _OLD, name)
            os.rename(target, backup)
            self._done.append(lambda target=target, backup=backup: os.rename(backup, target))

    def _land(self, name):
        target, new = os.path.join(self.folder, name), self.staged(name)
        if self.states.get(name) is None:
            try:
                _rename_noreplace(new, target)
            except FileExistsError:
                self._changed(target)
            self._done.append(lambda: os.remove(target))
            return
        backup = os.path.join(self.stage, _OLD, name)
        try:
            os.link(target, backup)  # the old file stays reachable until the whole set has landed
        except OSError:
            backup = None  # a file system without hard links: no way back for this one
        os.replace(new, target)
        self._done.append(lambda: os.replace(backup, target) if backup else os.remove(target))

    def undo(self):
        """Take back what commit() did, newest first, as far as possible."""
        while self._done:
            try:
                self._done.pop()()
            except OSError:
                pass

    def finish(self):
        """After a commit: the staging folder and whatever it holds (old versions) go."""
        if self.stage:
            try:
                _remove_stage(self.stage)
            except OSError:
                pass  # left marked: the next command that writes here removes it
        self.stage = None

    def abandon(self):
        self.finish()
        for folder in self.created:  # deepest first; only if still empty
            try:
                os.rmdir(folder)
            except OSError:
                break
        self.created = []


def _is_stale_stage(directory, name):
    owner = _stage_owner(directory, name)
    return owner is not None and not _process_alive(owner)


def _commit(landings):
    """Lock the parents of the landings' folders, hold interrupts back and commit each; on any failure undo
    every landing (so a set spanning several folders lands whole or not at all)."""
    with interrupts_deferred(), _locked(os.path.dirname(landing.folder) for landing in landings):
        done = []
        try:
            for landing in landings:
                done.append(landing)
                landing.commit()
        except BaseException as error:
            for landing in reversed(done):
                landing.undo()
            if isinstance(error, OSError):
                raise UserError('%s: cannot be written (%s); nothing was changed'
                                % (getattr(error, 'filename', None) or done[-1].folder, error.strerror or error))
            raise


# ---------------------------------------------------------------------------------------------------------------
# Single files


def write_file_atomic(path, data):
    """Write bytes to `path` through a staging folder beside it and one rename (an existing file is replaced).
    A failure (a full disk) is one UserError naming the file, and leaves the old file as it was."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        stage = _make_stage(directory, os.path.basename(path))
    except OSError as error:
        raise UserError('%s: cannot be written (%s)' % (path, error.strerror or error))
    try:
        staged = os.path.join(stage, _NEW, os.path.basename(path))
        with open(staged, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(staged, path)
    except OSError as error:  # a full disk, say: one line, and the old file (if any) stays as it was
        raise UserError('%s: cannot be written (%s); %s' % (path, error.strerror or error, 'the old file is unchanged'
                                                          if os.path.exists(path) else 'nothing was written'))
    finally:
        try:
            _remove_stage(stage)
        except OSError:
            pass  # left marked: the next command that writes here removes it


# ---------------------------------------------------------------------------------------------------------------
# Sets of files


def _target_key(path):
    return os.path.normcase(os.path.abspath(path))


def check_targets(paths):
    """Refuse, before any work, a set of output files that can never be written as a whole.

    Each path must name a file (not end in '/'), not be an existing folder or special file, not be given twice,
    and lie in a folder that exists or can be created and is writable.  Contents are not looked at here.
    """
    seen = {}
    folders = set()
    for path in paths:
        path = str(path)
        name = os.path.basename(path)
        if path.endswith(os.sep) or (os.altsep and path.endswith(os.altsep)) or name in ('', '.', '..'):
            raise UserError('%s: names a folder, not a file' % path)
        key = _target_key(path)
        if key in seen:
            raise UserError('%s: is named twice among the files of this command (also as %s)' % (path, seen[key]))
        seen[key] = path
        if os.path.lexists(path) and not os.path.isfile(path):
            raise UserError('%s: exists and is %s, not a file; nothing was written' % (path, describe_path(path)))
        folder = os.path.dirname(path) or '.'
        if folder not in folders:
            problem = _folder_problem(folder)
            if problem:
                raise UserError('%s: cannot be written, its folder %s %s' % (path, folder, problem))
            folders.add(folder)


class FileSet(object):
    """The files of one command, moved into place together or not at all.

        with FileSet(paths, overwrite) as files:
            for path in paths:
                files.write(path, data)

    The paths are checked when the set is made (check_targets); each file is compared with what already exists
    when it is written (different contents stop the set unless `overwrite`) and staged; leaving the block
    without an error commits them all (see the module's docstring).  Folders the set had to create are removed
    again when it is abandoned.
    """

    def __init__(self, paths, overwrite=False):
        paths = [str(path) for path in paths]
        check_targets(paths)
        self.paths = paths
        self.overwrite = overwrite
        self._written = set()    # target keys written (staged, or already right)
        self._landings = {}      # folder -> its _Landing
        self._entered = False

    def __enter__(self):
        self._entered = True
        names = {}
        for path in self.paths:
            names.setdefault(os.path.dirname(os.path.abspath(path)), set()).add(os.path.basename(path))
        try:
            for folder in sorted(names, key=len):  # parents first: a landing may create a deeper one's parent
                inner = any(other.startswith(folder.rstrip(os.sep) + os.sep) for other in names)
                self._landings[folder] = _Landing(folder, names[folder].__contains__, self.overwrite,
                                                  may_swap=not inner).open()
        except BaseException:
            self._abandon()
            raise
        return self

    def write(self, path, data):
        """Stage `data` for `path` (one of the set's paths); refuses a different existing file (no overwrite)."""
        assert self._entered, 'FileSet.write outside its with-block'
        path = str(path)
        key = _target_key(path)
        if key in self._written:
            raise ValueError('%s written twice' % path)
        landing, name = self._landings[os.path.dirname(os.path.abspath(path))], os.path.basename(path)
        landing.look(name)
        if os.path.isfile(path):
            with open(path, 'rb') as existing:
                same = existing.read() == data
            if same:
                landing.keep(name)
                self._written.add(key)
                return
            if not self.overwrite:
                raise UserError('%s: already exists with different contents; nothing was written '
                                '(use --overwrite, or other names)' % path)
        try:
            with open(landing.staged(name), 'wb') as f:
                f.write(data)
        except OSError as error:  # a full disk, say: one line, and the set is abandoned
            raise UserError('%s: cannot be written (%s); nothing was written' % (path, error.strerror or error))
        landing.add(name)
        self._written.add(key)

    def write_png(self, path, image):
        self.write(path, png_bytes(image))

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self._abandon()
            return False
        try:
            missing = [path for path in self.paths if _target_key(path) not in self._written]
            if missing:
                raise ValueError('FileSet closed before %s was written' % missing[0])
            _commit([landing for landing in self._landings.values() if landing.order])
        except BaseException:
            self._abandon()
            raise
        for landing in self._landings.values():
            landing.finish()
        return False

    def _abandon(self):
        for landing in sorted(self._landings.values(), key=lambda landing: -len(landing.folder)):
            landing.abandon()


# ---------------------------------------------------------------------------------------------------------------
# Folders written whole


def _describe_foreign(names, limit=3):
    shown = ', '.join(names[:limit])
    return shown + (' and %d more' % (len(names) - limit) if len(names) > limit else '')


def check_folder(path, owned, overwrite=False, kind='folder', inputs=(), what='OUT_DIR'):
    """Refuse, before any work, a folder that OutputFolder(path, owned, overwrite) may not write.

    Refused: anything but a folder at `path`; a folder that is, or holds, one of the command's `inputs` (see
    check_apart); a non-empty folder without `overwrite`; and, even with it, a folder holding anything that
    `owned` does not accept (a dataset folder that also holds src/ or .git/).  `kind` names what the folder
    holds in messages ('dataset').
    """
    check_apart(path, inputs, what)
    check_outdir(path)
    if not os.path.isdir(path):
        return
    landing = _Landing(path, owned)
    foreign = landing.foreign()
    writers = [_stage_owner(path, name) for name in foreign if _stage_owner(path, name) is not None]
    if writers:
        raise UserError('%s: another command (process %d) is writing into it; nothing was written'
                        % (path, writers[0]))
    if foreign:
        raise UserError('%s: holds %s, which %s not part of a %s; --overwrite replaces only a %s this tool wrote '
                        '(nothing was written)' % (path, _describe_foreign(foreign),
                                                   'is' if len(foreign) == 1 else 'are', kind, kind))
    if not overwrite and [name for name in os.listdir(path) if not _is_stale_stage(path, name)]:
        raise UserError('%s: already holds a %s; nothing was written (use --overwrite to replace it)' % (path, kind))


class OutputFolder(object):
    """A folder whose whole contents one command writes, landing at once (see the module's docstring).

        with OutputFolder(out_dir, owned, overwrite, kind='dataset') as folder:
            write each file to folder.path(name)

    `owned(name)` recognises the files this tool writes in such a folder; an existing folder holding anything
    else is refused (check_folder), also with `overwrite`.  Interrupted or failing, nothing of the new folder
    is left; committed, the folder holds exactly the files written through path().
    """

    def __init__(self, path, owned, overwrite=False, kind='folder'):
        check_folder(path, owned, overwrite, kind)
        self._landing = _Landing(path, owned, overwrite, whole=True)

    def __enter__(self):
        self._landing.open()
        return self

    def path(self, name):
        """Where to write the file `name` of the folder."""
        self._landing.add(name)
        return self._landing.staged(name)

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self._landing.abandon()
            return False
        try:
            _commit([self._landing])
        except BaseException:
            self._landing.abandon()
            raise
        self._landing.finish()
        return False


# ---------------------------------------------------------------------------------------------------------------
# Images


def png_bytes(image):
    """Encode a uint8 image ([H, W] grayscale, or [H, W, 3] RGB) as PNG."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError('png_bytes expects uint8, got %s' % image.dtype)
    buffer = io.BytesIO()
    Image.fromarray(image, 'L' if image.ndim == 2 else 'RGB').save(buffer, format='PNG')
    return buffer.getvalue()


def float_to_uint8(images, drange=(-1.0, 1.0)):
    """Map network output (nominal range `drange`) to 8-bit grey levels: clip(rint(scaled), 0, 255)."""
    lo, hi = drange
    with np.errstate(over='ignore', invalid='ignore'):  # infinite values clip to 0 or 255 like any other
        scaled = (np.asarray(images, dtype=np.float32) - lo) * (255.0 / (hi - lo))
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def image_grid(images, columns=None, padding=0):
    """Tile uint8 images [N, H, W] or [N, H, W, C] into one mosaic, row by row."""
    images = np.asarray(images)
    count, height, width = images.shape[:3]
    columns = columns or int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / float(columns)))
    grid = np.zeros((rows * (height + padding) - padding, columns * (width + padding) - padding)
                    + images.shape[3:], dtype=images.dtype)
    for index, image in enumerate(images):
        row, col = divmod(index, columns)
        top, left = row * (height + padding), col * (width + padding)
        grid[top:top + height, left:left + width] = image
    return grid


def mosaic_png(images, columns=None, padding=0):
    """PNG bytes of the mosaic of uint8 images [N, H, W], [N, H, W, 1] or [N, H, W, 3] (see image_grid)."""
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    return png_bytes(image_grid(images, columns=columns, padding=padding))


def write_mosaic(path, images, columns=None, padding=0):
    """Write the mosaic of `images` (see mosaic_png) to `path` atomically."""
    write_file_atomic(path, mosaic_png(images, columns=columns, padding=padding))


GRID_PADDING = 2  # pixels between the tiles of a --grid mosaic


def png_set_paths(outdir, name_pattern, count, grid=None, numbers=None):
    """The paths write_pngs() will write, checked as a set (see check_targets): (image paths, mosaic path).

    Image i is named `name_pattern % numbers[i]` (default: `% i`).  `grid` is a file name inside `outdir` or a
    path.  Call it before long work to fail early.
    """
    numbers = range(count) if numbers is None else numbers
    if len(numbers) != count:
        raise ValueError('%d numbers for %d images' % (len(numbers), count))
    paths = [os.path.join(outdir, name_pattern % number) for number in numbers]
    grid_path = None
    if grid:
        grid = str(grid)
        grid_path = grid if os.path.dirname(grid) else os.path.join(outdir, grid)
        keys = set(_target_key(path) for path in paths)
        if _target_key(grid_path) in keys:
            raise UserError('%s: --grid names one of the images this command writes; choose another name'
                            % grid_path)
    check_outdir(outdir)
    check_targets(paths + ([grid_path] if grid_path else []))
    return paths, grid_path


def write_pngs(images, outdir, name_pattern, grid=None, overwrite=False, grid_columns=None, numbers=None):
    """Write uint8 images [N, H, W] (or [N, H, W, 3]) as `outdir/name_pattern % i` (or `% numbers[i]`), plus an
    optional mosaic.

    All files land together or none do (see FileSet).  `grid` is a file name inside `outdir` or a path.
    Returns the paths written (the mosaic last).
    """
    paths, grid_path = png_set_paths(outdir, name_pattern, len(images), grid, numbers)
    targets = paths + ([grid_path] if grid_path else [])
    with FileSet(targets, overwrite) as files:
        for path, image in zip(paths, images):
            files.write_png(path, image)
        if grid_path:
            files.write(grid_path, mosaic_png(images, columns=grid_columns, padding=GRID_PADDING))
    return targets
