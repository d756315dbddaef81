"""1-dataset_display.py end to end: real TFRecords in, real PNGs out, one clear line on stderr for bad input."""
import os
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from conftest import assert_clean_failure, load_script, read_records, run_script
from nodules.util.tfcompat import tf, TFRecordWriter

SCRIPT = '1-dataset_display.py'


# ---------------------------------------------------------------------------------------------------------------
# Independent helpers: TFRecords written and read here with TensorFlow's own writer and reader.


def example(shape, data):
    return tf.train.Example(features=tf.train.Features(feature={
        'shape': tf.train.Feature(int64_list=tf.train.Int64List(value=list(shape))),
        'data': tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))}))


def write_records(path, examples):
    writer = TFRecordWriter(str(path))
    for ex in examples:
        writer.write(ex.SerializeToString())
    writer.close()
    return str(path)


def write_images(path, images):
    return write_records(path, [example(image.shape, image.tobytes()) for image in images])




def random_images(n, c=1, size=16, seed=0):
    return np.random.RandomState(seed).randint(0, 256, size=(n, c, size, size)).astype(np.uint8)


def read_png(path):
    with Image.open(str(path)) as image:
        image.load()
        return image.mode, np.array(image)


def files_under(directory):
    """{relative path: bytes} of every file below `directory` (hidden staging folders included)."""
    result = {}
    for root, _, files in os.walk(str(directory)):
        for name in files:
            path = os.path.join(root, name)
            with open(path, 'rb') as f:
                result[os.path.relpath(path, str(directory))] = f.read()
    return result


def folders_under(directory):
    """Every folder below `directory` (hidden ones too), as relative paths."""
    return sorted(os.path.relpath(os.path.join(root, name), str(directory))
                  for root, dirs, _ in os.walk(str(directory)) for name in dirs)


def pngs_under(directory):
    return sorted(name for name in files_under(directory) if name.lower().endswith('.png'))


def assert_pngs_match(outdir, planes):
    """outdir holds dataset_img_0..N-1.png, each 8-bit grayscale and equal to the given [N, H, W] planes."""
    for index, plane in enumerate(planes):
        mode, array = read_png(os.path.join(str(outdir), 'dataset_img_%d.png' % index))
        assert mode == 'L', (index, mode)
        assert array.dtype == np.uint8
        np.testing.assert_array_equal(array, plane, err_msg='dataset_img_%d.png' % index)
    assert not os.path.exists(os.path.join(str(outdir), 'dataset_img_%d.png' % len(planes)))


def contains_tile(mosaic, tile):
    h, w = tile.shape[:2]
    return any(np.array_equal(mosaic[y:y + h, x:x + w], tile)
               for y in range(mosaic.shape[0] - h + 1) for x in range(mosaic.shape[1] - w + 1))


