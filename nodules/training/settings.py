"""What a training run is asked to do, declared once, and how a resumed run finds out what the run it continues was
doing.

* SETTINGS: one row per setting (name, default, kind, rule, who uses it, help).  Everything else is derived from
  the rows: DEFAULTS, the checks (`check_value`, `check_settings`), the JSON of config.json (`config_bytes`,
  `saved_settings`), 3-train.py's flags (`add_arguments`, `given_settings`), the network keywords
  (`network_kwargs`) and AugmentPipe's defaults.  Adding a setting is adding a row.
* A run directory's `config.json` records the settings; `--resume` restores them from the config.json beside the
  snapshot, except those given explicitly (`resolve_settings`).
* Snapshot and grid names carry the exact number of images shown (`kimg_label`), so that no two share a name and a
  resumed run continues exactly where the snapshot was taken.
* `check_memory` refuses network sizes and minibatches that cannot fit, before anything is built.

No TensorFlow here: 3-train.py checks its arguments with this module before anything slow is imported.
"""
import argparse
import collections
import filecmp
import json
import math
import os
import re

from nodules.util import settings_table, values
from nodules.util.errors import UserError

# ----------------------------------------------------------------------------------------------------------------
# The vocabulary of the settings

METRICS = ('swd', 'spectral', 'memorization')
# Settings that name a file or directory: recorded absolute in config.json, a relative one read relative to the run.
PATH_SETTINGS = ('data_dir', 'heldout_dir', 'transfer')
AUGMENT_POLICIES = ('none', 'diffaugment', 'ada')
AUGMENTATIONS = ('xflip', 'yflip', 'rotate90', 'translate', 'scale', 'rotate', 'brightness', 'contrast', 'cutout')
# What each policy applies unless told otherwise.  DiffAugment's colour for grey images is brightness and contrast.
# ADA's default pipeline (its "bgc": pixel blitting, general geometric, colour) has no cutout; it can be added.
POLICY_AUGMENTATIONS = {
    'none': (),
    'diffaugment': ('translate', 'brightness', 'contrast', 'cutout'),
    'ada': ('xflip', 'yflip', 'rotate90', 'translate', 'scale', 'rotate', 'brightness', 'contrast'),
}
LOSS_KNOBS = ('wgan_lambda', 'wgan_epsilon', 'wgan_target', 'cond_weight')
MBSTD_GROUP_SIZE = 4                    # the discriminator's default minibatch-stddev group
MAX_DEVICES = 64                        # more devices than any machine has; each one builds a copy of the step
NETWORK_USERS = ('G', 'D')              # users of the settings that size the networks

# ----------------------------------------------------------------------------------------------------------------
# Rules: (description, test) pairs; a value is valid when test(value) is true


# The rule makers are shared with every settings table (nodules/util/settings_table.py).
_real, _rule, _above, _at_least, _between = (settings_table.is_real, settings_table.rule, settings_table.above,
                                             settings_table.at_least, settings_table.between)


def _names(what, known):
    return _rule('a list of %s (%s)' % (what, ', '.join(known)),
                 lambda v: isinstance(v, (list, tuple)) and all(name in known for name in v))


_SWITCH = settings_table.SWITCH

# ----------------------------------------------------------------------------------------------------------------
# Kinds: how the values of a setting are written on the command line and in config.json


class Kind(object):
    """Text -> value for the command line (ValueError with the message on bad text), value <-> JSON."""
    metavar = None

    def parse(self, text):
        return text

    def to_json(self, value):
        return value

    def from_json(self, value):
        return value

    def from_args(self, value):
        return value

    def argparse_kwargs(self, setting):
        return dict(type=_argparse_type(setting), metavar=self.metavar or setting.flag[2:].upper().replace('-', '_'))


class _Converted(Kind):
    """Text converted by `convert` (a type), which refuses what is not `word`."""
    convert, word = str, 'text'

    def parse(self, text):
        try:
            return self.convert(text)
        except ValueError:
            raise ValueError('%r is not a %s' % (text, self.word))


