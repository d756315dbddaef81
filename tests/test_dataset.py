"""dataset.py: multi-resolution TFRecord datasets (SPEC section 3), written and read back through TensorFlow."""
import json
import os

import numpy as np
import pytest

from errors import UserError
from conftest import directory_contents as snapshot
from tfcompat import tf, tfrecord_iterator, TFRecordWriter
import dataset


# ---------------------------------------------------------------------------------------------------------------
# Independent helpers (no dataset.py code involved)


def reference_pyramid(images):
    """{log2(res): uint8 [N, C, res, res]}: repeated 2x2 box average in float32 from the UNQUANTISED level above."""
    images = np.asarray(images)
    top = int(round(np.log2(images.shape[-1])))
    levels = {top: images.astype(np.uint8)}
    level = images.astype(np.float32)
    for log2 in range(top - 1, 1, -1):
        n, c, h, w = level.shape
        level = level.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5), dtype=np.float32)
        assert level.dtype == np.float32
        levels[log2] = np.clip(np.rint(level), 0, 255).astype(np.uint8)
    return levels


def naive_pyramid(images):
    """The WRONG way (each level from the quantised uint8 level above) -- used to show the tests can tell."""
    images = np.asarray(images)
    top = int(round(np.log2(images.shape[-1])))
    levels = {top: images.astype(np.uint8)}
    level = images.astype(np.uint8)
    for log2 in range(top - 1, 1, -1):
        n, c, h, w = level.shape
        mean = level.astype(np.float32).reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5), dtype=np.float32)
        level = np.clip(np.rint(mean), 0, 255).astype(np.uint8)
        levels[log2] = level
    return levels


def read_raw_examples(path):
    """[(shape list, data bytes)] of every record, parsed straight from TensorFlow's reader."""
    records = []
    for serialized in tfrecord_iterator(path):
        example = tf.train.Example.FromString(serialized)
        features = example.features.feature
        assert sorted(features.keys()) == ['data', 'shape']
        shape = list(features['shape'].int64_list.value)
        data = list(features['data'].bytes_list.value)
        assert len(data) == 1
        records.append((shape, data[0]))
    return records


def read_array(path):
    """uint8 [N, C, H, W] from a TFRecords file, decoded independently of dataset.py."""
    images = []
    for shape, data in read_raw_examples(path):
        assert len(data) == shape[0] * shape[1] * shape[2]
        images.append(np.frombuffer(data, dtype=np.uint8).reshape(shape))
    return np.stack(images)


def random_images(n, c, size, seed=0):
    return np.random.RandomState(seed).randint(0, 256, size=(n, c, size, size)).astype(np.uint8)


def write_examples(path, examples):
    writer = TFRecordWriter(path)
    for example in examples:
        writer.write(example.SerializeToString())
    writer.close()


def image_example(shape, data):
    return tf.train.Example(features=tf.train.Features(feature={
        'shape': tf.train.Feature(int64_list=tf.train.Int64List(value=list(shape))),
        'data': tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))}))


# ---------------------------------------------------------------------------------------------------------------
# The reference itself


def test_reference_pyramid_by_hand():
    # 8x8 -> 4x4 (r02 is the smallest level).
    image = np.zeros((1, 1, 8, 8), dtype=np.uint8)
    image[0, 0, 0:2, 0:2] = [[0, 0], [0, 2]]      # mean 0.5 -> rint 0 (half to even)
    image[0, 0, 0:2, 2:4] = [[1, 2], [2, 1]]      # mean 1.5 -> 2
    image[0, 0, 2:4, 0:2] = [[255, 255], [255, 254]]  # 254.75 -> 255
    levels = reference_pyramid(image)
    assert sorted(levels) == [2, 3]
    assert levels[2][0, 0, 0, 0] == 0
    assert levels[2][0, 0, 0, 1] == 2
    assert levels[2][0, 0, 1, 0] == 255


def test_unquantised_and_naive_pyramids_differ_on_a_crafted_image():
    # 16x16 whose 8x8 level is 0.5 / 0.75 (unquantised) but 0 / 1 after rounding: the 4x4 level then differs.
    image = np.zeros((1, 1, 16, 16), dtype=np.uint8)
    image[0, 0, 0:4, 0:4] = [[0, 0, 0, 0], [0, 2, 0, 2], [0, 0, 0, 0], [0, 2, 1, 2]]
    good, bad = reference_pyramid(image), naive_pyramid(image)
    assert good[2][0, 0, 0, 0] == 1       # mean(0.5, 0.5, 0.5, 0.75) = 0.5625 -> 1
    assert bad[2][0, 0, 0, 0] == 0        # mean(0, 0, 0, 1) = 0.25 -> 0


