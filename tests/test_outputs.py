"""outputs.py: all-or-nothing file sets, atomic single files, 8-bit conversion, mosaics and PNGs."""
import os

import numpy as np
import pytest
from PIL import Image

from errors import UserError
from conftest import directory_contents as listing
import outputs




def read_png(path):
    with Image.open(path) as image:
        image.load()
        return image.mode, np.array(image)


def contains_tile(mosaic, tile):
    """Whether `tile` appears somewhere in `mosaic` as a contiguous block."""
    h, w = tile.shape[:2]
    return any(np.array_equal(mosaic[y:y + h, x:x + w], tile)
               for y in range(mosaic.shape[0] - h + 1) for x in range(mosaic.shape[1] - w + 1))


# ---------------------------------------------------------------------------------------------------------------
# StagedFiles


def test_staged_files_commit_together(tmp_path):
    out = str(tmp_path / 'a' / 'b')   # created, parents too
    with outputs.StagedFiles(out) as staged:
        staged.add('one.bin', b'1')
        staged.add('two.bin', b'22')
        assert not os.path.exists(os.path.join(out, 'one.bin'))   # nothing lands before the end
    assert listing(out) == {'one.bin': b'1', 'two.bin': b'22'}


def test_staged_files_error_inside_block_writes_nothing(tmp_path):
    out = str(tmp_path / 'out')
    with pytest.raises(RuntimeError):
        with outputs.StagedFiles(out) as staged:
            staged.add('one.bin', b'1')
            raise RuntimeError('boom')
    assert listing(out) == {}


def test_staged_files_identical_existing_files_are_fine(tmp_path):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'one.bin').write_bytes(b'1')
    with outputs.StagedFiles(str(out)) as staged:
        staged.add('one.bin', b'1')
        staged.add('two.bin', b'2')
    assert listing(str(out)) == {'one.bin': b'1', 'two.bin': b'2'}


def test_staged_files_differing_existing_file_stops_everything(tmp_path):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'two.bin').write_bytes(b'old')
    (out / 'other.txt').write_bytes(b'keep')
    before = listing(str(out))
    with pytest.raises(UserError) as error:
        with outputs.StagedFiles(str(out)) as staged:
            staged.add('one.bin', b'1')
            staged.add('two.bin', b'new')
            staged.add('three.bin', b'3')
    assert os.path.join(str(out), 'two.bin') in str(error.value)
    assert listing(str(out)) == before


def test_staged_files_overwrite_replaces(tmp_path):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'two.bin').write_bytes(b'old')
    (out / 'other.txt').write_bytes(b'keep')
    with outputs.StagedFiles(str(out), overwrite=True) as staged:
        staged.add('one.bin', b'1')
        staged.add('two.bin', b'new')
    assert listing(str(out)) == {'one.bin': b'1', 'two.bin': b'new', 'other.txt': b'keep'}


def test_staged_files_existing_directory_in_the_way(tmp_path):
    out = tmp_path / 'out'
    (out / 'two.bin').mkdir(parents=True)
    before = listing(str(out))
    with pytest.raises(UserError) as error:
        with outputs.StagedFiles(str(out)) as staged:
            staged.add('one.bin', b'1')
            staged.add('two.bin', b'2')
    assert 'two.bin' in str(error.value)
    assert listing(str(out)) == before


def test_staged_files_outdir_is_a_file(tmp_path):
    out = tmp_path / 'out'
    out.write_bytes(b'file')
    with pytest.raises(UserError) as error:
        outputs.StagedFiles(str(out))
    assert str(out) in str(error.value)
    assert out.read_bytes() == b'file'
    with pytest.raises(UserError):
        outputs.StagedFiles(str(out / 'below'))
    assert os.listdir(str(tmp_path)) == ['out']