class Number(_Converted):
    convert, word = float, 'number'

    def from_json(self, value):
        return float(value) if values.is_whole(value) else value  # JSON writes 3.0 as 3


class Whole(_Converted):
    convert, word = int, 'whole number'


class Text(Kind):
    def __init__(self, metavar=None):
        self.metavar = metavar


class Switch(Kind):
    """--NAME turns it on, --no-NAME off (both also when resuming); the setting's off_help describes --no-NAME."""

    def argparse_kwargs(self, setting):
        return dict(action='store_true')


class Choice(Kind):
    def __init__(self, choices):
        self.choices = tuple(choices)

    def argparse_kwargs(self, setting):
        return dict(choices=self.choices)


class Repeated(Kind):
    """A list given as a repeated flag (--metrics swd --metrics ...), 'none' for the empty list."""

    def __init__(self, choices):
        self.choices = tuple(choices)

    def argparse_kwargs(self, setting):
        return dict(choices=list(self.choices) + ['none'], action='append')

    def from_args(self, given):
        return sorted(set(given) - {'none'})


class CommaList(Kind):
    """A list given as comma-separated names, each once, in the order of `known`."""
    metavar = 'LIST'

    def __init__(self, what, known):
        self.what, self.known = what, tuple(known)

    def parse(self, text):
        names = [name.strip() for name in text.split(',') if name.strip()]
        if not names or any(name not in self.known for name in names):
            raise ValueError('%r: expected comma-separated %s among %s' % (text, self.what, ', '.join(self.known)))
        return sorted(set(names), key=self.known.index)


class ResolutionMap(Kind):
    """{resolution: whole number}, given as RES:N,RES:N (e.g. 4:64,8:32); JSON object keys are strings."""
    metavar = 'RES:SIZE,...'

    def parse(self, text):
        try:
            pairs = [item.split(':') for item in text.split(',') if item.strip()]
            return {int(res): int(size) for res, size in pairs}
        except ValueError:
            raise ValueError('expected RES:SIZE pairs like 4:64,8:32, got %r' % text)

    def to_json(self, value):
        return {str(res): size for res, size in value.items()}

    def from_json(self, value):
        if isinstance(value, dict):
            try:
                return {int(res): size for res, size in value.items()}
            except ValueError:
                pass  # the rule reports it
        return value


class Keywords(Kind):
    """{name: number}: config.json and Python callers only, no command-line flag."""


def _argparse_type(setting):
    """argparse type: the kind reads the text, then only values the setting's rule accepts pass."""
    def parse(text):
        try:
            return check_value(setting.name, setting.kind.parse(text))
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error))
    parse.__name__ = setting.name  # argparse names the type in some messages
    return parse


# ----------------------------------------------------------------------------------------------------------------
# The settings, one row each.  users: who reads the setting ('loop', 'data', 'losses', 'augment', 'metrics', 'G',
# 'D', 'resume').  Rows used only by G and D size the networks (G_kwargs, D_kwargs: from the resumed snapshot, not
# from config.json); 'resume' is the position of --resume; every other row is a run setting, in config.json.

Setting = collections.namedtuple('Setting', 'name default kind rule users help flag default_help off_help')


def _row(name, default, kind, rule, users, help, flag=None, default_help=None, off_help=None):
    if flag is None:
        flag = '--' + name.lower().replace('_', '-')
    return Setting(name, default, kind, rule, tuple(users.split()), help, flag, default_help, off_help)


NO_FLAG = ''

