"""Generators trained inside each training fold, never on a test nodule: 4-classify.py --gan-train.

For every repeat and fold of the cross-validation, the fold's training side (its training and validation nodules,
never a test nodule) becomes the training data of the gan arms' generators: one dataset per class, or with
`conditional` one labelled dataset of all classes, written by nodules/data/dataset.py with the nodule groups; and
each dataset trains one generator with a 3-train.py command: the recipe's options plus the dataset and the run
folder.  Under ROOT (OUTDIR/generators):

    folds.json                            the folds of the plan (the results' folds.json)
    jobs.txt                              one complete 3-train.py command per generator
    slurm.sh, parallel.sh                 jobs.txt as a SLURM array job, and with GNU parallel
    r{R}-f{F}/nodules.json                the CLASS/ID names of the nodules the fold's generators train on
    r{R}-f{F}/datasets/NAME/              each generator's training dataset (NAME: its class, or 'all')
    r{R}-f{F}/runs/NAME/NNNNN-NAME-RxR/   its 3-train.py run(s): log.txt, config.json, snapshots, network-final.pkl

All of it follows from the folds (and so from --seed), so running the same plan again finds what exists.  A
generator is finished when a run of its job holds network-final.pkl; interrupted when runs hold snapshots but
none is final (it resumes from the newest snapshot, as `3-train.py --resume latest` would); new otherwise.
Whatever trained it (this process, jobs.txt on a cluster, a hand-typed command), a generator must match the plan:
its fold's nodules.json must list exactly the plan's training nodules of the fold, never a test nodule; its dataset
must hold the plan's patches; and its run's config.json must name that dataset and the recipe's settings.
Anything else is refused, before anything is written, with one line naming it.
"""
import collections
import json
import os
import re
import shlex

import numpy as np

from nodules.classification import experiment
from nodules.training import settings as training_settings
from nodules.util import outputs
from nodules.util.errors import UserError

CONDITIONAL_NAME = 'all'      # the dataset and run folder of a fold's conditional generator
FINAL_PICKLE = training_settings.FINAL_NAME
NODULES_FILE = 'nodules.json'
PLAN_FILES = ('folds.json', 'jobs.txt', 'slurm.sh', 'parallel.sh')
_FOLDER_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.+-]*$')

Recipe = collections.namedtuple('Recipe', [
    'text',       # the --gan-train string, as given
    'argv',       # its 3-train.py arguments
    'given',      # {setting: value} it gives, as 3-train.py reads them (its own parser)
    'G_kwargs',   # the network settings it gives, as 3-train.py passes them to the training loop
    'D_kwargs',
])

Job = collections.namedtuple('Job', [
    'repeat', 'fold',
    'name',         # class name, or CONDITIONAL_NAME
    'classes',      # the class indices its generator serves
    'conditional',  # one model of all classes (3-train.py --conditional)
    'data_dir',     # its training dataset
    'outdir',       # its 3-train.py --outdir
    'argv',         # the 3-train.py arguments that train it
])

State = collections.namedtuple('State', 'kind path')  # kind 'finished' (path: final pickle), 'interrupted'
                                                       # (path: newest snapshot) or 'new' (path None)


def fold_dir(root, repeat, fold):
    return os.path.join(root, 'r%d-f%d' % (repeat, fold))


def generator_names(class_names, conditional):
    """[(NAME, class indices)] of one fold's generators: one per class, named after it, or one conditional."""
    if conditional:
        return [(CONDITIONAL_NAME, list(range(len(class_names))))]
    for name in class_names:
        if not _FOLDER_NAME.match(name):
            raise UserError('class %r: --gan-train names folders after the classes, which takes letters, digits and '
                            '_.+- (rename the class in its dataset\'s metadata, or use --gan-conditional)' % name)
    return [(name, [c]) for c, name in enumerate(class_names)]


def plan_jobs(root, plans, class_names, recipe, conditional=False):
    """One Job per generator of every fold of `plans` (experiment.FoldPlan), in plan order."""
    jobs = []
    for plan in plans:
        folder = fold_dir(root, plan.repeat, plan.fold)
        for name, classes in generator_names(class_names, conditional):
            data_dir = os.path.join(folder, 'datasets', name)
            outdir = os.path.join(folder, 'runs', name)
            argv = list(recipe.argv) + ['--data', data_dir, '--outdir', outdir] + (['--conditional'] if conditional
                                                                                    else [])
            jobs.append(Job(plan.repeat, plan.fold, name, classes, conditional, data_dir, outdir, argv))
    return jobs


# ----------------------------------------------------------------------------------------------------------------
# The fold's training data


