"""dataset_tool.py sub-commands end to end: real PNG folders in, real multi-resolution TFRecord datasets out."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, assert_clean_failure, read_records, run_script

SCRIPT = 'dataset_tool.py'
SUBCOMMANDS = ['create_phantoms', 'create_from_images', 'create_from_ct', 'merge', 'info', 'extract', 'compare']


# ---------------------------------------------------------------------------------------------------------------
# Independent helpers


def run_all(calls, workers=3):
    """Run independent script invocations side by side (each spends seconds importing TensorFlow)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run_script, *call) for call in calls]
        return [future.result() for future in futures]


def ok(result):
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'Traceback' not in result.stderr, result.stderr
    return result




def reference_pyramid(images):
    """{log2: uint8 [N, C, r, r]}: repeated 2x2 box average in float32 from the unquantised level above."""
    top = int(round(np.log2(images.shape[-1])))
    levels = {top: images}
    level = images.astype(np.float32)
    for log2 in range(top - 1, 1, -1):
        n, c, h, w = level.shape
        level = level.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5), dtype=np.float32)
        levels[log2] = np.clip(np.rint(level), 0, 255).astype(np.uint8)
    return levels


def assert_dataset(directory, images, extra_files=()):
    """`directory` is exactly the multi-resolution dataset of uint8 [N, C, H, W] `images` (in this order), with
    its nodule groups file and `extra_files`."""
    name = os.path.basename(str(directory))
    levels = reference_pyramid(images)
    expected = ['%s-r%02d.tfrecords' % (name, log2) for log2 in levels] + [
        name + suffix for suffix in ('-groups.npy',) + tuple(extra_files)]
    assert sorted(os.listdir(str(directory))) == sorted(expected)
    for log2, level in levels.items():
        got = read_records(os.path.join(str(directory), '%s-r%02d.tfrecords' % (name, log2)))
        np.testing.assert_array_equal(got, level, err_msg='%s r%02d' % (name, log2))


def no_leftovers(parent, expected):
    """The parent folder of a dataset holds exactly `expected` (no hidden staging folders)."""
    assert sorted(os.listdir(str(parent))) == sorted(expected)


def write_pngs(folder, arrays, prefix='img'):
    """Write uint8 [H, W] / [H, W, 3] arrays as PNG files with Pillow; returns the [C, H, W] versions."""
    os.makedirs(str(folder), exist_ok=True)
    chw = []
    for index, array in enumerate(arrays):
        Image.fromarray(array, 'L' if array.ndim == 2 else 'RGB').save(
            os.path.join(str(folder), '%s_%02d.png' % (prefix, index)))
        chw.append(array[np.newaxis] if array.ndim == 2 else array.transpose(2, 0, 1))
    return np.stack(chw)


def gray_arrays(n, size=16, seed=0):
    return list(np.random.RandomState(seed).randint(0, 256, (n, size, size)).astype(np.uint8))


def rgb_arrays(n, size=16, seed=0):
    return list(np.random.RandomState(seed).randint(0, 256, (n, size, size, 3)).astype(np.uint8))


def read_groups(directory):
    """The int64 nodule groups file of a dataset, read with NumPy alone."""
    name = os.path.basename(str(directory))
    with open(os.path.join(str(directory), name + '-groups.npy'), 'rb') as f:
        groups = np.load(f, allow_pickle=False)
    assert groups.dtype == np.int64 and groups.ndim == 1
    return groups.tolist()


def read_json(path):
    with open(str(path), encoding='utf-8') as f:
        return json.load(f)


def read_png(path):
    with Image.open(str(path)) as image:
        image.load()
        return image.mode, np.array(image)


def one_error_line(result):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


# ---------------------------------------------------------------------------------------------------------------
# Help


def test_help_of_every_subcommand():
    calls = [(SCRIPT, '-h')] + [(SCRIPT, command, '-h') for command in SUBCOMMANDS]
    results = run_all(calls)
    top = ok(results[0]).stdout
    for command, result in zip(SUBCOMMANDS, results[1:]):
        assert command in top
        text = ok(result).stdout
        assert text.startswith('usage:'), text
        assert command in text


def test_no_subcommand_is_a_clean_error():
    result = run_script(SCRIPT)
    assert_clean_failure(result)
    one_error_line(result)


# ---------------------------------------------------------------------------------------------------------------
# create_from_images, then info / extract / compare


class Made(object):
    pass


