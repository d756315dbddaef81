"""Writing results without ever leaving half-written files or silently replacing someone's results.

Single files go to a temporary name beside the target and are renamed into place.  Sets of files (the PNGs of
one command) are staged in a hidden folder inside the output directory and moved into place only when all of
them exist; a file that is already there with different contents stops the whole set unless the user asked to
overwrite, so re-running the same command is harmless but a different one cannot clobber earlier results.
"""
import io
import os
import shutil
import tempfile

import numpy as np
from PIL import Image

from errors import UserError


def check_outdir(path):
    """Fail early, before any work, when `path` can never become a writable output directory."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError('%s: output directory is an existing file' % path)
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UserError('%s: cannot create output directory under the file %s' % (path, existing))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError('%s: output directory is not writable' % path)


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


def write_file_atomic(path, data):
    """Write bytes to `path` through a temporary file in the same directory and an atomic rename."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix='.%s.' % os.path.basename(path), suffix='.tmp', dir=directory)
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


class StagedFiles(object):
    """Collect the files of one command and move them into `outdir` together, or not at all.

    Usage: `with StagedFiles(outdir, overwrite) as staged: staged.add(name, data) ...`; leaving the block without
    an error commits.  Identical existing files are fine (re-running a seeded command changes nothing).
    """

    def __init__(self, outdir, overwrite=False):
        self.outdir = prepare_outdir(outdir)
        self.overwrite = overwrite
        self.names = []
        self._stage = None

    def __enter__(self):
        self._stage = tempfile.mkdtemp(prefix='.staging-', dir=self.outdir)
        return self

    def add(self, name, data):
        with open(os.path.join(self._stage, name), 'wb') as f:
            f.write(data)
        self.names.append(name)

    def add_png(self, name, image):
        self.add(name, png_bytes(image))

    def _check_conflicts(self):
        for name in self.names:
            target = os.path.join(self.outdir, name)
            if self.overwrite or not os.path.exists(target):
                continue
            if os.path.isdir(target):
                raise UserError('%s: exists and is a directory' % target)
            with open(target, 'rb') as old, open(os.path.join(self._stage, name), 'rb') as new:
                if old.read() != new.read():
                    raise UserError('%s: already exists with different contents; nothing was written '
                                    '(use --overwrite or another --outdir)' % target)

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self._check_conflicts()
                for name in self.names:
                    os.replace(os.path.join(self._stage, name), os.path.join(self.outdir, name))
        finally:
            shutil.rmtree(self._stage, ignore_errors=True)
        return False


def write_pngs(images, outdir, name_pattern, grid=None, overwrite=False, grid_columns=None):
    """Write uint8 images [N, H, W] (or [N, H, W, 3]) as `outdir/name_pattern % i`, plus an optional mosaic.

    All files land together or none do (see StagedFiles).  `grid` is a file name inside `outdir` or a path.
    Returns the paths written.
    """
    with StagedFiles(outdir, overwrite) as staged:
        for index, image in enumerate(images):
            staged.add_png(name_pattern % index, image)
    written = [os.path.join(outdir, name_pattern % index) for index in range(len(images))]
    if grid:
        grid_path = grid if os.path.dirname(grid) else os.path.join(outdir, grid)
        with StagedFiles(os.path.dirname(grid_path) or '.', overwrite) as staged:
            staged.add_png(os.path.basename(grid_path), image_grid(images, columns=grid_columns, padding=2))
        written.append(grid_path)
    return written
