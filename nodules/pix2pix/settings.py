"""What a pix2pix training run is asked to do, one row per setting (5-pix2pix.py train's flags, config.json, and
the Trainer's defaults all come from these rows), and how a resumed run finds the run it continues.

Defaults are the original script's: ngf = ndf = 128, Adam 1e-4 (beta1 0.5, beta2 0.999, epsilon 1e-7) for both
networks, minibatch 32, 500 epochs, random left-right flips, dropout 0.5, the real label drawn once per run,
and the "L1" term that is a mean squared error, weighted 1000.

No TensorFlow here: the script checks its arguments before anything slow is imported.
"""
import os
import re

from nodules.training.settings import Choice, Number, Text, Whole, Switch
from nodules.util import settings_table as table
from nodules.util.errors import UserError

LABEL_SMOOTHING = ('once', 'per-step', 'none')
RECONSTRUCTIONS = ('mse', 'l1')
REAL_LABEL_RANGE = (0.8, 1.1)
RECONSTRUCTION_WEIGHT = 1000.0
DEFAULT_VAL_FRACTION = 0.1

# users: 'trainer' (nodules/pix2pix/training.Trainer's settings), 'data' (which pairs), 'run' (the run directory).
SETTINGS = table.SettingsTable([
    table.row('data_dir', None, Text(), table.OPTIONAL_DIRECTORY, 'data',
              'training pairs: a dataset with masks (dataset_tool.py) or a folder of side-by-side PNG pairs, '
              'patch in the left half and its mask (0/255) in the right, 64x128 for 64x64 patches',
              flag='--data', default_help='none: required unless resuming'),
    table.row('val_data_dir', None, Text(), table.OPTIONAL_DIRECTORY, 'data',
              'validation pairs, in either form; the original kept a separate validation folder', flag='--val-data',
              default_help='hold out --val-fraction of --data'),
    table.row('val_fraction', DEFAULT_VAL_FRACTION, Number(), table.between(0, 0.5), 'data',
              'without --val-data, this share of --data is held out for validation: the last whole nodules of a '
              'dataset with groups (all views of a nodule on one side), else the last pairs in file order; 0 '
              'for none'),
    table.row('ngf', 128, Whole(), table.at_least(1, whole=True), 'trainer',
              'generator filters at the outermost U-Net level (8 ngf at most deeper)'),
    table.row('ndf', 128, Whole(), table.at_least(1, whole=True), 'trainer',
              'discriminator filters of its first convolution'),
    table.row('epochs', 500, Whole(), table.at_least(1, whole=True), 'trainer',
              'train until this many epochs in all; an epoch is N // minibatch minibatches of a fresh shuffle'),
    table.row('minibatch', 32, Whole(), table.at_least(1, whole=True), 'trainer',
              'pairs per step (all of them when fewer)'),
    table.row('G_lr', 1e-4, Number(), table.above(0), 'trainer', 'Adam learning rate of G', flag='--g-lr'),
    table.row('D_lr', 1e-4, Number(), table.above(0), 'trainer', 'Adam learning rate of D', flag='--d-lr'),
    table.row('beta1', 0.5, Number(), table.between(0, 1, below=True), 'trainer', 'Adam beta1 of both'),
    table.row('beta2', 0.999, Number(), table.between(0, 1, below=True), 'trainer', 'Adam beta2 of both'),
    table.row('adam_epsilon', 1e-7, Number(), table.above(0), 'trainer', 'Adam epsilon of both (Keras\' default)'),
    table.row('label_smoothing', 'once', Choice(LABEL_SMOOTHING), table.one_of(LABEL_SMOOTHING), 'trainer',
              'target of real pairs in D\'s loss: once = the original\'s, ONE number drawn from U(%g, %g) when the '
              'run starts and used for every step (recorded as real_label in config.json); per-step = a new draw '
              'for every minibatch, the label smoothing the original meant; none = 1' % REAL_LABEL_RANGE),
    table.row('real_label', None, Number(), table.between(0, 2, optional=True), 'trainer',
              'the constant real target of --label-smoothing once', default_help='drawn from --seed'),
    table.row('real_label_range', list(REAL_LABEL_RANGE), Text(), table.rule(
        'a pair [low, high] of numbers', lambda v: isinstance(v, (list, tuple)) and len(v) == 2
        and all(table.is_real(x) for x in v) and v[0] <= v[1]), 'trainer', 'range of the real label draws',
        flag=table.NO_FLAG),
    table.row('reconstruction', 'mse', Choice(RECONSTRUCTIONS), table.one_of(RECONSTRUCTIONS), 'trainer',
              'G\'s reconstruction term: mse = the original\'s (its script calls it L1 but squares the '
              'difference); l1 = mean absolute difference, the pix2pix paper\'s'),
    table.row('reconstruction_weight', RECONSTRUCTION_WEIGHT, Number(), table.at_least(0), 'trainer',
              'weight of the reconstruction term against the adversarial one'),
    table.row('flip', True, Switch(), table.SWITCH, 'trainer', 'random left-right flips, mask and patch together',
              off_help='no flips'),
    table.row('dropout_rate', 0.5, Number(), table.between(0, 1, below=True), 'trainer',
              'dropout of the U-Net\'s up steps at 8x8 and below (the generator\'s only noise)'),
    table.row('seed', None, Whole(), table.SEED, 'trainer', 'random seed (shuffles, flips, initial weights, the '
              'real label)', default_help='drawn and recorded in config.json'),
    table.row('snapshot_epochs', 10, Whole(), table.at_least(1, whole=True), 'run',
              'epochs between network snapshots (the original saved every epoch: 470 MB each at ngf = ndf = 128); '
              'the last epoch always gets one'),
], directories=('data_dir', 'val_data_dir'))

