"""dataset_tool.py and nodule masks: create_phantoms writes the exact mask of each view, create_from_images --pairs
reads the original pix2pix side-by-side PNGs, merge / extract / info / compare carry the masks.  Real PNGs through
Pillow, real TFRecords through TensorFlow's reader, masks files read with NumPy alone."""
import os

import numpy as np
import pytest
from PIL import Image

from conftest import read_records, run_script
from test_dataset_tool import SCRIPT, ok, read_png, refusal

from nodules.data import dataset


def read_masks_file(directory):
    name = os.path.basename(str(directory))
    with open(os.path.join(str(directory), name + '-masks.npy'), 'rb') as f:
        masks = np.load(f, allow_pickle=False)
    assert masks.dtype == np.uint8 and masks.ndim == 3
    return masks


def disc_masks(count, size, seed):
    rs = np.random.RandomState(seed)
    rows, columns = np.indices((size, size))
    radii = rs.uniform(size * 0.1, size * 0.35, count)
    return np.stack([np.where(np.hypot(rows - size / 2.0, columns - size / 2.0) <= r, 255, 0)
                     for r in radii]).astype(np.uint8)


def masked_set(root, name, count, seed, size=16, metadata=None):
    images = np.random.RandomState(seed).randint(0, 256, (count, 1, size, size)).astype(np.uint8)
    masks = disc_masks(count, size, seed)
    dataset.write_dataset(str(root / name), images, masks=masks, metadata=metadata)
    return images, masks


# ----------------------------------------------------------------------------------------------------------------
# create_phantoms


@pytest.fixture(scope='module')
def phantom_set(tmp_path_factory):
    root = tmp_path_factory.mktemp('phantoms')
    result = ok(run_script(SCRIPT, 'create_phantoms', root / 'MIA', '--subtype', 'MIA', '--nodules', 16,
                           '--views', 2, '--seed', 5))
    return root / 'MIA', result


def test_create_phantoms_writes_the_mask_the_generator_draws(phantom_set):
    from nodules.data import phantoms
    directory, result = phantom_set
    assert 'and their nodule masks' in result.stdout
    masks = read_masks_file(directory)
    images, _, info = phantoms.draw_dataset('MIA', 16, 2, 5, masks=True)
    np.testing.assert_array_equal(read_records(directory / 'MIA-r06.tfrecords'), images)
    np.testing.assert_array_equal(masks, np.where(info['masks'], 255, 0))
    assert dataset.read_metadata(str(directory))['mask_definition'] == phantoms.MASK_DEFINITION


def test_phantom_masks_cover_the_nodule(phantom_set):
    """Inside the mask the patch is brighter than in a ring just around it (the nodule is denser than the lung),
    and the mask's area follows the phantom nodule's diameter."""
    from nodules.data import phantoms
    directory, _ = phantom_set
    masks = read_masks_file(directory) > 0
    images = read_records(directory / 'MIA-r06.tfrecords')[:, 0].astype(np.float64)
    assert masks.any(axis=(1, 2)).all()
    for image, mask in zip(images, masks):
        grown = mask.copy()
        for _ in range(4):   # 4 pixels (2.8 mm) around the mask
            grown = grown | np.roll(grown, 1, 0) | np.roll(grown, -1, 0) | np.roll(grown, 1, 1) | np.roll(grown, -1, 1)
        ring = grown & ~mask
        assert image[mask].mean() > image[ring].mean() + 10, (image[mask].mean(), image[ring].mean())
    diameters = phantoms.draw_dataset('MIA', 16, 2, 5)[2]['diameter_mm']
    area_mm2 = masks.reshape(16, 2, -1).mean(axis=(1, 2)) * (64 * 0.7) ** 2
    rank = lambda values: np.argsort(np.argsort(values))
    assert np.corrcoef(rank(area_mm2), rank(diameters))[0, 1] > 0.8
    # a slice never shows more than the nodule's largest cross-section (its outline may bulge by lobulation)
    assert (area_mm2 <= 1.6 * np.pi * (diameters / 2) ** 2).all()


# ----------------------------------------------------------------------------------------------------------------
# create_from_images --pairs


