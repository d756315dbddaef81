"""5-pix2pix.py end to end: train a tiny model on real phantom pairs (PNGs and a dataset), resume it, generate from
masks and from diameters, and the refusals (bad masks, wrong pickle kind, bad settings); compute_metrics.py's
maskfidelity on the trained model."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import assert_clean_failure, run_script
from nodules.data import dataset
from nodules.gan import legacy
from nodules.pix2pix import losses
from nodules.pix2pix import masks as mask_drawing
from test_pix2pix_data import phantom_pairs, write_mask_pngs, write_pair_pngs

SCRIPT = '5-pix2pix.py'
TINY = ['--ngf', '4', '--ndf', '4', '--minibatch', '4', '--seed', '3']
DEMO_PGGAN = 'demo/weight/AIS.pkl'


def png(path):
    return np.asarray(Image.open(str(path)))


def run_dirs(outdir):
    return sorted(os.path.join(str(outdir), d) for d in os.listdir(str(outdir)))


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A tiny model trained for 2 epochs on 10 real phantom pairs (PNGs), a snapshot each epoch."""
    root = tmp_path_factory.mktemp('pix2pix')
    patches, masks, groups = phantom_pairs(5, 2, seed=7)
    pairs = write_pair_pngs(root / 'pairs', patches, masks)
    result = run_script(SCRIPT, 'train', '--data', pairs, '--outdir', root / 'runs', '--epochs', '2',
                        '--snapshot-epochs', '1', *TINY)
    assert result.returncode == 0, result.stderr
    run_dir = run_dirs(root / 'runs')[0]
    return dict(root=root, pairs=pairs, patches=patches, masks=masks, groups=groups, run_dir=run_dir,
                model=os.path.join(run_dir, 'network-final.pkl'), stdout=result.stdout)


@pytest.mark.slow
def test_a_run_directory_like_3_train(trained):
    run_dir = trained['run_dir']
    assert os.path.basename(run_dir) == '00000-pairs-pix2pix'
    names = set(os.listdir(run_dir))
    assert {'log.txt', 'config.json', 'triplets-epoch0001.png', 'triplets-epoch0002.png',
            'network-snapshot-epoch0001.pkl', 'network-snapshot-epoch0002.pkl', 'network-final.pkl'} <= names
    assert any(name.startswith('events.out.tfevents') for name in names)
    config = json.load(open(os.path.join(run_dir, 'config.json')))
    assert config['real_label'] == losses.draw_real_label(np.random.RandomState(3))  # recorded, from the seed
    assert (config['ngf'], config['epochs'], config['training_pairs'], config['validation_pairs']) == (4, 2, 9, 1)
    log = open(os.path.join(run_dir, 'log.txt')).read()
    assert 'epoch 2 ' in log and 'real label of this run' in log and 'done:' in log
    # 6 training triplets on the left, the one validation triplet on the right (mask | real | generated)
    picture = png(os.path.join(run_dir, 'triplets-epoch0002.png'))
    assert picture.shape == (6 * 64 + 5 * 8, 2 * 192 + 8)
    np.testing.assert_array_equal(picture[:64, :64], trained['masks'][0])
    np.testing.assert_array_equal(picture[:64, 64:128], trained['patches'][0])
    np.testing.assert_array_equal(picture[:64, 200:264], trained['masks'][9])    # validation: the last pair
    assert os.stat(trained['model']).st_ino == os.stat(os.path.join(run_dir, 'network-snapshot-epoch0002.pkl')).st_ino


@pytest.mark.slow
def test_the_pickle_holds_G_and_D_for_the_safe_loader(trained):
    G, D = legacy.read_network_states(trained['model'], 'pix2pix')
    assert (G['build_func_name'], D['build_func_name']) == ('pix2pix_G', 'pix2pix_D')
    assert G['static_kwargs']['ngf'] == 4 and D['static_kwargs']['ndf'] == 4
    config = json.load(open(os.path.join(trained['run_dir'], 'config.json')))
    assert sum(np.size(v) for _, v in G['variables']) == config['G_params']
    result = run_script('2-inference.py', '--model', trained['model'], '--outdir', trained['root'] / 'x')
    assert_clean_failure(result, 'is a pix2pix mask-to-patch model (G, D), not a PGGAN network pickle')
    assert result.stderr.count('\n') == 1 and not os.path.exists(str(trained['root'] / 'x'))


