"""Tests for nodules/data/image_files.py: real PNG and JPEG files written by Pillow (or byte by byte where Pillow
cannot write them) read into pixels, nothing dropped without a word, and the side-by-side pairs of the original
pix2pix data split into patch and mask."""
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from nodules.data import image_files
from nodules.util.errors import UserError


def save(folder, name, image, **options):
    os.makedirs(str(folder), exist_ok=True)
    path = os.path.join(str(folder), name)
    image.save(path, **options)
    return path


def grey(seed=0, size=16):
    return np.random.RandomState(seed).randint(0, 256, (size, size)).astype(np.uint8)


def png_16_bit_rgb(path, array):
    """A 16-bit RGB PNG written byte by byte (Pillow cannot write one): uint16 [H, W, 3]."""
    height, width, _ = array.shape
    raw = b''.join(b'\x00' + array[y].astype('>u2').tobytes() for y in range(height))

    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff)
    with open(path, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 16, 2, 0, 0, 0))
                + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))
    return path


def refusal(function, *args):
    with pytest.raises(UserError) as error:
        function(*args)
    assert '\n' not in str(error.value)
    return str(error.value)


# ----------------------------------------------------------------------------------------------------------------
# read_image


def test_8_bit_grayscale_and_rgb_are_read_exactly(tmp_path):
    pixels = grey(1)
    rgb = np.random.RandomState(2).randint(0, 256, (16, 16, 3)).astype(np.uint8)
    read = image_files.read_image(save(tmp_path, 'g.png', Image.fromarray(pixels, 'L')))
    assert read.dtype == np.uint8 and read.shape == (1, 16, 16)
    np.testing.assert_array_equal(read[0], pixels)
    read = image_files.read_image(save(tmp_path, 'c.png', Image.fromarray(rgb, 'RGB')))
    np.testing.assert_array_equal(read, rgb.transpose(2, 0, 1))


def test_16_bit_grayscale_keeps_its_stored_values(tmp_path):
    values = np.arange(256, dtype=np.uint16).reshape(16, 16) * 257
    read = image_files.read_image(save(tmp_path, 'a.png', Image.fromarray(values)))
    assert read.dtype == np.float32 and read.shape == (1, 16, 16)
    np.testing.assert_array_equal(read[0], values.astype(np.float32))
    assert image_files.bit_depth_name(read) == '16-bit grayscale'


def test_a_1_bit_image_is_grayscale_0_and_255(tmp_path):
    pixels = grey(3) > 127
    read = image_files.read_image(save(tmp_path, 'a.png', Image.fromarray(pixels)))
    np.testing.assert_array_equal(read[0], np.where(pixels, 255, 0))


@pytest.mark.parametrize('mode', ['RGBA', 'LA'])
def test_transparent_images_are_refused(tmp_path, mode):
    pixels = np.random.RandomState(1).randint(0, 256, (16, 16, len(mode))).astype(np.uint8)
    path = save(tmp_path, 'b.png', Image.fromarray(pixels, mode))
    assert refusal(image_files.read_image, path) == (
        '%s: is transparent in places (an alpha channel); only grayscale or RGB pixels are read: flatten it onto '
        'a background first' % path)