def test_check_outdir_does_not_create_anything(tmp_path):
    outputs.check_outdir(str(tmp_path / 'new' / 'deeper'))
    assert os.listdir(str(tmp_path)) == []
    (tmp_path / 'file').write_bytes(b'x')
    with pytest.raises(UserError):
        outputs.check_outdir(str(tmp_path / 'file'))
    with pytest.raises(UserError):
        outputs.check_outdir(str(tmp_path / 'file' / 'sub'))


# ---------------------------------------------------------------------------------------------------------------
# write_file_atomic


def test_write_file_atomic_creates_and_replaces(tmp_path):
    path = str(tmp_path / 'result.bin')
    outputs.write_file_atomic(path, b'first')
    assert listing(str(tmp_path)) == {'result.bin': b'first'}
    outputs.write_file_atomic(path, b'second, longer')
    assert listing(str(tmp_path)) == {'result.bin': b'second, longer'}


def test_write_file_atomic_failure_keeps_old_file_and_leaves_no_temporary(tmp_path):
    path = str(tmp_path / 'result.bin')
    outputs.write_file_atomic(path, b'first')
    with pytest.raises(TypeError):
        outputs.write_file_atomic(path, u'text is not bytes')
    assert listing(str(tmp_path)) == {'result.bin': b'first'}


# ---------------------------------------------------------------------------------------------------------------
# float_to_uint8


def reference_uint8(x):
    x = np.asarray(x, dtype=np.float64)
    return np.clip(np.rint((x + 1) / 2 * 255), 0, 255).astype(np.uint8)


def test_float_to_uint8_formula():
    special = np.array([-1.0, 1.0, 0.0, -2.0, 3.0, -1e6, 1e6, 0.5, -0.5, 1.0 / 255, -1.0 / 255, 0.999, -0.999],
                       dtype=np.float32)
    got = outputs.float_to_uint8(special)
    assert got.dtype == np.uint8
    assert got.tolist() == reference_uint8(special).tolist()
    assert got[:5].tolist() == [0, 255, 128, 0, 255]   # 127.5 rounds half to even
    grid = (np.arange(256, dtype=np.float64) / 127.5 - 1).astype(np.float32)   # exactly the 256 grey levels
    assert outputs.float_to_uint8(grid).tolist() == list(range(256))
    x = np.random.RandomState(0).uniform(-1.3, 1.3, size=(4, 1, 16, 16)).astype(np.float32)
    got = outputs.float_to_uint8(x)
    assert got.shape == x.shape
    np.testing.assert_array_equal(got, reference_uint8(x))


def test_float_to_uint8_other_range():
    assert outputs.float_to_uint8([0.0, 127.6, 255.0, 300.0], drange=(0, 255)).tolist() == [0, 128, 255, 255]


# ---------------------------------------------------------------------------------------------------------------
# image_grid


def tiles(n, h, w, channels=None):
    shape = (n, h, w) if channels is None else (n, h, w, channels)
    return (np.arange(int(np.prod(shape))) % 250 + 1).astype(np.uint8).reshape(shape)


def test_image_grid_default_layout():
    images = tiles(5, 2, 3)
    grid = outputs.image_grid(images)
    assert grid.dtype == np.uint8
    assert grid.shape == (2 * 2, 3 * 3)     # ceil(sqrt(5)) = 3 columns, 2 rows
    for index in range(5):
        row, col = divmod(index, 3)
        np.testing.assert_array_equal(grid[row * 2:row * 2 + 2, col * 3:col * 3 + 3], images[index])
    assert not grid[2:4, 6:9].any()         # the empty sixth slot is black


def test_image_grid_columns_and_padding():
    images = tiles(5, 2, 3)
    grid = outputs.image_grid(images, columns=2, padding=1)
    assert grid.shape == (3 * 3 - 1, 2 * 4 - 1)
    mask = np.zeros(grid.shape, dtype=bool)
    for index in range(5):
        row, col = divmod(index, 2)
        np.testing.assert_array_equal(grid[row * 3:row * 3 + 2, col * 4:col * 4 + 3], images[index])
        mask[row * 3:row * 3 + 2, col * 4:col * 4 + 3] = True
    assert not grid[~mask].any()            # padding and empty slots are black


