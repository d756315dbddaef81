"""Multi-resolution TFRecord datasets in the layout of the PGGAN dataset tool.

A dataset is a directory D holding `D/<name>-rNN.tfrecords` for NN = log2(resolution) from 02 up to the full
size, all with the same images in the same order, plus
  D/<name>-groups.npy   int64 [N]: which nodule each image shows (equal numbers: views of one nodule), in record
                        order; every dataset written here has one (one nodule per image when nothing better is
                        known), datasets of other tools or earlier versions may lack it;
  D/<name>-rxx.labels   optional float32 [N, label_size] one-hot class labels (.npy, PGGAN's name);
  D/<name>-meta.json    optional: where the images came from;
  D/<name>-masks.npy    optional uint8 [N, H, W]: one binary nodule mask per image (0 outside the nodule, 255
                        inside) at the full resolution, in record order; the lower resolutions' masks are derived
                        on reading (downsample_masks).
Each record is a tf.train.Example with `shape` (int64 [C, H, W]) and `data` (the raw uint8 bytes in C, H, W
order).
"""
import collections
import json
import os
import re
import struct

import numpy as np

from nodules.util import outputs
from nodules.util import values
from nodules.util.errors import UserError, check_folder_exists, check_regular_file
from nodules.util.tfcompat import tf, tfrecord_iterator, TFRecordWriter, without_autotune

_TFRECORD_NAME = re.compile(r'^(?P<base>.+)-r(?P<log2>\d\d)\.tfrecords$')


def dataset_name(dataset_dir):
    return os.path.basename(os.path.abspath(dataset_dir))  # '.' is named after the working directory


def tfrecord_path(dataset_dir, resolution_log2):
    return os.path.join(dataset_dir, '%s-r%02d.tfrecords' % (dataset_name(dataset_dir), resolution_log2))


def labels_path(dataset_dir):
    return os.path.join(dataset_dir, '%s-rxx.labels' % dataset_name(dataset_dir))


def groups_path(dataset_dir):
    return os.path.join(dataset_dir, '%s-groups.npy' % dataset_name(dataset_dir))


def masks_path(dataset_dir):
    return os.path.join(dataset_dir, '%s-masks.npy' % dataset_name(dataset_dir))


def metadata_path(dataset_dir):
    return os.path.join(dataset_dir, '%s-meta.json' % dataset_name(dataset_dir))


def list_tfrecords(dataset_dir):
    """{log2(resolution): path} of the dataset's TFRecord files; a clear error when there are none."""
    check_folder_exists(dataset_dir, 'dataset folder', missing='no such dataset directory')
    found = {}
    for name in sorted(os.listdir(dataset_dir)):
        match = _TFRECORD_NAME.match(name)
        if match:
            found[int(match.group('log2'))] = os.path.join(dataset_dir, name)
    if not found:
        raise UserError('%s: no *-rNN.tfrecords files in this directory' % dataset_dir)
    return found


# ----------------------------------------------------------------------------------------------------------------
# Reading


def decode_example(serialized, path, index):
    """Parse one serialized tf.train.Example into a uint8 array [C, H, W]; errors name the file and record."""
    where = '%s: record %d' % (path, index)
    try:
        example = tf.train.Example.FromString(serialized)
    except Exception:
        raise UserError('%s is not a tf.train.Example' % where)
    features = example.features.feature
    if 'shape' not in features or 'data' not in features:
        raise UserError('%s lacks the `shape` and `data` features of an image dataset' % where)
    shape = list(features['shape'].int64_list.value)
    data = features['data'].bytes_list.value
    if len(shape) != 3 or min(shape) <= 0 or len(data) != 1:
        raise UserError('%s has shape %s; expected [channels, height, width] and one data value' % (where, shape))
    if len(data[0]) != shape[0] * shape[1] * shape[2]:
        raise UserError('%s holds %d bytes of data but its shape %s needs %d'
                        % (where, len(data[0]), shape, shape[0] * shape[1] * shape[2]))
    return np.frombuffer(data[0], dtype=np.uint8).reshape(shape)