@pytest.mark.slow
def test_resume_continues_the_epochs_with_the_runs_settings(trained):
    snapshot = os.path.join(trained['run_dir'], 'network-snapshot-epoch0001.pkl')
    outdir = trained['root'] / 'resumed'
    result = run_script(SCRIPT, 'train', '--resume', snapshot, '--outdir', outdir, '--epochs', '3')
    assert result.returncode == 0, result.stderr
    run_dir = run_dirs(outdir)[0]
    config = json.load(open(os.path.join(run_dir, 'config.json')))
    assert (config['ngf'], config['seed'], config['start_epoch'], config['epochs']) == (4, 3, 1, 3)
    assert config['data_dir'] == os.path.abspath(trained['pairs'])
    assert {'network-snapshot-epoch0002.pkl', 'network-snapshot-epoch0003.pkl'} <= set(os.listdir(run_dir))
    assert 'network-snapshot-epoch0001.pkl' not in os.listdir(run_dir)
    assert 'resuming %s after epoch 1' % snapshot in open(os.path.join(run_dir, 'log.txt')).read()
    done = run_script(SCRIPT, 'train', '--resume', 'latest', '--outdir', outdir)
    assert_clean_failure(done, 'network-snapshot-epoch0003.pkl: was taken after epoch 3, and the run is 3 epochs '
                               'long: nothing left to train (raise --epochs)')
    wider = run_script(SCRIPT, 'train', '--resume', snapshot, '--outdir', outdir, '--ngf', '8')
    assert_clean_failure(wider, 'network G has ngf 4, but this run asks for 8')


@pytest.mark.slow
def test_a_dataset_with_masks_trains_too(trained):
    root = trained['root']
    data_dir = str(root / 'AIS')
    dataset.write_dataset(data_dir, trained['patches'][:, np.newaxis], groups=trained['groups'],
                          masks=trained['masks'])
    result = run_script(SCRIPT, 'train', '--data', data_dir, '--outdir', root / 'dataset-runs', '--epochs', '1',
                        '--val-fraction', '0.2', *TINY)
    assert result.returncode == 0, result.stderr
    config = json.load(open(os.path.join(run_dirs(root / 'dataset-runs')[0], 'config.json')))
    assert (config['training_pairs'], config['validation_pairs']) == (8, 2)  # the last of 5 nodules held out


@pytest.mark.slow
def test_generate_from_diameters_is_repeatable_and_writes_a_grid(trained):
    root = trained['root']
    args = ['generate', '--model', trained['model'], '--diameter-mm', '8', '--number', '3', '--seed', '5',
            '--grid', 'grid.png']
    first = run_script(SCRIPT, *(args + ['--outdir', root / 'd1']))
    assert first.returncode == 0, first.stderr
    again = run_script(SCRIPT, *(args + ['--outdir', root / 'd2']))
    assert sorted(os.listdir(str(root / 'd1'))) == ['grid.png', 'pix2pix_0000.png', 'pix2pix_0001.png',
                                                   'pix2pix_0002.png']
    for name in os.listdir(str(root / 'd1')):
        np.testing.assert_array_equal(png(root / 'd1' / name), png(root / 'd2' / name))
    grid = png(root / 'd1' / 'grid.png')
    masks = mask_drawing.draw_masks(8.0, 3, 'round', seed=5)
    np.testing.assert_array_equal(grid[:64, :64], masks[0])               # mask | generated
    np.testing.assert_array_equal(grid[:64, 64:128], png(root / 'd1' / 'pix2pix_0000.png'))
    other = run_script(SCRIPT, *(args[:-4] + ['--seed', '6', '--outdir', root / 'd3']))
    assert not np.array_equal(png(root / 'd1' / 'pix2pix_0000.png'), png(root / 'd3' / 'pix2pix_0000.png'))
    assert again.returncode == other.returncode == 0
    clash = run_script(SCRIPT, *(args[:-4] + ['--seed', '6', '--outdir', root / 'd1']))
    assert_clean_failure(clash, 'already exists with different contents; nothing was written')


