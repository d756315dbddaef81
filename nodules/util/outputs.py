"""Writing results without ever leaving half-written files or silently replacing someone's results.

A single file goes to a temporary name beside its target and is renamed into place (write_file_atomic).

The files of one command (the PNGs and the mosaic of 2-inference.py, say) form a FileSet:
  1. every target is checked before anything is written (a name that is a folder, lies under a file, is given
     twice, or sits in a folder that cannot be written stops the command at once);
  2. the files are staged in hidden folders beside their targets, and a target that already exists with other
     contents stops the whole set unless the user asked to overwrite (identical files are left alone, so
     re-running a command is harmless);
  3. only then are they renamed into place, with Ctrl-C and SIGTERM held back meanwhile, so an interrupt leaves
     either the old files or the complete new set, never a mixture.

Temporary names carry the id of the process that made them: whatever a killed process (kill -9) left behind
is removed by the next command that writes into the same folder (remove_stale_temporaries).
"""
import contextlib
import errno
import io
import os
import re
import shutil
import signal
import tempfile
import threading
import time

import numpy as np
from PIL import Image

from nodules.util.errors import UserError

STAGING_PREFIX = '.staging-'
# Staging folders of earlier versions carry no process id; they are removed once they are this old.
UNTAGGED_STAGING_MAX_AGE_SECONDS = 3600
_TAGGED_STAGING = re.compile(r'^\.staging-(\d+)-[A-Za-z0-9_]+$')
_UNTAGGED_STAGING = re.compile(r'^\.staging-[A-Za-z0-9_]{8}$')
_TAGGED_TEMPORARY_FILE = re.compile(r'^\..+\.(\d+)-[A-Za-z0-9_]+\.tmp$')


# ---------------------------------------------------------------------------------------------------------------
# Output folders


def _folder_problem(path):
    """Why `path` can never become a writable folder (a sentence), or None when it can."""
    if os.path.exists(path) and not os.path.isdir(path):
        return 'output directory is an existing file'
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return 'cannot create output directory under the file %s' % existing
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


# ---------------------------------------------------------------------------------------------------------------
# What killed processes leave behind


def _process_alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except OSError as error:
        return error.errno == errno.EPERM  # exists, but belongs to someone else
    return True


def _temporary_owner(name):
    """The process id in a temporary name made by this module; 0 for an old untagged staging folder;
    None for any other name."""
    match = _TAGGED_STAGING.match(name) or _TAGGED_TEMPORARY_FILE.match(name)
    if match:
        return int(match.group(1))
    return 0 if _UNTAGGED_STAGING.match(name) else None


def remove_stale_temporaries(directory):
    """Remove the staging folders and temporary files in `directory` whose writing process no longer runs.

    Returns the names removed.  Names of running processes (including this one) are left alone.
    """
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        owner = _temporary_owner(name)
        if owner is None:
            continue
        path = os.path.join(directory, name)
        try:
            if owner:
                stale = not _process_alive(owner)
            else:
                stale = os.path.isdir(path) and (
                    time.time() - os.lstat(path).st_mtime > UNTAGGED_STAGING_MAX_AGE_SECONDS)
            if not stale:
                continue
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
            removed.append(name)
        except OSError:
            pass  # someone else removed it first, or we may not: not our problem to report
    return removed


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
            os.kill(os.getpid(), received[0])  # delivered now, to whatever handled it before


# ---------------------------------------------------------------------------------------------------------------
# Single files


def _temporary_prefix(name):
    return '.%s.%d-' % (name, os.getpid())