# A TFRecords file is a sequence of records, each framed as
#     uint64 length | uint32 masked CRC32C of the length | length bytes of data | uint32 masked CRC32C of the data
# (little-endian).  TensorFlow's reader trusts a length whose checksum matches and then reads that many bytes: a
# length far beyond the end of the file crashes the whole process (SIGSEGV) instead of raising an error.  So every
# reader walks the record headers first (check_record_framing) and lets TensorFlow read only files whose records
# all lie inside the file; TensorFlow then checks the data checksums.
_RECORD_HEADER = struct.Struct('<QI')
_RECORD_FOOTER_SIZE = 4


def _crc32c_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)  # the reflected Castagnoli polynomial
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def masked_crc32c(data):
    """The checksum TFRecords store: CRC32C (Castagnoli), rotated right by 15 bits plus a constant."""
    crc = 0xFFFFFFFF
    for byte in bytearray(data):
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _check_readable_file(path):
    """A clear error unless `path` is an existing, readable regular file (not a directory, device or pipe)."""
    check_regular_file(path, 'TFRecords file')
    if not os.access(path, os.R_OK):
        raise UserError('%s: file is not readable' % path)


def check_record_framing(path):
    """Walk the record headers of a TFRecords file (lengths and their checksums, without reading the data) and
    return how many records it holds.  Refuses files whose records do not exactly fill the file."""
    _check_readable_file(path)
    try:
        with open(path, 'rb') as f:
            size = os.fstat(f.fileno()).st_size
            offset = count = 0
            while offset < size:
                header = f.read(_RECORD_HEADER.size)
                if len(header) < _RECORD_HEADER.size:
                    raise UserError('%s: truncated: record %d at byte %d is cut off inside its header'
                                    % (path, count, offset))
                length, length_checksum = _RECORD_HEADER.unpack(header)
                if masked_crc32c(header[:8]) != length_checksum:
                    if count == 0:
                        raise UserError('%s: not a TFRecords file (the length field of its first record fails its '
                                        'checksum)' % path)
                    raise UserError('%s: corrupt: record %d at byte %d has a length field that fails its checksum'
                                    % (path, count, offset))
                end = offset + _RECORD_HEADER.size + length + _RECORD_FOOTER_SIZE
                if end > size:
                    raise UserError('%s: truncated or corrupt: record %d at byte %d claims %d bytes of data but the '
                                    'file ends %d bytes later' % (path, count, offset, length, size - offset))
                f.seek(end)
                offset, count = end, count + 1
    except OSError as error:
        raise UserError('%s: cannot read (%s)' % (path, error.strerror or error))
    return count


def _serialized_records(path):
    """TensorFlow's own TFRecord reader, after the framing check (the reader checks the data checksums)."""
    check_record_framing(path)
    index = 0
    try:
        for serialized in tfrecord_iterator(path):
            yield index, serialized
            index += 1
    except tf.errors.DataLossError:
        raise UserError('%s: corrupt: record %d fails its data checksum' % (path, index))
    except tf.errors.OpError as error:
        raise UserError('%s: cannot read (%s)' % (path, error.message.splitlines()[0]))


def iterate_images(path):
    """Yield (index, uint8 [C, H, W]) for every record of one TFRecords file."""
    for index, serialized in _serialized_records(path):
        yield index, decode_example(serialized, path, index)


def count_records(path):
    """How many records the file holds; reads (and so checks) every record."""
    count = 0
    for _ in _serialized_records(path):
        count += 1
    return count


def read_images(path, number=None):
    """The first `number` images (all when None) of a TFRecords file as uint8 [N, C, H, W].

    Asking for more than the file holds is an error (saying how many there are), never a silent short read.
    """
    images = []
    for index, image in iterate_images(path):
        if number is not None and index >= number:
            break
        if images and image.shape != images[0].shape:
            raise UserError('%s: record %d has shape %s but record 0 has %s'
                            % (path, index, list(image.shape), list(images[0].shape)))
        if not images and image.shape[0] not in (1, 3):  # no layout of 2 or 4 values per pixel is known here
            raise UserError('%s: record 0 has %d channels; images need 1 (grayscale) or 3 (RGB)'
                            % (path, image.shape[0]))
        images.append(image)
    if not images:
        raise UserError('%s: holds no records' % path)
    if number is not None and len(images) < number:
        raise UserError('%s: holds only %d images, %d were asked for' % (path, len(images), number))
    return np.stack(images)


