"""What a training run is asked to do, and how a resumed run finds out what the run it continues was doing.

* DEFAULTS: every setting of a run with its default (PGGAN's), and the values each may take (`check_value`,
  `check_settings`).
* A run directory's `config.json` records the settings; `--resume` restores them from the config.json beside the
  snapshot, except those given explicitly (`resolve_settings`).
* Snapshot and grid names carry the exact number of images shown (`kimg_label`), so that no two share a name and a
  resumed run continues exactly where the snapshot was taken.

No TensorFlow here: 3-train.py checks its arguments with this module before anything slow is imported.
"""
import collections
import json
import math
import numbers
import os
import re

from nodules.util.errors import UserError

DEFAULTS = collections.OrderedDict([
    ('data_dir', 'processData/AIS'),    # dataset directory: one TFRecords file per resolution
    ('total_kimg', 15000.0),            # length of training, in thousands of real images shown to D
    ('lod_training_kimg', 600.0),       # kimg at each resolution before the next one fades in
    ('lod_transition_kimg', 600.0),     # kimg of each fade-in
    ('minibatch', 16),                  # images per step, split evenly over the devices
    ('minibatch_dict', {}),             # per-resolution minibatch sizes, {resolution: size}
    ('lr', 0.001),                      # Adam learning rate of G and D
    ('G_smoothing', 0.999),             # Gs <- G + (Gs - G) * G_smoothing with every D step
    ('mirror', False),                  # random horizontal flips of the reals
    ('seed', 1000),                     # seed of NumPy and TensorFlow
    ('tick_kimg', None),                # kimg between log lines and fakes grids; None: 160 at 4x4 ... 80 at 64x64
    ('snapshot_ticks', 10),             # ticks between network snapshots
    ('num_devices', 1),                 # GPUs (without GPUs: logical CPU devices) sharing each minibatch
    ('metrics', []),                    # computed at every snapshot: 'swd'
    ('metric_images', None),            # images per set for the metrics; None: the reals, at most 1000
    ('loss_kwargs', {}),                # keywords of losses.D_wgangp (wgan_lambda, wgan_epsilon, ...)
    ('conditional', False),             # G takes the dataset's one-hot labels and D predicts them (AC-GAN terms)
    ('augment', 'none'),                # what D's inputs go through: none, diffaugment or ada (see nodules/gan/augment.py)
    ('augment_enable', []),             # augmentations added to the policy's own
    ('augment_disable', []),            # augmentations taken out of the policy's own
    ('augment_p', None),                # ada: fixed probability p; None: p adapts, starting from 0
    ('ada_target', 0.6),                # ada: target of r_t, the mean sign of real scores from D's threshold
    ('ada_kimg', 500.0),                # ada: kimg for p to move from 0 to 1
])
METRICS = ('swd',)
AUGMENT_POLICIES = ('none', 'diffaugment', 'ada')   # augment.POLICIES, without importing TensorFlow
AUGMENTATIONS = ('xflip', 'yflip', 'rotate90', 'translate', 'scale', 'rotate', 'brightness', 'contrast', 'cutout')
LOSS_KNOBS = ('wgan_lambda', 'wgan_epsilon', 'wgan_target', 'cond_weight')
SEED_LIMIT = 2 ** 32                    # NumPy's RandomState takes seeds 0 .. 2**32 - 1
MBSTD_GROUP_SIZE = 4                    # the discriminator's default minibatch-stddev group

# ----------------------------------------------------------------------------------------------------------------
# Valid values


def _real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _power_of_two_resolution(value):
    return _whole(value) and value >= 4 and value & (value - 1) == 0


def _optional(rule):
    return lambda value: value is None or rule(value)


_AUGMENTATION_LIST = ('a list of augmentations (%s)' % ', '.join(AUGMENTATIONS),
                      lambda v: isinstance(v, (list, tuple)) and all(a in AUGMENTATIONS for a in v))

