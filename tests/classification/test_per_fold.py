"""Generators trained inside each training fold (4-classify.py --gan-train, nodules/classification/per_fold.py) and
their memorization audit (nodules/classification/audit.py): the plan on disk, refusals of anything that does not
match it, real per-fold training (interrupted and resumed), and a copying generator caught by the audit."""
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, assert_clean_failure, directory_contents, load_script, read_records, run_script
from test_experiment import make_class_dataset, save_tiny_gan, synthetic_patch_data

# Tiny networks that stay at 4x4 for the whole (short) run: the generators output 16x16, the classifier's size.
TINY_RECIPE = '--fmap-base 64 --fmap-max 16 --latent-size 16 --total-kimg 0.1 --lod-training-kimg 10'
SMALL = ['--folds', '2', '--epochs', '1', '--widths', '8,16,16', '--resolution', '16', '--batch-size', '16']


@pytest.fixture(scope='module')
def class_datasets(tmp_path_factory):
    """Three one-class datasets of 4 nodules with 3 views each (32x32, so 16x16 is a lower resolution)."""
    root = tmp_path_factory.mktemp('classes')
    return [make_class_dataset(root, name, c, metadata={'subtype': subtype})
            for c, (name, subtype) in enumerate([('a', 'AIS'), ('m', 'MIA'), ('i', 'IAC')])]


def classify(data, outdir, *arguments):
    return run_script('4-classify.py', '--data', *(list(data) + SMALL + ['--outdir', outdir] + list(arguments)))


def read_json(path):
    with open(str(path), encoding='utf-8') as f:
        return json.load(f)


def run_folders(outdir):
    """Every 3-train.py run folder under a per-fold generators folder."""
    found = []
    for root, dirs, files in os.walk(str(outdir)):
        found += [os.path.join(root, d) for d in dirs if d[:5].isdigit() and d[5:6] == '-']
    return sorted(found)


# ----------------------------------------------------------------------------------------------------------------
# Options


@pytest.mark.parametrize('arguments, fragments', [
    (['--gan-train', '--data x'], ['--gan-train', '--data is set per fold']),
    (['--gan-train', '--outdir x'], ['--outdir is set per fold']),
    (['--gan-train=--conditional'], ['--conditional is set per fold', '--gan-conditional']),
    (['--gan-train', '--resume latest'], ['--resume is set per fold']),
    (['--gan-train', '--transfer demo/weight/AIS.pkl'], ['--transfer starts from a model that may have seen the test']),
    (['--gan-train', '--total-kimg nan'], ['--gan-train', '--total-kimg', 'nan']),
    (['--gan-train', '--bogus 3'], ['--gan-train', 'unrecognized arguments: --bogus 3']),
    (['--gan-train', '--augment none --augment-p 0.5'], ['--gan-train', 'augment is none']),
    (['--gan-train', '"unbalanced'], ['--gan-train', 'quotation']),
    (['--gan-train=-h'], ['--gan-train', '-h shows 3-train.py']),
    (['--gan-train', TINY_RECIPE, '--gan', 'x.pkl'], ['not allowed with argument']),
    (['--gan-train', TINY_RECIPE, '--arms', 'none,classic'], ['--gan-train trains generators for the gan arms']),
    (['--gan-conditional'], ['--gan-conditional goes with --gan-train']),
    (['--plan-only'], ['--plan-only goes with --gan-train']),
])
def test_bad_gan_train_options_are_refused_at_once(tmp_path, arguments, fragments):
    outdir = tmp_path / 'out'
    result = run_script('4-classify.py', '--outdir', outdir, *arguments)
    assert_clean_failure(result, *fragments)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not outdir.exists()


# ----------------------------------------------------------------------------------------------------------------
# The plan on disk: --plan-only


@pytest.fixture(scope='module')
def plan(class_datasets, tmp_path_factory):
    outdir = tmp_path_factory.mktemp('plan') / 'out'
    result = classify(class_datasets, outdir, '--arms', 'none,gan', '--gan-train', TINY_RECIPE, '--plan-only')
    assert result.returncode == 0, result.stderr
    return outdir, result


