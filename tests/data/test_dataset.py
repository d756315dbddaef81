"""nodules/data/dataset.py: multi-resolution TFRecord datasets in the PGGAN layout, written and read back through TensorFlow."""
import json
import os
import stat
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from nodules.util.errors import UserError
from conftest import ROOT, directory_contents as snapshot, run_script
from test_legacy import memory_limit
from test_outputs import full_disk  # noqa: F401 (a fixture)
from nodules.util.tfcompat import tf, tfrecord_iterator, TFRecordWriter
from nodules.data import dataset


# ---------------------------------------------------------------------------------------------------------------
# Independent helpers (no nodules/data/dataset.py code involved)


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
    """uint8 [N, C, H, W] from a TFRecords file, decoded independently of nodules/data/dataset.py."""
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
    assert names == ['AIS-groups.npy', 'AIS-r02.tfrecords', 'AIS-r03.tfrecords', 'AIS-r04.tfrecords',
                     'AIS-r05.tfrecords']
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
    assert sorted(os.listdir(out)) == ['colour-groups.npy', 'colour-r02.tfrecords', 'colour-r03.tfrecords',
                                       'colour-r04.tfrecords']
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
    assert sorted(os.listdir(out)) == ['tiny-groups.npy', 'tiny-r02.tfrecords']
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
    assert sorted(os.listdir(out)) == ['MIA-groups.npy', 'MIA-meta.json', 'MIA-r02.tfrecords', 'MIA-r03.tfrecords',
                                       'MIA-rxx.labels']
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
    assert dataset.groups_path(d) == os.path.join(d, 'IAC-groups.npy')
    dataset.write_dataset(d, random_images(1, 1, 16))
    found = dataset.list_tfrecords(d)
    assert sorted(found) == [2, 3, 4]
    assert found[4] == os.path.join(d, 'IAC-r04.tfrecords')


def test_write_into_existing_empty_directory(tmp_path):
    out = tmp_path / 'empty'
    out.mkdir()
    dataset.write_dataset(str(out), random_images(1, 1, 4))
    assert sorted(os.listdir(str(out))) == ['empty-groups.npy', 'empty-r02.tfrecords']


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


def test_overwrite_replaces_existing_dataset_in_one_swap(tmp_path):
    out = str(tmp_path / 'AIS')
    dataset.write_dataset(out, random_images(2, 1, 16, seed=6), labels=np.eye(2), metadata={'a': 1})
    inode = os.stat(out).st_ino
    images = random_images(2, 1, 8, seed=7)
    dataset.write_dataset(out, images, overwrite=True)
    assert sorted(os.listdir(out)) == ['AIS-groups.npy', 'AIS-r02.tfrecords', 'AIS-r03.tfrecords']
    assert os.listdir(str(tmp_path)) == ['AIS']  # the retired copy and the staging folder are gone too
    assert os.stat(out).st_ino != inode          # a new folder took the old one's name
    np.testing.assert_array_equal(read_array(os.path.join(out, 'AIS-r03.tfrecords')), images)


@pytest.mark.parametrize('intruder', ['notes.txt', 'src/', '.git/', 'MIA-r02.tfrecords', 'AIS-r04.tfrecords/',
                                      'link AIS-meta.json'])
def test_overwrite_refuses_a_folder_holding_anything_but_a_dataset(tmp_path, intruder):
    """--overwrite replaces only a dataset's own files: a project folder (src/, .git/), another dataset's file,
    a folder or a symbolic link under a dataset file's name all stop it before any work."""
    out = tmp_path / 'AIS'
    dataset.write_dataset(str(out), random_images(2, 1, 8))
    if intruder.startswith('link '):
        (tmp_path / 'elsewhere.json').write_bytes(b'precious')
        os.symlink(str(tmp_path / 'elsewhere.json'), str(out / intruder[5:]))
    elif intruder.endswith('/'):
        (out / intruder).mkdir()
        (out / intruder / 'work.py').write_bytes(b'precious')
    else:
        (out / intruder).write_bytes(b'precious')
    before = snapshot(str(tmp_path))
    for overwrite in (False, True):
        with pytest.raises(UserError) as error:
            dataset.write_dataset(str(out), random_images(3, 1, 8), overwrite=overwrite)
        message = str(error.value)
        assert message.startswith(str(out) + ': holds %s, which is not part of a dataset' % intruder.split()[-1]
                                  .rstrip('/')), message
        assert snapshot(str(tmp_path)) == before
    with pytest.raises(UserError):  # refused the same way before any work
        dataset.check_new_dataset_dir(str(out), overwrite=True)


