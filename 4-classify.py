"""Classify nodule subtypes (AIS / MIA / IAC) from 2-D patches, with and without GAN-made nodules."""
import argparse
import collections
import contextlib
import importlib.util
import io
import math
import os
import shlex
import sys
import time

from nodules.util import cli, values
from nodules.util.errors import UserError

DEFAULT_DATA = ['processData/AIS', 'processData/MIA', 'processData/IAC']
EPILOG = """\
arms (--arms, any comma-separated subset; the same folds for all, always tested on real patches):
  none         real training patches only
  classic      real patches with random flips, 90-degree rotations and shifts
  gan          real patches plus generated ones (--synthetic-per-class per class)
  classic+gan  both, augmenting real and generated patches alike
  synthetic    generated patches only ("classification accuracy score": train on generated, test on real)

the classifier (nodules/classification/cnn.py): space-to-depth 4x4 stem, then three stages of two 3x3 convolutions with batch
normalisation and ReLU (default widths 32, 64, 128; 2x2 max-pooling between stages), global average pooling,
dropout, a dense softmax layer; Adam, minibatches of 64, optional class-balanced cross-entropy, early stopping on
the validation nodules held out of the training folds (the best epoch's weights are kept).

generators of the gan arms:
  --gan-train RECIPE  honest: for every repeat and fold, one generator per class (one conditional generator with
               --gan-conditional) is trained by 3-train.py with the options RECIPE on the fold's training nodules
               only (never a test nodule), under OUTDIR/generators/r{repeat}-f{fold}/ with nodules.json, the CLASS/ID
               names it trained on.  Running the same command again reuses finished generators and resumes
               interrupted ones (Ctrl-C is safe); --plan-only writes OUTDIR/generators/jobs.txt (one 3-train.py
               command per generator), slurm.sh and parallel.sh to train them elsewhere, and stops.  Each generator
               gets a memorization audit: its patches' distances to the nearest training patch against those of the
               fold's test patches (results.md, memorization.png).
  --gan, --gan-model  ready-made generators, e.g. the demo weights: they were trained on every nodule, the test
               folds' included, so the gan arms' estimates are optimistic; results.json says test_nodules_seen: true
               and results.md and the terminal warn.

evaluation: k-fold cross-validation grouped by nodule (D/<name>-groups.npy; without it every patch counts as its
own nodule, with a warning) and stratified by class; every two arms are compared on the same folds (mean
difference in balanced accuracy, 95% interval and p-value of the corrected resampled t-test).  OUTDIR receives
results.json, folds.json, results.md, roc_curves.png and confusion_matrices.png (and memorization.png with
--gan-train), all together or none.

examples:
  python 4-classify.py --data processData/AIS processData/MIA processData/IAC --arms none,classic
  python 4-classify.py --gan demo/weight/AIS.pkl demo/weight/MIA.pkl demo/weight/IAC.pkl --outdir results/cls
  python 4-classify.py --gan-conditional --outdir results/cls-honest --gan-train "--fmap-base 512 --fmap-max 64
      --total-kimg 100 --lod-training-kimg 10 --lod-transition-kimg 10 --g-smoothing 0.99 --seed 1"
  python 4-classify.py --data datasets/labelled --gan-model cond.pkl --gan-labels 0 1 2 --arms none,gan
"""


def arms_list(text):
    from nodules.classification import experiment
    arms = [arm.strip() for arm in text.split(',') if arm.strip()]
    unknown = [arm for arm in arms if arm not in experiment.ARMS]
    if unknown or not arms:
        raise argparse.ArgumentTypeError('unknown arm %r (choose from %s)' % (unknown[0] if unknown else text,
                                                                             ', '.join(experiment.ARMS)))
    if len(set(arms)) != len(arms):
        raise argparse.ArgumentTypeError('an arm is listed twice in %r' % text)
    return arms


def generated_count(text):
    from nodules.classification import experiment
    try:
        return experiment.parse_generated_count(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error))