def test_plan_only_writes_the_folds_datasets_and_jobs(class_datasets, plan):
    from nodules.classification import experiment
    from nodules.data import dataset
    outdir, result = plan
    root = outdir / 'generators'
    assert sorted(os.listdir(str(outdir))) == ['generators']  # no results, no training
    assert sorted(os.listdir(str(root))) == ['folds.json', 'jobs.txt', 'parallel.sh', 'r0-f0', 'r0-f1', 'slurm.sh']
    assert run_folders(root) == []
    assert 'jobs.txt' in result.stdout and '6 new' in result.stdout
    folds = read_json(root / 'folds.json')['folds']
    data = experiment.load_patch_data(class_datasets, 16)
    script = load_script('3-train.py')
    with open(str(root / 'jobs.txt')) as f:
        lines = f.read().splitlines()
    assert len(lines) == 6  # 2 folds x 3 classes
    for entry in folds:
        fold = root / ('r%d-f%d' % (entry['repeat'], entry['fold']))
        nodules = read_json(fold / 'nodules.json')
        assert sorted(nodules) == sorted(entry['train_groups']) and not set(nodules) & set(entry['test_groups'])
        for c, name in enumerate(data.class_names):
            data_dir = fold / 'datasets' / name
            # The dataset, read back through TensorFlow's reader: exactly the class's training-side patches.
            images = read_records(dataset.tfrecord_path(str(data_dir), 4))[:, 0]
            metadata = dataset.read_metadata(str(data_dir))
            groups = dataset.read_groups(str(data_dir))
            names = [metadata['nodule_names'][g] for g in groups]
            assert set(names) == {n for n in nodules if n.startswith(name + '/')}
            expected = np.concatenate([data.images[data.groups == data.group_names.index(n)] for n in
                                       metadata['nodule_names']])
            assert np.array_equal(images, expected) and metadata['subtype'] == name
            # Its line of jobs.txt is a complete 3-train.py command that 3-train.py's parser takes.
            [line] = [l for l in lines if str(data_dir) in l]
            words = shlex.split(line)
            assert words[:2] == ['python', '3-train.py']
            args = script.parse_args(words[2:])
            assert args.data_dir == str(data_dir) and args.outdir == str(fold / 'runs' / name)
            assert args.total_kimg == 0.1 and args.fmap_base == 64
    with open(str(root / 'slurm.sh')) as f:
        slurm = f.read()
    assert '#SBATCH --array=1-6' in slurm and 'SLURM_ARRAY_TASK_ID' in slurm and str(root / 'jobs.txt') in slurm
    with open(str(root / 'parallel.sh')) as f:
        assert 'parallel -j' in f.read()
    # The plan follows from the options: planning again changes nothing.
    before = directory_contents(str(outdir))
    again = classify(class_datasets, outdir, '--arms', 'none,gan', '--gan-train', TINY_RECIPE, '--plan-only')
    assert again.returncode == 0, again.stderr
    assert directory_contents(str(outdir)) == before


def copy_of_plan(plan, tmp_path):
    import shutil
    outdir = tmp_path / 'out'
    shutil.copytree(str(plan[0]), str(outdir))
    return outdir


def test_a_generator_that_saw_test_nodules_is_refused(class_datasets, plan, tmp_path):
    outdir = copy_of_plan(plan, tmp_path)
    entry = read_json(outdir / 'generators' / 'folds.json')['folds'][1]
    nodules_path = outdir / 'generators' / 'r0-f1' / 'nodules.json'
    nodules_path.write_text(json.dumps(entry['train_groups'] + entry['test_groups'][:1]))
    before = directory_contents(str(outdir))
    for extra in (['--plan-only'], []):
        result = classify(class_datasets, outdir, '--arms', 'none,gan', '--gan-train', TINY_RECIPE, *extra)
        assert_clean_failure(result, str(nodules_path), '1 test nodule(s) of repeat 0 fold 1',
                             entry['test_groups'][0], 'refused')
        assert len(result.stderr.strip().splitlines()) == 1
        assert directory_contents(str(outdir)) == before
    # A list without test nodules that is not the plan's is refused too.
    nodules_path.write_text(json.dumps(entry['train_groups'][1:]))
    result = classify(class_datasets, outdir, '--arms', 'none,gan', '--gan-train', TINY_RECIPE, '--plan-only')
    assert_clean_failure(result, str(nodules_path), 'other nodules than the training nodules of repeat 0 fold 1')