FoldDataset = collections.namedtuple('FoldDataset', 'images labels groups metadata')


def training_side(plan):
    """Indices of the patches of a fold's training and validation nodules, in dataset order."""
    return np.sort(np.concatenate([plan.fit, plan.validation]))


def fold_dataset(data, plan, job):
    """The patches a job's generator trains on: [N, 1, H, W] with its groups (index into the metadata's
    nodule_names), one-hot labels for a conditional job, and metadata saying where they come from."""
    side = training_side(plan)
    side = side[np.isin(data.labels[side], job.classes)]
    nodule_ids, groups = np.unique(data.groups[side], return_inverse=True)
    metadata = collections.OrderedDict([
        ('source', '4-classify.py --gan-train: the training nodules of repeat %d fold %d of %s'
         % (plan.repeat, plan.fold, ', '.join(os.path.abspath(s) for s in data.sources))),
        ('count', int(len(side))),
        ('nodule_names', [data.group_names[g] for g in nodule_ids]),
    ])
    labels = None
    if job.conditional:
        metadata['classes'] = list(data.class_names)
        labels = np.eye(len(data.class_names), dtype=np.float32)[data.labels[side]]
    else:
        metadata['subtype'] = data.class_names[job.classes[0]]
    return FoldDataset(data.images[side][:, np.newaxis], labels, groups.astype(np.int64), metadata)


def dataset_matches(data_dir, expected):
    """Whether the dataset at `data_dir` holds exactly `expected` (a FoldDataset): None when there is none."""
    from nodules.data import dataset
    if not os.path.exists(data_dir):
        return None
    files = dataset.list_tfrecords(data_dir)
    images = dataset.read_images(files[max(files)])
    labels = dataset.read_labels(data_dir)
    groups = dataset.read_groups(data_dir, len(images))
    return (images.shape == expected.images.shape and np.array_equal(images, expected.images)
            and groups is not None and np.array_equal(groups, expected.groups)
            and (labels is None) == (expected.labels is None)
            and (labels is None or np.array_equal(labels, expected.labels)))


def check_nodules_file(path, training_names, test_names, repeat, fold):
    """Refuse a nodules.json that lists a test nodule of its fold or other nodules than the plan's; returns whether
    it exists."""
    if not os.path.exists(path):
        return False
    try:
        with open(path, encoding='utf-8') as f:
            names = json.load(f)
    except (OSError, ValueError) as error:
        raise UserError('%s: not a readable JSON list of nodule names (%s)' % (path, str(error).splitlines()[0]))
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise UserError('%s: not a JSON list of CLASS/ID nodule names' % path)
    seen = sorted(set(names) & set(test_names))
    if seen:
        raise UserError('%s: lists %d test nodule(s) of repeat %d fold %d (%s%s): its generators would have seen '
                        'nodules they are tested on; refused' % (path, len(seen), repeat, fold, ', '.join(seen[:3]),
                                                                 ', ...' if len(seen) > 3 else ''))
    if sorted(names) != sorted(training_names):
        raise UserError('%s: lists other nodules than the training nodules of repeat %d fold %d of this plan (other '
                        '--data, --folds or --seed?); use another --outdir' % (path, repeat, fold))
    return True


# ----------------------------------------------------------------------------------------------------------------
# The runs


def expected_settings(job, recipe):
    """The run settings a job's 3-train.py command resolves to for a new run."""
    given = dict(recipe.given, data_dir=job.data_dir, conditional=job.conditional)
    return training_settings.resolve_settings(given)[0]


def _relative_data_dir(path, levels=4):
    """The last `levels` components (r0-f0/datasets/NAME): a generator trained elsewhere on a copy of the plan
    (a cluster with other paths) still names its fold's dataset."""
    parts = os.path.normpath(os.path.abspath(path)).split(os.sep)
    return parts[-levels:]


def check_run(path, job, recipe):
    """Refuse the snapshot or final pickle at `path` unless its run's config.json says it was trained on the job's
    dataset with the recipe's settings and network size."""
    settings, config = training_settings.saved_settings(path)
    if config is None:
        raise UserError('%s: no config.json beside it says what it was trained on; refused (move its run folder '
                        'away)' % path)
    if _relative_data_dir(settings.get('data_dir', '')) != _relative_data_dir(job.data_dir):
        raise UserError('%s: was trained on %s, not on its fold\'s dataset %s; refused (move its run folder away)'
                        % (path, settings.get('data_dir'), job.data_dir))
    expected = expected_settings(job, recipe)
    with open(config, encoding='utf-8') as f:
        recorded = json.load(f)
    differences = ['%s=%r (the plan: %r)' % (name, settings.get(name), value) for name, value in expected.items()
                   if name != 'data_dir' and settings.get(name) != value]
    for net, wanted in (('G_kwargs', recipe.G_kwargs), ('D_kwargs', recipe.D_kwargs)):
        have = recorded.get(net) or {}
        differences += ['%s %s=%r (the plan: %r)' % (net[0], key, have.get(key), value)
                        for key, value in sorted(wanted.items()) if have.get(key) != value]
    if differences:
        raise UserError('%s: does not match the plan: trained with %s; use the --gan-train options it was trained '
                        'with, or another --outdir' % (path, ', '.join(differences)))