SETTINGS = (
    _row('data_dir', 'processData/AIS', Text(), _rule('a directory name', lambda v: isinstance(v, str) and v != ''),
         'data', 'dataset directory: one TFRecords file per resolution', flag='--data'),
    _row('total_kimg', 15000.0, Number(), _above(0), 'loop',
         'train until this many thousand real images were shown'),
    _row('lod_training_kimg', 600.0, Number(), _at_least(0), 'loop',
         'kimg at each resolution before the next fades in'),
    _row('lod_transition_kimg', 600.0, Number(), _at_least(0), 'loop', 'kimg of each fade-in'),
    _row('minibatch', 16, Whole(), _at_least(1, whole=True), 'loop data', 'minibatch size'),
    _row('minibatch_dict', {}, ResolutionMap(),
         _rule('{resolution: size} with resolutions powers of two >= 4 and sizes >= 1',
               lambda v: isinstance(v, dict) and all(values.is_power_of_two(r) and values.is_whole(s) and s >= 1
                                                     for r, s in v.items())),
         'loop data', 'per-resolution minibatch overrides, e.g. 4:64,8:64,16:32', flag='--minibatch-per-res'),
    _row('lr', 0.001, Number(), _above(0), 'loop', 'Adam learning rate of G and D'),
    _row('fmap_base', 8192, Whole(), _at_least(1, whole=True), 'G D',
         'feature-map budget; nf(stage) = min(fmap_base / 2^stage, fmap_max)'),
    _row('fmap_max', 512, Whole(), _at_least(1, whole=True), 'G D', 'most feature maps in any layer'),
    _row('fused_scale', True, Switch(), _SWITCH, 'G D',
         'fused resampling: G up-scales with one stride-2 transposed convolution (its 3x3 kernel folded with the '
         'up-sampling) and D down-scales with one stride-2 convolution likewise, as the original networks and their '
         'published weights do',
         off_help='unfused resampling: nearest-neighbour up-sampling then a 3x3 convolution in G, a 3x3 convolution '
                  'then 2x2 averaging in D (as many weights; the transposed convolution tends to draw fine texture '
                  'as a lattice at the up-sampling periods)'),
    _row('blur_resampling', False, Switch(), _SWITCH, 'G D',
         'low-pass the resampling: a binomial [1,2,1] blur after every up-scaling in G and before every '
         'down-scaling in D, against the lattice that generators learn at the up-sampling periods (not in the '
         'original networks)',
         off_help='no blur next to the resampling, as the original networks (also when resuming)'),
    _row('edge_padding', False, Switch(), _SWITCH, 'G',
         'pad G\'s convolutions and blurs with copies of the edge pixels instead of zeros, against the bright or dark '
         'frame along the patch borders that zero padding leads generators to draw (not in the original networks)',
         off_help='zero padding, as the original networks (also when resuming)'),
    _row('latent_size', None, Whole(), _at_least(1, whole=True, optional=True), 'G',
         'length of the latent vector', default_help='nf(0), 512 with the defaults'),
    _row('G_smoothing', 0.999, Number(), _between(0, 1, below=True), 'loop',
         'Gs, the generator that is saved for inference, is the moving average of G with this rate per minibatch; '
         'lower it (e.g. 0.99) for runs of only a few hundred kimg'),
    _row('mirror', False, Switch(), _SWITCH, 'data', 'random horizontal flips of the real images',
         off_help='no flips, also when resuming'),
    _row('seed', 1000, Whole(), _rule(values.SEED_RANGE, values.is_seed), 'loop data', 'random seed'),
    _row('tick_kimg', None, Number(), _above(0, optional=True), 'loop', 'kimg between log lines and fakes grids',
         default_help='160 at 4x4 down to 80 at 64x64'),
    _row('snapshot_ticks', 10, Whole(), _at_least(1, whole=True), 'loop', 'ticks between network snapshots'),
    _row('transfer', None, Text('PKL'), _rule('a file name', lambda v: isinstance(v, str) and v != '', optional=True),
         'loop', 'start from the networks of this pickle (a trained G and D of the dataset\'s resolution, e.g. a demo '
         'model) instead of new ones: transfer learning to other data, or to classes with --conditional (the label '
         'inputs of G and outputs of D that an unconditional model lacks start fresh).  The run trains at full '
         'resolution from kimg 0, without growing; the network size is the pickle\'s',
         default_help='new networks, grown from 4x4'),
    _row('resume_kimg', None, Number(), _at_least(0, optional=True), 'resume', 'schedule position of --resume',
         default_help='read from its file name, or for network-final.pkl from its run\'s last snapshot'),
    _row('metrics', [], Repeated(METRICS), _names('metric names', METRICS), 'metrics',
         'compute at every snapshot and log (repeat the flag for several): swd = sliced Wasserstein distance to the '
         'reals; spectral = largest peak of the generated patches\' mean power spectrum at the up-sampling periods '
         '2, 4 and 8 px over its neighbourhood (about 1 when smooth, higher for a lattice); memorization = distances '
         'from generated patches to their nearest training patch against those of the --heldout patches (median '
         'ratio ~1 and near-copy share ~0.05 when nothing is copied); none = no metrics'),
    _row('metric_images', None, Whole(), _at_least(1, whole=True, optional=True), 'metrics',
         'images per set for --metrics', default_help='the whole dataset, at most 1000'),
    _row('heldout_dir', None, Text(), _rule('a directory name', lambda v: isinstance(v, str) and v != '',
                                            optional=True), 'metrics',
         'for --metrics memorization: a dataset of real patches the generator never trains on (nodules of other '
         'patients), of the training data\'s size', flag='--heldout',
         default_help='none, and memorization is skipped with a line in log.txt saying why'),
    _row('loss_kwargs', {}, Keywords(),
         _rule('{name: number} with names among %s' % ', '.join(LOSS_KNOBS),
               lambda v: isinstance(v, dict) and all(k in LOSS_KNOBS and _real(x) for k, x in v.items())),
         'losses', 'keywords of losses.D_wgangp (wgan_lambda, wgan_epsilon, ...)', flag=NO_FLAG),
    _row('conditional', False, Switch(), _SWITCH, 'loop data G D',
         'one model of all classes of a labelled dataset (dataset_tool.py merge): G takes the one-hot label with the '
         'latent, D also predicts it (the AC-GAN terms of the original PGGAN, weight 1); the class names are stored '
         'with the networks for 2-inference.py --label',
         off_help='ignore the labels of a labelled dataset, also when resuming'),
    _row('augment', 'none', Choice(AUGMENT_POLICIES), _rule('one of %s' % ', '.join(AUGMENT_POLICIES),
                                                            lambda v: v in AUGMENT_POLICIES), 'augment',
         'augment every image D sees, real and generated, for small datasets: diffaugment = always %s; ada = each '
         'of %s with one probability p that adapts to how much D overfits (mild ranges for CT: translation up to '
         '1/8 of the side, brightness +-37.5 HU, contrast and scaling x0.91-1.1, rotation +-10 degrees)'
         % (', '.join(POLICY_AUGMENTATIONS['diffaugment']), ', '.join(POLICY_AUGMENTATIONS['ada']))),
    _row('augment_enable', [], CommaList('augmentations', AUGMENTATIONS), _names('augmentations', AUGMENTATIONS),
         'augment', 'augmentations to add to the policy\'s, e.g. cutout (known: %s)' % ', '.join(AUGMENTATIONS)),
    _row('augment_disable', [], CommaList('augmentations', AUGMENTATIONS), _names('augmentations', AUGMENTATIONS),
         'augment', 'augmentations to take out of the policy\'s, e.g. rotate90,yflip'),
    _row('ada_target', 0.6, Number(), _between(-1, 1), 'augment',
         'ada: p rises while r_t, the mean sign of D\'s real scores measured from its threshold (midway between the '
         'mean real and mean fake score; 1 when D puts every real above it, a sign of overfitting), is above this, '
         'and falls while below'),
    _row('ada_kimg', 500.0, Number(), _above(0), 'augment', 'ada: kimg for p to go from 0 to 1 at the fastest'),
    _row('augment_p', None, Number(), _between(0, 1, optional=True), 'augment',
         'ada: use this fixed probability instead of adapting p', default_help='adapt'),
    _row('num_devices', 1, Whole(), _between(1, MAX_DEVICES, whole=True), 'loop',
         'split each minibatch over this many GPUs and average gradients (without GPUs: as many logical CPU '
         'devices)', flag='--num-gpus'),
)
BY_NAME = collections.OrderedDict((s.name, s) for s in SETTINGS)