def read_labels(dataset_dir, count=None):
    """float32 [N, label_size] one-hot labels, or None when the dataset has none.  With `count`, the file must
    hold exactly that many rows.

    The .npy header is checked against the file size before the array is read, so a header that promises more
    than the file holds cannot make NumPy allocate it.
    """
    path = labels_path(dataset_dir)
    if not os.path.exists(path):
        return None
    labels = _load_npy(path)
    if labels.ndim != 2:
        raise UserError('%s: labels must be [N, label_size], got shape %s' % (path, list(labels.shape)))
    if labels.dtype.kind not in 'biuf':
        raise UserError('%s: labels must be numbers, not %s' % (path, labels.dtype))
    labels = labels.astype(np.float32)
    if not np.all(np.isfinite(labels)):
        raise UserError('%s: labels hold NaN or infinite values' % path)
    _check_label_rows(dataset_dir, labels, count)
    return labels


def check_one_hot(labels, path, purpose):
    """Refuse `labels` (from the file `path`) unless every row is one-hot: a single 1, zeros elsewhere; `purpose`
    names what needs one class per image."""
    bad = np.flatnonzero(~(np.all((labels == 0) | (labels == 1), axis=1) & (labels.sum(axis=1) == 1)))
    if len(bad):
        raise UserError('%s: row %d is not one-hot (%s); %s needs one class per image'
                        % (path, bad[0], ' '.join('%g' % v for v in labels[bad[0]]), purpose))


def read_groups(dataset_dir, count=None):
    """int64 [N] nodule numbers of the dataset's images, or None when it has no groups file (the caller decides
    whether to warn).  With `count`, the file must list exactly that many images."""
    path = groups_path(dataset_dir)
    if not os.path.lexists(path):
        return None
    return check_groups(_load_npy(path), count, path)


def check_groups(groups, count=None, source='groups'):
    """Validated int64 [N] nodule numbers: whole numbers from 0 up, one per image (`count` when given)."""
    groups = np.asarray(groups)
    if groups.ndim != 1 or groups.dtype.kind not in 'iu':
        raise UserError('%s: nodule groups must be a 1-D integer array [N], got %s %s'
                        % (source, groups.dtype, list(groups.shape)))
    if count is not None and len(groups) != count:
        raise UserError('%s: lists nodule groups for %d images but the dataset has %d' % (source, len(groups), count))
    if groups.size and (groups.min() < 0 or groups.max() > np.iinfo(np.int64).max):
        raise UserError('%s: nodule groups must be whole numbers from 0 to 2**63 - 1, got %d..%d'
                        % (source, groups.min(), groups.max()))
    return groups.astype(np.int64)


def _load_npy(path):
    """The array in a .npy file, after checking (without reading the data) that its header matches its size."""
    _check_npy_file(path)
    try:
        with open(path, 'rb') as f:
            return np.load(f, allow_pickle=False)
    except Exception:
        raise UserError('%s: not a NumPy .npy array' % path)


def _check_npy_file(path):
    """Refuse a file that is not a regular .npy file whose header matches its size, so that a header promising
    more than the file holds cannot make NumPy allocate it; returns the (shape, dtype) its header describes."""
    if not os.path.isfile(path):
        raise UserError('%s: is not a regular file' % path)
    try:
        with open(path, 'rb') as f:
            size = os.fstat(f.fileno()).st_size
            version = np.lib.format.read_magic(f)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                raise ValueError('unknown .npy version')
            shape, _, dtype = read_header(f)
            header_size = f.tell()
    except OSError as error:
        raise UserError('%s: cannot read (%s)' % (path, error.strerror or error))
    except Exception:
        raise UserError('%s: not a NumPy .npy array' % path)
    expected = dtype.itemsize
    for extent in shape:
        expected *= int(extent)
    if dtype.hasobject or expected != size - header_size:
        raise UserError('%s: damaged: its header describes %s %s values but the file holds %d bytes of data'
                        % (path, list(shape), dtype, size - header_size))
    return tuple(int(extent) for extent in shape), dtype