def test_overwrite_in_place_when_the_folder_must_stay(tmp_path, monkeypatch):
    """The working directory itself (`create_phantoms .`) cannot be swapped away: its files are replaced one by
    one, the old dataset's files that the new one lacks are removed, and the folder stays the same."""
    out = tmp_path / 'AIS'
    dataset.write_dataset(str(out), random_images(2, 1, 16, seed=1), labels=np.eye(2))
    inode = os.stat(str(out)).st_ino
    monkeypatch.chdir(str(out))
    images = random_images(3, 1, 8, seed=2)
    dataset.write_dataset('.', images, overwrite=True)
    assert sorted(os.listdir(str(out))) == ['AIS-groups.npy', 'AIS-r02.tfrecords', 'AIS-r03.tfrecords']
    assert os.stat(str(out)).st_ino == inode and os.listdir(str(tmp_path)) == ['AIS']
    np.testing.assert_array_equal(read_array(str(out / 'AIS-r03.tfrecords')), images)


def test_a_new_dataset_in_an_empty_working_directory(tmp_path, monkeypatch):
    out = tmp_path / 'ct'
    out.mkdir()
    monkeypatch.chdir(str(out))
    dataset.write_dataset('.', random_images(2, 1, 4))
    assert sorted(os.listdir('.')) == ['ct-groups.npy', 'ct-r02.tfrecords'] and os.path.samefile('.', str(out))


@pytest.mark.parametrize('case', ['new', 'overwrite', 'overwrite in place'])
def test_a_dataset_another_writer_made_meanwhile_is_never_replaced(tmp_path, monkeypatch, case):
    """A second writer runs from start to end between this one's checks and its commit (called from the progress
    callback, a real write_dataset): this one then fails with one line and leaves the other's dataset whole."""
    out = tmp_path / 'AIS'
    if case != 'new':
        dataset.write_dataset(str(out), random_images(2, 1, 8, seed=1))
    if case == 'overwrite in place':
        monkeypatch.chdir(str(out))
    target = '.' if case == 'overwrite in place' else str(out)
    theirs, ours = random_images(2, 1, 8, seed=3), random_images(300, 1, 8, seed=4)
    other_runs = []

    def other_writer(_):
        if not other_runs:
            try:
                other_runs.append(dataset.write_dataset(str(out), theirs, overwrite=case != 'new'))
            except UserError as refused:
                other_runs.append(refused)
    if case == 'overwrite in place':  # our staging folder is inside: the other writer sees it, refuses and ends
        dataset.write_dataset(target, ours, overwrite=True, progress=other_writer)
        assert str(other_runs[0]) == '%s: another command (process %d) is writing into it; nothing was written' \
            % (out, os.getpid())
        np.testing.assert_array_equal(read_array(str(out / 'AIS-r03.tfrecords')), ours)
        return
    with pytest.raises(UserError) as error:
        dataset.write_dataset(target, ours, overwrite=case != 'new', progress=other_writer)
    assert str(error.value) == '%s: was %s by another command while this one ran; it is left as it is and ' \
        'nothing was written' % (os.path.abspath(target), 'created' if case == 'new' else 'changed')
    assert sorted(os.listdir(str(tmp_path))) == ['AIS']
    assert sorted(os.listdir(str(out))) == ['AIS-groups.npy', 'AIS-r02.tfrecords', 'AIS-r03.tfrecords']
    np.testing.assert_array_equal(read_array(str(out / 'AIS-r03.tfrecords')), theirs)


def test_a_full_disk_is_one_line_and_leaves_nothing(full_disk):
    """TensorFlow's TFRecord writer meets ENOSPC: one line naming the dataset, no staging folder left."""
    out = str(full_disk / 'AIS')
    with pytest.raises(UserError) as error:
        dataset.write_dataset(out, random_images(300, 1, 16))
    assert str(error.value) == '%s: cannot be written (No space left on device); nothing was written' % out
    assert os.listdir(str(full_disk)) == []


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
# Nodule groups