@pytest.fixture(scope='module')
def made(tmp_path_factory):
    """Create the good datasets (all at once), then run info / extract / compare on them (all at once)."""
    m = Made()
    root = tmp_path_factory.mktemp('made')
    m.root = root
    m.gray = write_pngs(root / 'gray_pngs', gray_arrays(5, seed=1))
    (root / 'gray_pngs' / 'notes.txt').write_bytes(b'not an image, ignored')
    m.rgb = write_pngs(root / 'rgb_pngs', rgb_arrays(3, seed=2))
    m.shuffle_source = write_pngs(root / 'shuffle_pngs', gray_arrays(8, seed=3))
    m.class_a = write_pngs(root / 'class_pngs' / 'a_first', gray_arrays(2, seed=4))
    m.class_b = write_pngs(root / 'class_pngs' / 'b_second', gray_arrays(3, seed=5))
    # Views of three nodules, named <nodule>_v<view>: n01 has three, n02 two, n10 one.
    m.view_names = ['n01_v0', 'n01_v1', 'n01_v2', 'n02_v0', 'n02_v1', 'n10_v0']
    for name, array in zip(m.view_names, gray_arrays(6, seed=15)):
        write_pngs(root / 'view_pngs', [array], prefix=name)   # saved as <name>_00.png
    m.views = np.stack([array[np.newaxis] for array in gray_arrays(6, seed=15)])
    m.sets = root / 'sets'
    m.sets.mkdir()
    create = [('gray', 'gray_pngs', ()), ('rgb', 'rgb_pngs', ()), ('shuffled', 'shuffle_pngs', ('--shuffle',)),
              ('classes', 'class_pngs', ('--labels-from-subdirs', '--shuffle', '--seed', 5)),
              ('viewed', 'view_pngs', ('--groups-from', r'^(n\d+)_v', '--shuffle', '--seed', 3)),
              ('class_nodules', 'class_pngs', ('--labels-from-subdirs', '--groups-from', 'img'))]
    results = run_all([(SCRIPT, 'create_from_images', m.sets / name, root / source) + extra
                       for name, source, extra in create])
    m.create = dict((name, result) for (name, _, _), result in zip(create, results))
    for result in results:
        ok(result)

    # A copy of gray, and a gray set that differs in one pixel of one image, written through the library.
    from nodules.data import dataset
    shutil.copytree(str(m.sets / 'gray'), str(root / 'copies' / 'gray'))
    changed = m.gray.copy()
    changed[4, 0, 15, 15] ^= 0x80
    dataset.write_dataset(str(root / 'copies' / 'changed'), changed)
    dataset.write_dataset(str(root / 'copies' / 'reordered'), m.gray[[1, 0, 2, 3, 4]])
    dataset.write_dataset(str(root / 'copies' / 'regrouped'), m.gray, groups=[0, 0, 1, 2, 3])
    m.ungrouped = root / 'ungrouped' / 'gray'   # as written by other tools or earlier versions
    shutil.copytree(str(m.sets / 'gray'), str(m.ungrouped))
    os.remove(str(m.ungrouped / 'gray-groups.npy'))

    later = [('info', ('info', m.sets / 'gray')),
             ('extract', ('extract', m.sets / 'gray', root / 'extracted_gray')),
             ('extract_rgb_8', ('extract', m.sets / 'rgb', root / 'extracted_rgb_8', '--resolution', 8)),
             ('same', ('compare', m.sets / 'gray', root / 'copies' / 'gray')),
             ('different', ('compare', m.sets / 'gray', root / 'copies' / 'changed')),
             ('reordered', ('compare', m.sets / 'gray', root / 'copies' / 'reordered')),
             ('regrouped', ('compare', m.sets / 'gray', root / 'copies' / 'regrouped')),
             ('ungrouped', ('compare', m.sets / 'gray', m.ungrouped)),
             ('info_viewed', ('info', m.sets / 'viewed')),
             ('extract_viewed', ('extract', m.sets / 'viewed', root / 'extracted_viewed')),
             ('extract_ungrouped', ('extract', m.ungrouped, root / 'extracted_ungrouped'))]
    results = run_all([(SCRIPT,) + args for _, args in later])
    m.later = dict((name, result) for (name, _), result in zip(later, results))
    return m


def test_create_from_grayscale_pngs(made):
    assert_dataset(made.sets / 'gray', made.gray, extra_files=['-meta.json'])   # sorted file order, .txt ignored
    assert made.gray.shape == (5, 1, 16, 16)
    no_leftovers(made.sets, ['gray', 'rgb', 'shuffled', 'classes', 'viewed', 'class_nodules'])
    assert read_groups(made.sets / 'gray') == [0, 1, 2, 3, 4]   # without --groups-from: one nodule per image


def test_create_from_rgb_pngs(made):
    assert made.rgb.shape == (3, 3, 16, 16)
    assert_dataset(made.sets / 'rgb', made.rgb, extra_files=['-meta.json'])


def test_shuffle_is_a_permutation(made):
    source = made.shuffle_source
    stored = read_records(made.sets / 'shuffled' / 'shuffled-r04.tfrecords')
    assert stored.shape == source.shape
    key = lambda images: sorted(image.tobytes() for image in images)
    assert key(stored) == key(source)                 # the same images, each exactly once
    assert len(set(image.tobytes() for image in source)) == len(source)
    assert not np.array_equal(stored, source)         # ... but in another order
    assert_dataset(made.sets / 'shuffled', stored, extra_files=['-meta.json'])   # every level in that order


def test_labels_from_subdirs_are_one_hot_and_follow_shuffled_images(made):
    directory = made.sets / 'classes'
    stored = read_records(directory / 'classes-r04.tfrecords')
    assert_dataset(directory, stored, extra_files=['-meta.json', '-rxx.labels'])
    with open(str(directory / 'classes-rxx.labels'), 'rb') as f:
        labels = np.load(f, allow_pickle=False)
    assert labels.dtype == np.float32
    assert labels.shape == (5, 2)
    # Columns in sorted folder order: a_first -> [1, 0], b_second -> [0, 1]; each label stays with its image.
    source = dict((image.tobytes(), [1, 0]) for image in made.class_a)
    source.update((image.tobytes(), [0, 1]) for image in made.class_b)
    assert sorted(image.tobytes() for image in stored) == sorted(source)
    for image, label in zip(stored, labels):
        assert label.tolist() == source[image.tobytes()]
    assert labels.sum(axis=0).tolist() == [2, 3]


def test_groups_from_file_names_follow_shuffled_images(made):
    directory = made.sets / 'viewed'
    stored = read_records(directory / 'viewed-r04.tfrecords')
    assert_dataset(directory, stored, extra_files=['-meta.json'])
    # Nodules are numbered in sorted file order (n01 -> 0, n02 -> 1, n10 -> 2); each number stays with its image.
    number = {'n01': 0, 'n02': 1, 'n10': 2}
    nodule_of = dict((image.tobytes(), number[name[:3]]) for image, name in zip(made.views, made.view_names))
    groups = read_groups(directory)
    assert [nodule_of[image.tobytes()] for image in stored] == groups
    assert sorted(groups) == [0, 0, 0, 1, 1, 2] and groups != sorted(groups)   # shuffled along with the images
    metadata = read_json(directory / 'viewed-meta.json')
    assert metadata['nodule_names'] == ['n01', 'n02', 'n10'] and metadata['nodules'] == 3
    assert metadata['groups_from'] == r'^(n\d+)_v'


def test_groups_from_without_a_capture_group_uses_the_whole_match_within_each_class(made):
    # --groups-from img matches every file name: one nodule per class folder, never one across classes.
    directory = made.sets / 'class_nodules'
    with open(str(directory / 'class_nodules-rxx.labels'), 'rb') as f:
        labels = np.load(f, allow_pickle=False)
    assert labels.argmax(axis=1).tolist() == [0, 0, 1, 1, 1] and read_groups(directory) == [0, 0, 1, 1, 1]
    assert read_json(directory / 'class_nodules-meta.json')['nodule_names'] == ['a_first/img', 'b_second/img']