def fake_finished_run(outdir, fold, name, **changes):
    """A run folder with a network pickle and the config.json 3-train.py would write for the planned job, with
    `changes` to its settings."""
    from nodules.classification import per_fold
    from nodules.training import settings as training_settings
    recipe = load_script('4-classify.py').training_recipe(TINY_RECIPE)
    job = per_fold.Job(0, fold, name, [0], False, str(outdir / 'generators' / ('r0-f%d' % fold) / 'datasets' / name),
                       str(outdir / 'generators' / ('r0-f%d' % fold) / 'runs' / name), [])
    settings = per_fold.expected_settings(job, recipe)
    settings.update(dict(data_dir=os.path.abspath(job.data_dir)), **changes)
    run = os.path.join(job.outdir, '00000-%s-16x16' % name)
    os.makedirs(run)
    with open(training_settings.config_path(run), 'wb') as f:
        f.write(training_settings.config_bytes(settings, G_kwargs=recipe.G_kwargs, D_kwargs=recipe.D_kwargs))
    return save_tiny_gan(os.path.join(run, 'network-final.pkl'), 0, 3)


@pytest.mark.parametrize('changes, fragment', [
    ({'data_dir': os.path.join(ROOT, 'processData', 'MIA')}, 'was trained on %s' % os.path.join(ROOT, 'processData',
                                                                                                'MIA')),
    ({'total_kimg': 0.4}, 'does not match the plan: trained with total_kimg=0.4 (the plan: 0.1)'),
])
def test_a_generator_that_does_not_match_the_plan_is_refused(class_datasets, plan, tmp_path, changes, fragment):
    outdir = copy_of_plan(plan, tmp_path)
    pickle = fake_finished_run(outdir, 1, 'MIA', **changes)
    before = directory_contents(str(outdir))
    result = classify(class_datasets, outdir, '--arms', 'none,gan', '--gan-train', TINY_RECIPE)
    assert_clean_failure(result, pickle, fragment)
    assert len(result.stderr.strip().splitlines()) == 1
    assert directory_contents(str(outdir)) == before


def test_a_dataset_with_other_patches_is_refused(class_datasets, plan, tmp_path):
    from nodules.data import dataset
    outdir = copy_of_plan(plan, tmp_path)
    data_dir = str(outdir / 'generators' / 'r0-f0' / 'datasets' / 'IAC')
    images = read_records(dataset.tfrecord_path(data_dir, 4))
    dataset.write_dataset(data_dir, images[::-1], groups=dataset.read_groups(data_dir)[::-1],
                          metadata=dataset.read_metadata(data_dir), overwrite=True)
    result = classify(class_datasets, outdir, '--arms', 'none,gan', '--gan-train', TINY_RECIPE, '--plan-only')
    assert_clean_failure(result, data_dir, 'holds other patches than the training nodules of repeat 0 fold 0')


# ----------------------------------------------------------------------------------------------------------------
# The memorization audit


class _Pool(object):
    """A stand-in generator set: generate(c, n, seed) gives n patches of `source(c)`, cycled."""

    def __init__(self, source):
        self.source = source

    def generate(self, class_index, number, seed, progress=None):
        patches = self.source(class_index)
        return patches[np.arange(number) % len(patches)]


def audited_generators(per_fold_source):
    from nodules.classification import experiment

    class Audited(experiment.Generators):
        source, test_nodules_seen, audited = 'per-fold', False, True
        plans = {}

        def key(self, plan):
            self.plans[(plan.repeat, plan.fold)] = plan
            return (plan.repeat, plan.fold)

        def generator_set(self, key):
            return _Pool(lambda c: per_fold_source(self.plans[key], c))

        def document(self):
            document = super(Audited, self).document()
            document['directory'] = 'nowhere'
            return document
    return Audited()