def load_npy(path):
    with open(path, 'rb') as f:
        return np.load(f, allow_pickle=False)


def test_every_dataset_gets_groups_one_nodule_per_image_by_default(tmp_path):
    out = str(tmp_path / 'AIS')
    dataset.write_dataset(out, random_images(5, 1, 8))
    stored = load_npy(os.path.join(out, 'AIS-groups.npy'))
    assert stored.dtype == np.int64 and stored.tolist() == [0, 1, 2, 3, 4]
    assert dataset.read_groups(out).tolist() == [0, 1, 2, 3, 4]


def test_groups_round_trip_and_are_checked_with_the_dataset(tmp_path):
    out = str(tmp_path / 'MIA')
    dataset.write_dataset(out, random_images(6, 1, 8), groups=np.array([0, 0, 0, 7, 7, 2], np.int32))
    stored = load_npy(dataset.groups_path(out))
    assert stored.dtype == np.int64 and stored.tolist() == [0, 0, 0, 7, 7, 2]
    groups = dataset.read_groups(out, 6)
    assert groups.dtype == np.int64 and groups.tolist() == [0, 0, 0, 7, 7, 2]
    assert dataset.check_dataset(out).groups.tolist() == [0, 0, 0, 7, 7, 2]


def test_a_dataset_without_groups_reads_as_none(tmp_path):
    out, _ = make_dataset(tmp_path)
    os.remove(dataset.groups_path(out))   # as written by other tools or earlier versions
    assert dataset.read_groups(out) is None and dataset.check_dataset(out).groups is None


@pytest.mark.parametrize('groups, fragment', [
    ([0, 1, 2], 'lists nodule groups for 3 images but the dataset has 4'),
    (np.zeros(4, np.float32), '1-D integer array [N], got float32 [4]'),
    (np.zeros((4, 1), np.int64), '1-D integer array [N], got int64 [4, 1]'),
    ([0, 1, -1, 2], 'whole numbers from 0'),
    (np.array([True, False, True, True]), '1-D integer array'),
])
def test_bad_groups_leave_nothing(tmp_path, groups, fragment):
    out = str(tmp_path / 'AIS')
    before = snapshot(str(tmp_path))
    with pytest.raises(UserError) as error:
        dataset.write_dataset(out, random_images(4, 1, 8), groups=groups)
    assert fragment in str(error.value) and '\n' not in str(error.value), str(error.value)
    assert_failed_cleanly(tmp_path, out, before, error)


@pytest.mark.parametrize('content, fragment', [
    (np.zeros(6, np.float64), '1-D integer array [N], got float64 [6]'),
    (np.zeros((6, 2), np.int64), '1-D integer array [N], got int64 [6, 2]'),
    (np.arange(-1, 5), 'whole numbers from 0 to 2**63 - 1, got -1..4'),
    (np.array([0, 1, 2, 3, 4, 2 ** 64 - 1], np.uint64), 'whole numbers from 0 to 2**63 - 1'),
    (np.arange(5), 'lists nodule groups for 5 images but the dataset has 6'),
    (np.zeros(6, dtype=[('a', 'i8')]), '1-D integer array'),
    (b'not numpy', 'not a NumPy .npy array'),
])
def test_bad_groups_files(tmp_path, content, fragment):
    out, _ = make_dataset(tmp_path)
    path = dataset.groups_path(out)
    with open(path, 'wb') as f:
        f.write(content) if isinstance(content, bytes) else np.save(f, content)
    for read in (lambda: dataset.read_groups(out, 6), lambda: dataset.check_dataset(out)):
        with pytest.raises(UserError) as error:
            read()
        message = str(error.value)
        assert message.startswith(path + ': ') and fragment in message and '\n' not in message, message


def test_groups_header_promising_more_than_the_file_is_refused_without_allocating(tmp_path):
    out, _ = make_dataset(tmp_path, count=2, size=4)
    path = dataset.groups_path(out)
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.int64))
    header['shape'] = (10 ** 11,)   # 800 GB of int64
    with open(path, 'wb') as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(b'\0' * 16)
    with memory_limit(64):
        with pytest.raises(UserError) as error:
            dataset.read_groups(out)
    assert str(error.value) == '%s: damaged: its header describes [100000000000] int64 values but the file ' \
                               'holds 16 bytes of data' % path