def read_metadata(dataset_dir):
    path = metadata_path(dataset_dir)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding='utf-8') as f:
            metadata = json.load(f)
    except OSError as error:
        raise UserError('%s: cannot read (%s)' % (path, error.strerror or error))
    except ValueError as error:  # not UTF-8, or not JSON
        raise UserError('%s: not a JSON file (%s)' % (path, str(error).splitlines()[0] or type(error).__name__))
    if not isinstance(metadata, dict):
        raise UserError('%s: holds a JSON %s, not an object of named fields' % (path, type(metadata).__name__))
    return metadata


# ----------------------------------------------------------------------------------------------------------------
# Nodule masks


def has_masks(dataset_dir):
    """Whether the dataset has a masks file (anything by that name: read_masks judges what it is)."""
    return os.path.lexists(masks_path(dataset_dir))


def read_masks(dataset_dir, resolution=None, number=None):
    """The dataset's nodule masks as uint8 [N, res, res], values 0 and 255, row i the mask of image i.

    `resolution` None gives the full resolution (that of the largest TFRecords file); a smaller one (a power of
    two the dataset has a file for) is derived by downsample_masks.  `number` gives only the first that many
    masks (more than the dataset has is an error).  The file must exist (see has_masks) and list one mask per
    image at the full resolution; its header is checked against the dataset (record count from the framing of the
    largest TFRecords file, without reading the images) before its data are read.
    """
    path = masks_path(dataset_dir)
    files = list_tfrecords(dataset_dir)
    if not os.path.lexists(path):
        raise UserError('%s: the dataset has no nodule masks (no %s)' % (dataset_dir, os.path.basename(path)))
    check_regular_file(path, 'NumPy masks file')
    top = max(files)
    count = check_record_framing(files[top])
    shape, dtype = _check_npy_file(path)
    _check_mask_layout(shape, dtype, count, 2 ** top, path)  # from the header, before the data are read
    masks = check_masks(_load_npy(path), count, 2 ** top, path)
    if number is not None:
        if number > count:
            raise UserError('%s: holds only %d masks, %d were asked for' % (path, count, number))
        masks = masks[:number]
    if resolution is None or resolution == 2 ** top:
        return masks
    if not values.is_power_of_two(resolution) or int(np.log2(resolution)) not in files:
        raise UserError('%s: has no %dx%d masks (its resolutions are %s)' % (
            dataset_dir, resolution, resolution, ', '.join(str(2 ** k) for k in sorted(files))))
    return downsample_masks(masks, resolution)


def check_masks(masks, expected_count, resolution, name, allow_empty=True):
    """Validated masks: a uint8 array [expected_count, resolution, resolution] holding only 0 and 255.

    `name` (a file, folder or option) starts every error line.  None for `expected_count` or `resolution` skips
    that check (the size must still be square).  Without `allow_empty`, a mask with no nodule pixel is refused.
    """
    masks = masks if isinstance(masks, np.ndarray) else np.asarray(masks)
    _check_mask_layout(masks.shape, masks.dtype, expected_count, resolution, name)
    _check_mask_values(masks, name, allow_empty)
    return masks


def check_mask_image(mask, path, allow_empty=True, columns=None):
    """Validated mask uint8 [H, W] read from the image file `path`: only 0 and 255, and without `allow_empty` at
    least one nodule pixel.  `columns` (first, last), when the mask is part of a wider image (the right half of a
    side-by-side pair), is where in the file it lies: errors name that range and the file's own columns."""
    mask = np.asarray(mask)
    which = 'the mask' if columns is None else 'its mask half (columns %d-%d)' % tuple(columns)
    _check_mask_values(mask[np.newaxis], path, allow_empty, which, columns[0] if columns else 0)
    return mask