def _is_network(setting):
    return set(setting.users) <= set(NETWORK_USERS)


def _is_run(setting):
    return not _is_network(setting) and 'resume' not in setting.users


DEFAULTS = collections.OrderedDict((s.name, s.default) for s in SETTINGS if _is_run(s))
NETWORK_DEFAULTS = collections.OrderedDict((s.name, s.default) for s in SETTINGS if _is_network(s))


def defaults_for(user):
    """{name: default} of the settings `user` (e.g. 'augment') reads: the defaults of its own keywords."""
    return {s.name: s.default for s in SETTINGS if user in s.users}


# ----------------------------------------------------------------------------------------------------------------
# Valid values


def check_value(name, value):
    """Raise ValueError('must be ..., got ...') unless `value` is valid for the setting `name`."""
    description, valid = BY_NAME[name].rule
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
    for what, size in minibatch_sizes(complete):
        if size % devices:
            raise UserError('%s: %s %d cannot be split evenly over %d devices' % (source, what, size, devices))
        share = size // devices
        group = min(mbstd_group_size, share) if mbstd_group_size > 1 else 1
        if share % group:
            raise UserError('%s: %s %d gives each device %d images, which the discriminator\'s minibatch-stddev '
                            'groups of %d do not divide' % (source, what, size, share, group))
    return complete