def test_write_levels_copies_given_levels_as_they_are(tmp_path):
    images = random_images(3, 1, 8, seed=12)
    levels = {3: images, 2: random_images(3, 1, 4, seed=13)}   # not the box average: copied, not rebuilt
    out = dataset.write_levels(str(tmp_path / 'copy'), levels, groups=[4, 4, 9])
    np.testing.assert_array_equal(read_array(dataset.tfrecord_path(out, 2)), levels[2])
    np.testing.assert_array_equal(read_array(dataset.tfrecord_path(out, 3)), images)
    assert dataset.read_groups(out).tolist() == [4, 4, 9]
    with pytest.raises(UserError, match='levels must run from 4x4 up to 8x8 with 3 images each'):
        dataset.write_levels(str(tmp_path / 'gap'), {3: images, 2: levels[2][:2]})
    assert sorted(os.listdir(str(tmp_path))) == ['copy']


# ---------------------------------------------------------------------------------------------------------------
# What a killed writer leaves behind


# Writes a dataset of 600 images and stops (sleeps) after the first chunk, with everything staged so far on disk.
STALLED_WRITER = """
import sys
import time
sys.path.insert(0, %r)
import numpy as np
from nodules.data import dataset
def stall(_):
    print('staged', flush=True)
    time.sleep(600)
dataset.write_dataset(sys.argv[1], np.zeros((600, 1, 8, 8), np.uint8), progress=stall)
"""


def hidden(directory):
    return sorted(name for name in os.listdir(str(directory)) if name.startswith('.'))


