"""Multi-resolution TFRecord datasets in the layout of the PGGAN dataset tool (SPEC section 3).

A dataset is a directory D holding `D/<name>-rNN.tfrecords` for NN = log2(resolution) from 02 up to the full
size, all with the same images in the same order, plus optionally `D/<name>-rxx.labels` (float32 [N, label_size]
.npy) and `D/<name>-meta.json` (where the images came from).  Each record is a tf.train.Example with `shape`
(int64 [C, H, W]) and `data` (the raw uint8 bytes in C, H, W order).
"""
import json
import os
import re
import shutil
import tempfile

import numpy as np

from errors import UserError
from tfcompat import tf, tfrecord_iterator, TFRecordWriter

_TFRECORD_NAME = re.compile(r'^(?P<base>.+)-r(?P<log2>\d\d)\.tfrecords$')


def dataset_name(dataset_dir):
    return os.path.basename(os.path.normpath(dataset_dir))


def tfrecord_path(dataset_dir, resolution_log2):
    return os.path.join(dataset_dir, '%s-r%02d.tfrecords' % (dataset_name(dataset_dir), resolution_log2))


def labels_path(dataset_dir):
    return os.path.join(dataset_dir, '%s-rxx.labels' % dataset_name(dataset_dir))


def metadata_path(dataset_dir):
    return os.path.join(dataset_dir, '%s-meta.json' % dataset_name(dataset_dir))


def list_tfrecords(dataset_dir):
    """{log2(resolution): path} of the dataset's TFRecord files; a clear error when there are none."""
    if not os.path.isdir(dataset_dir):
        raise UserError('%s: no such dataset directory' % dataset_dir)
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


def _serialized_records(path):
    """TensorFlow's own TFRecord reader (it checks the length and data CRCs of every record)."""
    if os.path.isdir(path):
        raise UserError('%s: is a directory, not a TFRecords file' % path)
    if not os.path.exists(path):
        raise UserError('%s: no such file' % path)
    if not os.access(path, os.R_OK):
        raise UserError('%s: file is not readable' % path)
    index = 0
    try:
        for serialized in tfrecord_iterator(path):
            yield index, serialized
            index += 1
    except tf.errors.DataLossError:
        if index == 0:
            raise UserError('%s: not a TFRecords file (or its first record is corrupt)' % path)
        raise UserError('%s: truncated or corrupt after %d good records (checksum mismatch)' % (path, index))
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
        images.append(image)
    if not images:
        raise UserError('%s: holds no records' % path)
    if number is not None and len(images) < number:
        raise UserError('%s: holds only %d images, %d were asked for' % (path, len(images), number))
    return np.stack(images)


def read_labels(dataset_dir):
    """float32 [N, label_size] one-hot labels, or None when the dataset has none."""
    path = labels_path(dataset_dir)
    if not os.path.exists(path):
        return None
    try:
        with open(path, 'rb') as f:
            labels = np.load(f, allow_pickle=False)
    except Exception:
        raise UserError('%s: not a NumPy .npy array' % path)
    if labels.ndim != 2:
        raise UserError('%s: labels must be [N, label_size], got shape %s' % (path, list(labels.shape)))
    return labels.astype(np.float32)


def read_metadata(dataset_dir):
    path = metadata_path(dataset_dir)
    if not os.path.exists(path):
        return None
    with open(path, encoding='utf-8') as f:
        return json.load(f)


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
        level = level.astype(np.float32)
        level = (level[:, :, 0::2, 0::2] + level[:, :, 0::2, 1::2]
                 + level[:, :, 1::2, 0::2] + level[:, :, 1::2, 1::2]) * np.float32(0.25)
        levels[log2] = np.clip(np.rint(level), 0, 255).astype(np.uint8)
    return levels


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
    if height < 4 or height & (height - 1):
        raise UserError('%s: image size must be a power of two of at least 4, got %d' % (source, height))
    return images