@pytest.mark.slow
def test_several_diameters_draw_one_outline_scaled_one_grid_row_each(trained):
    root = trained['root']
    result = run_script(SCRIPT, 'generate', '--model', trained['model'], '--diameter-mm', '4,10', '--number', '2',
                        '--shape', 'lobulated', '--outdir', root / 'rows', '--grid', 'grid.png')
    assert result.returncode == 0, result.stderr
    assert len(os.listdir(str(root / 'rows'))) == 5
    grid = png(root / 'rows' / 'grid.png')
    assert grid.shape == (2 * 64 + 2, 2 * 128 + 2)          # a row per diameter, --number pairs per row
    for row, diameter in enumerate((4.0, 10.0)):
        for column in range(2):
            tile = grid[row * 66:row * 66 + 64, column * 130:column * 130 + 64]
            np.testing.assert_array_equal(tile, mask_drawing.draw_mask(diameter, 'lobulated', 0, column))


@pytest.mark.slow
def test_each_seed_of_a_list_is_its_own(trained):
    root = trained['root']
    common = ['generate', '--model', trained['model'], '--diameter-mm', '6', '--shape', 'spiculated',
              '--batch-size', '4']
    assert run_script(SCRIPT, *(common + ['--seeds', '0-2', '--outdir', root / 's1'])).returncode == 0
    assert run_script(SCRIPT, *(common + ['--seeds', '1,7', '--outdir', root / 's2'])).returncode == 0
    assert sorted(os.listdir(str(root / 's1'))) == ['seed0000.png', 'seed0001.png', 'seed0002.png']
    np.testing.assert_array_equal(png(root / 's1' / 'seed0001.png'), png(root / 's2' / 'seed0001.png'))


@pytest.mark.slow
def test_generate_from_mask_pngs_pairs_and_a_dataset(trained):
    root = trained['root']
    folder = write_mask_pngs(root / 'masks', trained['masks'][:4])
    for source, out in ((folder, 'm1'), (trained['pairs'], 'm2')):
        result = run_script(SCRIPT, 'generate', '--model', trained['model'], '--masks', source, '--outdir',
                            root / out)
        assert result.returncode == 0, result.stderr
    assert len(os.listdir(str(root / 'm1'))) == 4 and len(os.listdir(str(root / 'm2'))) == 10


@pytest.mark.slow
@pytest.mark.parametrize('problem, fragments', [
    ('wrong size', ['masks of 32x32, but this generator', 'takes 64x64 masks']),
    ('not binary', ['mask000.png: the mask is not binary: it holds 7 at row 0, column 0']),
    ('empty', ['mask001.png: the mask is empty (no pixel is 255)']),
    ('count mismatch', ['holds 10 masks but the dataset has 9 images']),
])
def test_bad_masks_are_one_line(trained, tmp_path, problem, fragments):
    masks = trained['masks'][:3].copy()
    source = str(tmp_path / 'in')
    if problem == 'wrong size':
        write_mask_pngs(source, masks[:, ::2, ::2])
    elif problem == 'not binary':
        masks[0, 0, 0] = 7
        write_mask_pngs(source, masks)
    elif problem == 'empty':
        masks[1] = 0
        write_mask_pngs(source, masks)
    else:
        dataset.write_dataset(source, trained['patches'][:9, np.newaxis], masks=trained['masks'][:9])
        np.save(dataset.masks_path(source), trained['masks'])  # one mask too many
    result = run_script(SCRIPT, 'generate', '--model', trained['model'], '--masks', source, '--outdir',
                        tmp_path / 'out')
    assert_clean_failure(result, *fragments)
    assert result.stderr.count('\n') == 1 and not os.path.exists(str(tmp_path / 'out'))