@pytest.mark.slow
def test_the_next_write_removes_what_a_killed_writer_left(tmp_path):
    process = subprocess.Popen([sys.executable, '-c', STALLED_WRITER % ROOT, str(tmp_path / 'AIS')],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    try:
        assert process.stdout.readline() == 'staged\n', process.stderr.read()
        process.kill()   # SIGKILL: no clean-up can run
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    leftover, = hidden(tmp_path)
    assert leftover.startswith('.AIS.nodules-%d-' % process.pid) and leftover.endswith('.tmp')
    assert 'AIS-r03.tfrecords' in os.listdir(str(tmp_path / leftover / 'new'))
    assert not os.path.exists(str(tmp_path / 'AIS'))
    # What the next write leaves: a running process's staging folder (this one's), and every user folder that
    # merely looks like one -- old-style names, a dead process's exact name without its record, a copy.
    running = tmp_path / ('.MIA.nodules-%d-0badf00d.tmp' % os.getpid())
    running.mkdir()
    (running / 'new').mkdir()
    look_alikes = ['.AIS.0123abcd.tmp', '.AIS.k2j4_x9q.old', '.new.20240101.old', '.staging-mybackup',
                   '.AIS.nodules-%d-12345678.tmp' % process.pid, '.AIS.nodules-%d-aaaaaaaa.tmp' % process.pid]
    for name in look_alikes:
        (tmp_path / name).mkdir()
        (tmp_path / name / 'AIS-r02.tfrecords').write_bytes(b'the user data')
    (tmp_path / look_alikes[-1] / '.nodules-stage').write_bytes(
        open(str(tmp_path / leftover / '.nodules-stage'), 'rb').read())  # a record naming another folder
    two_hours_ago = time.time() - 7200
    for name in look_alikes:
        os.utime(str(tmp_path / name), (two_hours_ago, two_hours_ago))
    images = random_images(2, 1, 8)
    dataset.write_dataset(str(tmp_path / 'AIS'), images)
    assert hidden(tmp_path) == sorted([running.name] + look_alikes)
    for name in look_alikes:
        assert (tmp_path / name / 'AIS-r02.tfrecords').read_bytes() == b'the user data'
    np.testing.assert_array_equal(read_array(dataset.tfrecord_path(str(tmp_path / 'AIS'), 3)), images)


# ---------------------------------------------------------------------------------------------------------------
# Reading (nodules/data/dataset.py's reader against files written independently here)


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


# ---------------------------------------------------------------------------------------------------------------
# Record framing: checked before TensorFlow's reader sees a file


def crc32c_bitwise(data):
    """CRC32C (Castagnoli), bit by bit: an independent reference for the table-driven one in nodules/data/dataset.py."""
    crc = 0xFFFFFFFF
    for byte in bytearray(data):
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def mask(crc):
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def record_bytes(payload, length=None, length_checksum=None, data_checksum=None):
    """One framed record; any field can be overridden (the length then keeps its valid checksum unless told)."""
    length_field = struct.pack('<Q', len(payload) if length is None else length)
    return (length_field + struct.pack('<I', mask(crc32c_bitwise(length_field)) if length_checksum is None
                                       else length_checksum)
            + payload + struct.pack('<I', mask(crc32c_bitwise(payload)) if data_checksum is None else data_checksum))


def write_bytes(path, data):
    with open(str(path), 'wb') as f:
        f.write(data)
    return str(path)


def test_crc32c_reference_and_tensorflows_own_checksums(tmp_path):
    assert crc32c_bitwise(b'123456789') == 0xE3069283  # the published check value of CRC-32C
    images = random_images(3, 1, 8, seed=20)
    path = str(tmp_path / 'x-r03.tfrecords')
    write_examples(path, [image_example(image.shape, image.tobytes()) for image in images])
    with open(path, 'rb') as f:
        raw = f.read()
    offset, payloads = 0, []
    while offset < len(raw):   # every checksum TensorFlow wrote is what both implementations compute
        length, length_checksum = struct.unpack_from('<QI', raw, offset)
        payload = raw[offset + 12:offset + 12 + length]
        data_checksum, = struct.unpack_from('<I', raw, offset + 12 + length)
        length_field = raw[offset:offset + 8]
        assert length_checksum == mask(crc32c_bitwise(length_field)) == dataset.masked_crc32c(length_field)
        assert data_checksum == mask(crc32c_bitwise(payload)) == dataset.masked_crc32c(payload)
        offset += 16 + length
        payloads.append(payload)
    assert len(payloads) == 3 and dataset.check_record_framing(path) == 3
    assert b''.join(record_bytes(payload) for payload in payloads) == raw  # record_bytes frames as TensorFlow does


def good_records(count=3, size=8, seed=21):
    return [record_bytes(image_example(image.shape, image.tobytes()).SerializeToString())
            for image in random_images(count, 1, size, seed=seed)]


def framing_cases():
    records = good_records()
    huge = record_bytes(b'\0' * 96, length=2 ** 50)   # the reported file: 112 bytes, a valid length checksum
    return {
        'length of 2^50': (huge, ['record 0 at byte 0 claims 1125899906842624 bytes', 'ends 112 bytes later']),
        'length 2^50 in record 2': (records[0] + records[1] + huge, ['record 2 at byte %d claims' % (2 * len(records[0]))]),
        'length one byte too long': (records[0] + record_bytes(b'x' * 10, length=11),
                                     ['record 1', 'claims 11 bytes of data but the file ends 26 bytes later']),
        'length checksum of record 0': (record_bytes(b'x' * 10, length_checksum=12345),
                                        ['not a TFRecords file', 'length field of its first record']),
        'length checksum of record 1': (records[0] + record_bytes(b'x' * 10, length_checksum=12345),
                                        ['corrupt: record 1 at byte %d' % len(records[0]), 'fails its checksum']),
        'header cut off': (records[0] + records[1][:7], ['truncated: record 1 at byte %d' % len(records[0])]),
        'footer cut off': (records[0] + records[1][:-1], ['truncated or corrupt: record 1']),
        'text': (b'shape,data\n1,8,8,...\n' * 5, ['not a TFRecords file']),
    }


@pytest.mark.parametrize('case', sorted(framing_cases()))
def test_bad_framing_is_refused_before_tensorflow_reads(tmp_path, case):
    data, fragments = framing_cases()[case]
    path = write_bytes(tmp_path / 'bad-r03.tfrecords', data)
    for reader in (dataset.check_record_framing, dataset.count_records, dataset.read_images,
                   lambda p: list(dataset.iterate_images(p))):
        with pytest.raises(UserError) as error:
            reader(path)
        message = str(error.value)
        assert message.startswith(path + ': ') and '\n' not in message, message
        for fragment in fragments:
            assert fragment in message, (fragment, message)


def test_framing_counts_records_without_reading_them(tmp_path):
    records = good_records(5)
    assert dataset.check_record_framing(write_bytes(tmp_path / 'a.tfrecords', b''.join(records))) == 5
    assert dataset.check_record_framing(write_bytes(tmp_path / 'empty.tfrecords', b'')) == 0
    # A payload that is no Example and a wrong data checksum are TensorFlow's and decode_example's to find.
    odd = records[0] + record_bytes(b'not an example') + record_bytes(b'x' * 9, data_checksum=7)
    path = write_bytes(tmp_path / 'b.tfrecords', odd)
    assert dataset.check_record_framing(path) == 3
    with pytest.raises(UserError, match='record 1 is not a tf.train.Example'):
        dataset.read_images(path)
    path = write_bytes(tmp_path / 'c.tfrecords', records[0] + record_bytes(b'x' * 9, data_checksum=7))
    with pytest.raises(UserError, match=r'corrupt: record 1 fails its data checksum'):
        dataset.count_records(path)


def test_devices_and_pipes_are_refused_without_opening(tmp_path):
    fifo = str(tmp_path / 'pipe-r03.tfrecords')
    os.mkfifo(fifo)  # opening it would wait for a writer forever
    for path in ('/dev/zero', fifo):
        with pytest.raises(UserError) as error:
            dataset.read_images(path)
        assert str(error.value) == '%s: is not a regular file (a device, pipe or socket), not a TFRecords file' % path


READERS_SCRIPT = """
import sys
sys.path.insert(0, %r)
from nodules.data import dataset
from nodules.util.errors import UserError
dataset_dir, path = sys.argv[1], sys.argv[2]
calls = [('read_images', lambda: dataset.read_images(path)), ('count_records', lambda: dataset.count_records(path)),
         ('iterate_images', lambda: list(dataset.iterate_images(path))),
         ('check_dataset', lambda: dataset.check_dataset(dataset_dir)),
         ('training_batches', lambda: dataset.training_batches(dataset_dir, 3, 2))]
for name, call in calls:
    try:
        call()
        print(name, 'read it')
    except UserError as error:
        print(name, error)
"""


@pytest.mark.slow  # ~8 s: every reader plus the display script on a 2^50-length record
def test_length_of_2_50_every_reader_and_the_display_cli(tmp_path):
    """The reported crash: TensorFlow's record reader died with SIGSEGV on this 112-byte file.  The readers run
    in a fresh interpreter, so a crash fails this test instead of ending the test run.  (The scripts' readers --
    display, info, extract, compare, metrics, training -- all go through these functions.)"""
    data_dir = tmp_path / 'huge'
    data_dir.mkdir()
    path = write_bytes(data_dir / 'huge-r03.tfrecords', record_bytes(b'\0' * 96, length=2 ** 50))
    write_bytes(data_dir / 'huge-r02.tfrecords', b''.join(good_records(1, 4)))
    assert os.path.getsize(path) == 112
    expected = '%s: truncated or corrupt: record 0 at byte 0 claims 1125899906842624 bytes of data but the file ' \
               'ends 112 bytes later' % path
    result = subprocess.run([sys.executable, '-c', READERS_SCRIPT % ROOT, str(data_dir), path], timeout=300,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(' ', 1)[0] for line in lines] == ['read_images', 'count_records', 'iterate_images',
                                                         'check_dataset', 'training_batches']
    for line in lines:
        assert line.split(' ', 1)[1] == expected, line

    out = str(tmp_path / 'out')
    result = run_script('1-dataset_display.py', '--tfrecords', path, '--outdir', out, timeout=300)
    assert result.returncode == 1 and result.stderr == 'error: %s\n' % expected, (result.returncode, result.stderr)
    assert not os.path.exists(out)


# ---------------------------------------------------------------------------------------------------------------
# check_dataset: every file, every record, every count


def make_dataset(tmp_path, name='AIS', count=6, size=16, channels=1, labels=None, seed=30):
    out = str(tmp_path / name)
    images = random_images(count, channels, size, seed=seed)
    dataset.write_dataset(out, images, labels=labels)
    return out, images


def replace_file(path, images):
    os.remove(path)
    write_examples(path, [image_example(image.shape, image.tobytes()) for image in images])


def test_check_dataset_reports_a_good_dataset(tmp_path):
    labels = np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1, 2]]
    out, images = make_dataset(tmp_path, labels=labels)
    summary = dataset.check_dataset(out)
    assert summary.num_images == 6 and summary.shape == [1, 16, 16]
    assert summary.files == dataset.list_tfrecords(out) and sorted(summary.files) == [2, 3, 4]
    np.testing.assert_array_equal(summary.labels, labels)
    assert dataset.check_dataset(make_dataset(tmp_path, 'rgb', channels=3)[0]).shape == [3, 16, 16]