def test_a_palette_image_with_a_transparent_colour_is_refused(tmp_path):
    image = Image.fromarray(grey(4) // 16 * 16, 'L').convert('P')
    path = save(tmp_path, 'p.png', image, transparency=int(np.asarray(image)[0, 0]))
    assert 'is transparent in places' in refusal(image_files.read_image, path)


def test_an_opaque_alpha_channel_is_left_out(tmp_path):
    rgb = np.random.RandomState(2).randint(0, 256, (16, 16, 3)).astype(np.uint8)
    rgba = np.concatenate([rgb, np.full((16, 16, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(image_files.read_image(save(tmp_path, 'a.png', Image.fromarray(rgba, 'RGBA'))),
                                  rgb.transpose(2, 0, 1))
    la = np.stack([grey(5), np.full((16, 16), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(image_files.read_image(save(tmp_path, 'b.png', Image.fromarray(la, 'LA'))),
                                  la[np.newaxis, ..., 0])


def test_a_grey_palette_image_is_grayscale(tmp_path):
    pixels = grey(3)
    read = image_files.read_image(save(tmp_path, 'a.png', Image.fromarray(pixels, 'L').convert('P')))
    assert read.shape == (1, 16, 16)
    np.testing.assert_array_equal(read[0], pixels)


def test_a_colour_palette_image_stays_rgb(tmp_path):
    rgb = np.random.RandomState(5).randint(0, 4, (16, 16, 3)).astype(np.uint8) * 80  # 64 colours: kept exactly
    path = save(tmp_path, 'a.png', Image.fromarray(rgb, 'RGB').convert('P', palette=Image.ADAPTIVE, colors=64))
    np.testing.assert_array_equal(image_files.read_image(path), rgb.transpose(2, 0, 1))


def test_a_16_bit_colour_png_is_refused(tmp_path):
    path = png_16_bit_rgb(str(tmp_path / 'a.png'),
                          np.random.RandomState(6).randint(0, 65536, (16, 16, 3)).astype(np.uint16))
    assert refusal(image_files.read_image, path) == (
        '%s: is a 16-bit colour PNG, whose low bytes would be lost; convert it to 8-bit RGB or to grayscale first'
        % path)


def test_what_is_no_image_is_one_line(tmp_path):
    path = str(tmp_path / 'a.png')
    with open(path, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n' + b'\x00' * 40)  # the signature, then nothing readable
    assert refusal(image_files.read_image, path) == '%s: cannot be read as an image' % path
    os.makedirs(str(tmp_path / 'folder.png'))
    assert 'is a directory' in refusal(image_files.read_image, str(tmp_path / 'folder.png'))
    assert 'no such file' in refusal(image_files.read_image, str(tmp_path / 'missing.png'))


def test_is_png_reads_the_signature_not_the_name(tmp_path):
    assert image_files.is_png(save(tmp_path, 'a.png', Image.fromarray(grey(), 'L')))
    assert not image_files.is_png(save(tmp_path, 'b.png', Image.fromarray(grey(), 'L'), format='JPEG'))


# ----------------------------------------------------------------------------------------------------------------
# Side-by-side pairs


def disc(size=64, radius=12):
    rows, columns = np.indices((size, size))
    return np.where(np.hypot(rows - size / 2.0, columns - size / 2.0) <= radius, 255, 0).astype(np.uint8)


def pair_file(tmp_path, patch, mask, mode='L'):
    return save(tmp_path, 'x.png', Image.fromarray(np.concatenate([patch, mask], axis=1), mode))


def test_a_pair_splits_into_its_patch_and_mask(tmp_path):
    patch, mask = grey(7, 64), disc()
    path = pair_file(tmp_path, patch, mask)
    got_patch, got_mask = image_files.split_pair(image_files.read_image(path), path)
    assert got_patch.shape == (1, 64, 64) and got_mask.shape == (64, 64)
    np.testing.assert_array_equal(got_patch[0], patch)
    np.testing.assert_array_equal(got_mask, mask)


def test_an_empty_mask_half_is_a_choice_of_the_caller(tmp_path):
    path = pair_file(tmp_path, grey(7, 64), np.zeros((64, 64), np.uint8))
    pixels = image_files.read_image(path)
    assert not image_files.split_pair(pixels, path)[1].any()
    assert refusal(image_files.split_pair, pixels, path, False) == (
        '%s: its mask half (columns 64-127) is empty (no pixel is 255); every mask needs a nodule' % path)


def bad_pair_wrong_size(tmp_path):
    return save(tmp_path, 'x.png', Image.fromarray(np.zeros((64, 64), np.uint8), 'L')), (
        'is 64x64; a side-by-side pair is twice as wide as high (e.g. 128x64: the patch in columns 0-63, its mask '
        'in columns 64-127)')


def bad_pair_not_binary(tmp_path):
    mask = disc()
    mask[3, 4], mask[5, 6] = 254, 1
    return pair_file(tmp_path, np.zeros((64, 64), np.uint8), mask), (
        'its mask half (columns 64-127) is not binary: it holds 254 at row 3, column 68 (2 pixels hold values '
        'other than 0 and 255: 1, 254); masks hold only 0 (outside the nodule) and 255 (inside)')


def bad_pair_colour(tmp_path):
    return save(tmp_path, 'x.png', Image.fromarray(np.zeros((64, 128, 3), np.uint8), 'RGB')), (
        'is a colour image with 3 channel(s); side-by-side pairs are 8-bit grayscale')


def bad_pair_16_bit(tmp_path):
    return save(tmp_path, 'x.png', Image.fromarray(np.full((64, 128), 1000, np.uint16))), (
        'is a 16-bit grayscale image with 1 channel(s); side-by-side pairs are 8-bit grayscale')


BAD_PAIRS = dict((name[9:], function) for name, function in list(globals().items()) if name.startswith('bad_pair_'))


@pytest.mark.parametrize('case', sorted(BAD_PAIRS))
def test_bad_pairs_are_one_line_naming_the_file(tmp_path, case):
    path, expected = BAD_PAIRS[case](tmp_path)
    assert refusal(image_files.split_pair, image_files.read_image(path), path) == '%s: %s' % (path, expected)