def minibatch_sizes(settings):
    """[(what, size)]: the minibatch and each per-resolution override."""
    return [('minibatch', settings['minibatch'])] + [('minibatch at %dx%d' % (r, r), s)
                                                     for r, s in sorted(settings['minibatch_dict'].items())]


# ----------------------------------------------------------------------------------------------------------------
# The command line


def add_arguments(parser):
    """One flag per setting that has one (--no-NAME too for switches), in the order of SETTINGS.  Every default
    is None, so that a flag given on the command line can be told from one left out (given_settings)."""
    for setting in SETTINGS:
        if not setting.flag:
            continue
        parser.add_argument(setting.flag, dest=setting.name, default=None, help=_help(setting),
                            **setting.kind.argparse_kwargs(setting))
        if setting.off_help:
            parser.add_argument('--no-' + setting.flag[2:], dest=setting.name, action='store_false', default=None,
                                help=setting.off_help)


def _help(setting):
    restored = {True: ', or the resumed snapshot\'s', False: ', or the resumed run\'s'}[_is_network(setting)]
    note = '' if 'resume' in setting.users else restored
    return ('%s (default: %s%s)' % (setting.help, default_text(setting), note)).replace('%', '%%')


default_text = settings_table.SettingsTable.default_text  # how -h writes a default, for every table


def given_settings(args):
    """{setting: value} of the flags given on the command line (argparse's namespace from add_arguments)."""
    given = {}
    for setting in SETTINGS:
        value = getattr(args, setting.name, None)
        if setting.flag and value is not None:
            given[setting.name] = setting.kind.from_args(value)
    return given


def network_kwargs(given, defaults=False):
    """(G_kwargs, D_kwargs): the network settings in `given`, each to the networks that use it; with `defaults`
    also the others at their defaults.  None (the builder decides, e.g. latent_size) is left out."""
    chosen = dict(NETWORK_DEFAULTS) if defaults else {}
    chosen.update((name, value) for name, value in given.items() if name in NETWORK_DEFAULTS)
    return tuple({name: value for name, value in chosen.items() if value is not None and net in BY_NAME[name].users}
                 for net in NETWORK_USERS)


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