def test_info(made):
    text = ok(made.later['info']).stdout
    for log2 in (2, 3, 4):
        name = 'gray-r%02d.tfrecords' % log2
        lines = [line for line in text.splitlines() if name in line]
        assert len(lines) == 1, text
        assert '5' in lines[0].split(), lines[0]              # the number of records
        assert '%d' % 2 ** log2 in lines[0], lines[0]          # the resolution
    assert [line for line in text.splitlines() if 'nodules' in line] == ['  nodules: 5 (1 image each)']  # once
    assert '  nodules: 3 (1 to 3 images each)' in ok(made.later['info_viewed']).stdout.splitlines()


def read_groups_csv(path):
    with open(str(path), encoding='ascii', newline='') as f:
        return f.read()


def test_extract_writes_pngs_equal_to_records(made):
    ok(made.later['extract'])
    out = made.root / 'extracted_gray'
    names = sorted(os.listdir(str(out)))
    assert names[0] == 'groups.csv'
    names = names[1:]
    assert len(names) == 5 and all(name.endswith('.png') for name in names)
    assert read_groups_csv(out / 'groups.csv') == 'file,nodule\n' + ''.join(
        '%s,%d\n' % (name, index) for index, name in enumerate(names))
    records = read_records(made.sets / 'gray' / 'gray-r04.tfrecords')
    for name, record in zip(names, records):
        mode, array = read_png(out / name)
        assert mode == 'L'
        np.testing.assert_array_equal(array, record[0])


def test_extract_rgb_at_lower_resolution(made):
    ok(made.later['extract_rgb_8'])
    out = made.root / 'extracted_rgb_8'
    names = sorted(name for name in os.listdir(str(out)) if name.endswith('.png'))
    records = read_records(made.sets / 'rgb' / 'rgb-r03.tfrecords')
    assert len(names) == len(records) == 3 and sorted(os.listdir(str(out))) == ['groups.csv'] + names
    for name, record in zip(names, records):
        mode, array = read_png(out / name)
        assert (mode, array.shape) == ('RGB', (8, 8, 3))
        np.testing.assert_array_equal(array, record.transpose(1, 2, 0))


def test_extract_writes_the_nodule_of_every_png(made):
    assert 'and the nodule of each (3 nodules) to groups.csv' in ok(made.later['extract_viewed']).stdout
    out = made.root / 'extracted_viewed'
    names = sorted(name for name in os.listdir(str(out)) if name.endswith('.png'))
    expected = 'file,nodule\n' + ''.join('%s,%d\n' % item for item in zip(names, read_groups(made.sets / 'viewed')))
    assert read_groups_csv(out / 'groups.csv') == expected


def test_extract_of_a_dataset_without_groups_writes_pngs_only(made):
    assert 'no groups.csv (the dataset has no nodule groups)' in ok(made.later['extract_ungrouped']).stdout
    assert sorted(os.listdir(str(made.root / 'extracted_ungrouped'))) == ['img%08d.png' % i for i in range(5)]


def test_compare_equal(made):
    assert 'identical records, labels, nodule groups and masks' in ok(made.later['same']).stdout


@pytest.mark.parametrize('case, problem', [
    ('different', 'differ: 4x4 record 4 differs; 8x8 record 4 differs; 16x16 record 4 differs'),
    ('reordered', 'differ: 4x4 record 0 differs; 8x8 record 0 differs; 16x16 record 0 differs'),
    ('regrouped', 'hold identical records but differ: nodule groups differ'),
    ('ungrouped', 'hold identical records but differ: only the first has nodule groups'),
])
def test_compare_detects_differences(made, case, problem):
    result = made.later[case]
    assert_clean_failure(result)
    assert one_error_line(result).endswith(problem)


# ---------------------------------------------------------------------------------------------------------------
# create_from_images with bad input: a clean failure, no dataset directory, no temporary leftovers


def bad_mixed_sizes(images):
    write_pngs(images, gray_arrays(2, size=16, seed=6))
    write_pngs(images, gray_arrays(1, size=8, seed=7), prefix='small')
    return 'small_00.png'


def bad_mixed_channels(images):
    write_pngs(images, gray_arrays(2, seed=6))
    write_pngs(images, rgb_arrays(1, seed=7), prefix='z_colour')
    return 'z_colour_00.png'


def bad_not_square(images):
    write_pngs(images, [np.zeros((16, 8), dtype=np.uint8)] * 2)
    return 'img_00.png'


def bad_not_power_of_two(images):
    write_pngs(images, gray_arrays(2, size=12, seed=8))
    return 'img_00.png'


def bad_empty_folder(images):
    images.mkdir()
    (images / 'readme.txt').write_bytes(b'no images here')
    return str(images)


def bad_missing_folder(images):
    return str(images)


def bad_not_an_image(images):
    write_pngs(images, gray_arrays(2, seed=9))
    (images / 'img_01.png').write_bytes(np.random.RandomState(0).randint(0, 256, 300).astype(np.uint8).tobytes())
    return 'img_01.png'


BAD_INPUTS = dict((name[len('bad_'):], function) for name, function in list(globals().items())
                  if name.startswith('bad_'))


@pytest.fixture(scope='module')
def bad_runs(tmp_path_factory):
    prepared = []
    for name in sorted(BAD_INPUTS):
        root = tmp_path_factory.mktemp(name)
        (root / 'sets').mkdir()
        named = BAD_INPUTS[name](root / 'images')
        prepared.append((name, root, named))
    # And a good folder aimed at an existing dataset.
    from nodules.data import dataset
    root = tmp_path_factory.mktemp('existing')
    dataset.write_dataset(str(root / 'sets' / 'out'), np.zeros((3, 1, 4, 4), np.uint8))
    write_pngs(root / 'images', gray_arrays(2, seed=10))
    prepared.append(('existing', root, str(root / 'sets' / 'out')))
    results = run_all([(SCRIPT, 'create_from_images', root / 'sets' / 'out', root / 'images')
                       for _, root, _ in prepared])
    return dict((name, (root, named, result)) for (name, root, named), result in zip(prepared, results))


@pytest.mark.parametrize('case', sorted(BAD_INPUTS))
def test_create_from_bad_images(bad_runs, case):
    root, named, result = bad_runs[case]
    assert_clean_failure(result)
    line = one_error_line(result)
    assert named in line, (named, line)          # names the offending file or folder
    no_leftovers(root / 'sets', [])              # no dataset directory, no hidden staging folder


