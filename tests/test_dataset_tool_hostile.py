"""dataset_tool.py on careless or hostile input (issue 21, round 3): images whose pixels would be dropped or
reinterpreted without a word, folders whose layout would give wrong labels, numbers beyond what a command takes,
and files that disagree.  Each is one line naming the file or option, exit status 1, nothing written; in-process
through main(argv)."""
import os

import numpy as np
import pytest
from PIL import Image

from conftest import assert_clean_failure, run_script

SCRIPT = 'dataset_tool.py'


def one_line_refusal(result, expected):
    """Exit status 1, one line on stderr, equal to 'error: ' + expected (or ending with it for argparse)."""
    assert_clean_failure(result)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0] == 'error: ' + expected or lines[0].endswith(expected), (lines[0], expected)


def save(folder, name, image):
    os.makedirs(str(folder), exist_ok=True)
    path = os.path.join(str(folder), name)
    image.save(path)
    return path


def grey(seed=0, size=16):
    return np.random.RandomState(seed).randint(0, 256, (size, size)).astype(np.uint8)


def create(tmp_path, images, *options):
    out = tmp_path / 'out'
    result = run_script(SCRIPT, 'create_from_images', out, images, *options)
    return result, out


# ----------------------------------------------------------------------------------------------------------------
# Pixels that would be lost or changed


def test_a_transparent_image_is_refused_before_anything_is_written(tmp_path):
    """How image files are read (alpha, palettes, 16 bits) is tested in tests/data/test_image_files.py; here that
    a refusal of the reader reaches the user as one line, and nothing is written."""
    pixels = np.random.RandomState(1).randint(0, 256, (16, 16, 4)).astype(np.uint8)
    save(tmp_path / 'images', 'a.png', Image.fromarray(grey(), 'L'))
    bad = save(tmp_path / 'images', 'b.png', Image.fromarray(pixels, 'RGBA'))
    result, out = create(tmp_path, tmp_path / 'images')
    one_line_refusal(result, '%s: is transparent in places (an alpha channel); only grayscale or RGB pixels are '
                             'read: flatten it onto a background first' % bad)
    assert not out.exists()


def sixteen_bit(folder, values):
    for index, value in enumerate(values):
        save(folder, 'ct_%02d.png' % index, Image.fromarray(np.asarray(value, np.uint16)))


def test_an_input_range_that_clips_every_pixel_is_refused(tmp_path):
    sixteen_bit(tmp_path / 'images', [np.full((16, 16), 1000 + i) for i in range(3)])
    result, out = create(tmp_path, tmp_path / 'images', '--input-range', 0, 1)
    one_line_refusal(result, '%s: every pixel lies outside --input-range 0 1 (the images hold 1000 to 1002): the '
                             'dataset would be all black or all white' % (tmp_path / 'images'))
    assert not out.exists()


def test_an_input_range_that_clips_some_pixels_warns(tmp_path):
    sixteen_bit(tmp_path / 'images', [np.arange(256).reshape(16, 16) * 10])  # 0 .. 2550
    result, out = create(tmp_path, tmp_path / 'images', '--input-range', 0, 1000)
    assert result.returncode == 0, result.stderr
    # 0..1000 in steps of 10 is inside: 101 of the 256 pixels
    assert 'warning: %s: 155 of 256 pixels lie outside --input-range 0 1000 and become black or white' % (
        tmp_path / 'images') in result.stderr


# ----------------------------------------------------------------------------------------------------------------
# Class folders


def test_an_empty_class_folder_is_refused(tmp_path):
    save(tmp_path / 'images' / 'AIS', 'a.png', Image.fromarray(grey(), 'L'))
    os.makedirs(str(tmp_path / 'images' / 'MIA'))
    result, out = create(tmp_path, tmp_path / 'images', '--labels-from-subdirs')
    one_line_refusal(result, '%s: the class folder holds no PNG or JPEG images; remove it or add its images'
                     % (tmp_path / 'images' / 'MIA'))
    assert not out.exists()


def test_an_image_beside_the_class_folders_is_refused(tmp_path):
    for name in ('AIS', 'MIA'):
        save(tmp_path / 'images' / name, 'a.png', Image.fromarray(grey(), 'L'))
    stray = save(tmp_path / 'images', 'forgotten.png', Image.fromarray(grey(), 'L'))
    result, out = create(tmp_path, tmp_path / 'images', '--labels-from-subdirs')
    one_line_refusal(result, '%s: is an image outside the class folders; with --labels-from-subdirs every image '
                             'belongs in the folder of its class' % stray)
    assert not out.exists()


# ----------------------------------------------------------------------------------------------------------------
# Numbers and files that disagree


def test_a_shuffle_seed_numpy_cannot_take_is_refused(tmp_path):
    save(tmp_path / 'images', 'a.png', Image.fromarray(grey(), 'L'))
    result, out = create(tmp_path, tmp_path / 'images', '--shuffle', '--seed', 2 ** 32)
    one_line_refusal(result, 'argument --seed: must be below 2**32 = 4294967296, got 4294967296 (see -h)')
    assert not out.exists()


@pytest.fixture
def small_dataset(tmp_path):
    from nodules.data import dataset
    return dataset.write_dataset(str(tmp_path / 'data'), np.zeros((12, 1, 8, 8), np.uint8))


@pytest.mark.parametrize('resolution', [10 ** 30, 12, 2048])
def test_extract_resolution_beyond_what_a_dataset_holds(small_dataset, tmp_path, resolution):
    result = run_script(SCRIPT, 'extract', small_dataset, tmp_path / 'out', '--resolution', resolution)
    one_line_refusal(result, 'argument --resolution: must be a power of two from 4 to 1024, got %d (see -h)'
                     % resolution)
    assert not (tmp_path / 'out').exists()


def test_info_refuses_a_labels_file_of_another_length(small_dataset):
    from nodules.data import dataset
    np.save(dataset.labels_path(small_dataset) + '.npy', np.eye(5, dtype=np.float32))
    os.rename(dataset.labels_path(small_dataset) + '.npy', dataset.labels_path(small_dataset))
    result = run_script(SCRIPT, 'info', small_dataset)
    one_line_refusal(result, '%s: has 5 label rows for 12 images; a labels file needs one row per image'
                     % dataset.labels_path(small_dataset))