def test_the_audit_flags_a_generator_that_returns_its_training_patches():
    from nodules.classification import experiment
    data = synthetic_patch_data(groups_per_class=(20, 20, 20))
    settings = experiment.Settings(arms=('none', 'gan'), folds=2, repeats=1, epochs=1, patience=1,
                                   validation_fraction=0.2, seed=0, class_weighting='balanced',
                                   generated=('ratio', 1.0), widths=(8, 16, 16), dropout=0.5, learning_rate=1e-3,
                                   batch_size=16)

    def training_patches(plan, c):  # what a generator that memorised its training nodules returns
        side = np.concatenate([plan.fit, plan.validation])
        return data.images[side[data.labels[side] == c]][::-1]

    def new_patches(plan, c):  # new draws of the same distribution: a generator that learnt it without copying
        return np.random.RandomState(100 + c).randint(0, 128, size=(60, 16, 16)).astype(np.uint8)

    outcomes, markdown = {}, {}
    for name, source in (('copies', training_patches), ('new', new_patches)):
        results, folds, pooled, figures = experiment.run_experiment(data, settings, audited_generators(source))
        outcomes[name] = results['generators']['memorization']
        assert list(figures) == ['memorization.png'] and figures['memorization.png'][:4] == b'\x89PNG'
        markdown[name] = experiment.report_files(results, folds, pooled, figures)['results.md'].decode('utf-8')
        assert '## Memorization audit of the per-fold generators' in markdown[name]
    copies, new = outcomes['copies'], outcomes['new']
    assert len(copies['per_generator']) == 6  # 2 folds x 3 classes
    assert len(copies['flagged']) == 6 and markdown['copies'].count('**yes**') == 6
    assert '**yes**' not in markdown['new']
    for entry in copies['per_generator']:
        for space in ('pixels', 'features'):
            assert entry[space]['near_copy_share'] == 1.0 and entry[space]['median_ratio'] < 1e-3, (entry, space)
            assert all(pair['distance'] < 1e-3 for pair in entry[space]['closest_pairs'])
        assert entry['flagged']
    assert new['flagged'] == []
    for entry in new['per_generator']:
        assert 0.7 < entry['pixels']['median_ratio'] < 1.4 and entry['pixels']['near_copy_share'] < 0.3, entry


# ----------------------------------------------------------------------------------------------------------------
# Real per-fold training


@pytest.mark.slow
def test_bar_scenario_trains_six_generators_once(class_datasets, tmp_path):
    outdir = tmp_path / 'out'
    command = ['--arms', 'none,gan', '--gan-train', TINY_RECIPE]
    result = classify(class_datasets, outdir, *command)
    assert result.returncode == 0, result.stderr
    assert '6 new' in result.stdout
    root = outdir / 'generators'
    runs = run_folders(root)
    assert len(runs) == 6 and all(os.path.isfile(os.path.join(run, 'network-final.pkl')) for run in runs)
    results = read_json(outdir / 'results.json')
    generators = results['generators']
    assert generators['source'] == 'per-fold' and generators['test_nodules_seen'] is False
    assert generators['recipe'] == TINY_RECIPE and sorted(generators['pickles']) == ['r0-f0', 'r0-f1']
    for entry in read_json(outdir / 'folds.json')['folds']:
        nodules = read_json(root / ('r%d-f%d' % (entry['repeat'], entry['fold'])) / 'nodules.json')
        assert nodules and not set(nodules) & set(entry['test_groups'])
        for path in generators['pickles']['r%d-f%d' % (entry['repeat'], entry['fold'])].values():
            config = read_json(os.path.join(os.path.dirname(path), 'config.json'))
            assert config['data_dir'].startswith(os.path.abspath(str(root / ('r0-f%d' % entry['fold']))))
    memorization = generators['memorization']
    assert len(memorization['per_generator']) == 6 and set(memorization['summary']) == {'pixels', 'features'}
    assert (outdir / 'memorization.png').read_bytes()[:4] == b'\x89PNG'
    with open(str(outdir / 'results.md'), encoding='utf-8') as f:
        assert f.readline().startswith('Generators of the gan arms: trained inside each training fold')
    for run in results['arms']['gan']['runs']:
        assert run['train_patches']['generated'] == run['train_patches']['real']  # 1x

    # The same command again trains nothing: every generator is found finished, and the results are the same.
    before = {run: sorted(os.listdir(run)) for run in runs}
    again = classify(class_datasets, outdir, *(command + ['--overwrite']))
    assert again.returncode == 0, again.stderr
    assert '6 finished, 0 interrupted (resumed from their newest snapshot), 0 new' in again.stdout
    assert {run: sorted(os.listdir(run)) for run in run_folders(root)} == before
    assert read_json(outdir / 'results.json') == results

    # Pretrained generators (here the per-fold ones of fold 0, given with --gan) are labelled as having seen the
    # test nodules, with a warning first on the terminal and in results.md.
    leaky = tmp_path / 'leaky'
    pretrained = classify(class_datasets, leaky, '--arms', 'none,gan', '--gan',
                          *generators['pickles']['r0-f0'].values())
    assert pretrained.returncode == 0, pretrained.stderr
    assert pretrained.stdout.startswith('warning: the gan arms\' estimates are optimistic')
    leaky_results = read_json(leaky / 'results.json')['generators']
    assert leaky_results['source'] == 'pretrained' and leaky_results['test_nodules_seen'] is True
    with open(str(leaky / 'results.md'), encoding='utf-8') as f:
        assert 'optimistic' in f.readline()
    assert not (leaky / 'memorization.png').exists()