# ---------------------------------------------------------------------------------------------------------------
# Writing


def test_write_dataset_files_and_contents(tmp_path):
    images = random_images(5, 1, 32, seed=1)
    out = str(tmp_path / 'AIS')
    result = dataset.write_dataset(out, images)
    assert os.path.normpath(result) == os.path.normpath(out)
    names = sorted(os.listdir(out))
    assert names == ['AIS-r02.tfrecords', 'AIS-r03.tfrecords', 'AIS-r04.tfrecords', 'AIS-r05.tfrecords']
    assert sorted(os.listdir(str(tmp_path))) == ['AIS']  # no staging leftovers

    reference = reference_pyramid(images)
    naive = naive_pyramid(images)
    assert any(not np.array_equal(reference[k], naive[k]) for k in reference), 'test data too easy'
    for log2 in range(2, 6):
        path = os.path.join(out, 'AIS-r%02d.tfrecords' % log2)
        records = read_raw_examples(path)
        assert len(records) == 5
        size = 2 ** log2
        for shape, data in records:
            assert shape == [1, size, size]
            assert len(data) == size * size
        got = read_array(path)
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, reference[log2], err_msg='level r%02d' % log2)
    np.testing.assert_array_equal(read_array(os.path.join(out, 'AIS-r05.tfrecords')), images)


def test_write_dataset_rgb(tmp_path):
    images = random_images(3, 3, 16, seed=2)
    out = str(tmp_path / 'colour')
    dataset.write_dataset(out, images)
    assert sorted(os.listdir(out)) == ['colour-r02.tfrecords', 'colour-r03.tfrecords', 'colour-r04.tfrecords']
    reference = reference_pyramid(images)
    for log2 in (2, 3, 4):
        path = os.path.join(out, 'colour-r%02d.tfrecords' % log2)
        assert [shape for shape, _ in read_raw_examples(path)] == [[3, 2 ** log2, 2 ** log2]] * 3
        np.testing.assert_array_equal(read_array(path), reference[log2])
    # C, H, W byte order: the first H*W bytes are channel 0.
    shape, data = read_raw_examples(os.path.join(out, 'colour-r04.tfrecords'))[1]
    assert data[:256] == images[1, 0].tobytes()
    assert data[256:512] == images[1, 1].tobytes()
    assert data == images[1].tobytes()


def test_smallest_dataset_is_4x4_only(tmp_path):
    images = random_images(2, 1, 4, seed=3)
    out = str(tmp_path / 'tiny')
    dataset.write_dataset(out, images)
    assert os.listdir(out) == ['tiny-r02.tfrecords']
    np.testing.assert_array_equal(read_array(os.path.join(out, 'tiny-r02.tfrecords')), images)


def test_many_images_keep_their_order(tmp_path):
    # More than one write chunk: every level holds the same images in the same order.
    images = random_images(300, 1, 8, seed=4)
    out = str(tmp_path / 'big')
    chunks = []
    dataset.write_dataset(out, images, progress=chunks.append)
    assert sum(chunks) == 300
    reference = reference_pyramid(images)
    for log2 in (2, 3):
        np.testing.assert_array_equal(read_array(os.path.join(out, 'big-r%02d.tfrecords' % log2)), reference[log2])


def test_labels_and_metadata_round_trip(tmp_path):
    images = random_images(4, 1, 8, seed=5)
    labels = np.eye(3, dtype=np.float32)[[0, 2, 1, 2]]
    metadata = {'source': 'unit test', 'count': 4, 'classes': ['AIS', 'MIA', 'IAC'], 'seed': None}
    out = str(tmp_path / 'MIA')
    dataset.write_dataset(out, images, labels=labels, metadata=metadata)
    assert sorted(os.listdir(out)) == ['MIA-meta.json', 'MIA-r02.tfrecords', 'MIA-r03.tfrecords', 'MIA-rxx.labels']
    with open(os.path.join(out, 'MIA-rxx.labels'), 'rb') as f:
        stored = np.load(f, allow_pickle=False)
    assert stored.dtype == np.float32
    np.testing.assert_array_equal(stored, labels)
    with open(os.path.join(out, 'MIA-meta.json')) as f:
        assert json.load(f) == metadata
    np.testing.assert_array_equal(dataset.read_labels(out), labels)
    assert dataset.read_metadata(out) == metadata