def write_file_atomic(path, data):
    """Write bytes to `path` through a temporary file in the same directory and an atomic rename.

    The temporary name is `.NAME.PID-XXXXXXXX.tmp`; remove_stale_temporaries() recognises it.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(os.path.basename(path)), suffix='.tmp', dir=directory)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files private; results should be as readable as any file
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
        if os.path.isdir(path):
            raise UserError('%s: exists and is a directory; nothing was written' % path)
        if os.path.lexists(path) and not os.path.isfile(path):
            raise UserError('%s: exists and is not a regular file; nothing was written' % path)
        folder = os.path.dirname(path) or '.'
        if folder not in folders:
            problem = _folder_problem(folder)
            if problem:
                raise UserError('%s: cannot be written, its folder %s: %s' % (path, folder, problem))
            folders.add(folder)


class FileSet(object):
    """The files of one command, moved into place together or not at all.

        with FileSet(paths, overwrite) as files:
            for path in paths:
                files.write(path, data)

    The paths are checked when the set is made (check_targets); each file is compared with what already exists
    when it is written (different contents stop the set unless `overwrite`) and staged; leaving the block
    without an error commits them all, with interrupts deferred.  Folders the set had to create are removed
    again when it is abandoned.
    """

    def __init__(self, paths, overwrite=False):
        paths = [str(path) for path in paths]
        check_targets(paths)
        self.paths = paths
        self.overwrite = overwrite
        self._staged = {}        # target key -> staged file path, or None for a file that is already right
        self._stages = {}        # folder -> its staging folder
        self._created = []       # folders made for this set
        self._entered = False

    def __enter__(self):
        self._entered = True
        try:
            for path in self.paths:
                folder = os.path.dirname(os.path.abspath(path))
                if folder in self._stages:
                    continue
                self._created.extend(_make_dirs(folder))
                remove_stale_temporaries(folder)
                try:
                    self._stages[folder] = tempfile.mkdtemp(prefix='%s%d-' % (STAGING_PREFIX, os.getpid()),
                                                            dir=folder)
                except OSError as error:
                    raise UserError('%s: cannot write here (%s)' % (folder, error.strerror or error))
        except BaseException:
            self._abandon()
            raise
        return self

    def write(self, path, data):
        """Stage `data` for `path` (one of the set's paths); refuses a different existing file (no overwrite)."""
        assert self._entered, 'FileSet.write outside its with-block'
        path = str(path)
        key = _target_key(path)
        if key in self._staged:
            raise ValueError('%s written twice' % path)
        if os.path.isfile(path):
            with open(path, 'rb') as existing:
                same = existing.read() == data
            if same:
                self._staged[key] = None
                return
            if not self.overwrite:
                raise UserError('%s: already exists with different contents; nothing was written '
                                '(use --overwrite, or other names)' % path)
        staged = os.path.join(self._stages[os.path.dirname(os.path.abspath(path))], os.path.basename(path))
        with open(staged, 'wb') as f:
            f.write(data)
        self._staged[key] = staged

    def write_png(self, path, image):
        self.write(path, png_bytes(image))

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                missing = [path for path in self.paths if _target_key(path) not in self._staged]
                if missing:
                    raise ValueError('FileSet closed before %s was written' % missing[0])
                with interrupts_deferred():
                    self._commit()
        except BaseException:
            self._abandon()
            raise
        if exc_type is not None:
            self._abandon()
        else:
            self._remove_stages()
        return False

    def _commit(self):
        """Rename every staged file into place; on a failure put back what was already replaced."""
        for path in self.paths:  # checked again: the world may have changed while the files were made
            if os.path.isdir(path):
                raise UserError('%s: exists and is a directory; nothing was written' % path)
        done = []  # (target, backup or None)
        try:
            for path in self.paths:
                staged = self._staged[_target_key(path)]
                if staged is None:
                    continue
                backup = None
                if os.path.lexists(path):  # --overwrite: keep a hard link to the old file until the end
                    backup = staged + '.old'
                    try:
                        os.link(path, backup)
                    except OSError:
                        backup = None  # a file system without hard links: no way back for this one
                os.replace(staged, path)
                done.append((path, backup))
        except OSError as error:
            for path, backup in reversed(done):
                try:
                    if backup:
                        os.replace(backup, path)
                    else:
                        os.remove(path)
                except OSError:
                    pass
            raise UserError('%s: cannot be written (%s); nothing was changed'
                            % (getattr(error, 'filename', None) or path, error.strerror or error))

    def _remove_stages(self):
        for stage in self._stages.values():
            shutil.rmtree(stage, ignore_errors=True)
        self._stages = {}

    def _abandon(self):
        self._remove_stages()
        for folder in self._created:  # deepest first; only if still empty
            try:
                os.rmdir(folder)
            except OSError:
                break
        self._created = []


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