def run_folders(outdir):
    if not os.path.isdir(outdir):
        return []
    return sorted(os.path.join(outdir, name) for name in os.listdir(outdir)
                  if training_settings.RUN_DIR_NAME.match(name) and os.path.isdir(os.path.join(outdir, name)))


def job_state(job, recipe):
    """Where a job stands (a State), its runs checked against the plan."""
    runs = run_folders(job.outdir)
    finals = [os.path.join(run, FINAL_PICKLE) for run in runs if os.path.isfile(os.path.join(run, FINAL_PICKLE))]
    if finals:
        check_run(finals[-1], job, recipe)
        return State('finished', finals[-1])
    if any(training_settings.nimg_of_snapshot(name) is not None for run in runs for name in os.listdir(run)):
        snapshot = training_settings.find_latest_snapshot(job.outdir)  # what `--resume latest` takes
        check_run(snapshot, job, recipe)
        return State('interrupted', snapshot)
    return State('new', None)


def kimg_to_train(job, state, recipe):
    """kimg a job still has to train: the recipe's length, less where an interrupted run got to."""
    total = expected_settings(job, recipe)['total_kimg']
    done = training_settings.nimg_of_snapshot(state.path) / 1000.0 if state.kind == 'interrupted' else 0.0
    return max(total - done, 0.0)


# ----------------------------------------------------------------------------------------------------------------
# The plan on disk


def prepare(root, data, plans, folds, jobs, recipe, command, cwd=None, progress=None):
    """Check everything of the plan that exists under `root`, then write what is missing: the datasets, each
    fold's nodules.json, and (always, as they follow from the plan) folds.json, jobs.txt, slurm.sh and
    parallel.sh.  `folds` is experiment.folds_document(data, plans); `command` the words that start a 3-train.py
    command line (e.g. ['python', '3-train.py']), run from `cwd`; progress(1) after each job's dataset is found
    right or written.  Returns the State of every job."""
    from nodules.data import dataset
    by_fold = {(entry['repeat'], entry['fold']): entry for entry in folds['folds']}
    plan_of = {(plan.repeat, plan.fold): plan for plan in plans}
    missing_nodules, missing_datasets = [], []
    for plan in plans:  # everything is checked before anything is written
        entry = by_fold[(plan.repeat, plan.fold)]
        path = os.path.join(fold_dir(root, plan.repeat, plan.fold), NODULES_FILE)
        if not check_nodules_file(path, entry['train_groups'], entry['test_groups'], plan.repeat, plan.fold):
            missing_nodules.append((path, entry['train_groups']))
    for job in jobs:
        expected = fold_dataset(data, plan_of[(job.repeat, job.fold)], job)
        matches = dataset_matches(job.data_dir, expected)
        if matches is False:
            raise UserError('%s: holds other patches than the training nodules of repeat %d fold %d of this plan '
                            '(other --data or --resolution?); use another --outdir' % (job.data_dir, job.repeat,
                                                                                      job.fold))
        if matches is None:
            missing_datasets.append((job, expected))
        elif progress is not None:
            progress(1)
    states = [job_state(job, recipe) for job in jobs]
    for job, expected in missing_datasets:
        dataset.write_dataset(job.data_dir, expected.images, labels=expected.labels, metadata=expected.metadata,
                              groups=expected.groups)
        if progress is not None:
            progress(1)
    for path, names in missing_nodules:
        outputs.write_file_atomic(path, _json_bytes(names))
    write_plan_files(root, folds, jobs, command, cwd)
    return states


def _json_bytes(document):
    return (json.dumps(document, indent=2, ensure_ascii=False) + '\n').encode('utf-8')


def command_line(words):
    return ' '.join(shlex.quote(word) for word in words)