def test_no_labels_no_metadata(tmp_path):
    out = str(tmp_path / 'plain')
    dataset.write_dataset(out, random_images(2, 1, 4))
    assert dataset.read_labels(out) is None
    assert dataset.read_metadata(out) is None


def test_path_helpers(tmp_path):
    d = os.path.join(str(tmp_path), 'IAC')
    assert dataset.tfrecord_path(d, 6) == os.path.join(d, 'IAC-r06.tfrecords')
    assert dataset.tfrecord_path(d + os.sep, 3) == os.path.join(d + os.sep, 'IAC-r03.tfrecords')
    assert dataset.labels_path(d) == os.path.join(d, 'IAC-rxx.labels')
    dataset.write_dataset(d, random_images(1, 1, 16))
    found = dataset.list_tfrecords(d)
    assert sorted(found) == [2, 3, 4]
    assert found[4] == os.path.join(d, 'IAC-r04.tfrecords')


def test_write_into_existing_empty_directory(tmp_path):
    out = tmp_path / 'empty'
    out.mkdir()
    dataset.write_dataset(str(out), random_images(1, 1, 4))
    assert os.listdir(str(out)) == ['empty-r02.tfrecords']


# ---------------------------------------------------------------------------------------------------------------
# Atomic writing




def make_existing(tmp_path):
    out = tmp_path / 'AIS'
    out.mkdir()
    (out / 'notes.txt').write_bytes(b'precious results')
    (out / 'AIS-r02.tfrecords').write_bytes(b'not really a dataset')
    return str(out)


def test_existing_non_empty_directory_is_refused_and_untouched(tmp_path):
    out = make_existing(tmp_path)
    before = snapshot(str(tmp_path))
    with pytest.raises(UserError) as error:
        dataset.write_dataset(out, random_images(2, 1, 8))
    assert out in str(error.value)
    assert snapshot(str(tmp_path)) == before


def test_existing_file_as_out_dir_is_refused(tmp_path):
    out = tmp_path / 'AIS'
    out.write_bytes(b'a file')
    with pytest.raises(UserError) as error:
        dataset.write_dataset(str(out), random_images(2, 1, 8))
    assert str(out) in str(error.value)
    assert out.read_bytes() == b'a file'
    assert os.listdir(str(tmp_path)) == ['AIS']


def test_overwrite_replaces_existing_dataset(tmp_path):
    out = make_existing(tmp_path)
    images = random_images(2, 1, 8, seed=7)
    dataset.write_dataset(out, images, overwrite=True)
    assert sorted(os.listdir(out)) == ['AIS-r02.tfrecords', 'AIS-r03.tfrecords']
    assert os.listdir(str(tmp_path)) == ['AIS']  # the retired copy is gone too
    np.testing.assert_array_equal(read_array(os.path.join(out, 'AIS-r03.tfrecords')), images)


def assert_failed_cleanly(tmp_path, out, before, error):
    assert out in str(error.value)
    assert snapshot(str(tmp_path)) == before   # no new directory, no temporary leftovers


@pytest.mark.parametrize('labels', [np.eye(2, dtype=np.float32)[[0, 1, 1]],   # 3 labels for 4 images
                                    np.zeros(4, dtype=np.float32)])           # not [N, label_size]
def test_bad_labels_leave_nothing(tmp_path, labels):
    out = str(tmp_path / 'AIS')
    before = snapshot(str(tmp_path))
    with pytest.raises(UserError) as error:
        dataset.write_dataset(out, random_images(4, 1, 8), labels=labels)
    assert_failed_cleanly(tmp_path, out, before, error)
    assert not os.path.exists(out)


@pytest.mark.parametrize('shape', [(0, 1, 8, 8),     # empty batch
                                   (2, 2, 8, 8),     # two channels
                                   (2, 1, 8, 16),    # not square
                                   (2, 1, 12, 12),   # not a power of two
                                   (2, 1, 2, 2),     # smaller than 4x4
                                   (2, 8, 8)])       # not [N, C, H, W]
def test_invalid_image_batch_leaves_nothing(tmp_path, shape):
    out = str(tmp_path / 'AIS')
    before = snapshot(str(tmp_path))
    with pytest.raises(UserError) as error:
        dataset.write_dataset(out, np.zeros(shape, dtype=np.uint8))
    assert_failed_cleanly(tmp_path, out, before, error)
    assert not os.path.exists(out)


