"""Tests for nodules/pix2pix/data.py: pairs from PNGs in the original's layout and from datasets with masks."""
import os

import numpy as np
import pytest
from PIL import Image

from nodules.data import dataset, phantoms
from nodules.pix2pix import data
from nodules.util.errors import UserError


def phantom_pairs(nodules=4, views=2, seed=7):
    """(patches, masks uint8 0/255, groups) of real phantom views and their exact masks."""
    images, groups, info = phantoms.draw_dataset('AIS', nodules, views, seed, masks=True)
    return images[:, 0], np.where(info['masks'], 255, 0).astype(np.uint8), groups


def write_pair_pngs(folder, patches, masks, prefix='pair'):
    """Side-by-side 8-bit PNGs, patch left and mask right, as the original's demo data; returns the folder."""
    os.makedirs(str(folder), exist_ok=True)
    for i, (patch, mask) in enumerate(zip(patches, masks)):
        Image.fromarray(np.concatenate([patch, mask], axis=1)).save(os.path.join(str(folder), '%s%03d.png' % (prefix, i)))
    return str(folder)


def write_mask_pngs(folder, masks):
    os.makedirs(str(folder), exist_ok=True)
    for i, mask in enumerate(masks):
        Image.fromarray(mask).save(os.path.join(str(folder), 'mask%03d.png' % i))
    return str(folder)


def test_pairs_read_back_exactly_in_file_order(tmp_path):
    patches, masks, _ = phantom_pairs()
    pairs = data.read_pairs(write_pair_pngs(tmp_path / 'pairs', patches, masks))
    np.testing.assert_array_equal(pairs.patches, patches)
    np.testing.assert_array_equal(pairs.masks, masks)
    assert pairs.names[:2] == ['pair000.png', 'pair001.png'] and pairs.groups is None


def test_a_dataset_with_masks_gives_images_masks_and_groups(tmp_path):
    patches, masks, groups = phantom_pairs()
    dataset.write_dataset(str(tmp_path / 'D'), patches[:, np.newaxis], groups=groups, masks=masks)
    pairs = data.read_pairs(str(tmp_path / 'D'))
    np.testing.assert_array_equal(pairs.patches, patches)
    np.testing.assert_array_equal(pairs.masks, masks)
    np.testing.assert_array_equal(pairs.groups, groups)


def test_mask_folders_for_generation_take_masks_and_pairs(tmp_path):
    patches, masks, _ = phantom_pairs()
    alone = data.read_pairs(write_mask_pngs(tmp_path / 'm', masks), need_patches=False)
    np.testing.assert_array_equal(alone.masks, masks)
    assert alone.patches is None
    with pytest.raises(UserError) as error:
        data.read_pairs(str(tmp_path / 'm'))
    assert 'mask000.png: is 64x64; the files of' in str(error.value) and '128x64 pairs' in str(error.value)


def bad_folder(tmp_path, problem):
    patches, masks, _ = phantom_pairs(2, 2)
    folder = write_pair_pngs(tmp_path / problem, patches, masks)
    target = os.path.join(folder, 'pair001.png')
    pair = np.asarray(Image.open(target))
    if problem == 'grey mask':
        pair = pair.copy()
        pair[10, 70] = 128
        Image.fromarray(pair).save(target)
    elif problem == 'empty mask':
        pair = pair.copy()
        pair[:, 64:] = 0
        Image.fromarray(pair).save(target)
    elif problem == 'wrong size':
        Image.fromarray(pair[:32, :64]).save(target)
    elif problem == 'colour':
        Image.fromarray(np.stack([pair] * 3, axis=-1)).save(target)
    elif problem == 'not an image':
        with open(target, 'wb') as f:
            f.write(b'hello')
    elif problem == '16-bit':
        Image.fromarray(pair.astype(np.uint16) * 257).save(target)
    elif problem == 'a JPEG named .png':
        Image.fromarray(pair).save(target, 'JPEG')
    return folder, target