def _check_mask_values(masks, name, allow_empty, which=None, first_column=0):
    """Refuse uint8 [N, H, W] masks holding anything but 0 and 255 (or, without `allow_empty`, no 255): one line
    starting with `name`, naming the mask (`which` when given, for a single mask, else its index), the first
    offending pixel and the other values found."""
    binary = (masks == 0) | (masks == 255)
    if not binary.all():
        index, row, column = np.argwhere(~binary)[0]
        others = np.unique(masks[~binary])
        if which is None:
            bad = int((~binary).any(axis=(1, 2)).sum())
            which, count = 'mask %d' % index, '%d mask%s' % (bad, ' holds' if bad == 1 else 's hold')
        else:
            bad = int((~binary).sum())
            count = '%d pixel%s' % (bad, ' holds' if bad == 1 else 's hold')
        raise UserError('%s: %s is not binary: it holds %d at row %d, column %d (%s values other than 0 and 255: '
                        '%s%s); masks hold only 0 (outside the nodule) and 255 (inside)'
                        % (name, which, masks[index, row, column], row, column + first_column, count,
                           ', '.join(str(v) for v in others[:6]), ', ...' if len(others) > 6 else ''))
    if not allow_empty and len(masks):
        empty = np.flatnonzero(~masks.any(axis=(1, 2)))
        if len(empty):
            raise UserError('%s: %s is empty (no pixel is 255)%s; every mask needs a nodule'
                            % (name, which or 'mask %d' % empty[0],
                               '' if len(empty) == 1 else ', and %d more' % (len(empty) - 1)))


def _check_mask_layout(shape, dtype, expected_count, resolution, name):
    if dtype != np.uint8 or len(shape) != 3:
        raise UserError('%s: masks must be a uint8 array [N, H, W] holding 0 and 255, got %s %s'
                        % (name, dtype, list(shape)))
    count, height, width = shape
    if expected_count is not None and count != expected_count:
        raise UserError('%s: holds %d masks but the dataset has %d images; a masks file needs one mask per image'
                        % (name, count, expected_count))
    if height != width:
        raise UserError('%s: masks are %dx%d; masks are square, of the images\' size' % (name, width, height))
    if resolution is not None and height != resolution:
        raise UserError('%s: masks are %dx%d but the images are %dx%d; masks have the images\' full resolution'
                        % (name, width, height, resolution, resolution))


def downsample_masks(masks, resolution):
    """uint8 [N, H, W] binary masks -> uint8 [N, resolution, resolution]: the 2x2 box averages of the image pyramid
    (build_pyramid), repeated down to `resolution` without rounding, then 255 where the average is at least 128,
    else 0.  The averages are exact in float32 (multiples of 255 / 4**k), so a pixel is set exactly when at least
    128/255 of the full-resolution pixels it covers are set: a little more than half (a block exactly half
    covered averages 127.5 and is not set)."""
    masks = np.asarray(masks)
    size = masks.shape[-1]
    if not (values.is_power_of_two(resolution, minimum=1) and resolution <= size):
        raise UserError('masks of %dx%d cannot be brought to %r' % (size, size, resolution))
    level = masks.astype(np.float32)
    while level.shape[-1] > resolution:
        level = _box_average(level)
    return np.where(level >= 128, 255, 0).astype(np.uint8)


def mask_area_fraction(masks):
    """float64 [N]: the share of each mask's pixels inside the nodule."""
    masks = np.asarray(masks)
    return (masks > 0).mean(axis=(-2, -1), dtype=np.float64)


# ----------------------------------------------------------------------------------------------------------------
# Checking a whole dataset


DatasetSummary = collections.namedtuple('DatasetSummary',
                                        ['files', 'num_images', 'shape', 'labels', 'groups', 'masks'])
DatasetSummary.__doc__ = (
    'What check_dataset found: files {log2(resolution): path}, num_images (records per file), shape [C, H, W] '
    'at the top resolution, labels (float32 [N, label_size]) or None, groups (int64 [N] nodule numbers) or None, '
    'masks (uint8 [N, H, W] at the top resolution) or None.')