def check_new_dataset_dir(out_dir, overwrite=False):
    """Fail before any work when `out_dir` may not receive a new dataset."""
    if os.path.exists(out_dir):
        if not os.path.isdir(out_dir):
            raise UserError('%s: exists and is not a directory' % out_dir)
        if os.listdir(out_dir) and not overwrite:
            raise UserError('%s: already exists and is not empty; nothing was written (use --overwrite)' % out_dir)


def write_dataset(out_dir, images, labels=None, metadata=None, overwrite=False, progress=None):
    """Write the full multi-resolution set for uint8 [N, C, H, W] `images` into the new directory `out_dir`.

    Everything is written into a temporary sibling directory first and renamed at the end, so an interrupted
    run leaves nothing behind; an existing non-empty `out_dir` is an error unless `overwrite` is set.
    `progress`, when given, is called with the number of images just written.
    """
    images = check_image_batch(images, out_dir)
    out_dir = os.path.normpath(out_dir)
    check_new_dataset_dir(out_dir, overwrite)
    if labels is not None:
        labels = np.asarray(labels, dtype=np.float32)
        if labels.ndim != 2 or labels.shape[0] != images.shape[0]:
            raise UserError('%s: labels must be [%d, label_size], got %s'
                            % (out_dir, images.shape[0], list(labels.shape)))
    parent = os.path.dirname(os.path.abspath(out_dir))
    try:
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix='.%s.' % os.path.basename(out_dir), suffix='.tmp', dir=parent)
    except OSError as error:
        raise UserError('%s: cannot write here (%s)' % (parent, error.strerror or error))
    try:
        # Files inside the staging folder are named after the final folder, not after the temporary one.
        final_name = os.path.basename(out_dir)
        staged = lambda path: os.path.join(staging, os.path.basename(path))
        pyramid = build_pyramid(images)
        writers = {log2: TFRecordWriter(staged(tfrecord_path(final_name, log2))) for log2 in pyramid}
        chunk = 256
        for start in range(0, images.shape[0], chunk):
            for log2, writer in writers.items():
                for image in pyramid[log2][start:start + chunk]:
                    writer.write(serialize_image(image))
            if progress is not None:
                progress(min(chunk, images.shape[0] - start))
        for writer in writers.values():
            writer.close()
        if labels is not None:
            with open(staged(labels_path(final_name)), 'wb') as f:
                np.save(f, labels)
        if metadata is not None:
            with open(staged(metadata_path(final_name)), 'w', encoding='utf-8') as f:
                json.dump(metadata, f, indent=2, sort_keys=True)
                f.write('\n')
        if os.path.isdir(out_dir):  # --overwrite: swap the new set in before deleting the old one
            retired = tempfile.mkdtemp(prefix='.%s.' % final_name, suffix='.old', dir=parent)
            os.rename(out_dir, os.path.join(retired, final_name))
            os.rename(staging, out_dir)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.rename(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


# ----------------------------------------------------------------------------------------------------------------
# Training input


def training_batches(dataset_dir, resolution_log2, minibatch, labels=None, mirror=False, seed=None,
                     shuffle_buffer=4096):
    """Endless shuffled minibatches of one resolution as graph tensors, with no feeding from Python.

    Returns (images, labels): float32 NHWC in the networks' range -1..1, and float32 [minibatch, label_size]
    (label_size 0 without labels).  `mirror` flips half of the images horizontally at random.
    """
    path = tfrecord_path(dataset_dir, resolution_log2)
    _, first = next(iterate_images(path))
    shape = list(first.shape)
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
    image_batch, label_batch = data.make_one_shot_iterator().get_next()
    image_batch = tf.transpose(image_batch, [0, 2, 3, 1]) / 127.5 - 1.0
    if mirror:
        flip = tf.random_uniform([minibatch], 0.0, 1.0, seed=seed) < 0.5
        image_batch = tf.where(flip, tf.reverse(image_batch, axis=[2]), image_batch)
    image_batch.set_shape([minibatch] + shape[1:] + shape[:1])
    label_batch.set_shape([minibatch, label_array.shape[1] if labels is not None else 0])
    return image_batch, label_batch