def test_image_grid_rgb_and_single():
    images = tiles(4, 2, 2, channels=3)
    grid = outputs.image_grid(images)
    assert grid.shape == (4, 4, 3)
    np.testing.assert_array_equal(grid[2:4, 0:2], images[2])
    np.testing.assert_array_equal(outputs.image_grid(tiles(1, 3, 3)), tiles(1, 3, 3)[0])


# ---------------------------------------------------------------------------------------------------------------
# PNGs


def test_png_bytes_grayscale_and_rgb(tmp_path):
    gray = np.random.RandomState(1).randint(0, 256, (16, 16)).astype(np.uint8)
    path = str(tmp_path / 'g.png')
    outputs.write_file_atomic(path, outputs.png_bytes(gray))
    mode, array = read_png(path)
    assert mode == 'L'
    assert array.dtype == np.uint8
    np.testing.assert_array_equal(array, gray)
    colour = np.random.RandomState(2).randint(0, 256, (8, 8, 3)).astype(np.uint8)
    path = str(tmp_path / 'c.png')
    outputs.write_file_atomic(path, outputs.png_bytes(colour))
    mode, array = read_png(path)
    assert mode == 'RGB'
    np.testing.assert_array_equal(array, colour)
    with pytest.raises(ValueError):
        outputs.png_bytes(gray.astype(np.float32))


def test_write_pngs_are_8bit_grayscale_and_exact(tmp_path):
    images = np.random.RandomState(3).randint(0, 256, (4, 16, 16)).astype(np.uint8)
    images[0] = 0
    images[1] = 255
    out = str(tmp_path / 'pngs')
    written = outputs.write_pngs(images, out, 'img_%d.png', grid='mosaic.png')
    assert written == [os.path.join(out, 'img_%d.png' % i) for i in range(4)] + [os.path.join(out, 'mosaic.png')]
    assert sorted(os.listdir(out)) == ['img_0.png', 'img_1.png', 'img_2.png', 'img_3.png', 'mosaic.png']
    for index in range(4):
        mode, array = read_png(os.path.join(out, 'img_%d.png' % index))
        assert mode == 'L'
        np.testing.assert_array_equal(array, images[index])
    mode, mosaic = read_png(os.path.join(out, 'mosaic.png'))
    assert mode == 'L'
    assert all(contains_tile(mosaic, image) for image in images)
    # Same call again: identical files, fine.  Different images: refused, nothing changed.
    before = listing(out)
    outputs.write_pngs(images, out, 'img_%d.png', grid='mosaic.png')
    assert listing(out) == before
    changed = images.copy()
    changed[3, 0, 0] ^= 1
    with pytest.raises(UserError):
        outputs.write_pngs(changed, out, 'img_%d.png')
    assert listing(out) == before
    outputs.write_pngs(changed, out, 'img_%d.png', overwrite=True)
    np.testing.assert_array_equal(read_png(os.path.join(out, 'img_3.png'))[1], changed[3])


def test_write_pngs_grid_elsewhere(tmp_path):
    images = np.random.RandomState(4).randint(0, 256, (3, 8, 8, 3)).astype(np.uint8)
    grid_path = str(tmp_path / 'grid.png')
    outputs.write_pngs(images, str(tmp_path / 'out'), 'x%d.png', grid=grid_path)
    assert sorted(os.listdir(str(tmp_path))) == ['grid.png', 'out']
    assert sorted(os.listdir(str(tmp_path / 'out'))) == ['x0.png', 'x1.png', 'x2.png']
    mode, array = read_png(os.path.join(str(tmp_path / 'out'), 'x1.png'))
    assert mode == 'RGB'
    np.testing.assert_array_equal(array, images[1])
    mode, mosaic = read_png(grid_path)
    assert mode == 'RGB'
    assert all(contains_tile(mosaic, image) for image in images)