def check_dataset(dataset_dir):
    """Read every record of every resolution of a dataset and check that the files agree; returns a summary.

    Checks, each failure a UserError naming the file: every *-rNN.tfrecords file is well framed and passes
    TensorFlow's checksums; every record is an image of that file's resolution, with the same number of channels
    (1 or 3) everywhere; the resolutions run from 4x4 up without gaps; all files hold the same number of
    records; and the labels, nodule groups and masks files, when there are, have one entry per image (masks:
    binary, of the full resolution).  Training calls
    this before it creates anything, so a damaged dataset is reported in its first second instead of after hours.
    """
    files = list_tfrecords(dataset_dir)
    top = max(files)
    missing = [k for k in range(2, top) if k not in files]
    if missing:
        raise UserError('%s: lacks the resolutions %s (a dataset has one file per resolution from 4x4 up)'
                        % (dataset_dir, ', '.join('%dx%d' % (2 ** k, 2 ** k) for k in missing)))
    counts, channels = {}, None
    for log2 in sorted(files, reverse=True):
        path, size = files[log2], 2 ** log2
        count = 0
        for index, image in iterate_images(path):
            if channels is None:
                channels = image.shape[0]
                if channels not in (1, 3):
                    raise UserError('%s: record 0 has %d channels; images need 1 or 3' % (path, channels))
            if list(image.shape) != [channels, size, size]:
                raise UserError('%s: record %d has shape %s; this file should hold [%d, %d, %d] images'
                                % (path, index, list(image.shape), channels, size, size))
            count = index + 1
        if count == 0:
            raise UserError('%s: holds no records' % path)
        counts[log2] = count
        if count != counts[top]:
            raise UserError('%s: holds %d records but %s holds %d; every resolution must hold the same images'
                            % (path, count, os.path.basename(files[top]), counts[top]))
    labels = read_labels(dataset_dir, counts[top])
    groups = read_groups(dataset_dir, counts[top])
    masks = read_masks(dataset_dir) if has_masks(dataset_dir) else None
    return DatasetSummary(files, counts[top], [channels, 2 ** top, 2 ** top], labels, groups, masks)


def _check_label_rows(dataset_dir, labels, num_images):
    if num_images is not None and labels is not None and len(labels) != num_images:
        raise UserError('%s: has %d label rows for %d images; a labels file needs one row per image'
                        % (labels_path(dataset_dir), len(labels), num_images))


# ----------------------------------------------------------------------------------------------------------------
# Writing


def build_pyramid(images):
    """{log2(res): uint8 [N, C, res, res]} from full-resolution uint8 [N, C, H, W] down to 4x4.

    Each level is the 2x2 box average of the unquantised float32 level above (summed in PGGAN's order, so the
    bytes match its dataset tool), then rounded, clipped and stored as uint8.
    """
    images = np.asarray(images)
    resolution_log2 = int(np.log2(images.shape[-1]))
    levels = {resolution_log2: images.astype(np.uint8)}
    level = images
    for log2 in range(resolution_log2 - 1, 1, -1):
        level = _box_average(level.astype(np.float32))
        levels[log2] = np.clip(np.rint(level), 0, 255).astype(np.uint8)
    return levels


def _box_average(level):
    """float32 [..., H, W] -> [..., H/2, W/2]: the mean of each 2x2 block, summed in PGGAN's order."""
    return (level[..., 0::2, 0::2] + level[..., 0::2, 1::2]
            + level[..., 1::2, 0::2] + level[..., 1::2, 1::2]) * np.float32(0.25)


def serialize_image(image):
    """uint8 [C, H, W] -> serialized tf.train.Example; deterministic so that equal images give equal bytes."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    example = tf.train.Example(features=tf.train.Features(feature={
        'shape': tf.train.Feature(int64_list=tf.train.Int64List(value=list(image.shape))),
        'data': tf.train.Feature(bytes_list=tf.train.BytesList(value=[image.tobytes()]))}))
    return example.SerializeToString(deterministic=True)


def check_image_batch(images, source='images'):
    """Validate uint8 [N, C, H, W] with C in (1, 3) and square power-of-two H = W >= 4."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] == 0:
        raise UserError('%s: expected a non-empty batch [N, C, H, W], got shape %s' % (source, list(images.shape)))
    channels, height, width = images.shape[1:]
    if channels not in (1, 3):
        raise UserError('%s: images need 1 or 3 channels, not %d' % (source, channels))
    if height != width:
        raise UserError('%s: images must be square, got %dx%d' % (source, width, height))
    if not values.is_power_of_two(height):
        raise UserError('%s: image size must be a power of two of at least 4, got %d' % (source, height))
    return images