def test_existing_out_dir_needs_overwrite(bad_runs):
    root, out, result = bad_runs['existing']
    assert_clean_failure(result, out)
    assert one_error_line(result) == 'error: %s: already holds a dataset; nothing was written (use --overwrite to ' \
                                     'replace it)' % out
    assert sorted(os.listdir(out)) == ['out-groups.npy', 'out-r02.tfrecords']
    no_leftovers(root / 'sets', ['out'])

    ok(run_script(SCRIPT, 'create_from_images', out, root / 'images', '--overwrite'))
    images = np.stack([read_png(root / 'images' / name)[1][np.newaxis]
                       for name in sorted(os.listdir(str(root / 'images')))])
    assert_dataset(root / 'sets' / 'out', images, extra_files=['-meta.json'])
    no_leftovers(root / 'sets', ['out'])


# ---------------------------------------------------------------------------------------------------------------
# --overwrite replaces only a dataset this tool wrote: never a folder with other content, an input or its parent


@pytest.fixture
def project(tmp_path):
    """A user's project folder (src/, .git/), a folder of images, a dataset, CT inputs, all inside `tmp_path`."""
    from nodules.data import dataset
    (tmp_path / 'project' / 'src').mkdir(parents=True)
    (tmp_path / 'project' / 'src' / 'main.py').write_bytes(b'precious code')
    (tmp_path / 'project' / '.git').mkdir()
    (tmp_path / 'project' / '.git' / 'HEAD').write_bytes(b'ref: refs/heads/main')
    write_pngs(tmp_path / 'data' / 'images', gray_arrays(2, size=8, seed=1))
    for name in ('dsA', 'dsB'):
        dataset.write_dataset(str(tmp_path / 'data' / name), np.full((2, 1, 8, 8), 7, np.uint8))
    (tmp_path / 'data' / 'nodules.csv').write_bytes(b'seriesuid,coordX,coordY,coordZ,diameter_mm\n')
    return tmp_path


OVERWRITE_REFUSALS = {  # argv (relative to the fixture's folder) -> the start of the message after 'OUT_DIR: '
    'project folder, create_phantoms': (['create_phantoms', 'project', '--subtype', 'AIS', '--nodules', '1'],
                                        'holds .git, src, which are not part of a dataset'),
    'project folder, create_from_images': (['create_from_images', 'project', 'data/images'],
                                           'holds .git, src, which are not part of a dataset'),
    'project folder, merge': (['merge', 'project', 'data/dsA', 'data/dsB'], 'holds .git, src'),
    'OUT_DIR is IMAGE_DIR': (['create_from_images', 'data/images', 'data/images'],
                             'OUT_DIR is also the input IMAGE_DIR (data/images)'),
    'OUT_DIR holds IMAGE_DIR': (['create_from_images', 'data', 'data/images'],
                                'OUT_DIR contains the input IMAGE_DIR (data/images)'),
    'OUT_DIR holds the merged': (['merge', 'data', 'data/dsA', 'data/dsB'],
                                 'OUT_DIR contains the input DIR (data/dsA)'),
    'OUT_DIR is a merged one': (['merge', 'data/dsB', 'data/dsA', 'data/dsB'],
                                'OUT_DIR is also the input DIR (data/dsB)'),
    'OUT_DIR is --scans': (['create_from_ct', 'data', '--scans', 'data', '--annotations', 'data/nodules.csv'],
                           'OUT_DIR is also the input --scans (data)'),
    'OUT_DIR holds --annotations': (['create_from_ct', 'data/dsA/..', '--scans', 'project',
                                     '--annotations', 'data/nodules.csv'],
                                    'OUT_DIR contains the input --annotations (data/nodules.csv)'),
    'OUT_DIR is a dataset holding IMAGE_DIR': (['create_from_images', 'data/dsA', 'data/dsA/x'],
                                               'OUT_DIR contains the input IMAGE_DIR'),
}


@pytest.mark.parametrize('case', sorted(OVERWRITE_REFUSALS))
def test_overwrite_never_replaces_foreign_folders_inputs_or_their_parents(project, monkeypatch, case):
    from conftest import directory_contents
    argv, expected = OVERWRITE_REFUSALS[case]
    monkeypatch.chdir(str(project))
    if case == 'OUT_DIR is a dataset holding IMAGE_DIR':
        write_pngs(project / 'data' / 'dsA' / 'x', gray_arrays(2, size=8, seed=2))
    out = argv[1]
    before = directory_contents(str(project))
    for overwrite in ([], ['--overwrite']):
        message = refusal(*(argv + overwrite))
        assert message.startswith('%s: %s' % (out, expected)), message
        assert directory_contents(str(project)) == before   # checked before any work: nothing changed


def test_overwrite_replaces_a_dataset_this_tool_wrote(project, monkeypatch):
    monkeypatch.chdir(str(project))
    import dataset_tool
    dataset_tool.main(['create_from_images', 'data/dsA', 'data/images', '--overwrite'])
    images = np.stack([read_png(project / 'data' / 'images' / name)[1][np.newaxis]
                       for name in sorted(os.listdir(str(project / 'data' / 'images')))])
    assert_dataset(project / 'data' / 'dsA', images, extra_files=['-meta.json'])
    no_leftovers(project / 'data', ['dsA', 'dsB', 'images', 'nodules.csv'])


def test_create_phantoms_into_the_working_directory(tmp_path, monkeypatch):
    """`create_phantoms .` in an empty folder writes the dataset into it (named after the folder, which stays the
    user's working directory); again with --overwrite it replaces it in place; in a project folder it is refused
    before any drawing."""
    import dataset_tool
    here = tmp_path / 'AIS'
    here.mkdir()
    monkeypatch.chdir(str(here))
    inode = os.stat('.').st_ino
    for overwrite in ([], ['--overwrite']):
        dataset_tool.main(['create_phantoms', '.', '--subtype', 'AIS', '--nodules', '2', '--resolution', '16']
                          + overwrite)
        assert sorted(os.listdir('.')) == ['AIS-groups.npy', 'AIS-masks.npy', 'AIS-meta.json', 'AIS-r02.tfrecords',
                                           'AIS-r03.tfrecords', 'AIS-r04.tfrecords']
        assert os.stat('.').st_ino == inode and os.listdir(str(tmp_path)) == ['AIS']
    (here / 'notes.txt').write_bytes(b'mine')
    assert refusal('create_phantoms', '.', '--subtype', 'AIS', '--nodules', '2', '--overwrite').startswith(
        '.: holds notes.txt, which is not part of a dataset')


