"""The synthetic datasets in processData/ are exactly what the README's commands make."""
import os
import re

import pytest

from conftest import ROOT, run_script

README_COMMAND = re.compile(r'^python dataset_tool.py (create_phantoms processData/(\w+) .*)$', re.MULTILINE)


def readme_commands():
    with open(os.path.join(ROOT, 'README.md')) as f:
        return README_COMMAND.findall(f.read())


def test_readme_lists_a_command_for_every_shipped_dataset():
    shipped = sorted(d for d in os.listdir(os.path.join(ROOT, 'processData'))
                     if os.path.isdir(os.path.join(ROOT, 'processData', d)))
    assert shipped == ['AIS', 'IAC', 'MIA']
    assert sorted(name for _, name in readme_commands()) == shipped


@pytest.mark.parametrize('command,name', readme_commands())
def test_regenerating_a_shipped_dataset_gives_identical_files(tmp_path, command, name):
    args = command.split()
    args[1] = str(tmp_path / name)
    result = run_script('dataset_tool.py', *args)
    assert result.returncode == 0, result.stderr
    shipped_dir = os.path.join(ROOT, 'processData', name)
    assert sorted(os.listdir(str(tmp_path / name))) == sorted(os.listdir(shipped_dir))
    for file_name in os.listdir(shipped_dir):
        with open(os.path.join(shipped_dir, file_name), 'rb') as shipped, \
                open(str(tmp_path / name / file_name), 'rb') as regenerated:
            assert shipped.read() == regenerated.read(), file_name
    compared = run_script('dataset_tool.py', 'compare', shipped_dir, str(tmp_path / name))
    assert compared.returncode == 0, compared.stderr


def test_shipped_datasets_say_they_are_synthetic():
    import dataset
    for name in ('AIS', 'MIA', 'IAC'):
        metadata = dataset.read_metadata(os.path.join(ROOT, 'processData', name))
        assert 'NOT patient data' in metadata['source'] and metadata['subtype'] == name