def write_pair(path, patch, mask, mode='L'):
    Image.fromarray(np.concatenate([patch, mask], axis=1), mode).save(str(path))


@pytest.fixture(scope='module')
def pairs(tmp_path_factory):
    """The original's layout: 64x128 grayscale PNGs, one subfolder per class."""
    root = tmp_path_factory.mktemp('pairs')
    rs = np.random.RandomState(9)
    made = {}
    for name, count in (('AIS', 3), ('IAC', 2)):
        os.makedirs(str(root / 'png' / name))
        patches = rs.randint(0, 256, (count, 64, 64)).astype(np.uint8)
        masks = disc_masks(count, 64, count)
        for index, (patch, mask) in enumerate(zip(patches, masks)):
            write_pair(root / 'png' / name / ('%d.png' % index), patch, mask)
        made[name] = patches, masks
    result = ok(run_script(SCRIPT, 'create_from_images', root / 'set', root / 'png', '--pairs',
                           '--labels-from-subdirs', '--shuffle', '--seed', 4))
    return root, made, result


def test_pairs_become_images_and_masks_in_one_order(pairs):
    root, made, result = pairs
    assert 'wrote 5 images of 5 nodules, 64x64 (1 channel(s)), and their nodule masks' in result.stdout
    patches = np.concatenate([made['AIS'][0], made['IAC'][0]])
    masks = np.concatenate([made['AIS'][1], made['IAC'][1]])
    classes = [0, 0, 0, 1, 1]
    images = read_records(root / 'set' / 'set-r06.tfrecords')[:, 0]
    stored = read_masks_file(root / 'set')
    with open(str(root / 'set' / 'set-rxx.labels'), 'rb') as f:
        labels = np.load(f, allow_pickle=False)
    order = [int(np.flatnonzero((patches == image).all(axis=(1, 2)))[0]) for image in images]
    assert sorted(order) == list(range(5)) and order != list(range(5))     # shuffled, all there
    np.testing.assert_array_equal(stored, masks[order])
    assert labels.argmax(axis=1).tolist() == [classes[i] for i in order]


# How a pair is split and its mask half checked is tested in tests/data/test_image_files.py; here that the
# script's refusals reach the user as one line naming the file, and nothing is written.


def bad_pair_not_binary(folder):
    mask = disc_masks(1, 64, 0)[0]
    mask[3, 4], mask[5, 6] = 254, 1
    write_pair(os.path.join(folder, 'x.png'), np.zeros((64, 64), np.uint8), mask)
    return 'its mask half (columns 64-127) is not binary: it holds 254 at row 3, column 68 (2 pixels hold values'


def bad_pair_not_a_power_of_two(folder):
    write_pair(os.path.join(folder, 'x.png'), np.zeros((48, 48), np.uint8), np.zeros((48, 48), np.uint8))
    return 'image size must be a power of two'


BAD_PAIRS = dict((name[9:], function) for name, function in list(globals().items()) if name.startswith('bad_pair_'))


@pytest.mark.parametrize('case', sorted(BAD_PAIRS))
def test_bad_pairs_are_one_line_naming_the_file(tmp_path, case):
    folder = str(tmp_path / 'png')
    os.makedirs(folder)
    fragment = BAD_PAIRS[case](folder)
    message = refusal('create_from_images', tmp_path / 'out', folder, '--pairs')
    assert message.startswith(os.path.join(folder, 'x.png') + ': ') and fragment in message, message
    assert sorted(os.listdir(str(tmp_path))) == ['png']


def test_pairs_are_8_bit(tmp_path):
    os.makedirs(str(tmp_path / 'png'))
    assert 'pairs are 8-bit' in refusal('create_from_images', tmp_path / 'out', tmp_path / 'png', '--pairs',
                                        '--input-range', 0, 1000)


# ----------------------------------------------------------------------------------------------------------------
# merge, extract, info, compare


@pytest.fixture(scope='module')
def masked_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp('masked')
    parts = [masked_set(root, 'AIS', 3, 1, metadata={'subtype': 'AIS'}),
             masked_set(root, 'MIA', 4, 2, metadata={'subtype': 'MIA'})]
    dataset.write_dataset(str(root / 'IAC'), np.zeros((2, 1, 16, 16), np.uint8))   # no masks
    return root, parts