# ---------------------------------------------------------------------------------------------------------------
# Inputs that would hang or are of the wrong type: refused at once, naming the file and what it is


def test_a_pipe_named_like_an_image_is_refused_before_anything_reads_it(tmp_path):
    write_pngs(tmp_path / 'images', gray_arrays(2, size=8))
    os.mkfifo(str(tmp_path / 'images' / 'img_99.png'))   # opening it would block for ever
    message = refusal('create_from_images', tmp_path / 'out', tmp_path / 'images')
    assert message == '%s: is not a regular file (a device, pipe or socket), not a PNG or JPEG image' \
        % (tmp_path / 'images' / 'img_99.png')
    assert sorted(os.listdir(str(tmp_path))) == ['images']


def test_a_file_as_the_image_folder_says_what_it_is(tmp_path):
    (tmp_path / 'images').write_bytes(b'not a folder')
    assert refusal('create_from_images', tmp_path / 'out', tmp_path / 'images') == \
        '%s: is a regular file, not a folder of images' % (tmp_path / 'images')


def test_a_catastrophic_groups_from_pattern_is_stopped_and_named(tmp_path, monkeypatch):
    import dataset_tool
    monkeypatch.setattr(dataset_tool, 'GROUPS_FROM_SECONDS', 0.5)
    names = ['a' * 40 + 'b', 'aa']
    for name, array in zip(names, gray_arrays(2, size=8)):
        Image.fromarray(array).save(str(tmp_path / (name + '.png')))
    started = time.time()
    message = refusal('create_from_images', tmp_path / 'out', tmp_path, '--groups-from', '^(a+)+$')
    assert time.time() - started < 10
    assert message == "%s: matching its file name to --groups-from '^(a+)+$' takes more than 0.5 s (a pattern " \
        "that backtracks without end, like (a+)+?); simplify the pattern" % (tmp_path / (names[0] + '.png'))
    assert not os.path.exists(str(tmp_path / 'out'))


# ---------------------------------------------------------------------------------------------------------------
# create_phantoms


def test_create_phantoms_writes_the_generators_views_and_nodules(tmp_path):
    from nodules.data import phantoms
    sets = tmp_path / 'sets'
    common = ('--subtype', 'MIA', '--nodules', 3, '--views', 2, '--resolution', 16)
    results = run_all([(SCRIPT, 'create_phantoms', sets / 'one', '--seed', 1) + common,
                       (SCRIPT, 'create_phantoms', sets / 'again', '--seed', 1) + common,
                       (SCRIPT, 'create_phantoms', sets / 'other', '--seed', 2) + common])
    for result in results:
        ok(result)
    assert 'wrote 6 images of 3 nodules, 16x16' in results[0].stdout
    no_leftovers(sets, ['one', 'again', 'other'])
    images, groups, _ = phantoms.draw_dataset('MIA', 3, 2, 1, 16)
    assert_dataset(sets / 'one', images, extra_files=['-meta.json', '-masks.npy'])   # the generator's images
    assert read_groups(sets / 'one') == groups.tolist() == [0, 0, 1, 1, 2, 2]
    metadata = read_json(sets / 'one' / 'one-meta.json')
    assert 'NOT patient data' in metadata.pop('source')
    assert metadata == {'subtype': 'MIA', 'nodules': 3, 'views': 2, 'count': 6, 'seed': 1, 'resolution': 16,
                        'mm_per_pixel': 2.8, 'window_hu': [-1500.0, 500.0],
                        'windowing': 'grey = clip(rint((HU - low) / (high - low) * 255), 0, 255), '
                                     '(low, high) = window_hu', 'mask_definition': phantoms.MASK_DEFINITION}
    same, different = run_all([(SCRIPT, 'compare', sets / 'one', sets / 'again'),
                               (SCRIPT, 'compare', sets / 'one', sets / 'other')])
    ok(same)
    assert_clean_failure(different)
    assert 'differ' in one_error_line(different)


def test_create_phantoms_refuses_what_the_generator_cannot_draw(tmp_path):
    results = run_all([(SCRIPT, 'create_phantoms', tmp_path / 'four', '--subtype', 'AIS', '--nodules', 1,
                        '--resolution', 4),
                       (SCRIPT, 'create_phantoms', tmp_path / 'huge', '--subtype', 'AIS', '--nodules', 1,
                        '--resolution', 4096),
                       (SCRIPT, 'create_phantoms', tmp_path / 'many', '--subtype', 'AIS', '--nodules', 10 ** 6,
                        '--views', 1000),
                       (SCRIPT, 'create_phantoms', tmp_path / 'seed', '--subtype', 'AIS', '--nodules', 1,
                        '--seed', 2 ** 64),
                       (SCRIPT, 'create_phantoms', tmp_path / 'none', '--subtype', 'AIS', '--views', 0),
                       (SCRIPT, 'create_phantoms', tmp_path / 'count', '--subtype', 'AIS', '--count', 3)])
    fragments = ['from 16 to 1024, got 4', 'from 16 to 1024, got 4096', '--nodules 1000000 --views 1000', '2**32',
                 'must be at least 1, got 0', '--nodules']
    for result, fragment in zip(results, fragments):
        assert_clean_failure(result, fragment)
        assert result.returncode == 1
        one_error_line(result)
    assert os.listdir(str(tmp_path)) == []


# ---------------------------------------------------------------------------------------------------------------
# create_from_images --groups-from: bad patterns and names, in one line each


@pytest.mark.parametrize('pattern, fragment', [
    ('^(n[0-9]+', '--groups-from \'^(n[0-9]+\' is not a regular expression'),
    ('^n([0-9]+)_v', "x_00.png: its file name does not match --groups-from '^n([0-9]+)_v'"),
    ('^(n?[0-9]*)', "x_00.png: --groups-from '^(n?[0-9]*)' finds no nodule name in its file name"),
])
def test_groups_from_refuses_patterns_that_name_no_nodule(tmp_path, pattern, fragment):
    write_pngs(tmp_path / 'images', gray_arrays(2, seed=16), prefix='n7_v')
    write_pngs(tmp_path / 'images', gray_arrays(1, seed=17), prefix='x')
    result = run_script(SCRIPT, 'create_from_images', tmp_path / 'sets' / 'out', tmp_path / 'images',
                        '--groups-from', pattern)
    assert_clean_failure(result, fragment)
    one_error_line(result)
    assert not os.path.exists(str(tmp_path / 'sets'))