def check_dataset_error(out):
    with pytest.raises(UserError) as error:
        dataset.check_dataset(out)
    message = str(error.value)
    assert '\n' not in message
    return message


def test_check_dataset_refuses_a_labels_file_of_another_length(tmp_path):
    out, _ = make_dataset(tmp_path, count=64, size=8)
    with open(dataset.labels_path(out), 'wb') as f:
        np.save(f, np.eye(2, dtype=np.float32)[np.arange(10) % 2])
    message = check_dataset_error(out)
    assert message == '%s: has 10 label rows for 64 images; a labels file needs one row per image' \
        % dataset.labels_path(out)


def test_check_dataset_refuses_a_lower_resolution_with_fewer_records(tmp_path):
    out, images = make_dataset(tmp_path, count=6)
    path = dataset.tfrecord_path(out, 3)
    replace_file(path, reference_pyramid(images)[3][:4])
    assert check_dataset_error(out) == \
        '%s: holds 4 records but AIS-r04.tfrecords holds 6; every resolution must hold the same images' % path


@pytest.mark.parametrize('problem', ['record of another size', 'other channel count', 'missing resolution',
                                     'data checksum', 'empty file', 'no Example'])
def test_check_dataset_names_the_bad_file(tmp_path, problem):
    out, images = make_dataset(tmp_path)
    path = dataset.tfrecord_path(out, 3)
    pyramid = reference_pyramid(images)
    if problem == 'record of another size':
        replace_file(path, list(pyramid[3][:5]) + [pyramid[2][5]])
        fragments = ['record 5 has shape [1, 4, 4]', '[1, 8, 8]']
    elif problem == 'other channel count':
        replace_file(path, np.repeat(pyramid[3], 3, axis=1))
        fragments = ['record 0 has shape [3, 8, 8]', '[1, 8, 8]']
    elif problem == 'missing resolution':
        os.remove(path)
        path, fragments = out, ['lacks the resolutions 8x8']
    elif problem == 'data checksum':
        with open(path, 'r+b') as f:
            f.seek(os.path.getsize(path) - 30)
            byte = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([byte[0] ^ 0x10]))
        fragments = ['record 5 fails its data checksum']
    elif problem == 'empty file':
        replace_file(path, [])
        fragments = ['holds no records']
    elif problem == 'no Example':
        write_bytes(path, record_bytes(b'\x07' * 50))
        fragments = ['record 0 is not a tf.train.Example']
    message = check_dataset_error(out)
    assert message.startswith(path + ': '), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