def write_plan_files(root, folds, jobs, command, cwd=None):
    """folds.json, jobs.txt (one 3-train.py command per generator), slurm.sh and parallel.sh under `root`."""
    cwd = os.path.abspath(cwd or os.getcwd())
    jobs_path = os.path.abspath(os.path.join(root, 'jobs.txt'))
    lines = [command_line(list(command) + job.argv) for job in jobs]
    slurm = '\n'.join([
        '#!/bin/bash',
        '# The per-fold generators of 4-classify.py as a SLURM array job, one generator per task: sbatch %s' % 'slurm.sh',
        '# Then run the same 4-classify.py command again: it finds the finished generators, resumes any that a task',
        '# left unfinished, and goes on with the classification.',
        '#SBATCH --job-name=per-fold-gan',
        '#SBATCH --array=1-%d' % len(jobs),
        '#SBATCH --gres=gpu:1',
        '#SBATCH --cpus-per-task=4',
        'cd %s || exit 1' % shlex.quote(cwd),
        'eval "$(sed -n "${SLURM_ARRAY_TASK_ID}p" %s)"' % shlex.quote(jobs_path), ''])
    parallel = '\n'.join([
        '#!/bin/sh',
        '# The per-fold generators of 4-classify.py with GNU parallel, one job per GPU on a machine with 2 GPUs',
        '# (-j: the number of GPUs; {%} is the job slot 1..j); on CPUs alone use -j 1 and drop CUDA_VISIBLE_DEVICES.',
        '# Then run the same 4-classify.py command again: it finds the finished generators.',
        'cd %s || exit 1' % shlex.quote(cwd),
        'parallel -j 2 \'CUDA_VISIBLE_DEVICES=$(({%%}-1)) {}\' :::: %s' % shlex.quote(jobs_path), ''])
    for name, data in (('folds.json', _json_bytes(folds)), ('jobs.txt', ''.join(l + '\n' for l in lines)),
                       ('slurm.sh', slurm), ('parallel.sh', parallel)):
        path = os.path.join(root, name)
        outputs.write_file_atomic(path, data if isinstance(data, bytes) else data.encode('utf-8'))
        if name.endswith('.sh'):
            os.chmod(path, 0o755)


# ----------------------------------------------------------------------------------------------------------------
# Training what is missing


def train_missing(jobs, states, recipe, train, progress=None, log=None):
    """Train every job that is not finished, one after another: `train(argv, progress)` runs one 3-train.py
    command line in this process (resumed from the interrupted run's newest snapshot where there is one) and
    calls progress(kimg) as it goes.  Returns the States after training (all finished)."""
    log = log or (lambda line: None)
    todo = [index for index, state in enumerate(states) if state.kind != 'finished']
    states = list(states)
    for number, index in enumerate(todo):
        job, state = jobs[index], states[index]
        argv = job.argv + (['--resume', state.path] if state.kind == 'interrupted' else [])
        try:
            train(argv, progress)
        except KeyboardInterrupt:
            log('interrupted: %d of %d generators to train are finished; the same command resumes the rest (%s '
                'from its newest snapshot)' % (number, len(todo), job.outdir))
            raise
        states[index] = job_state(job, recipe)
        if states[index].kind != 'finished':
            raise UserError('%s: training ended without %s' % (job.outdir, FINAL_PICKLE))
        log('generator %d/%d trained: %s' % (number + 1, len(todo), states[index].path))
    return states


class PerFoldGenerators(experiment.Generators):
    """The finished per-fold generators: fold (repeat, fold) uses its own, trained on its training nodules only."""
    source = 'per-fold'
    test_nodules_seen = False
    audited = True

    def __init__(self, root, jobs, states, class_names, resolution, recipe):
        self.root, self.recipe = root, recipe
        self.class_names, self.resolution = list(class_names), resolution
        self.pickles = collections.OrderedDict()
        for job, state in zip(jobs, states):
            self.pickles.setdefault((job.repeat, job.fold), collections.OrderedDict())[job.name] = state.path
        self.conditional = jobs[0].conditional
        self._open = {}

    def key(self, plan):
        return (plan.repeat, plan.fold)

    def generator_set(self, key):
        paths = list(self.pickles[key].values())
        if self.conditional:
            generators = experiment.GeneratorSet(self.class_names, self.resolution, gan_model=paths[0])
        else:
            generators = experiment.GeneratorSet(self.class_names, self.resolution, gan_paths=paths)
        self._open[key] = generators
        return generators

    def release(self, key):
        self._open.pop(key).close()

    def close(self):
        for key in list(self._open):
            self.release(key)

    def document(self):
        document = super(PerFoldGenerators, self).document()
        document['directory'] = self.root
        document['recipe'] = self.recipe.text
        document['conditional'] = self.conditional
        document['pickles'] = collections.OrderedDict(('r%d-f%d' % key, paths) for key, paths in self.pickles.items())
        return document