# ---------------------------------------------------------------------------------------------------------------
# merge: per-class datasets -> one labelled dataset


def class_set(root, name, images, groups=None, metadata=None, labels=None):
    from nodules.data import dataset
    return dataset.write_dataset(str(root / name), images, labels=labels, groups=groups, metadata=metadata)


@pytest.fixture(scope='module')
def merged(tmp_path_factory):
    """Three per-class sets (two named by their metadata, one by its folder), merged through the command line,
    then the merged set merged again with a fourth class."""
    m = Made()
    root = m.root = tmp_path_factory.mktemp('merge')
    rs = np.random.RandomState(20)
    m.images = [rs.randint(0, 256, (n, 1, 16, 16)).astype(np.uint8) for n in (4, 6, 3, 2)]
    m.inputs = [class_set(root, 'ais_set', m.images[0], groups=[7, 7, 3, 3], metadata={'subtype': 'AIS'}),
                class_set(root, 'mia_set', m.images[1], groups=[0, 0, 0, 1, 1, 1], metadata={'subtype': 'MIA'}),
                class_set(root, 'IAC', m.images[2])]                  # no metadata: the folder names the class
    m.extra = class_set(root, 'LPA', m.images[3], groups=[5, 5])
    m.first = ok(run_script(SCRIPT, 'merge', root / 'all', *m.inputs))
    m.second = ok(run_script(SCRIPT, 'merge', root / 'more', root / 'all', m.extra))
    return m


def test_merge_concatenates_every_level_with_one_hot_labels_and_distinct_nodules(merged):
    directory = merged.root / 'all'
    assert 'wrote 13 images of 7 nodules in 3 classes (AIS: 4, MIA: 6, IAC: 3), 16x16' in merged.first.stdout
    images = np.concatenate(merged.images[:3])
    assert_dataset(directory, images, extra_files=['-meta.json', '-rxx.labels'])
    with open(str(directory / 'all-rxx.labels'), 'rb') as f:
        labels = np.load(f, allow_pickle=False)
    assert labels.dtype == np.float32 and labels.shape == (13, 3)
    assert labels.tolist() == np.eye(3)[[0] * 4 + [1] * 6 + [2] * 3].tolist()
    # Nodules renumbered by first appearance, each input after the ones before: none shared between classes.
    assert read_groups(directory) == [0, 0, 1, 1, 2, 2, 2, 3, 3, 3, 4, 5, 6]
    metadata = read_json(directory / 'all-meta.json')
    assert metadata['classes'] == ['AIS', 'MIA', 'IAC'] and metadata['class_counts'] == [4, 6, 3]
    assert metadata['nodules'] == 7 and metadata['count'] == 13
    sources = metadata['sources']
    assert [source['dataset'] for source in sources] == [os.path.abspath(path) for path in merged.inputs]
    assert [source['images'] for source in sources] == [[0, 4], [4, 10], [10, 13]]
    assert [source['nodules'] for source in sources] == [[0, 2], [2, 4], [4, 7]]
    assert sources[0]['metadata'] == {'subtype': 'AIS'} and sources[2]['metadata'] is None


def test_merge_copies_the_lower_levels_as_they_are(merged):
    # Each level of the merged set is the concatenation of the inputs' records at that level.
    for log2 in (2, 3, 4):
        parts = [read_records(os.path.join(path, '%s-r%02d.tfrecords' % (os.path.basename(path), log2)))
                 for path in merged.inputs]
        np.testing.assert_array_equal(read_records(merged.root / 'all' / ('all-r%02d.tfrecords' % log2)),
                                      np.concatenate(parts))


def test_merge_takes_labelled_inputs_with_their_class_names(merged):
    directory = merged.root / 'more'
    assert 'in 4 classes (AIS: 4, MIA: 6, IAC: 3, LPA: 2)' in merged.second.stdout
    with open(str(directory / 'more-rxx.labels'), 'rb') as f:
        labels = np.load(f, allow_pickle=False)
    assert labels.argmax(axis=1).tolist() == [0] * 4 + [1] * 6 + [2] * 3 + [3] * 2 and labels.sum() == 15
    assert read_groups(directory) == [0, 0, 1, 1, 2, 2, 2, 3, 3, 3, 4, 5, 6, 7, 7]
    assert read_json(directory / 'more-meta.json')['classes'] == ['AIS', 'MIA', 'IAC', 'LPA']


def refusal(*argv):
    """The one-line message dataset_tool.main(argv) refuses with."""
    import dataset_tool
    from nodules.util.errors import UserError
    with pytest.raises(UserError) as error:
        dataset_tool.main([str(arg) for arg in argv])
    assert '\n' not in str(error.value)
    return str(error.value)


def merge_error(*argv):
    return refusal('merge', *argv)