FINAL_NAME = 'network-final.pkl'
_SNAPSHOT_NAME = re.compile(r'^network-snapshot-(\d+)(?:\.(\d{3}))?\.pkl$')
RUN_DIR_NAME = settings_table.RUN_DIR_NAME


def nimg_of_snapshot(path):
    """Images shown when the snapshot at `path` was taken, from its name; None for other names."""
    match = _SNAPSHOT_NAME.match(os.path.basename(path))
    if not match:
        return None
    return int(match.group(1)) * 1000 + int(match.group(2) or 0)


def nimg_of_final(path):
    """Images shown when a run's network-final.pkl was written: that of the run's snapshot it is (a hard link
    to, or a byte-for-byte copy of, the last snapshot); None for other files."""
    if os.path.basename(path) != FINAL_NAME:
        return None
    run_dir = os.path.dirname(os.path.abspath(path))
    snapshots = sorted((nimg, name) for nimg, name in ((nimg_of_snapshot(name), name) for name in os.listdir(run_dir))
                       if nimg is not None)
    if not snapshots:
        return None
    nimg, last = snapshots[-1]
    last = os.path.join(run_dir, last)
    try:
        same = os.path.samefile(path, last) or filecmp.cmp(path, last, shallow=False)
    except OSError:  # unreadable: then the file name is all there is to go by
        return None
    return nimg if same else None


def resume_kimg_of(snapshot, flag='--resume-kimg'):
    """kimg at which `snapshot` was taken, from its file name (or, for a run's network-final.pkl, from the
    snapshot it is); a UserError telling to pass `flag` otherwise."""
    nimg = nimg_of_snapshot(snapshot)
    if nimg is None:
        nimg = nimg_of_final(snapshot)
    if nimg is None:
        raise UserError('%s: cannot tell how far training got from this file name; pass %s' % (snapshot, flag))
    return nimg / 1000.0


def nimg_of_kimg(kimg):
    return int(round(kimg * 1000))


def find_latest_snapshot(outdir):
    """The snapshot with the most images shown in the newest run under outdir that has one."""
    return settings_table.find_latest_snapshot(outdir, nimg_of_snapshot, 'network-snapshot-*.pkl')


# ----------------------------------------------------------------------------------------------------------------
# config.json


def config_path(run_dir):
    return os.path.join(run_dir, 'config.json')


def config_bytes(settings, **details):
    """config.json of a run: its settings (restored on resume) plus `details` (devices, sizes, ...) for people."""
    config = dict(details)
    config.update((name, BY_NAME[name].kind.to_json(value)) for name, value in settings.items())
    return (json.dumps(config, indent=2, sort_keys=True) + '\n').encode('utf-8')


def saved_settings(snapshot):
    """(settings, path) from the config.json in the snapshot's run directory; ({}, None) when there is none."""
    path = config_path(os.path.dirname(os.path.abspath(snapshot)))
    if not os.path.isfile(path):
        return {}, None
    settings = settings_table.read_config_file(path, BY_NAME, DEFAULTS, PATH_SETTINGS)
    check_settings(settings, path)
    return settings, path


def resolve_settings(given, outdir='results'):
    """The settings of a new run from those `given` explicitly (flags on the command line) and, when resuming,
    those of the resumed run, over DEFAULTS.

    `given` may hold 'resume' (a snapshot path or 'latest': the newest snapshot under `outdir`), 'resume_kimg'
    and network settings besides the run settings (network settings are not resolved here: the networks, new
    or resumed, check them).  Returns (settings, resume, resume_kimg, origins) with origins {setting: where its
    value came from} for every setting not at its default.
    """
    given = {name: value for name, value in given.items() if name not in NETWORK_DEFAULTS}
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
            resume_kimg = resume_kimg_of(resume)
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


# ----------------------------------------------------------------------------------------------------------------
# Memory: refuse, before anything is built, networks and minibatches that cannot fit