def test_merge_concatenates_the_masks_in_the_order_of_the_images(masked_sets):
    root, parts = masked_sets
    result = ok(run_script(SCRIPT, 'merge', root / 'all', root / 'AIS', root / 'MIA'))
    assert 'with nodule masks' in result.stdout
    np.testing.assert_array_equal(read_records(root / 'all' / 'all-r04.tfrecords'),
                                  np.concatenate([parts[0][0], parts[1][0]]))
    np.testing.assert_array_equal(read_masks_file(root / 'all'), np.concatenate([parts[0][1], parts[1][1]]))


def test_merge_of_inputs_only_some_of_which_have_masks_warns_and_writes_none(masked_sets):
    root, _ = masked_sets
    result = ok(run_script(SCRIPT, 'merge', root / 'some', root / 'AIS', root / 'IAC'))
    assert result.stderr.strip() == ('warning: %s has no nodule masks (IAC-masks.npy); the merged dataset has none'
                                     % (root / 'IAC'))
    assert not dataset.has_masks(str(root / 'some'))


@pytest.mark.parametrize('resolution', [16, 8])
def test_extract_writes_a_mask_png_beside_every_image(masked_sets, tmp_path, resolution):
    root, parts = masked_sets
    result = ok(run_script(SCRIPT, 'extract', root / 'MIA', tmp_path / 'out', '--resolution', resolution))
    assert 'and their nodule masks (img*-mask.png)' in result.stdout
    names = sorted(os.listdir(str(tmp_path / 'out')))
    assert names == sorted(['groups.csv'] + ['img%08d.png' % i for i in range(4)]
                           + ['img%08d-mask.png' % i for i in range(4)])
    expected = dataset.downsample_masks(parts[1][1], resolution)
    images = read_records(root / 'MIA' / ('MIA-r%02d.tfrecords' % int(np.log2(resolution))))
    for index in range(4):
        mode, mask = read_png(tmp_path / 'out' / ('img%08d-mask.png' % index))
        assert mode == 'L'
        np.testing.assert_array_equal(mask, expected[index])
        np.testing.assert_array_equal(read_png(tmp_path / 'out' / ('img%08d.png' % index))[1], images[index, 0])


def test_extract_without_masks_writes_no_mask_pngs(masked_sets, tmp_path):
    root, _ = masked_sets
    ok(run_script(SCRIPT, 'extract', root / 'IAC', tmp_path / 'out'))
    assert not [name for name in os.listdir(str(tmp_path / 'out')) if 'mask' in name]


def test_info_says_whether_there_are_masks_and_their_mean_area(masked_sets):
    root, parts = masked_sets
    masks = parts[1][1]
    mean_pixels = (masks > 0).sum(axis=(1, 2)).mean()
    assert ('  masks: yes, 16x16, mean nodule area %.1f pixels (%.2f%% of the patch), 0 empty'
            % (mean_pixels, 100 * mean_pixels / 256)) in ok(run_script(SCRIPT, 'info', root / 'MIA')).stdout
    assert '  masks: no\n' in ok(run_script(SCRIPT, 'info', root / 'IAC')).stdout


def test_compare_looks_at_the_masks(masked_sets, tmp_path):
    root, parts = masked_sets
    images, masks = parts[1]
    dataset.write_dataset(str(tmp_path / 'same'), images, masks=masks, metadata={'subtype': 'MIA'})
    other = masks.copy()
    other[2, 0, 0] = 255 - other[2, 0, 0]
    dataset.write_dataset(str(tmp_path / 'other'), images, masks=other)
    dataset.write_dataset(str(tmp_path / 'none'), images)
    assert 'identical records, labels, nodule groups and masks' in ok(
        run_script(SCRIPT, 'compare', root / 'MIA', tmp_path / 'same')).stdout
    assert refusal('compare', root / 'MIA', tmp_path / 'other').endswith(
        'hold identical records but differ: nodule masks differ')
    assert refusal('compare', root / 'MIA', tmp_path / 'none').endswith('only the first has nodule masks')