TRAINER_DEFAULTS = SETTINGS.defaults_for('trainer')

# ----------------------------------------------------------------------------------------------------------------
# Run directories and snapshots

RUN_DIR_NAME = table.RUN_DIR_NAME
_SNAPSHOT_NAME = re.compile(r'^network-snapshot-epoch(\d{4,})\.pkl$')


def snapshot_name(epoch):
    return 'network-snapshot-epoch%04d.pkl' % epoch


def triplets_name(epoch):
    return 'triplets-epoch%04d.png' % epoch


def epoch_of_snapshot(path):
    """Epochs trained when the snapshot at `path` was taken, from its name; None for other names."""
    match = _SNAPSHOT_NAME.match(os.path.basename(path))
    return int(match.group(1)) if match else None


def find_latest_snapshot(outdir):
    """The snapshot with the most epochs in the newest run under outdir that has one."""
    return table.find_latest_snapshot(outdir, epoch_of_snapshot, 'network-snapshot-epoch*.pkl')


def config_path(run_dir):
    return os.path.join(run_dir, 'config.json')


def resolve_settings(given, resume=None, outdir='results'):
    """(settings, resume, start_epoch, origins): the settings `given` on the command line over, when resuming,
    those of the resumed run's config.json, over the defaults.  `resume` is a snapshot or 'latest' (the newest
    under `outdir`); origins says where each setting not at its default came from."""
    SETTINGS.check(given, 'command line')
    restored, restored_from, start_epoch = {}, None, 0
    if resume == 'latest':
        resume = find_latest_snapshot(outdir)
    if resume:
        if not os.path.isfile(resume):
            raise UserError('%s: no such snapshot to resume from' % resume)
        start_epoch = epoch_of_snapshot(resume)
        if start_epoch is None:
            raise UserError('%s: cannot tell how many epochs it was trained from its name (expected %s)'
                            % (resume, snapshot_name(12)))
        restored_from = config_path(os.path.dirname(os.path.abspath(resume)))
        if not os.path.isfile(restored_from):
            raise UserError('%s: no config.json beside this snapshot, so its run\'s settings are unknown'
                            % resume)
        restored = SETTINGS.read_config(restored_from)
    if given.get('label_smoothing', restored.get('label_smoothing', 'once')) != 'once':
        if given.get('real_label') is not None:
            raise UserError('--real-label is the constant of --label-smoothing once')
        restored.pop('real_label', None)  # the resumed run's constant, which the new rule does not use
    settings = SETTINGS.check(dict(restored, **given), 'settings')
    if settings['data_dir'] is None:
        raise UserError('--data is required: a dataset with masks or a folder of PNG pairs')
    if resume and start_epoch >= settings['epochs']:
        raise UserError('%s: was taken after epoch %d, and the run is %d epochs long: nothing left to train '
                        '(raise --epochs)' % (resume, start_epoch, settings['epochs']))
    origins = dict((name, restored_from) for name in restored)
    origins.update((name, 'command line') for name in given)
    return settings, resume, start_epoch, origins