# The files a dataset of this tool (or of PGGAN's) holds, named after its folder: a folder holding anything else is
# never replaced by --overwrite.
_DATASET_FILE = r'-(r\d\d\.tfrecords|groups\.npy|masks\.npy|meta\.json|rxx\.labels)$'


def dataset_file_test(out_dir):
    """name -> whether `name` is one of the files a dataset in `out_dir` holds (see write_levels)."""
    pattern = re.compile('^' + re.escape(dataset_name(out_dir)) + _DATASET_FILE)
    return lambda name: pattern.match(name) is not None


def check_new_dataset_dir(out_dir, overwrite=False, inputs=()):
    """Fail before any work when `out_dir` may not receive a new dataset: it is not a folder, it is or holds one
    of the command's `inputs` ([(option, path)]), it is not empty (without `overwrite`), or it holds anything
    but a dataset's own files (even with `overwrite`)."""
    outputs.check_folder(out_dir, dataset_file_test(out_dir), overwrite, kind='dataset', inputs=inputs)


def write_dataset(out_dir, images, labels=None, metadata=None, groups=None, masks=None, overwrite=False,
                  progress=None):
    """Write the full multi-resolution set for uint8 [N, C, H, W] `images` into the new directory `out_dir`.

    The lower resolutions are built by build_pyramid.  `groups` (int64 [N], which nodule each image shows)
    defaults to one nodule per image.  `masks` (uint8 [N, H, W], 0 and 255, at the images' resolution), when
    given, become the dataset's masks file (check_masks).  The folder lands whole through outputs.OutputFolder: an interrupted run
    leaves nothing behind (and what a killed one leaves, the next removes).  An existing non-empty `out_dir` is
    an error unless `overwrite` is set, and even then unless it holds only a dataset's own files
    (check_new_dataset_dir).  `progress`, when given, is called with the number of images just written.
    """
    images = check_image_batch(images, out_dir)
    return write_levels(out_dir, build_pyramid(images), labels=labels, metadata=metadata, groups=groups,
                        masks=masks, overwrite=overwrite, progress=progress)


def write_levels(out_dir, levels, labels=None, metadata=None, groups=None, masks=None, overwrite=False,
                 progress=None):
    """write_dataset for ready-made levels {log2(res): uint8 [N, C, res, res]} from 4x4 up (copied as they are)."""
    top = max(levels)
    images = check_image_batch(levels[top], out_dir)
    if sorted(levels) != list(range(2, top + 1)) or any(
            levels[log2].shape != images.shape[:2] + (2 ** log2, 2 ** log2) for log2 in levels):
        raise UserError('%s: levels must run from 4x4 up to %dx%d with %d images each'
                        % (out_dir, 2 ** top, 2 ** top, len(images)))
    count = images.shape[0]
    out_dir = os.path.normpath(out_dir)
    if labels is not None:
        labels = np.asarray(labels, dtype=np.float32)
        if labels.ndim != 2 or labels.shape[0] != count:
            raise UserError('%s: labels must be [%d, label_size], got %s' % (out_dir, count, list(labels.shape)))
    groups = np.arange(count, dtype=np.int64) if groups is None else check_groups(groups, count, out_dir)
    if masks is not None:
        masks = check_masks(masks, count, 2 ** top, out_dir)
    with outputs.OutputFolder(out_dir, dataset_file_test(out_dir), overwrite, kind='dataset') as folder:
        try:
            _write_files(folder, out_dir, levels, labels, metadata, groups, masks, progress)
        except OSError as error:  # a full disk, say: one line, and the staging folder goes
            raise UserError('%s: cannot be written (%s); nothing was written' % (out_dir, error.strerror or error))
        except tf.errors.OpError as error:  # TensorFlow's writer reports "PATH; REASON"
            raise UserError('%s: cannot be written (%s); nothing was written'
                            % (out_dir, error.message.split('; ')[-1]))
    return out_dir