INTERRUPTIBLE_RECIPE = ('--fmap-base 64 --fmap-max 16 --latent-size 16 --lod-training-kimg 10 --total-kimg 0.5 '
                        '--tick-kimg 0.01 --snapshot-ticks 1')


@pytest.mark.slow
def test_an_interrupted_per_fold_training_resumes_from_its_snapshot(class_datasets, tmp_path):
    outdir = tmp_path / 'out'
    command = ['--data'] + class_datasets + SMALL + ['--outdir', str(outdir), '--arms', 'none,gan',
                                                      '--gan-conditional', '--gan-train', INTERRUPTIBLE_RECIPE]
    first_run = outdir / 'generators' / 'r0-f0' / 'runs' / 'all'
    log_path = str(tmp_path / 'interrupted.log')
    with open(log_path, 'w') as log:
        process = subprocess.Popen([sys.executable, os.path.join(ROOT, '4-classify.py')] + command, cwd=ROOT,
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 300
        while not any(name.startswith('network-snapshot-') for run in run_folders(first_run)
                      for name in os.listdir(run)):
            assert process.poll() is None and time.time() < deadline, open(log_path).read()
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)  # Ctrl-C
        process.wait(120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    with open(log_path) as f:
        output = f.read()
    assert process.returncode == 128 + signal.SIGINT, output
    assert 'Traceback' not in output and 'the same command resumes' in output
    assert not (outdir / 'results.json').exists()
    [interrupted] = run_folders(first_run)
    assert not os.path.exists(os.path.join(interrupted, 'network-final.pkl'))
    snapshots = sorted(n for n in os.listdir(interrupted) if n.startswith('network-snapshot-'))

    result = run_script('4-classify.py', *command)
    assert result.returncode == 0, result.stderr
    assert '1 interrupted' in result.stdout
    runs = run_folders(first_run)
    assert len(runs) == 2 and runs[0] == interrupted
    config = read_json(os.path.join(runs[1], 'config.json'))
    assert config['resume'] == os.path.abspath(os.path.join(interrupted, snapshots[-1]))  # the newest snapshot
    assert os.path.isfile(os.path.join(runs[1], 'network-final.pkl'))
    [other] = run_folders(outdir / 'generators' / 'r0-f1' / 'runs' / 'all')
    assert read_json(os.path.join(other, 'config.json'))['resume'] is None
    results = read_json(outdir / 'results.json')['generators']
    assert results['conditional'] is True and results['pickles']['r0-f0'] == {
        'all': os.path.join(str(first_run), os.path.basename(runs[1]), 'network-final.pkl')}