def widths_list(text):
    try:
        widths = tuple(int(w) for w in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError('expected comma-separated whole numbers, got %r' % text)
    if len(widths) < 1 or min(widths) < 1:
        raise argparse.ArgumentTypeError('widths must be at least 1, got %r' % text)
    return widths


def fraction(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError('%r is not a number' % text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError('must be from 0 up to (not including) 1, got %s' % text)
    return value


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError('%r is not a number' % text)
    if not (value > 0 and math.isfinite(value)):  # an infinite rate trains nothing, at chance level
        raise argparse.ArgumentTypeError('must be a finite number above 0, got %s' % text)
    return value


def parse_args(argv=None):
    parser = cli.ArgumentParser(
        description='Nodule subtype classification with and without GAN-made nodules: k-fold cross-validation '
                    'of a small CNN on 2-D patches, one arm per way of training it.',
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data', nargs='+', metavar='DIR',
                        default=DEFAULT_DATA,
                        help='one dataset per class (class names from each one\'s metadata, else the folder name), '
                             'or one dataset with one-hot labels (default: %s)' % ' '.join(DEFAULT_DATA))
    parser.add_argument('--resolution', type=cli.power_of_two(16, 1024), default=64,
                        help='patch size to classify: that resolution\'s TFRecords are read (default: %(default)s)')
    parser.add_argument('--outdir', default='results/classify', help='output directory (default: %(default)s)')
    parser.add_argument('--arms', type=arms_list, metavar='ARM,ARM,...',
                        help='comma-separated arms (default: none,classic,gan,classic+gan,synthetic with a '
                             'generator, none,classic without)')
    gan = parser.add_mutually_exclusive_group()
    gan.add_argument('--gan', nargs='+', metavar='PKL',
                     help='one unconditional generator pickle per class, in class order')
    gan.add_argument('--gan-model', metavar='PKL', help='one conditional generator pickle for all classes')
    gan.add_argument('--gan-train', metavar='RECIPE',
                     help='train the generators inside each training fold with these 3-train.py options (one '
                          'quoted string, e.g. "--fmap-base 512 --fmap-max 64 --total-kimg 100", or '
                          '--gan-train="--mirror" for a single option; not --data, --outdir, --resume or '
                          '--conditional, which are set per fold, nor --transfer, whose model may have seen the '
                          'test nodules); see below')
    parser.add_argument('--gan-conditional', action='store_true',
                        help='with --gan-train: one conditional generator per fold on all classes, instead of one '
                             'generator per class')
    parser.add_argument('--plan-only', action='store_true',
                        help='with --gan-train: write the folds, the per-fold datasets, OUTDIR/generators/jobs.txt, '
                             'slurm.sh and parallel.sh, then stop (train the jobs anywhere, then run this command '
                             'again without --plan-only)')
    parser.add_argument('--gan-labels', nargs='+', type=cli.nonnegative_int, metavar='I',
                        help='label index of each class in --gan-model (default: 0, 1, ... in class order)')
    parser.add_argument('--synthetic-per-class', type=generated_count, default='1x', metavar='N|Rx',
                        help='generated patches per class in the gan arms: a number, or a ratio to the class\'s '
                             'real training patches such as 1x or 0.5x (default: %(default)s)')
    parser.add_argument('--folds', type=cli.positive_int, default=5,
                        help='cross-validation folds (default: %(default)s)')
    parser.add_argument('--repeats', type=cli.positive_int, default=1,
                        help='repeat the cross-validation with new folds, weights and generated patches '
                             '(default: %(default)s)')
    parser.add_argument('--epochs', type=cli.positive_int, default=30,
                        help='the most epochs a training run takes (default: %(default)s)')
    parser.add_argument('--patience', type=cli.positive_int, default=6,
                        help='stop after this many epochs without a better validation loss (default: %(default)s)')
    parser.add_argument('--validation-fraction', type=fraction, default=0.2,
                        help='share of each class\'s training patches (whole nodules) held out for early stopping; '
                             '0 trains all --epochs (default: %(default)s)')
    parser.add_argument('--class-weighting', choices=['balanced', 'none'], default='balanced',
                        help='balanced: every class weighs the same in the loss however many patches it has '
                             '(default: %(default)s)')
    parser.add_argument('--widths', type=widths_list, default=(32, 64, 128), metavar='W1,W2,W3',
                        help='channels of the stages, one number per stage (default: 32,64,128)')
    parser.add_argument('--dropout', type=fraction, default=0.5,
                        help='dropout rate before the last layer (default: %(default)s)')
    parser.add_argument('--lr', type=positive_float, default=1e-3, help='Adam learning rate (default: %(default)s)')
    parser.add_argument('--batch-size', type=cli.positive_int, default=64, help='minibatch (default: %(default)s)')
    parser.add_argument('--seed', type=cli.seed, default=0,
                        help='seed of folds, weights, minibatches and generated patches: the same command gives '
                             'the same numbers (default: %(default)s)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace the results of an earlier run in OUTDIR (default: refuse before any work)')
    args = parser.parse_args(argv)
    if args.folds < 2:
        parser.error('--folds must be at least 2, got %d' % args.folds)
    if args.gan_labels is not None and not args.gan_model:
        parser.error('--gan-labels goes with --gan-model')
    for flag, given in (('--gan-conditional', args.gan_conditional), ('--plan-only', args.plan_only)):
        if given and not args.gan_train:
            parser.error('%s goes with --gan-train' % flag)
    has_gan = bool(args.gan or args.gan_model or args.gan_train)
    from nodules.classification import experiment
    if args.arms is None:
        args.arms = list(experiment.ARMS) if has_gan else ['none', 'classic']
    needs_gan = [arm for arm in args.arms if arm in experiment.GENERATED_ARMS]
    if needs_gan and not has_gan:
        parser.error('--arms %s needs generated patches: give --gan-train (generators trained per fold), --gan '
                     '(one pickle per class) or --gan-model' % ','.join(needs_gan))
    if args.gan_train and not needs_gan:
        parser.error('--gan-train trains generators for the gan arms, and --arms %s has none' % ','.join(args.arms))
    args.recipe = training_recipe(args.gan_train) if args.gan_train else None
    return args


# ----------------------------------------------------------------------------------------------------------------
# Per-fold generators: 3-train.py's own parser reads the recipe, its main trains them

TRAIN_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '3-train.py')
# Options of 3-train.py that --gan-train sets per fold, by the name 3-train.py gives their setting.
PER_FOLD_OPTIONS = (('data_dir', '--data'), ('resume', '--resume'), ('resume_kimg', '--resume-kimg'),
                    ('conditional', '--conditional'))
_train_script = []


def train_script():
    """3-train.py as a module (its name starts with a digit, so `import` cannot name it), loaded once."""
    if not _train_script:
        spec = importlib.util.spec_from_file_location('train_script', TRAIN_SCRIPT)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _train_script.append(module)
    return _train_script[0]


def training_recipe(text):
    """--gan-train's RECIPE read by 3-train.py's own parser and settings (a per_fold.Recipe); one UserError line
    naming the problem otherwise."""
    from nodules.classification import per_fold
    from nodules.training import settings as training_settings
    script = train_script()
    try:
        argv = shlex.split(text)
    except ValueError as error:
        raise UserError('--gan-train %r: %s' % (text, error))
    messages = io.StringIO()
    try:
        with contextlib.redirect_stderr(messages), contextlib.redirect_stdout(io.StringIO()):
            args = script.parse_args(argv)
    except SystemExit as exit:
        if not exit.code:
            raise UserError('--gan-train %r: -h shows 3-train.py\'s options; the recipe holds the ones to train '
                            'with' % text)
        message = (messages.getvalue().strip().splitlines() or ['not 3-train.py options'])[-1]
        raise UserError('--gan-train %r: %s' % (text, message.split('error: ', 1)[-1].replace(' (see -h)', '')))
    given = script.explicit_settings(args)
    per_fold_flags = [flag for name, flag in PER_FOLD_OPTIONS if name in given]
    per_fold_flags += ['--outdir'] if args.outdir != script.parse_args([]).outdir else []
    if per_fold_flags:
        raise UserError('--gan-train %r: %s is set per fold (--gan-conditional for --conditional); leave it out'
                        % (text, per_fold_flags[0]))
    if 'transfer' in given:  # the model's weights come from outside the fold: it may have trained on a test nodule
        raise UserError('--gan-train %r: --transfer starts from a model that may have seen the test nodules; the '
                        'per-fold generators start from new networks' % text)
    try:
        settings = training_settings.resolve_settings(given)[0]
        script.check_memory(settings, given)
    except UserError as error:
        raise UserError('--gan-train %r: %s' % (text, error))
    G_kwargs, D_kwargs = training_settings.network_kwargs(given)
    return per_fold.Recipe(text, argv, given, G_kwargs, D_kwargs)


class _AddTo(object):
    """The progress "bar" of one training run, whose updates go to the bar over all runs."""

    def __init__(self, update):
        self.update = update

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False


def train_generator(argv, progress):
    """One per-fold generator, trained as its line of jobs.txt (`python 3-train.py ARGV`) trains it, here in this
    process (each run has a TensorFlow graph of its own); its log goes to its run's log.txt only, its kimg to
    `progress`."""
    return train_script().main(argv, progress=lambda total, desc, unit=None, **kwargs: _AddTo(progress),
                               console=lambda line: None)


def per_fold_generators(args, data, plans):
    """Plan, check and train what is missing of the per-fold generators; a per_fold.PerFoldGenerators, or None
    after --plan-only."""
    from nodules.classification import experiment
    from nodules.classification import per_fold
    root = os.path.join(args.outdir, 'generators')
    jobs = per_fold.plan_jobs(root, plans, data.class_names, args.recipe, args.gan_conditional)
    folds = experiment.folds_document(data, plans)
    with cli.progress(len(jobs), 'checking and writing the per-fold datasets', unit='dataset') as bar:
        states = per_fold.prepare(root, data, plans, folds, jobs, args.recipe, ['python', os.path.relpath(TRAIN_SCRIPT)],
                                  progress=bar.update)
    count = collections.Counter(state.kind for state in states)
    print('generators: %d (%d per fold) in %s: %d finished, %d interrupted (resumed from their newest snapshot), '
          '%d new' % (len(jobs), len(jobs) // len(plans), root, count['finished'], count['interrupted'],
                      count['new']))
    if args.plan_only:
        print('planned: %s holds one 3-train.py command per generator (slurm.sh and parallel.sh run them on a '
              'cluster or several GPUs); once they are trained, the same command without --plan-only goes on'
              % os.path.join(root, 'jobs.txt'))
        return None
    total = sum(per_fold.kimg_to_train(job, state, args.recipe) for job, state in zip(jobs, states)
                if state.kind != 'finished')
    sys.stdout.flush()
    with cli.progress(total, 'training %d generator(s)' % (len(jobs) - count['finished']), unit='kimg') as bar:
        states = per_fold.train_missing(jobs, states, args.recipe, train_generator, progress=bar.update,
                                        log=cli.progress_write)
    return per_fold.PerFoldGenerators(root, jobs, states, data.class_names, args.resolution, args.recipe)


def format_duration(seconds):
    minutes, seconds = divmod(int(round(seconds)), 60)
    return '%dm%02ds' % (minutes, seconds) if minutes else '%ds' % seconds


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    from nodules.classification import cnn
    from nodules.classification import experiment
    from nodules.util import outputs
    names = experiment.OUTPUT_FILES + (experiment.MEMORIZATION_FIGURE,)
    if not args.plan_only:  # --plan-only writes under OUTDIR/generators only
        outputs.check_targets([os.path.join(args.outdir, name) for name in names])
        existing = [name for name in names if os.path.exists(os.path.join(args.outdir, name))]
        if existing and not args.overwrite:
            raise UserError('%s: already holds %s of an earlier run; nothing was done (use --overwrite or another '
                            '--outdir)' % (args.outdir, ', '.join(existing)))
    try:
        cnn.conv_layers(args.resolution, args.widths)
    except ValueError as error:
        raise UserError('--resolution %d: %s' % (args.resolution, error))
    if args.gan or args.gan_model:
        print(experiment.OPTIMISTIC_WARNING)

    data = experiment.load_patch_data(args.data, args.resolution)
    experiment.check_foldable(data, args.folds)
    values.check_memory(cnn.training_bytes(args.resolution, len(data.class_names), args.widths, args.batch_size),
                        '--widths %s --batch-size %d: training the classifier on %dx%d patches'
                        % (','.join(str(w) for w in args.widths), args.batch_size, args.resolution, args.resolution))
    print('%s: %s; %d-fold cross-validation x %d repeat(s), arms %s'
          % (', '.join(data.sources), ', '.join('%s %d patches / %d nodules' % (
              c, (data.labels == i).sum(), (experiment.group_classes(data) == i).sum())
              for i, c in enumerate(data.class_names)), args.folds, args.repeats, ','.join(args.arms)))
    sys.stdout.flush()
    plans = experiment.plan_folds(data, args.folds, args.repeats, args.validation_fraction, args.seed)
    if any(arm in experiment.GENERATED_ARMS for arm in args.arms):
        for plan in plans:  # before generators are trained or loaded: a count no fold can have
            experiment.generated_counts(args.synthetic_per_class, data, plan)
    generators = None
    if args.recipe:
        generators = per_fold_generators(args, data, plans)
        if generators is None:
            return
    elif any(arm in experiment.GENERATED_ARMS for arm in args.arms):
        generators = experiment.PretrainedGenerators(experiment.GeneratorSet(
            data.class_names, args.resolution, args.gan, args.gan_model, args.gan_labels))
        generators.set.check()
    settings = experiment.Settings(
        arms=tuple(args.arms), folds=args.folds, repeats=args.repeats, epochs=args.epochs, patience=args.patience,
        validation_fraction=args.validation_fraction, seed=args.seed, class_weighting=args.class_weighting,
        generated=args.synthetic_per_class, widths=tuple(args.widths), dropout=args.dropout, learning_rate=args.lr,
        batch_size=args.batch_size)
    total_epochs = args.repeats * args.folds * len(args.arms) * args.epochs
    try:
        with cli.progress(total_epochs, 'training', unit='epoch') as bar:
            results, folds, pooled, figures = experiment.run_experiment(
                data, settings, generators, progress=bar.update, log=cli.progress_write, plans=plans)
    finally:
        if generators is not None:
            generators.close()
    files = experiment.report_files(results, folds, pooled, figures)
    paths = [os.path.join(args.outdir, name) for name in files]
    with outputs.FileSet(paths, overwrite=args.overwrite) as staged:
        for path in paths:
            staged.write(path, files[os.path.basename(path)])
    stale = os.path.join(args.outdir, experiment.MEMORIZATION_FIGURE)
    if experiment.MEMORIZATION_FIGURE not in files and os.path.isfile(stale):
        os.remove(stale)  # an earlier run's audit, replaced (--overwrite) by results without one
    print()
    # The table as plain ASCII: stdout may be a terminal without UTF-8.
    print(files['results.md'].decode('utf-8').replace(u'\u00b1', '+-').replace(u'\u2212', '-'))
    print('wrote %s to %s in %s' % (', '.join(files), args.outdir, format_duration(time.time() - start)))


if __name__ == '__main__':
    cli.run(main)