_RULES = {
    'data_dir': ('a directory name', lambda v: isinstance(v, str) and v != ''),
    'total_kimg': ('a number > 0', lambda v: _real(v) and v > 0),
    'lod_training_kimg': ('a number >= 0', lambda v: _real(v) and v >= 0),
    'lod_transition_kimg': ('a number >= 0', lambda v: _real(v) and v >= 0),
    'minibatch': ('a whole number >= 1', lambda v: _whole(v) and v >= 1),
    'minibatch_dict': ('{resolution: size} with resolutions powers of two >= 4 and sizes >= 1',
                       lambda v: isinstance(v, dict) and all(_power_of_two_resolution(r) and _whole(s) and s >= 1
                                                             for r, s in v.items())),
    'lr': ('a number > 0', lambda v: _real(v) and v > 0),
    'G_smoothing': ('a number from 0 to below 1', lambda v: _real(v) and 0 <= v < 1),
    'mirror': ('true or false', lambda v: isinstance(v, bool)),
    'seed': ('a whole number from 0 to 2**32 - 1', lambda v: _whole(v) and 0 <= v < SEED_LIMIT),
    'tick_kimg': ('a number > 0', _optional(lambda v: _real(v) and v > 0)),
    'snapshot_ticks': ('a whole number >= 1', lambda v: _whole(v) and v >= 1),
    'num_devices': ('a whole number >= 1', lambda v: _whole(v) and v >= 1),
    'metrics': ('a list of metric names (%s)' % ', '.join(METRICS),
                lambda v: isinstance(v, (list, tuple)) and all(m in METRICS for m in v)),
    'metric_images': ('a whole number >= 1', _optional(lambda v: _whole(v) and v >= 1)),
    'loss_kwargs': ('{name: number} with names among %s' % ', '.join(LOSS_KNOBS),
                    lambda v: isinstance(v, dict) and all(k in LOSS_KNOBS and _real(x) for k, x in v.items())),
    'resume_kimg': ('a number >= 0', _optional(lambda v: _real(v) and v >= 0)),
    'conditional': ('true or false', lambda v: isinstance(v, bool)),
    'augment': ('one of %s' % ', '.join(AUGMENT_POLICIES), lambda v: v in AUGMENT_POLICIES),
    'augment_enable': _AUGMENTATION_LIST,
    'augment_disable': _AUGMENTATION_LIST,
    'augment_p': ('a number from 0 to 1', _optional(lambda v: _real(v) and 0 <= v <= 1)),
    'ada_target': ('a number from -1 to 1', lambda v: _real(v) and -1 <= v <= 1),
    'ada_kimg': ('a number > 0', lambda v: _real(v) and v > 0),
}


def check_value(name, value):
    """Raise ValueError('must be ..., got ...') unless `value` is valid for the setting `name`."""
    description, valid = _RULES[name]
    if not valid(value):
        raise ValueError('must be %s, got %r' % (description, value))
    return value


def check_settings(settings, source='settings', mbstd_group_size=MBSTD_GROUP_SIZE):
    """Refuse (UserError naming `source`) any invalid value and any combination that cannot train."""
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise UserError('%s: unknown settings %s' % (source, ', '.join(unknown)))
    for name, value in settings.items():
        try:
            check_value(name, value)
        except ValueError as error:
            raise UserError('%s: %s %s' % (source, name, error))
    complete = dict(DEFAULTS, **settings)
    if complete['lod_training_kimg'] + complete['lod_transition_kimg'] <= 0:
        raise UserError('%s: lod_training_kimg and lod_transition_kimg are both 0, so training would never leave '
                        'the lowest resolution' % source)
    both = sorted(set(complete['augment_enable']) & set(complete['augment_disable']))
    if both:
        raise UserError('%s: augmentation %s is both enabled and disabled' % (source, ', '.join(both)))
    if complete['augment'] == 'none' and (complete['augment_enable'] or complete['augment_p'] is not None):
        raise UserError('%s: augment is none, so nothing is augmented; choose --augment diffaugment or ada to '
                        'use augment_enable or augment_p' % source)
    if complete['augment'] == 'diffaugment' and complete['augment_p'] is not None:
        raise UserError('%s: diffaugment augments every image (p = 1); augment_p applies to ada' % source)
    devices = complete['num_devices']
    sizes = [('minibatch', complete['minibatch'])]
    sizes += [('minibatch at %dx%d' % (r, r), s) for r, s in sorted(complete['minibatch_dict'].items())]
    for what, size in sizes:
        if size % devices:
            raise UserError('%s: %s %d cannot be split evenly over %d devices' % (source, what, size, devices))
        share = size // devices
        group = min(mbstd_group_size, share) if mbstd_group_size > 1 else 1
        if share % group:
            raise UserError('%s: %s %d gives each device %d images, which the discriminator\'s minibatch-stddev '
                            'groups of %d do not divide' % (source, what, size, share, group))
    return complete


# ----------------------------------------------------------------------------------------------------------------
# Names that carry the exact kimg


def kimg_label(nimg):
    """'000600' at a whole number of kimg (the original's names), '000600.256' otherwise: exact, so two ticks can
    never share a name and a resumed run starts at exactly the image the snapshot was taken at."""
    whole, rest = divmod(int(nimg), 1000)
    return '%06d' % whole if rest == 0 else '%06d.%03d' % (whole, rest)


def snapshot_name(nimg):
    return 'network-snapshot-%s.pkl' % kimg_label(nimg)


def fakes_name(nimg):
    return 'fakes%s.png' % kimg_label(nimg)


_SNAPSHOT_NAME = re.compile(r'^network-snapshot-(\d+)(?:\.(\d{3}))?\.pkl$')
RUN_DIR_NAME = re.compile(r'^\d{5}-')