# Bytes held per parameter while training (float32): G with Gs, its gradient and two Adam moments; D without Gs.
G_STATE_COPIES, D_STATE_COPIES = 5, 4
# Floats held per feature-map value of one image in one training step (G and D, their reals/fakes/mixed passes,
# the gradients and the gradient penalty's second-order terms): about 21 measured (peak resident memory of a 64x64
# step, fmap_base 1024, fmap_max 128, minibatch 64, TensorFlow 2 on a CPU), rounded up.  The estimate is meant to
# refuse what cannot fit, not to predict the peak.
ACTIVATION_COPIES = 24


def network_parameters(resolution, num_channels=1, label_size=0, fmap_base=8192, fmap_max=512, latent_size=None,
                       mbstd_group_size=MBSTD_GROUP_SIZE):
    """(G, D): the trainable parameters of G_paper and D_paper of this size, counted without building them."""
    nf = lambda stage: min(int(fmap_base / 2.0 ** stage), fmap_max)
    conv = lambda fmaps_in, fmaps_out, kernel=3: kernel * kernel * fmaps_in * fmaps_out + fmaps_out
    top = int(math.log(resolution, 2) + 0.5)
    latent = nf(0) if latent_size is None else latent_size
    G = (latent + label_size) * nf(1) * 16 + nf(1) + conv(nf(1), nf(1))
    D = conv(nf(1) + (mbstd_group_size > 1), nf(1)) + nf(1) * 16 * nf(0) + nf(0) + nf(0) * (1 + label_size) + 1 \
        + label_size
    for res in range(2, top + 1):
        G += conv(nf(res - 1), num_channels, kernel=1)            # ToRGB
        D += conv(num_channels, nf(res - 1), kernel=1)            # FromRGB
        if res > 2:
            G += conv(nf(res - 2), nf(res - 1)) + conv(nf(res - 1), nf(res - 1))
            D += conv(nf(res - 1), nf(res - 1)) + conv(nf(res - 1), nf(res - 2))
    return G, D


def training_bytes(resolution, minibatch, num_channels=1, label_size=0, fmap_base=8192, fmap_max=512,
                   latent_size=None, mbstd_group_size=MBSTD_GROUP_SIZE):
    """About how many bytes one training step at `resolution` (with every lower one built) holds."""
    G, D = network_parameters(resolution, num_channels, label_size, fmap_base, fmap_max, latent_size,
                              mbstd_group_size)
    nf = lambda stage: min(int(fmap_base / 2.0 ** stage), fmap_max)
    top = int(math.log(resolution, 2) + 0.5)
    features = sum(nf(res - 1) * 4 ** res for res in range(2, top + 1)) + (latent_size or nf(0)) * 16
    return 4 * (G * G_STATE_COPIES + D * D_STATE_COPIES + minibatch * features * ACTIVATION_COPIES)


def check_memory(settings, network, resolutions, source, num_channels=1, label_size=0, available=None):
    """Refuse (UserError naming `source`) a run whose step at any of `resolutions` would need more than the
    machine's memory: networks (`network`: fmap_base, fmap_max, latent_size, ...) and minibatches too large."""
    available = values.memory_bytes() if available is None else available
    minibatch_at = dict(settings['minibatch_dict'])
    network = {k: v for k, v in network.items() if k in ('fmap_base', 'fmap_max', 'latent_size', 'mbstd_group_size')}
    for resolution in resolutions:
        minibatch = minibatch_at.get(resolution, settings['minibatch'])
        needed = training_bytes(resolution, minibatch, num_channels, label_size, **network)
        if needed > available:
            G, D = network_parameters(resolution, num_channels, label_size, **network)
            raise UserError('%s: training at %dx%d needs about %s of memory (G %s and D %s parameters, minibatch %d), '
                            'more than the %s this machine has'
                            % (source, resolution, resolution, values.gigabytes(needed), _count(G), _count(D),
                               minibatch, values.gigabytes(available)))


def _count(number):
    return '%d' % number if number < 1e9 else '%.2g' % number
