"""Paths of the wrong type given to the scripts (a folder or pipe where a file is expected, a file or device where
a folder is): one line saying what the path is and what was expected, before any work.  In-process, through
each script's main(argv)."""
import os

import numpy as np
import pytest

from conftest import load_script
from nodules.util.errors import UserError


@pytest.fixture
def paths(tmp_path):
    """A folder, a regular file, a named pipe and a small dataset, by name."""
    from nodules.data import dataset
    (tmp_path / 'folder').mkdir()
    (tmp_path / 'file.npy').write_bytes(b'a file')
    os.mkfifo(str(tmp_path / 'pipe'))
    data = dataset.write_dataset(str(tmp_path / 'data'), np.zeros((2, 1, 4, 4), np.uint8))
    names = dict((name, str(tmp_path / name)) for name in ('folder', 'pipe'))
    names.update(file=str(tmp_path / 'file.npy'))
    names.update(data=data, records=dataset.tfrecord_path(data, 2), out=str(tmp_path / 'out'))
    return names


def refusal(script, argv):
    with pytest.raises(UserError) as error:
        load_script(script).main(argv)
    message = str(error.value)
    assert '\n' not in message
    return message


CASES = {  # name -> (script, argv with {placeholders}, the message after '{path}: ')
    'latents are a folder': ('2-inference.py', ['--latents', '{folder}', '--outdir', '{out}'],
                             '{folder}: is a directory, not a latents file (.npy)'),
    'latents are a pipe': ('2-inference.py', ['--latents', '{pipe}', '--outdir', '{out}'],
                           '{pipe}: is not a regular file (a device, pipe or socket), not a latents file (.npy)'),
    'inference outdir is a pipe': ('2-inference.py', ['--outdir', '{pipe}'],
                                   '{pipe}: output directory is an existing named pipe (FIFO), not a directory'),
    'display records are a folder': ('1-dataset_display.py', ['--tfrecords', '{folder}', '--outdir', '{out}'],
                                     '{folder}: is a directory, not a TFRecords file'),
    'display outdir is a file': ('1-dataset_display.py', ['--tfrecords', '{records}', '--outdir', '{file}'],
                                 '{file}: output directory is an existing file'),
    'info of a file': ('dataset_tool.py', ['info', '{file}'], '{file}: is a regular file, not a dataset folder'),
    'extract from a pipe': ('dataset_tool.py', ['extract', '{pipe}', '{out}'],
                            '{pipe}: is a named pipe (FIFO), not a dataset folder'),
    'extract into a pipe': ('dataset_tool.py', ['extract', '{data}', '{pipe}'],
                            '{pipe}: output directory is an existing named pipe (FIFO), not a directory'),
    'scans are a device': ('dataset_tool.py', ['create_from_ct', '{out}', '--scans', '/dev/null', '--annotations',
                                               '{file}'], '/dev/null: is a device, not a folder of CT scans'),
    'new dataset onto a file': ('dataset_tool.py', ['create_phantoms', '{file}', '--subtype', 'AIS', '--nodules',
                                                    '1'], '{file}: output directory is an existing file'),
}


@pytest.mark.parametrize('case', sorted(CASES))
def test_a_path_of_the_wrong_type_says_what_it_is(paths, case):
    script, argv, expected = CASES[case]
    assert refusal(script, [arg.format(**paths) for arg in argv]) == expected.format(**paths)
    assert not os.path.exists(paths['out'])