@pytest.mark.parametrize('problem, message', [
    ('grey mask', 'its mask half (columns 64-127) is not binary: it holds 128 at row 10, column 70 (1 pixel holds '
                  'values other than 0 and 255: 128)'),
    ('empty mask', 'its mask half (columns 64-127) is empty (no pixel is 255); every mask needs a nodule'),
    ('wrong size', 'is 64x32; the files of'),
    ('colour', 'is a colour image with 3 channel(s); pairs and masks are 8-bit grayscale PNGs'),
    ('16-bit', 'is a 16-bit grayscale image with 1 channel(s); pairs and masks are 8-bit grayscale PNGs'),
    ('a JPEG named .png', 'is not a PNG file; pairs and masks are 8-bit grayscale PNGs'),
    ('not an image', 'cannot be read as an image'),
])
def test_bad_pairs_are_one_line_naming_the_file(tmp_path, problem, message):
    folder, target = bad_folder(tmp_path, problem)
    with pytest.raises(UserError) as error:
        data.read_pairs(folder)
    text = str(error.value)
    assert text.startswith(target) and message in text and '\n' not in text


@pytest.mark.parametrize('problem, message', [
    ('grey', 'mask001.png: the mask is not binary: it holds 7 at row 0, column 0 (1 pixel holds values other than 0 '
             'and 255: 7); masks hold only 0 (outside the nodule) and 255 (inside)'),
    ('empty', 'mask001.png: the mask is empty (no pixel is 255); every mask needs a nodule'),
])
def test_bad_lone_masks_are_one_line_naming_the_file(tmp_path, problem, message):
    masks = phantom_pairs(2, 1)[1]
    if problem == 'grey':
        masks[1, 0, 0] = 7
    else:
        masks[1] = 0
    folder = write_mask_pngs(tmp_path / 'm', masks)
    with pytest.raises(UserError) as error:
        data.read_pairs(folder, need_patches=False)
    assert str(error.value) == os.path.join(folder, message)


def test_an_empty_mask_of_a_dataset_is_refused_naming_its_masks_file(tmp_path):
    patches, masks, _ = phantom_pairs(2, 1)
    masks[1] = 0
    dataset.write_dataset(str(tmp_path / 'D'), patches[:, np.newaxis], masks=masks)
    with pytest.raises(UserError) as error:
        data.read_pairs(str(tmp_path / 'D'))
    assert str(error.value) == ('%s: mask 1 is empty (no pixel is 255); every mask needs a nodule'
                                % dataset.masks_path(str(tmp_path / 'D')))


def test_no_pngs_and_no_folder(tmp_path):
    with pytest.raises(UserError, match='no PNG files and no dataset'):
        data.read_pairs(str(tmp_path))
    with pytest.raises(UserError, match='no such dataset or folder of PNGs'):
        data.read_pairs(str(tmp_path / 'nothing'))


def test_a_dataset_without_masks_is_refused(tmp_path):
    patches, _, _ = phantom_pairs(2, 1)
    dataset.write_dataset(str(tmp_path / 'D'), patches[:, np.newaxis])
    with pytest.raises(UserError, match='this dataset has no nodule masks'):
        data.read_pairs(str(tmp_path / 'D'))


def test_validation_holds_out_whole_nodules_or_the_last_pairs():
    patches, masks, groups = phantom_pairs(10, 3)
    pairs = data.Pairs('D', patches, masks, groups)
    training, validation = data.split_validation(pairs, 0.2)
    assert sorted(set(validation.groups)) == [8, 9] and not set(training.groups) & set(validation.groups)
    assert len(training) + len(validation) == 30
    np.testing.assert_array_equal(validation.patches, patches[groups >= 8])
    training, validation = data.split_validation(data.Pairs('F', patches, masks), 0.1)
    assert len(validation) == 3 and validation.names == ['F image 27', 'F image 28', 'F image 29']
    assert data.split_validation(pairs, 0)[1] is None
    with pytest.raises(UserError, match='1 pair\\(s\\) cannot be split'):
        data.split_validation(data.Pairs('F', patches[:1], masks[:1]), 0.1)