# ---------------------------------------------------------------------------------------------------------------
# training_batches: every image once per epoch, and no silent shrinking


def test_training_batches_yield_every_image_once_per_epoch(tmp_path, tf_session):
    labels = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0, 1, 2, 3]]
    out, images = make_dataset(tmp_path, count=8, size=8, labels=labels)
    batch, label_batch = dataset.training_batches(out, 3, 8, labels=labels, seed=1)
    got_images, got_labels = tf_session.run([batch, label_batch])
    assert got_images.shape == (8, 8, 8, 1) and got_labels.shape == (8, 4)
    as_uint8 = np.rint((got_images + 1.0) * 127.5).astype(np.uint8).transpose(0, 3, 1, 2)
    order = [next(i for i in range(8) if np.array_equal(image, images[i])) for image in as_uint8]
    assert sorted(order) == list(range(8))                       # each image exactly once, shuffled
    np.testing.assert_array_equal(got_labels, labels[order])     # and each with its own label


def test_training_batches_refuse_counts_that_would_shrink_the_data(tmp_path, tf_session):
    out, images = make_dataset(tmp_path, count=64, size=8)
    with pytest.raises(UserError) as error:
        dataset.training_batches(out, 3, 4, labels=np.eye(2, dtype=np.float32)[np.arange(10) % 2])
    assert str(error.value) == '%s: has 10 label rows for 64 images; a labels file needs one row per image' \
        % dataset.labels_path(out)
    path = dataset.tfrecord_path(out, 2)
    replace_file(path, reference_pyramid(images)[2][:50])
    with pytest.raises(UserError) as error:
        dataset.training_batches(out, 2, 4)
    assert str(error.value) == \
        '%s: holds 50 records but AIS-r03.tfrecords holds 64; every resolution must hold the same images' % path