def test_merge_refuses_inputs_it_cannot_combine(merged, tmp_path):
    from nodules.data import dataset
    a, b = merged.inputs[:2]
    rs = np.random.RandomState(21)
    small = class_set(tmp_path, 'small', rs.randint(0, 256, (2, 1, 8, 8)).astype(np.uint8))
    colour = class_set(tmp_path, 'colour', rs.randint(0, 256, (2, 3, 16, 16)).astype(np.uint8))
    twin = class_set(tmp_path, 'twin', merged.images[3], metadata={'subtype': 'AIS'})
    unnamed = class_set(tmp_path, 'unnamed', merged.images[3], labels=np.eye(2))
    soft = class_set(tmp_path, 'soft', merged.images[3], labels=[[0.5, 0.5], [0, 1]], metadata={'classes': ['x', 'y']})
    mixed = class_set(tmp_path, 'mixed', merged.images[3], labels=np.eye(2), groups=[4, 4],
                      metadata={'classes': ['x', 'y']})
    out = tmp_path / 'out'
    assert merge_error(out, small, a).endswith(
        'holds images of shape [C, H, W] = [1, 16, 16] but %s holds [1, 8, 8]; merged datasets need one resolution '
        'and channel count' % small)
    assert 'holds images of shape [C, H, W] = [3, 16, 16]' in merge_error(out, a, colour)
    assert merge_error(out, a, twin) == "%s: its class 'AIS' is also a class of %s; each class must come from " \
                                        "one dataset" % (twin, a)
    assert merge_error(out, a, unnamed).startswith('%s: has 2 label columns but its metadata names no class' % unnamed)
    assert merge_error(out, a, soft) == '%s: row 0 is not one-hot (0.5 0.5); merge needs one class per image' \
        % dataset.labels_path(soft)
    assert merge_error(out, a, mixed) == '%s: nodule 4 has images of the classes x and y; a nodule has one class' \
        % dataset.groups_path(mixed)
    assert merge_error(out, a, b, a) == '%s: is given twice (also as %s)' % (a, a)
    assert merge_error(a, a, b) == '%s: OUT_DIR is also the input DIR (%s); nothing was written' % (a, a)
    assert merge_error(out, a) == 'merge needs two or more datasets, got only %s' % a
    assert 'no such dataset directory' in merge_error(out, a, tmp_path / 'missing')
    assert not os.path.exists(str(out))


def test_merge_command_line_refusal_and_missing_groups_warning(merged, tmp_path):
    ungrouped = tmp_path / 'IAC'
    shutil.copytree(merged.inputs[2], str(ungrouped))
    os.remove(str(ungrouped / 'IAC-groups.npy'))
    refused, warned = run_all([(SCRIPT, 'merge', tmp_path / 'refused', merged.inputs[0], merged.inputs[0]),
                               (SCRIPT, 'merge', tmp_path / 'warned', merged.inputs[0], ungrouped)])
    assert_clean_failure(refused, 'is given twice')
    assert refused.returncode == 1 and one_error_line(refused)
    ok(warned)
    assert warned.stderr.strip().splitlines() == [
        'warning: %s has no nodule groups file (IAC-groups.npy); each of its images counts as its own nodule'
        % ungrouped]
    assert read_groups(tmp_path / 'warned') == [0, 0, 1, 1, 2, 3, 4]
    assert sorted(os.listdir(str(tmp_path))) == ['IAC', 'warned']


# ---------------------------------------------------------------------------------------------------------------
# create_from_images with 16-bit grayscale PNGs: converted with their real range, never clipped


def write_16bit_pngs(folder, arrays):
    os.makedirs(str(folder), exist_ok=True)
    for index, array in enumerate(arrays):
        Image.fromarray(array.astype(np.uint16)).save(os.path.join(str(folder), 'ct_%02d.png' % index))


def test_create_from_16bit_pngs_uses_their_range_and_records_it(tmp_path):
    from nodules.data import dataset
    values = np.random.RandomState(11).randint(1000, 3001, (3, 16, 16))   # e.g. HU + 1024 of lung and tissue
    values[0, 0, 0], values[2, 5, 5] = 1000, 3000                       # the set's extremes
    write_16bit_pngs(tmp_path / 'wide', values)
    with Image.open(str(tmp_path / 'wide' / 'ct_00.png')) as image:
        assert image.mode.startswith('I')                                 # Pillow sees more than 8 bits
    default, windowed = run_all([(SCRIPT, 'create_from_images', tmp_path / 'sets' / 'default', tmp_path / 'wide'),
                                 (SCRIPT, 'create_from_images', tmp_path / 'sets' / 'windowed', tmp_path / 'wide',
                                  '--input-range', 0, 4095)])
    for result, (low, high) in ((ok(default), (1000, 3000)), (ok(windowed), (0, 4095))):
        name = 'default' if (low, high) == (1000, 3000) else 'windowed'
        stored = read_records(tmp_path / 'sets' / name / ('%s-r04.tfrecords' % name))
        expected = np.clip(np.rint((values - low) * 255.0 / (high - low)), 0, 255).astype(np.uint8)
        assert np.abs(stored[:, 0].astype(int) - expected).max() <= 1     # float32 arithmetic at .5 boundaries
        assert np.mean(stored[:, 0] == expected) > 0.99
        assert len(np.unique(stored)) > 100                               # not the old 0/255 picture
        metadata = dataset.read_metadata(str(tmp_path / 'sets' / name))
        assert metadata['input_range'] == [low, high] and metadata['source_bit_depth'] == 16


@pytest.mark.parametrize('case', ['mixed depths', 'constant', 'range for 8-bit', 'inverted range'])
def test_create_from_16bit_pngs_refuses_what_it_cannot_convert(tmp_path, case):
    extra = ()
    if case == 'mixed depths':
        write_16bit_pngs(tmp_path / 'images', [np.full((16, 16), 2000)])
        write_pngs(tmp_path / 'images', gray_arrays(1, seed=12), prefix='eight')
        fragment = 'one bit depth'
    elif case == 'constant':
        write_16bit_pngs(tmp_path / 'images', [np.full((16, 16), 2000)] * 2)
        fragment = '--input-range'
    elif case == 'range for 8-bit':
        write_pngs(tmp_path / 'images', gray_arrays(2, seed=13))
        extra, fragment = ('--input-range', 0, 10), '16-bit'
    else:
        write_16bit_pngs(tmp_path / 'images', [np.full((16, 16), 2000)])
        extra, fragment = ('--input-range', 10, 0), 'LOW < HIGH'
    result = run_script(SCRIPT, 'create_from_images', tmp_path / 'sets' / 'out', tmp_path / 'images', *extra)
    assert_clean_failure(result, fragment)
    one_error_line(result)
    assert not os.path.exists(str(tmp_path / 'sets'))


# ---------------------------------------------------------------------------------------------------------------
# Closed pipes and interrupted extracts