def nimg_of_snapshot(path):
    """Images shown when the snapshot at `path` was taken, from its name; None for other names."""
    match = _SNAPSHOT_NAME.match(os.path.basename(path))
    if not match:
        return None
    return int(match.group(1)) * 1000 + int(match.group(2) or 0)


def nimg_of_kimg(kimg):
    return int(round(kimg * 1000))


def find_latest_snapshot(outdir):
    """The snapshot with the most images shown in the newest run under outdir that has one."""
    if not os.path.isdir(outdir):
        raise UserError('%s: no such results directory to resume from' % outdir)
    for run in sorted((d for d in os.listdir(outdir) if RUN_DIR_NAME.match(d)), reverse=True):
        run_dir = os.path.join(outdir, run)
        if not os.path.isdir(run_dir):
            continue
        snapshots = [(nimg_of_snapshot(name), name) for name in os.listdir(run_dir)
                     if nimg_of_snapshot(name) is not None]
        if snapshots:
            return os.path.join(run_dir, max(snapshots)[1])
    raise UserError('%s: no network-snapshot-*.pkl in any run to resume from' % outdir)


# ----------------------------------------------------------------------------------------------------------------
# config.json


def config_path(run_dir):
    return os.path.join(run_dir, 'config.json')


def config_bytes(settings, **details):
    """config.json of a run: its settings (restored on resume) plus `details` (devices, sizes, ...) for people."""
    config = dict(details)
    config.update(settings)
    config['minibatch_dict'] = {str(r): s for r, s in settings['minibatch_dict'].items()}
    return (json.dumps(config, indent=2, sort_keys=True) + '\n').encode('utf-8')


def saved_settings(snapshot):
    """(settings, path) from the config.json in the snapshot's run directory; ({}, None) when there is none."""
    path = config_path(os.path.dirname(os.path.abspath(snapshot)))
    if not os.path.isfile(path):
        return {}, None
    try:
        with open(path, 'rb') as f:
            config = json.loads(f.read(1 << 20).decode('utf-8'))
    except (OSError, ValueError) as error:
        raise UserError('%s: not a readable run configuration (%s)' % (path, str(error).splitlines()[0]))
    if not isinstance(config, dict):
        raise UserError('%s: not a run configuration (a JSON object)' % path)
    settings = {name: config[name] for name in DEFAULTS if name in config}
    if isinstance(settings.get('minibatch_dict'), dict):  # JSON object keys are strings
        try:
            settings['minibatch_dict'] = {int(r): s for r, s in settings['minibatch_dict'].items()}
        except ValueError:
            pass  # reported by check_settings below
    if isinstance(settings.get('data_dir'), str):  # recorded absolute; a relative one is relative to the run
        settings['data_dir'] = os.path.join(os.path.dirname(path), settings['data_dir'])
    for name in ('total_kimg', 'lod_training_kimg', 'lod_transition_kimg', 'lr', 'G_smoothing', 'tick_kimg',
                 'augment_p', 'ada_target', 'ada_kimg'):
        if _whole(settings.get(name)):
            settings[name] = float(settings[name])
    check_settings(settings, path)
    return settings, path


def resolve_settings(given, outdir='results'):
    """The settings of a new run from those `given` explicitly (flags on the command line) and, when resuming,
    those of the resumed run, over DEFAULTS.

    `given` may hold 'resume' (a snapshot path or 'latest': the newest snapshot under `outdir`) and
    'resume_kimg' besides the settings.  Returns (settings, resume, resume_kimg, origins) with origins
    {setting: where its value came from} for every setting not at its default.
    """
    given = dict(given)
    resume = given.pop('resume', None)
    resume_kimg = given.pop('resume_kimg', None)
    check_settings(given, 'command line')
    restored, restored_from = {}, None
    if resume == 'latest':
        resume = find_latest_snapshot(outdir)
    if resume:
        if not os.path.isfile(resume):
            raise UserError('%s: no such snapshot to resume from' % resume)
        if resume_kimg is None:
            nimg = nimg_of_snapshot(resume)
            if nimg is None:
                raise UserError('%s: cannot tell how far training got from this file name; pass --resume-kimg'
                                % resume)
            resume_kimg = nimg / 1000.0
        restored, restored_from = saved_settings(resume)
    settings = dict(DEFAULTS)
    settings.update(restored)
    settings.update(given)
    origins = {name: restored_from for name in restored}
    origins.update((name, 'command line') for name in given)
    check_settings(settings, 'settings (%s)' % ', '.join(sorted(set(origins.values()))) if origins else 'defaults')
    if resume and nimg_of_kimg(resume_kimg) >= nimg_of_kimg(settings['total_kimg']):
        raise UserError('%s: was taken at kimg %s, and the run is %s kimg long: nothing left to train (raise '
                        '--total-kimg)' % (resume, resume_kimg, settings['total_kimg']))
    return settings, resume, resume_kimg, origins