def _write_files(folder, out_dir, levels, labels, metadata, groups, masks, progress):
    """Write the dataset's files into the staging folder of `folder` (an outputs.OutputFolder for `out_dir`)."""
    # Files inside the staging folder are named after the final folder, not after the temporary one.
    staged = lambda path: folder.path(os.path.basename(path))
    writers = {}
    try:
        for log2 in levels:
            writers[log2] = TFRecordWriter(staged(tfrecord_path(out_dir, log2)))
        count, chunk = len(groups), 256
        for start in range(0, count, chunk):
            for log2, writer in writers.items():
                for image in levels[log2][start:start + chunk]:
                    writer.write(serialize_image(image))
            if progress is not None:
                progress(min(chunk, count - start))
    finally:  # closed on a failure too: no file stays open in the staging folder about to be removed
        for writer in writers.values():
            writer.close()
    with open(staged(groups_path(out_dir)), 'wb') as f:
        np.save(f, groups)
    if labels is not None:
        with open(staged(labels_path(out_dir)), 'wb') as f:
            np.save(f, labels)
    if masks is not None:
        with open(staged(masks_path(out_dir)), 'wb') as f:
            np.save(f, np.ascontiguousarray(masks, dtype=np.uint8))
    if metadata is not None:
        with open(staged(metadata_path(out_dir)), 'w', encoding='utf-8') as f:
            json.dump(metadata, f, indent=2, sort_keys=True)
            f.write('\n')


# ----------------------------------------------------------------------------------------------------------------
# Training input


def training_batches(dataset_dir, resolution_log2, minibatch, labels=None, mirror=False, seed=None,
                     shuffle_buffer=4096):
    """Endless shuffled minibatches of one resolution as graph tensors, with no feeding from Python.

    Returns (images, labels): float32 NHWC in the networks' range -1..1, and float32 [minibatch, label_size]
    (label_size 0 without labels).  `mirror` flips half of the images horizontally at random.
    """
    files = list_tfrecords(dataset_dir)
    if resolution_log2 not in files:
        raise UserError('%s: has no %dx%d file (%s)' % (dataset_dir, 2 ** resolution_log2, 2 ** resolution_log2,
                                                       os.path.basename(tfrecord_path(dataset_dir, resolution_log2))))
    path, top = files[resolution_log2], max(files)
    # tf.data stops at the shorter of zipped inputs: without these checks a short file or labels file would
    # silently shrink the training set.  Counting the framed records costs no reading of the data.
    count, top_count = check_record_framing(path), check_record_framing(files[top])
    if count != top_count:
        raise UserError('%s: holds %d records but %s holds %d; every resolution must hold the same images'
                        % (path, count, os.path.basename(files[top]), top_count))
    _check_label_rows(dataset_dir, labels, count)
    shape = list(read_images(path, 1)[0].shape)
    features = {'shape': tf.FixedLenFeature([3], tf.int64), 'data': tf.FixedLenFeature([], tf.string)}

    def parse(record):
        data = tf.decode_raw(tf.parse_single_example(record, features)['data'], tf.uint8)
        return tf.cast(tf.reshape(data, shape), tf.float32)

    images = tf.data.TFRecordDataset(path).map(parse).cache()
    label_array = np.zeros((0, 0), np.float32) if labels is None else np.asarray(labels, np.float32)
    if labels is None:
        data = images.map(lambda image: (image, tf.zeros([0], tf.float32)))
    else:
        data = tf.data.Dataset.zip((images, tf.data.Dataset.from_tensor_slices(label_array)))
    data = data.shuffle(shuffle_buffer, seed=seed).repeat().batch(minibatch, drop_remainder=True).prefetch(2)
    image_batch, label_batch = without_autotune(data).make_one_shot_iterator().get_next()
    image_batch = tf.transpose(image_batch, [0, 2, 3, 1]) / 127.5 - 1.0
    if mirror:
        flip = tf.random_uniform([minibatch], 0.0, 1.0, seed=seed) < 0.5
        image_batch = tf.where(flip, tf.reverse(image_batch, axis=[2]), image_batch)
    image_batch.set_shape([minibatch] + shape[1:] + shape[:1])
    label_batch.set_shape([minibatch, label_array.shape[1] if labels is not None else 0])
    return image_batch, label_batch