# ---------------------------------------------------------------------------------------------------------------
# Labels and metadata files


def test_labels_header_promising_more_than_the_file_is_refused_without_allocating(tmp_path):
    out, _ = make_dataset(tmp_path, count=2, size=4)
    path = dataset.labels_path(out)
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 3), np.float32))
    header['shape'] = (10 ** 11, 3)   # 1.2 TB of float32
    with open(path, 'wb') as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(b'\0' * 24)
    with memory_limit(64):
        with pytest.raises(UserError) as error:
            dataset.read_labels(out)
    assert str(error.value) == '%s: damaged: its header describes [100000000000, 3] float32 values but the file ' \
                               'holds 24 bytes of data' % path


@pytest.mark.parametrize('content, fragment', [
    (np.array([[0.0, np.nan]], np.float32), 'NaN or infinite'),
    (np.zeros((2, 2), dtype=[('a', 'f4')]), 'must be numbers'),
    (np.zeros(2, np.float32), 'must be [N, label_size]'),
    (b'not numpy', 'not a NumPy .npy array'),
])
def test_bad_labels_files(tmp_path, content, fragment):
    out, _ = make_dataset(tmp_path, count=2, size=4)
    path = dataset.labels_path(out)
    with open(path, 'wb') as f:
        f.write(content) if isinstance(content, bytes) else np.save(f, content)
    with pytest.raises(UserError) as error:
        dataset.read_labels(out)
    assert str(error.value).startswith(path + ': ') and fragment in str(error.value), str(error.value)


@pytest.mark.parametrize('content, fragment', [(b'{"a": ', 'not a JSON file'), (b'\xff\xfe{}', 'not a JSON file'),
                                               (b'[1, 2]', 'holds a JSON list')])
def test_bad_metadata_files(tmp_path, content, fragment):
    out, _ = make_dataset(tmp_path, count=2, size=4)
    path = write_bytes(dataset.metadata_path(out), content)
    with pytest.raises(UserError) as error:
        dataset.read_metadata(out)
    assert str(error.value).startswith(path + ': ') and fragment in str(error.value), str(error.value)


# ---------------------------------------------------------------------------------------------------------------
# Permissions


@pytest.mark.parametrize('umask', [0o022, 0o002, 0o077])
def test_new_dataset_has_the_permissions_of_any_new_directory(tmp_path, umask):
    previous = os.umask(umask)
    try:
        out, _ = make_dataset(tmp_path, count=2, size=8)
        os.mkdir(str(tmp_path / 'made by the user'))
    finally:
        os.umask(previous)
    mode = stat.S_IMODE(os.stat(out).st_mode)
    assert mode == 0o777 & ~umask == stat.S_IMODE(os.stat(str(tmp_path / 'made by the user')).st_mode), oct(mode)
    for name in os.listdir(out):
        assert stat.S_IMODE(os.stat(os.path.join(out, name)).st_mode) == 0o666 & ~umask, name


def test_existing_directory_keeps_its_permissions(tmp_path):
    out = tmp_path / 'mine'
    out.mkdir()
    os.chmod(str(out), 0o750)
    dataset.write_dataset(str(out), random_images(2, 1, 8))
    assert stat.S_IMODE(os.stat(str(out)).st_mode) == 0o750
    dataset.write_dataset(str(out), random_images(3, 1, 8), overwrite=True)
    assert stat.S_IMODE(os.stat(str(out)).st_mode) == 0o750 and dataset.count_records(
        dataset.tfrecord_path(str(out), 3)) == 3