@pytest.mark.slow
def test_mask_fidelity_of_the_model(trained, tmp_path):
    out = str(tmp_path / 'm.json')
    result = run_script('compute_metrics.py', '--real', trained['pairs'], '--fake', trained['model'], '--metrics',
                        'maskfidelity', '--json', out)
    assert result.returncode == 0, result.stderr
    figures = json.load(open(out))
    assert figures['maskfidelity']['count'] == 10 and 0 <= figures['maskfidelity']['fake']['mean'] <= 1
    assert figures['maskfidelity']['real']['mean'] > 0.2   # phantoms' own patches follow their masks
    assert set(figures['swd']['per_level']) == {'64x64', '32x32', '16x16'}
    assert 'Mask fidelity' in result.stdout and 'grey >= 100' in result.stdout
    refused = run_script('compute_metrics.py', '--real', trained['pairs'], '--fake', DEMO_PGGAN, '--metrics',
                         'maskfidelity')
    assert_clean_failure(refused, '--metrics maskfidelity measures a pix2pix model')


def test_generate_refuses_a_pggan_pickle_in_one_line(tmp_path):
    result = run_script(SCRIPT, 'generate', '--model', DEMO_PGGAN, '--outdir', tmp_path / 'o', '--diameter-mm', '5')
    assert_clean_failure(result, 'demo/weight/AIS.pkl: is a PGGAN network pickle (G, D, Gs), not a pix2pix '
                                 'mask-to-patch model (G, D); 2-inference.py reads it')
    assert result.stderr.count('\n') == 1


@pytest.mark.parametrize('args, fragment', [
    (['train', '--outdir', 'x'], '--data is required'),
    (['train', '--data', 'nowhere', '--ngf', '0'], 'argument --ngf: must be a whole number >= 1, got 0'),
    (['train', '--data', 'nowhere', '--label-smoothing', 'twice'], "invalid choice: 'twice'"),
    (['train', '--data', 'nowhere', '--label-smoothing', 'none', '--real-label', '0.9'],
     '--real-label is the constant of --label-smoothing once'),
    (['train', '--resume', 'nowhere.pkl'], 'nowhere.pkl: no such snapshot to resume from'),
    (['generate', '--model', 'm.pkl', '--outdir', 'o', '--diameter-mm', '40'], '40 mm does not fit'),
    (['generate', '--model', 'm.pkl', '--outdir', 'o', '--masks', 'm', '--number', '3'],
     'argument --number: only with --diameter-mm'),
    (['generate', '--model', 'm.pkl', '--outdir', 'o', '--diameter-mm', '5', '--seeds', '1-3', '--seed', '2'],
     'argument --seeds: not allowed with argument --seed'),
    (['generate', '--model', 'missing.pkl', '--outdir', 'o', '--diameter-mm', '5'], 'missing.pkl: no such model file'),
])
def test_argument_refusals_are_one_line(tmp_path, args, fragment):
    result = run_script(SCRIPT, *args)
    assert_clean_failure(result, fragment)
    assert result.stderr.count('\n') == 1


def test_training_data_refusals(tmp_path):
    patches, masks, _ = phantom_pairs(2, 1)
    masks[1] = 0
    folder = write_pair_pngs(tmp_path / 'pairs', patches, masks)
    result = run_script(SCRIPT, 'train', '--data', folder, '--outdir', tmp_path / 'runs')
    assert_clean_failure(result, 'pair001.png: its mask half (columns 64-127) is empty (no pixel is 255)')
    assert not os.path.exists(str(tmp_path / 'runs'))


def test_the_demo_weights_are_a_small_pix2pix_model():
    path = 'demo/weight/pix2pix-AIS.pkl'
    assert os.path.getsize(path) < 10 * 2 ** 20
    G, D = legacy.read_network_states(path, 'pix2pix')
    assert (G['static_kwargs']['ngf'], D['static_kwargs']['ndf']) == (16, 16)
    assert 1.7e6 < sum(np.size(v) for _, v in G['variables']) < 1.9e6
