"""Nodule masks of a dataset (nodules/data/dataset.py): D/<name>-masks.npy written beside real TFRecords, read back
with NumPy alone and through the API, the lower resolutions against an independent NumPy reference, and every kind
of bad masks file refused in one line naming it."""
import os

import numpy as np
import pytest

from nodules.data import dataset
from nodules.util.errors import UserError
from conftest import read_records


def random_masks(count, size, seed=0):
    """Blobs of random size and place, so that every level has set and unset pixels."""
    rs = np.random.RandomState(seed)
    rows, columns = np.indices((size, size))
    masks = np.zeros((count, size, size), np.uint8)
    for mask in masks:
        centre, radius = rs.uniform(size * 0.25, size * 0.75, 2), rs.uniform(size * 0.1, size * 0.4)
        mask[np.hypot(rows - centre[0], columns - centre[1]) <= radius] = 255
    return masks


def reference_downsample(masks, resolution):
    """Independent reference: a low-resolution pixel is set when the mean of the full-resolution block it covers
    (in float64, in one step) is at least 128."""
    n, size, _ = masks.shape
    factor = size // resolution
    means = masks.astype(np.float64).reshape(n, resolution, factor, resolution, factor).mean(axis=(2, 4))
    return np.where(means >= 128, 255, 0).astype(np.uint8)


@pytest.fixture(scope='module')
def masked(tmp_path_factory):
    root = tmp_path_factory.mktemp('masks')
    rs = np.random.RandomState(3)
    images = rs.randint(0, 256, (7, 1, 32, 32)).astype(np.uint8)
    masks = random_masks(7, 32)
    path = dataset.write_dataset(str(root / 'set'), images, masks=masks, groups=[0, 0, 1, 1, 2, 2, 3])
    return path, images, masks


def load_npy(path):
    with open(path, 'rb') as f:
        return np.load(f, allow_pickle=False)


def test_masks_are_written_beside_the_records_and_read_back(masked):
    path, images, masks = masked
    assert sorted(os.listdir(path)) == ['set-groups.npy', 'set-masks.npy'] + [
        'set-r%02d.tfrecords' % k for k in range(2, 6)]
    stored = load_npy(os.path.join(path, 'set-masks.npy'))
    assert stored.dtype == np.uint8 and stored.shape == (7, 32, 32)
    np.testing.assert_array_equal(stored, masks)
    np.testing.assert_array_equal(read_records(os.path.join(path, 'set-r05.tfrecords')), images)
    assert dataset.has_masks(path)
    np.testing.assert_array_equal(dataset.read_masks(path), masks)
    np.testing.assert_array_equal(dataset.read_masks(path, number=3), masks[:3])
    summary = dataset.check_dataset(path)
    np.testing.assert_array_equal(summary.masks, masks)


@pytest.mark.parametrize('resolution', [16, 8, 4])
def test_lower_resolutions_follow_the_documented_rule(masked, resolution):
    path, _, masks = masked
    low = dataset.read_masks(path, resolution=resolution)
    np.testing.assert_array_equal(low, reference_downsample(masks, resolution))
    assert set(np.unique(low)) <= {0, 255}


def test_the_threshold_at_the_edge_of_half():
    # One 4x4 block per mask: exactly half set averages 127.5 -> unset, one pixel more -> set; for 2x2 blocks
    # 2 of 4 -> unset, 3 of 4 -> set.  At 16x16 -> 1x1 (256 pixels) 128 set -> 127.5 -> unset, 129 -> set.
    masks = np.zeros((4, 16, 16), np.uint8)
    masks[0].flat[:128] = 255
    masks[1].flat[:129] = 255
    masks[2, :, :8] = 255     # the left half: every 2x2 block is full or empty, at 1x1 exactly half
    masks[3, ::2] = 255       # every other row: each 2x2 block exactly half
    assert dataset.downsample_masks(masks, 1)[:, 0, 0].tolist() == [0, 255, 0, 0]
    assert dataset.downsample_masks(masks[3:], 8).max() == 0
    np.testing.assert_array_equal(dataset.downsample_masks(masks[2:3], 8)[0, :, :4], 255)
    for resolution in (8, 4, 2, 1):
        np.testing.assert_array_equal(dataset.downsample_masks(masks, resolution),
                                      reference_downsample(masks, resolution))


