"""What ships in the repo: the synthetic datasets in processData/ are exactly what the README's commands make, and
the demo weights in demo/weight/ load safely and generate nodules."""
import io
import os
import re

import numpy as np
import pytest

from conftest import ROOT, run_script

# The commands that made processData/ (the paper's nodule counts: 30 AIS, 119 MIA and 57 IAC nodules, with enough
# views per nodule for about 300 patches each); the README lists them word for word.
SHIPPED_COMMANDS = [
    'python dataset_tool.py create_phantoms processData/AIS --subtype AIS --nodules 30 --views 10 --seed 1',
    'python dataset_tool.py create_phantoms processData/MIA --subtype MIA --nodules 119 --views 3 --seed 2',
    'python dataset_tool.py create_phantoms processData/IAC --subtype IAC --nodules 57 --views 6 --seed 3',
]
SHIPPED = [('AIS', 30, 10), ('MIA', 119, 3), ('IAC', 57, 6)]
README_COMMAND = re.compile(r'^python dataset_tool\.py create_phantoms processData/.*$', re.MULTILINE)


def test_the_readme_gives_exactly_the_commands_that_made_the_shipped_datasets():
    shipped = sorted(d for d in os.listdir(os.path.join(ROOT, 'processData'))
                     if os.path.isdir(os.path.join(ROOT, 'processData', d)))
    assert shipped == sorted(name for name, _, _ in SHIPPED)
    with io.open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
        listed = README_COMMAND.findall(f.read())
    assert [line.rstrip() for line in listed] == SHIPPED_COMMANDS


@pytest.mark.parametrize('command', SHIPPED_COMMANDS)
def test_regenerating_a_shipped_dataset_gives_identical_files(tmp_path, command):
    args = command.split()[2:]
    name = os.path.basename(args[1])
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


@pytest.mark.parametrize('name, nodules, views', SHIPPED)
def test_shipped_datasets_record_their_nodules(name, nodules, views):
    from nodules.data import dataset
    directory = os.path.join(ROOT, 'processData', name)
    summary = dataset.check_dataset(directory)
    assert summary.num_images == nodules * views >= 300 and summary.shape == [1, 64, 64]
    assert summary.groups.tolist() == np.repeat(np.arange(nodules), views).tolist()   # views of a nodule together
    assert summary.labels is None
    assert summary.masks.shape == (nodules * views, 64, 64) and summary.masks.any(axis=(1, 2)).all()
    metadata = dataset.read_metadata(directory)
    assert (metadata['nodules'], metadata['views'], metadata['count']) == (nodules, views, nodules * views)


@pytest.mark.parametrize('name', ['AIS', 'MIA', 'IAC'])
def test_shipped_phantoms_meet_the_real_figures(name):
    """The shipped sets themselves, not only fresh draws, have saturating bone about as often as real patches
    and their soft tissue at the real 90th percentile; the AIS set has the real AIS patches' coarse texture."""
    from nodules.data import dataset
    import test_phantoms
    images = dataset.read_images(dataset.tfrecord_path(os.path.join(ROOT, 'processData', name), 6))[:, 0]
    bright = (images >= 230).mean()
    assert test_phantoms.REAL_BRIGHT_SHARE / 2 <= bright <= 2 * test_phantoms.REAL_BRIGHT_SHARE, bright
    p90 = np.percentile(images, 90)
    assert abs(p90 - test_phantoms.REAL_AIS_P90) <= 0.15 * test_phantoms.REAL_AIS_P90, p90
    if name == 'AIS':
        roughness = test_phantoms.coarse_roughness(images)
        assert abs(roughness - test_phantoms.REAL_AIS_ROUGHNESS) <= 0.15 * test_phantoms.REAL_AIS_ROUGHNESS, roughness


def test_shipped_datasets_say_they_are_synthetic():
    from nodules.data import dataset
    for name in ('AIS', 'MIA', 'IAC'):
        metadata = dataset.read_metadata(os.path.join(ROOT, 'processData', name))
        assert 'NOT patient data' in metadata['source'] and metadata['subtype'] == name


# The demo generators: one per subtype, and one conditional generator of the three ('all'), checked class by class.
DEMO_WEIGHTS = ['AIS', 'MIA', 'IAC', 'all']
DEMO_CLASSES = [('AIS', None), ('MIA', None), ('IAC', None), ('all', 'AIS'), ('all', 'MIA'), ('all', 'IAC')]


def demo_weight(name):
    return os.path.join(ROOT, 'demo', 'weight', '%s.pkl' % name)


@pytest.mark.parametrize('name', DEMO_WEIGHTS)
def test_demo_weights_load_safely_and_generate_at_full_resolution(name, tf_session):
    from nodules import generation
    from nodules.gan import legacy
    path = demo_weight(name)
    assert os.path.getsize(path) <= 15 * 2 ** 20
    G, D, Gs = legacy.load_network_pkl(path)
    assert Gs.get_vars()['lod'] == 0.0 and Gs.static_kwargs['resolution'] == 64
    assert Gs.static_kwargs['label_size'] == (3 if name == 'all' else 0)
    if name == 'all':
        assert Gs.static_kwargs['label_names'] == ['AIS', 'MIA', 'IAC']
    latents = generation.random_latents(8, Gs.input_shapes[0][1], seed=0)
    images = generation.generate_images(Gs, latents, label_index=0 if name == 'all' else None)
    assert images.shape == (8, 64, 64) and images.dtype == np.uint8
    assert images.std() > 5  # a trained generator draws structure, not a flat grey field


@pytest.mark.parametrize('name, label', DEMO_CLASSES)
def test_demo_weights_draw_no_lattice(name, label):
    """The largest peak of the windowed mean power spectrum at the up-sampling periods (2, 4, 8 px) is at most 1.2
    times its neighbourhood on 300 images at seed 1 (the shipped phantoms are at 1.07-1.12; the earlier demo
    weights, without the blur next to their resampling, were at 1.4-2.1)."""
    from nodules import generation
    from nodules.metrics import spectral
    images = generation.images_from_pickle(demo_weight(name), 300, seed=1, label=label)
    assert spectral.spectral_peaks(images)['peak'] <= 1.2


def test_readme_main_command_generates_from_the_demo_weights_by_default(tmp_path):
    result = run_script('2-inference.py', '--outdir', str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(str(tmp_path))) == sorted('inference_img_%d.png' % i for i in range(10))


README_ALL_COMMANDS = re.compile(r'^python (?:2-inference|compute_metrics)\.py .*demo/weight/all\.pkl.*$', re.MULTILINE)


def test_readme_commands_with_the_conditional_demo_generator_run_as_written(tmp_path):
    """The README's examples of one class of a conditional model (2-inference.py --label, compute_metrics.py
    --label) run on the shipped all.pkl, output folders moved to a temporary one."""
    with io.open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
        commands = [line.split('#')[0].split() for line in README_ALL_COMMANDS.findall(f.read())]
    assert sorted(command[1] for command in commands) == ['2-inference.py', 'compute_metrics.py']
    for command in commands:
        args = [str(tmp_path / 'out') if previous == '--outdir' else arg
                for previous, arg in zip([None] + command[2:], command[2:])]
        result = run_script(command[1], *args)
        assert result.returncode == 0, (command, result.stderr)
        if command[1] == '2-inference.py':
            assert len(os.listdir(str(tmp_path / 'out'))) == int(args[args.index('--number') + 1])
        else:
            assert 'Sliced Wasserstein distance' in result.stdout, result.stdout