@pytest.mark.slow  # ~4 s: a real subprocess writing into a closed pipe
def test_info_into_a_closed_pipe_ends_quietly(made):
    """`dataset_tool.py info DIR | head -0`: the reader is gone before anything is printed."""
    process = subprocess.Popen([sys.executable, os.path.join(ROOT, SCRIPT), 'info', str(made.sets / 'gray')],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    process.stdout.close()
    stderr = process.stderr.read().decode()
    process.wait()
    assert process.returncode == 128 + signal.SIGPIPE, stderr
    assert stderr == ''


EXTRACT_COUNT = 3000


@pytest.fixture(scope='module')
def many(tmp_path_factory):
    """A dataset of EXTRACT_COUNT 8x8 images (the extract below writes as many PNGs)."""
    from nodules.data import dataset
    directory = str(tmp_path_factory.mktemp('many') / 'many')
    dataset.write_dataset(directory, np.random.RandomState(14).randint(0, 256, (EXTRACT_COUNT, 1, 8, 8))
                          .astype(np.uint8))
    return directory


def start_extract(many, out, *options):
    return subprocess.Popen([sys.executable, os.path.join(ROOT, SCRIPT), 'extract', many, str(out)] + list(options),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)


def wait_for(condition, process, seconds=300):
    deadline = time.time() + seconds
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, 'timed out'


def staging_folders(out):
    """The tool's staging folders for `out`: inside it (files landing among others) or beside it (landing whole)."""
    places = [str(out), os.path.dirname(str(out))]
    return [os.path.join(place, name) for place in places if os.path.isdir(place) for name in os.listdir(place)
            if '.nodules-' in name and name.endswith('.tmp')]


def staged_pngs(out, process=None):
    """How many PNGs the staging folders of `out` (those of `process`, if given) hold."""
    return sum(len(os.listdir(os.path.join(stage, 'new'))) for stage in staging_folders(out)
               if os.path.isdir(os.path.join(stage, 'new'))
               and (process is None or '.nodules-%d-' % process.pid in os.path.basename(stage)))


def extracted_pngs(out):
    return sorted(name for name in os.listdir(str(out)) if name.endswith('.png')) if os.path.isdir(str(out)) else []


@pytest.mark.slow
@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize('phase', ['staging', 'commit'])
def test_interrupted_extract_leaves_the_old_state_or_the_complete_new_one(many, tmp_path, signum, phase):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'keep.txt').write_bytes(b'earlier work')
    process = start_extract(many, out)
    try:
        if phase == 'staging':  # some PNGs staged, none committed
            wait_for(lambda: staged_pngs(out) > 0, process)
        else:  # the first PNG has been renamed into place
            wait_for(lambda: os.path.exists(str(out / 'img00000000.png')), process)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    stderr = stderr.decode()
    assert 'Traceback' not in stderr, stderr
    names = extracted_pngs(out)
    if phase == 'staging':  # signalled while running: it stops with the signal's status, almost surely before
        assert process.returncode == 128 + signum, stderr            # committing anything
        assert len(names) in (0, EXTRACT_COUNT)                       # the old state, or the complete new one
    else:
        assert process.returncode in (0, 128 + signum), stderr        # it may have finished before the signal
        assert len(names) == EXTRACT_COUNT                            # the commit, once begun, completes
    written = names + (['groups.csv'] if names else [])                # the PNGs land with their nodule list
    assert sorted(os.listdir(str(out))) == sorted(['keep.txt'] + written)   # no staging folder left either
    assert (out / 'keep.txt').read_bytes() == b'earlier work'


@pytest.mark.slow
def test_the_next_run_cleans_up_after_a_killed_extract(many, tmp_path):
    out = tmp_path / 'out'
    process = start_extract(many, out)
    try:
        wait_for(lambda: staged_pngs(out) > 0, process)
        process.kill()  # SIGKILL: no clean-up is possible
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    leftover = staging_folders(out)
    assert len(leftover) == 1 and extracted_pngs(out) == []
    ok(run_script(SCRIPT, 'extract', many, out))
    assert staging_folders(out) == [] and len(extracted_pngs(out)) == EXTRACT_COUNT
    assert sorted(os.listdir(str(out))) == ['groups.csv'] + extracted_pngs(out)


@pytest.mark.slow
def test_kill_during_an_overwrite_commit_leaves_the_old_set_or_the_new_one(many, tmp_path):
    """kill -9 once every PNG is staged (the commit begins), and a little later: the folder holds the earlier
    extract or the complete new one, never a mix (a folder holding only the set is swapped in one rename)."""
    from conftest import directory_contents
    from nodules.data import dataset
    other = dataset.write_dataset(str(tmp_path / 'other'), np.random.RandomState(15).randint(
        0, 256, (EXTRACT_COUNT, 1, 8, 8)).astype(np.uint8))
    out, reference = tmp_path / 'out', tmp_path / 'reference'
    ok(run_script(SCRIPT, 'extract', many, reference))
    new = directory_contents(str(reference))
    ok(run_script(SCRIPT, 'extract', other, out))
    old = directory_contents(str(out))
    assert len(old) == len(new) == EXTRACT_COUNT + 1 and old != new
    outcomes = []
    for delay in (0.0, 0.05, 0.2, 0.5):
        process = start_extract(many, out, '--overwrite')
        try:  # (it may also finish before the polling sees the complete stage: then the new set is there)
            while process.poll() is None and staged_pngs(out, process) < EXTRACT_COUNT:
                pass
            time.sleep(delay)
            process.kill()
            process.wait()
        finally:
            if process.poll() is None:
                process.kill()
        now = directory_contents(str(out))
        assert now in (old, new), 'a mix of %d old and %d new files' % (
            sum(now.get(k) == v for k, v in old.items()), sum(now.get(k) == v for k, v in new.items()))
        outcomes.append('new' if now == new else 'old')
        if now == new:
            ok(run_script(SCRIPT, 'extract', other, out, '--overwrite'))
    print('outcomes after kill -9: %s' % outcomes)
    ok(run_script(SCRIPT, 'extract', many, out, '--overwrite'))  # and the next run cleans up
    assert directory_contents(str(out)) == new and staging_folders(out) == []


def test_extract_overwrite_with_a_directory_in_the_way_changes_nothing(made, tmp_path):
    out = tmp_path / 'out'
    (out / 'img00000002.png').mkdir(parents=True)
    (out / 'img00000000.png').write_bytes(b'earlier')
    result = run_script(SCRIPT, 'extract', made.sets / 'gray', out, '--overwrite')
    assert_clean_failure(result, 'img00000002.png', 'directory')
    one_error_line(result)
    assert sorted(os.listdir(str(out))) == ['img00000000.png', 'img00000002.png']
    assert (out / 'img00000000.png').read_bytes() == b'earlier'