class Interrupted(Exception):
    pass


def interrupt(_):
    raise Interrupted('stop after the first chunk')


def test_failure_in_the_middle_of_writing_leaves_nothing(tmp_path):
    # The progress callback runs after the first chunk of records has been written to every level.
    out = str(tmp_path / 'AIS')
    with pytest.raises(Interrupted):
        dataset.write_dataset(out, random_images(300, 1, 8), progress=interrupt)
    assert os.listdir(str(tmp_path)) == []


def test_keyboard_interrupt_in_the_middle_of_overwrite_keeps_the_old_dataset(tmp_path):
    out = str(tmp_path / 'AIS')
    old = random_images(3, 1, 8, seed=8)
    dataset.write_dataset(out, old)
    before = snapshot(str(tmp_path))

    def ctrl_c(_):
        raise KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        dataset.write_dataset(out, random_images(300, 1, 8, seed=9), overwrite=True, progress=ctrl_c)
    assert snapshot(str(tmp_path)) == before
    np.testing.assert_array_equal(read_array(os.path.join(out, 'AIS-r03.tfrecords')), old)


# ---------------------------------------------------------------------------------------------------------------
# Reading (dataset.py's reader against files written independently here)


def test_read_images_matches_independently_written_file(tmp_path):
    images = random_images(5, 3, 8, seed=10)
    path = str(tmp_path / 'x-r03.tfrecords')
    write_examples(path, [image_example(image.shape, image.tobytes()) for image in images])
    got = dataset.read_images(path)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, images)
    np.testing.assert_array_equal(dataset.read_images(path, 2), images[:2])
    assert dataset.count_records(path) == 5


def test_serialize_image_is_an_example_with_shape_and_data():
    image = random_images(1, 1, 4, seed=11)[0]
    example = tf.train.Example.FromString(dataset.serialize_image(image))
    assert list(example.features.feature['shape'].int64_list.value) == [1, 4, 4]
    assert list(example.features.feature['data'].bytes_list.value) == [image.tobytes()]
    assert dataset.serialize_image(image) == dataset.serialize_image(image.copy())


def test_read_more_than_the_file_holds(tmp_path):
    images = random_images(3, 1, 4, seed=12)
    path = str(tmp_path / 'x-r02.tfrecords')
    write_examples(path, [image_example(image.shape, image.tobytes()) for image in images])
    with pytest.raises(UserError) as error:
        dataset.read_images(path, 4)
    message = str(error.value).replace(path, '<path>')
    assert path in str(error.value)
    assert ' 3 ' in message


@pytest.mark.parametrize('kind', ['missing', 'directory', 'garbage', 'truncated', 'checksum', 'features',
                                  'length', 'empty'])
def test_bad_files_give_user_errors_naming_the_file(tmp_path, kind):
    images = random_images(4, 1, 8, seed=13)
    path = str(tmp_path / 'x-r03.tfrecords')
    if kind != 'missing':
        write_examples(path, [image_example(image.shape, image.tobytes()) for image in images])
    raw = b''
    if kind != 'missing':
        with open(path, 'rb') as f:
            raw = f.read()
    if kind == 'directory':
        os.remove(path)
        os.mkdir(path)
    elif kind == 'garbage':
        with open(path, 'wb') as f:
            f.write(np.random.RandomState(0).randint(0, 256, 1000).astype(np.uint8).tobytes())
    elif kind == 'truncated':
        with open(path, 'wb') as f:
            f.write(raw[:len(raw) * 3 // 8])
    elif kind == 'checksum':
        record = len(raw) // 4   # every record has the same length; flip a payload byte of record 1
        corrupt = bytearray(raw)
        corrupt[record + record // 2] ^= 0x55
        with open(path, 'wb') as f:
            f.write(bytes(corrupt))
    elif kind == 'features':
        example = tf.train.Example(features=tf.train.Features(feature={
            'image_raw': tf.train.Feature(bytes_list=tf.train.BytesList(value=[b'\0' * 64]))}))
        write_examples(path, [example])
    elif kind == 'length':
        write_examples(path, [image_example([1, 8, 8], b'\0' * 63)])
    elif kind == 'empty':
        write_examples(path, [])
    with pytest.raises(UserError) as error:
        dataset.read_images(path)
    assert path in str(error.value)