def run_all(calls, workers=3):
    """Run independent script invocations side by side (each spends seconds importing TensorFlow)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run_script, *call) for call in calls]
        return [future.result() for future in futures]


def one_error_line(result):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def assert_mentions(line, *alternatives):
    assert any(word in line.lower() for word in alternatives), (alternatives, line)


# ---------------------------------------------------------------------------------------------------------------
# Interface


def test_help_text():
    result = run_script(SCRIPT, '-h')
    assert result.returncode == 0, result.stderr
    text = ' '.join(result.stdout.split())   # argparse may wrap lines
    assert 'Dataset demo pipeline: transform picture from tfrecords file to png format' in text
    for option, help_text in [('--tfrecords', 'the tfrecords file path (default: processData/AIS/AIS-r06.tfrecords)'),
                              ('--number', 'set the number of dataset images to show (default: 10)'),
                              ('--outdir', 'the output path (default: demo/output)')]:
        assert option in text
        assert help_text in text  # the original's words, then the default


def test_defaults():
    args = load_script(SCRIPT).parse_args([])
    assert args.tfrecords == 'processData/AIS/AIS-r06.tfrecords'
    assert args.number == 10
    assert args.outdir == 'demo/output'


def test_options_parse():
    args = load_script(SCRIPT).parse_args(['--tfrecords', 'a/b-r03.tfrecords', '--number', '3', '--outdir', 'o'])
    assert (args.tfrecords, args.number, args.outdir) == ('a/b-r03.tfrecords', 3, 'o')


# ---------------------------------------------------------------------------------------------------------------
# Good input


def test_pngs_equal_plane_0_of_records_with_mosaic_and_rerun(tmp_path):
    images = random_images(6, seed=1)
    images[0, 0] = 0
    images[1, 0] = 255
    path = write_images(tmp_path / 'set-r04.tfrecords', images)
    outdir = tmp_path / 'out' / 'nested'
    args = ['--tfrecords', path, '--number', 4, '--outdir', outdir, '--grid', 'mosaic.png']
    result = run_script(SCRIPT, *args)
    assert result.returncode == 0, result.stderr
    records = read_records(path)
    assert_pngs_match(outdir, records[:4, 0])
    assert sorted(os.listdir(str(outdir))) == ['dataset_img_%d.png' % i for i in range(4)] + ['mosaic.png']
    mode, mosaic = read_png(outdir / 'mosaic.png')
    assert mode == 'L'
    assert mosaic.size >= 4 * 16 * 16
    for plane in records[:4, 0]:
        assert contains_tile(mosaic, plane)
    assert not contains_tile(mosaic, records[5, 0])

    before = files_under(tmp_path)
    again = run_script(SCRIPT, *args)
    assert again.returncode == 0, again.stderr
    assert files_under(tmp_path) == before   # the same command twice: identical files, no leftovers


def test_rgb_records_with_and_without_rgb_flag(tmp_path):
    images = random_images(3, c=3, seed=2)
    path = write_images(tmp_path / 'colour-r04.tfrecords', images)
    gray_out, rgb_out = tmp_path / 'gray', tmp_path / 'rgb'
    gray, rgb = run_all([(SCRIPT, '--tfrecords', path, '--number', 3, '--outdir', gray_out),
                         (SCRIPT, '--tfrecords', path, '--number', 3, '--outdir', rgb_out, '--rgb')])
    assert gray.returncode == 0, gray.stderr
    assert_pngs_match(gray_out, read_records(path)[:, 0])      # plane 0 only

    assert rgb.returncode == 0, rgb.stderr
    for index, image in enumerate(read_records(path)):
        mode, array = read_png(rgb_out / ('dataset_img_%d.png' % index))
        assert mode == 'RGB'
        np.testing.assert_array_equal(array, image.transpose(1, 2, 0))


def test_lower_resolution_file_of_a_dataset_and_default_number(tmp_path):
    from nodules.data import dataset
    directory = str(tmp_path / 'AIS')
    dataset.write_dataset(directory, random_images(12, size=32, seed=3))
    path = os.path.join(directory, 'AIS-r03.tfrecords')
    outdir = tmp_path / 'out'
    result = run_script(SCRIPT, '--tfrecords', path, '--outdir', outdir)   # default --number 10
    assert result.returncode == 0, result.stderr
    records = read_records(path)
    assert records.shape == (12, 1, 8, 8)
    assert_pngs_match(outdir, records[:10, 0])
    assert len(pngs_under(outdir)) == 10


# ---------------------------------------------------------------------------------------------------------------
# Bad input: one line on stderr, exit status != 0, no traceback, no PNG written (nothing at all changed).
#
# Every scenario gets its own folder; all of them run at once in one module fixture (each run spends seconds
# importing TensorFlow), and each scenario is then checked by its own test.


def bad_missing(d):
    return str(d / 'nothing-r06.tfrecords'), []


def bad_directory(d):
    path = d / 'folder-r06.tfrecords'
    path.mkdir()
    return str(path), []


def bad_not_tfrecords(d):
    path = d / 'noise-r06.tfrecords'
    path.write_bytes(np.random.RandomState(4).randint(0, 256, 5000).astype(np.uint8).tobytes())
    return str(path), []


def bad_truncated(d):
    path = write_images(d / 'cut-r04.tfrecords', random_images(4, seed=5))
    with open(path, 'rb') as f:
        raw = f.read()
    with open(path, 'wb') as f:
        f.write(raw[:len(raw) * 5 // 8])     # two and a half records
    return path, ['--number', 3]


def bad_checksum(d):
    path = write_images(d / 'crc-r04.tfrecords', random_images(4, seed=6))
    with open(path, 'rb') as f:
        raw = bytearray(f.read())
    record = len(raw) // 4                    # equal-length records; flip a byte in the payload of record 1
    raw[record + record // 2] ^= 0xFF
    with open(path, 'wb') as f:
        f.write(bytes(raw))
    return path, ['--number', 4]


def bad_features(d):
    other = tf.train.Example(features=tf.train.Features(feature={
        'image_raw': tf.train.Feature(bytes_list=tf.train.BytesList(value=[b'\x07' * 256])),
        'label': tf.train.Feature(int64_list=tf.train.Int64List(value=[1]))}))
    return write_records(d / 'other-r04.tfrecords', [other, other]), ['--number', 2]


def bad_length(d):
    good = random_images(1, seed=7)[0]
    path = write_records(d / 'short-r04.tfrecords',
                         [example(good.shape, good.tobytes()), example([1, 16, 16], good.tobytes()[:200])])
    return path, ['--number', 2]


def bad_number_zero(d):
    return write_images(d / 'ok-r04.tfrecords', random_images(2, seed=8)), ['--number', '0']


def bad_number_negative(d):
    return write_images(d / 'ok-r04.tfrecords', random_images(2, seed=8)), ['--number', '-3']


def bad_number_too_large(d):
    return write_images(d / 'five-r04.tfrecords', random_images(5, seed=9)), ['--number', 7]


def bad_outdir_is_file(d):
    (d / 'out').write_bytes(b'not a folder')
    return write_images(d / 'ok-r04.tfrecords', random_images(2, seed=10)), ['--number', 2]


def bad_existing_png(d):
    (d / 'out').mkdir()
    Image.fromarray(np.full((16, 16), 9, dtype=np.uint8), 'L').save(str(d / 'out' / 'dataset_img_0.png'))
    return write_images(d / 'ok-r04.tfrecords', random_images(3, seed=11)), ['--number', 3]


def bad_number_huge(d):  # the most one command writes: refused by the file, not the limit
    return write_images(d / 'five-r04.tfrecords', random_images(5, seed=9)), ['--number', '100000']


def bad_grid_exists_with_other_contents(d):
    (d / 'out').mkdir()
    (d / 'out' / 'mosaic.png').write_bytes(b'an earlier mosaic')
    return write_images(d / 'ok-r04.tfrecords', random_images(3, seed=12)), ['--number', 3, '--grid', 'mosaic.png']


def bad_grid_is_an_image_name(d):
    return write_images(d / 'ok-r04.tfrecords', random_images(3, seed=12)), ['--number', 3,
                                                                             '--grid', 'dataset_img_1.png']


def bad_grid_under_a_file(d):
    (d / 'notes').write_bytes(b'my notes')
    return write_images(d / 'ok-r04.tfrecords', random_images(3, seed=12)), ['--number', 3,
                                                                             '--grid', d / 'notes' / 'mosaic.png']


def bad_grid_ends_in_a_slash(d):
    return write_images(d / 'ok-r04.tfrecords', random_images(3, seed=12)), ['--number', 3,
                                                                             '--grid', str(d / 'mosaics') + '/']


def bad_overwrite_onto_a_directory(d):
    (d / 'out' / 'dataset_img_1.png').mkdir(parents=True)
    (d / 'out' / 'dataset_img_0.png').write_bytes(b'earlier')
    (d / 'out' / 'dataset_img_2.png').write_bytes(b'earlier')
    return write_images(d / 'ok-r04.tfrecords', random_images(3, seed=12)), ['--number', 3, '--overwrite']


BAD_INPUTS = dict((name[len('bad_'):], function) for name, function in list(globals().items())
                  if name.startswith('bad_'))


class BadRun(object):
    def __init__(self, directory, path, args, before, result):
        self.directory, self.path, self.args, self.before, self.result = directory, path, args, before, result
        self.outdir = directory / 'out'


@pytest.fixture(scope='module')
def bad_runs(tmp_path_factory):
    prepared = []
    for name in sorted(BAD_INPUTS):
        directory = tmp_path_factory.mktemp(name)
        path, extra = BAD_INPUTS[name](directory)
        args = ['--tfrecords', path, '--outdir', directory / 'out'] + extra
        prepared.append((name, directory, path, args, (files_under(directory), folders_under(directory))))
    results = run_all([(SCRIPT,) + tuple(args) for _, _, _, args, _ in prepared])
    return dict((name, BadRun(directory, path, args, before, result))
                for (name, directory, path, args, before), result in zip(prepared, results))


def failed_cleanly(run):
    """The checks every bad input shares; returns the one error line."""
    assert_clean_failure(run.result)
    line = one_error_line(run.result)
    assert (files_under(run.directory), folders_under(run.directory)) == run.before   # nothing changed: no PNG,
    # no output or staging folder
    return line


@pytest.mark.parametrize('scenario,words', [
    ('missing', ('no such', 'not found', 'does not exist', 'missing')),
    ('directory', ('directory',)),
    ('not_tfrecords', ('tfrecord', 'corrupt')),
    ('truncated', ('truncated', 'corrupt')),
    ('checksum', ('checksum', 'corrupt', 'crc')),
    ('features', ('shape',)),             # records without the shape/data features
    ('length', ('bytes', 'length', 'size')),  # data of the wrong length
])
def test_bad_tfrecords_file(bad_runs, scenario, words):
    run = bad_runs[scenario]
    line = failed_cleanly(run)
    assert run.path in line
    assert_mentions(line, *words)


@pytest.mark.parametrize('case', ['number_zero', 'number_negative'])
def test_number_must_be_positive(bad_runs, case):
    line = failed_cleanly(bad_runs[case])
    assert '--number' in line


def test_number_larger_than_the_file_holds(bad_runs):
    run = bad_runs['number_too_large']
    line = failed_cleanly(run)
    assert run.path in line
    assert re.search(r'\b5\b', line.replace(run.path, '')), line    # says how many there are


def test_outdir_is_an_existing_file(bad_runs):
    run = bad_runs['outdir_is_file']
    line = failed_cleanly(run)
    assert str(run.outdir) in line
    assert run.outdir.read_bytes() == b'not a folder'


def test_existing_different_png_needs_overwrite(bad_runs):
    run = bad_runs['existing_png']
    line = failed_cleanly(run)        # not replaced, and none of the others written
    assert 'dataset_img_0.png' in line

    result = run_script(SCRIPT, *(run.args + ['--overwrite']))
    assert result.returncode == 0, result.stderr
    assert_pngs_match(run.outdir, read_records(run.path)[:, 0])
    assert sorted(os.listdir(str(run.outdir))) == ['dataset_img_0.png', 'dataset_img_1.png', 'dataset_img_2.png']


def test_number_far_beyond_the_file(bad_runs):
    run = bad_runs['number_huge']
    line = failed_cleanly(run)
    assert run.path in line and 'holds only 5' in line


@pytest.mark.parametrize('case, fragment', [
    ('grid_exists_with_other_contents', 'mosaic.png: already exists with different contents'),
    ('grid_is_an_image_name', 'dataset_img_1.png: --grid names one of the images'),
    ('grid_under_a_file', 'notes'),
    ('grid_ends_in_a_slash', 'mosaics/: names a folder'),
    ('overwrite_onto_a_directory', 'dataset_img_1.png: exists and is a directory'),
])
def test_mosaic_and_overwrite_conflicts_write_nothing(bad_runs, case, fragment):
    run = bad_runs[case]
    line = failed_cleanly(run)   # not one PNG written or replaced
    assert fragment in line, line


def test_number_beyond_the_limit_of_one_command_is_refused_before_reading(tmp_path):
    """--number above 100,000 would write that many PNGs from a large enough file: refused when parsing."""
    path = write_images(tmp_path / 'ok-r04.tfrecords', random_images(2, seed=13))
    result = run_script(SCRIPT, '--tfrecords', path, '--outdir', tmp_path / 'out', '--number', 150000)
    assert result.returncode == 1
    assert one_error_line(result).endswith('argument --number: one command writes at most 100000 images, got 150000 '
                                           '(see -h)')
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('channels', [2, 4])
@pytest.mark.parametrize('rgb', [False, True])
def test_records_of_neither_one_nor_three_channels_are_refused(tmp_path, channels, rgb):
    """No layout of 2 or 4 values per pixel is known: with or without --rgb, one line naming the file."""
    path = write_images(tmp_path / 'odd-r04.tfrecords', random_images(3, c=channels, seed=14))
    result = run_script(SCRIPT, '--tfrecords', path, '--outdir', tmp_path / 'out', '--number', 2,
                        *(['--rgb'] if rgb else []))
    assert result.returncode == 1
    assert one_error_line(result) == 'error: %s: record 0 has %d channels; images need 1 (grayscale) or 3 (RGB)' % (
        path, channels)
    assert not (tmp_path / 'out').exists()