def test_without_a_masks_file(tmp_path):
    path = dataset.write_dataset(str(tmp_path / 'plain'), np.zeros((2, 1, 8, 8), np.uint8))
    assert not dataset.has_masks(path)
    assert 'set-masks.npy' not in os.listdir(path)
    assert dataset.check_dataset(path).masks is None
    with pytest.raises(UserError, match='has no nodule masks'):
        dataset.read_masks(path)


def test_asking_for_what_the_dataset_lacks(masked):
    path = masked[0]
    with pytest.raises(UserError, match='holds only 7 masks, 9 were asked for'):
        dataset.read_masks(path, number=9)
    for resolution in (64, 12, 2):
        with pytest.raises(UserError, match='has no %dx%d masks' % (resolution, resolution)):
            dataset.read_masks(path, resolution=resolution)


def test_the_writer_refuses_bad_masks_before_writing(tmp_path):
    images = np.zeros((3, 1, 8, 8), np.uint8)
    for masks, fragment in [(np.zeros((2, 8, 8), np.uint8), 'holds 2 masks but the dataset has 3 images'),
                            (np.zeros((3, 4, 4), np.uint8), 'masks are 4x4 but the images are 8x8'),
                            (np.full((3, 8, 8), 1, np.uint8), 'mask 0 is not binary: it holds 1 at row 0, column 0'),
                            (np.zeros((3, 8, 8), np.float32), 'must be a uint8 array')]:
        with pytest.raises(UserError, match=fragment):
            dataset.write_dataset(str(tmp_path / 'out'), images, masks=masks)
        assert os.listdir(str(tmp_path)) == []


def test_check_masks_can_refuse_empty_masks():
    masks = random_masks(3, 8)
    masks[1] = 0
    assert dataset.check_masks(masks, 3, 8, 'x') is masks
    with pytest.raises(UserError, match=r'^given: mask 1 is empty \(no pixel is 255\); every mask needs a nodule$'):
        dataset.check_masks(masks, 3, 8, 'given', allow_empty=False)


def test_check_masks_counts_the_masks_that_are_not_binary():
    masks = random_masks(5, 8)
    masks[2, 3, 4], masks[4, 0, 0], masks[4, 1, 1] = 7, 254, 1
    with pytest.raises(UserError) as error:
        dataset.check_masks(masks, None, None, 'given')
    assert str(error.value) == ('given: mask 2 is not binary: it holds 7 at row 3, column 4 (2 masks hold values '
                                'other than 0 and 255: 1, 7, 254); masks hold only 0 (outside the nodule) and 255 '
                                '(inside)')


@pytest.mark.parametrize('columns, expected', [
    (None, 'x.png: the mask is not binary: it holds 9 at row 2, column 5 (2 pixels hold values other than 0 and '
           '255: 9, 200); masks hold only 0 (outside the nodule) and 255 (inside)'),
    ((8, 15), 'x.png: its mask half (columns 8-15) is not binary: it holds 9 at row 2, column 13 (2 pixels hold '
              'values other than 0 and 255: 9, 200); masks hold only 0 (outside the nodule) and 255 (inside)'),
])
def test_check_mask_image_names_the_file_the_pixel_and_the_columns(columns, expected):
    mask = random_masks(1, 8)[0]
    mask[2, 5], mask[6, 1] = 9, 200
    with pytest.raises(UserError) as error:
        dataset.check_mask_image(mask, 'x.png', columns=columns)
    assert str(error.value) == expected


def test_check_mask_image_can_refuse_an_empty_mask():
    empty, good = np.zeros((8, 8), np.uint8), random_masks(1, 8)[0]
    assert dataset.check_mask_image(empty, 'x.png') is empty
    assert dataset.check_mask_image(good, 'x.png', allow_empty=False) is good
    for columns, which in ((None, 'the mask'), ((8, 15), 'its mask half (columns 8-15)')):
        with pytest.raises(UserError) as error:
            dataset.check_mask_image(empty, 'x.png', allow_empty=False, columns=columns)
        assert str(error.value) == 'x.png: %s is empty (no pixel is 255); every mask needs a nodule' % which


def test_overwrite_treats_the_masks_file_as_the_tools_own(masked, tmp_path):
    path, images, masks = masked
    target = str(tmp_path / 'copy')
    dataset.write_dataset(target, images, masks=masks)
    assert dataset.dataset_file_test(target)('copy-masks.npy')
    dataset.write_dataset(target, images[:2], overwrite=True)   # replaced whole: no masks file left over
    assert not dataset.has_masks(target)


# ----------------------------------------------------------------------------------------------------------------
# Bad masks files: one line naming the file


def save(path, array):
    with open(path, 'wb') as f:
        np.save(f, array)


def bad_count(path, masks):
    save(path, masks[:5])
    return 'holds 5 masks but the dataset has 7 images'


def bad_shape(path, masks):
    save(path, masks[:, :16, :16])
    return 'masks are 16x16 but the images are 32x32'


def bad_not_square(path, masks):
    save(path, masks[:, :, :16])
    return 'masks are 16x32'


def bad_values(path, masks):
    masks = masks.copy()
    masks[4, 10, 11] = 128
    save(path, masks)
    return ('mask 4 is not binary: it holds 128 at row 10, column 11 (1 mask holds values other than 0 and 255: '
            '128); masks hold only 0 (outside the nodule) and 255 (inside)')


def bad_bool_dtype(path, masks):
    save(path, masks > 0)
    return 'masks must be a uint8 array [N, H, W] holding 0 and 255, got bool [7, 32, 32]'


def bad_int64_dtype(path, masks):
    save(path, masks.astype(np.int64))
    return 'got int64'


def bad_rank(path, masks):
    save(path, masks[:, np.newaxis])
    return 'got uint8 [7, 1, 32, 32]'


def bad_truncated(path, masks):
    save(path, masks)
    with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) - 100)
    return 'damaged: its header describes [7, 32, 32] uint8 values'


def bad_huge_header(path, masks):
    # a header promising 7 million masks must be refused from the header, not make NumPy allocate them
    save(path, masks)
    with open(path, 'rb') as f:
        data = f.read()
    end = data.index(b'\n') + 1
    header = data[:end].replace(b'(7, 32, 32)', b'(7000000, 32, 32)').replace(b' ' * 6 + b'\n', b'\n')
    assert len(header) == end
    with open(path, 'wb') as f:
        f.write(header + data[end:])
    return 'damaged: its header describes [7000000, 32, 32] uint8 values'


def bad_not_npy(path, masks):
    with open(path, 'wb') as f:
        f.write(b'not an array at all')
    return 'not a NumPy .npy array'


def bad_pickled(path, masks):
    with open(path, 'wb') as f:
        np.save(f, np.array([None, 1], dtype=object), allow_pickle=True)
    return 'object'


def bad_directory(path, masks):
    os.mkdir(path)
    return 'is a directory, not a NumPy masks file'


def bad_fifo(path, masks):
    os.mkfifo(path)
    return 'is not a regular file (a device, pipe or socket)'


BAD_MASK_FILES = dict((name[4:], function) for name, function in list(globals().items()) if name.startswith('bad_'))


@pytest.mark.parametrize('case', sorted(BAD_MASK_FILES))
def test_bad_masks_files_are_one_line_naming_the_file(masked, tmp_path, case):
    import shutil
    import dataset_tool
    path, _, masks = masked
    copy = str(tmp_path / 'set')
    shutil.copytree(path, copy)
    masks_file = os.path.join(copy, 'set-masks.npy')
    os.remove(masks_file)
    fragment = BAD_MASK_FILES[case](masks_file, masks)
    for read in (dataset.read_masks, dataset.check_dataset, lambda d: dataset_tool.main(['info', d])):
        with pytest.raises(UserError) as error:
            read(copy)
        message = str(error.value)
        assert '\n' not in message and message.startswith(masks_file + ': ') and fragment in message, message
