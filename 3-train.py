"""Train a progressive-growing WGAN-GP nodule generator on a multi-resolution TFRecord dataset."""
import argparse

from nodules.util import cli
from nodules.training import settings as training_settings

DEFAULTS = training_settings.DEFAULTS


def setting_type(name, convert):
    """argparse type for the setting `name`: `convert` the text, then accept only values the setting may take."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError('%r is not a %s' % (text, 'whole number' if convert is int else 'number'))
        try:
            return training_settings.check_value(name, value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error))
    parse.__name__ = name  # argparse names the type in some messages
    return parse


def resolution_map(text):
    """'4:64,8:32' -> {4: 64, 8: 32}: per-resolution minibatch overrides."""
    try:
        pairs = [item.split(':') for item in text.split(',') if item.strip()]
        value = {int(res): int(size) for res, size in pairs}
    except ValueError:
        raise argparse.ArgumentTypeError('expected RES:SIZE pairs like 4:64,8:32, got %r' % text)
    try:
        return training_settings.check_value('minibatch_dict', value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error))


def augmentation_list(text):
    """'xflip,cutout' -> ['xflip', 'cutout'], each a known augmentation."""
    names = [name.strip() for name in text.split(',') if name.strip()]
    unknown = [name for name in names if name not in training_settings.AUGMENTATIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError('%r: expected comma-separated augmentations among %s'
                                         % (text, ', '.join(training_settings.AUGMENTATIONS)))
    return sorted(set(names), key=training_settings.AUGMENTATIONS.index)


def default(name, note=''):
    value = DEFAULTS[name]
    return '(default: %s%s)' % ('%g' % value if isinstance(value, float) else value, note)


RESTORED = ', or the resumed run\'s'


def parse_args(argv=None):
    parser = cli.ArgumentParser(
        description='Progressive-growing WGAN-GP training (PGGAN). Writes a new numbered run directory under '
                    'OUTDIR with log.txt, config.json, reals.png, fakes*.png grids, network-snapshot-*.pkl and '
                    'network-final.pkl (use the latter with 2-inference.py --model). With --resume, every '
                    'setting not given here is taken from the config.json of the resumed run, and the network '
                    'size from the snapshot.')
    # Every default is None, so that a flag given on the command line can be told from one left out.
    parser.add_argument('--data', type=setting_type('data_dir', str),
                        help='dataset directory ' + default('data_dir', RESTORED))
    parser.add_argument('--outdir', default='results', help='root of the run directories (default: %(default)s)')
    parser.add_argument('--total-kimg', type=setting_type('total_kimg', float),
                        help='train until this many thousand real images were shown ' + default('total_kimg', RESTORED))
    parser.add_argument('--lod-training-kimg', type=setting_type('lod_training_kimg', float),
                        help='kimg at each resolution before the next fades in ' + default('lod_training_kimg',
                                                                                          RESTORED))
    parser.add_argument('--lod-transition-kimg', type=setting_type('lod_transition_kimg', float),
                        help='kimg of each fade-in ' + default('lod_transition_kimg', RESTORED))
    parser.add_argument('--minibatch', type=setting_type('minibatch', int),
                        help='minibatch size ' + default('minibatch', RESTORED))
    parser.add_argument('--minibatch-per-res', type=resolution_map, metavar='RES:SIZE,...',
                        help='per-resolution minibatch overrides, e.g. 4:64,8:64,16:32 (default: none%s)' % RESTORED)
    parser.add_argument('--lr', type=setting_type('lr', float),
                        help='Adam learning rate of G and D ' + default('lr', RESTORED))
    parser.add_argument('--fmap-base', type=cli.positive_int,
                        help='feature-map budget; nf(stage) = min(fmap_base / 2^stage, fmap_max) '
                             '(default: 8192, or the resumed snapshot\'s)')
    parser.add_argument('--fmap-max', type=cli.positive_int,
                        help='most feature maps in any layer (default: 512, or the resumed snapshot\'s)')
    parser.add_argument('--latent-size', type=cli.positive_int,
                        help='length of the latent vector (default: nf(0), 512 with the defaults)')
    parser.add_argument('--g-smoothing', type=setting_type('G_smoothing', float),
                        help='Gs, the generator that is saved for inference, is the moving average of G with this '
                             'rate per minibatch; lower it (e.g. 0.99) for runs of only a few hundred kimg '
                             + default('G_smoothing', RESTORED))
    parser.add_argument('--mirror', action='store_true', default=None,
                        help='random horizontal flips of the real images (default: off%s)' % RESTORED)
    parser.add_argument('--no-mirror', dest='mirror', action='store_false', default=None, help='no flips, also when resuming')
    parser.add_argument('--seed', type=setting_type('seed', int), help='random seed ' + default('seed', RESTORED))
    parser.add_argument('--tick-kimg', type=setting_type('tick_kimg', float),
                        help='kimg between log lines and fakes grids (default: 160 at 4x4 down to 80 at 64x64%s)'
                             % RESTORED)
    parser.add_argument('--snapshot-ticks', type=setting_type('snapshot_ticks', int),
                        help='ticks between network snapshots ' + default('snapshot_ticks', RESTORED))
    parser.add_argument('--resume', metavar='PKL',
                        help='continue from a snapshot (networks, Gs, the schedule position and the run\'s '
                             'settings); "latest" picks the newest snapshot under OUTDIR')
    parser.add_argument('--resume-kimg', type=setting_type('resume_kimg', float),
                        help='schedule position of --resume (default: read from its file name)')
    parser.add_argument('--metrics', choices=list(training_settings.METRICS) + ['none'], action='append',
                        help='compute at every snapshot and log: swd = sliced Wasserstein distance to the reals; '
                             'none = no metrics (default: none%s)' % RESTORED)
    parser.add_argument('--metric-images', type=setting_type('metric_images', int),
                        help='images per set for --metrics (default: the whole dataset, at most 1000%s)' % RESTORED)
    parser.add_argument('--conditional', action='store_true', default=None,
                        help='one model of all classes of a labelled dataset (dataset_tool.py merge): G takes the '
                             'one-hot label with the latent, D also predicts it (the AC-GAN terms of the original '
                             'PGGAN, weight 1); the class names are stored with the networks for 2-inference.py '
                             '--label (default: off%s)' % RESTORED)
    parser.add_argument('--no-conditional', dest='conditional', action='store_false', default=None,
                        help='ignore the labels of a labelled dataset, also when resuming')
    parser.add_argument('--augment', choices=training_settings.AUGMENT_POLICIES,
                        help='augment every image D sees, real and generated, for small datasets: diffaugment = '
                             'always translate (up to 1/8 of the side), brightness (+-0.05, 37.5 HU), contrast '
                             '(x0.91-1.1) and cutout (half the side); ada = each of x/y flips, quarter turns, '
                             'translation, scaling (x0.91-1.1), rotation (+-10 degrees), brightness and contrast with '
                             'one probability p that adapts to how much D overfits ' + default('augment', RESTORED))
    parser.add_argument('--augment-enable', type=augmentation_list, metavar='LIST',
                        help='augmentations to add to the policy\'s, e.g. cutout (known: %s)'
                             % ', '.join(training_settings.AUGMENTATIONS))
    parser.add_argument('--augment-disable', type=augmentation_list, metavar='LIST',
                        help='augmentations to take out of the policy\'s, e.g. rotate90,yflip')
    parser.add_argument('--ada-target', type=setting_type('ada_target', float),
                        help='ada: p rises while r_t, the mean sign of D\'s real scores measured from its '
                             'threshold (midway between the mean real and mean fake score; 1 when D puts every '
                             'real above it, a sign of overfitting), is above this, and falls while below '
                             + default('ada_target', RESTORED))
    parser.add_argument('--ada-kimg', type=setting_type('ada_kimg', float),
                        help='ada: kimg for p to go from 0 to 1 at the fastest ' + default('ada_kimg', RESTORED))
    parser.add_argument('--augment-p', type=setting_type('augment_p', float),
                        help='ada: use this fixed probability instead of adapting p (default: adapt%s)' % RESTORED)
    parser.add_argument('--num-gpus', type=setting_type('num_devices', int),
                        help='split each minibatch over this many GPUs and average gradients (without GPUs: as '
                             'many logical CPU devices) ' + default('num_devices', RESTORED))
    args = parser.parse_args(argv)
    if args.resume_kimg is not None and not args.resume:
        parser.error('--resume-kimg needs --resume')
    return args


def explicit_settings(args):
    """{setting: value} of the flags given on the command line (plus resume and resume_kimg)."""
    names = dict(data='data_dir', total_kimg='total_kimg', lod_training_kimg='lod_training_kimg',
                 lod_transition_kimg='lod_transition_kimg', minibatch='minibatch', minibatch_per_res='minibatch_dict',
                 lr='lr', g_smoothing='G_smoothing', mirror='mirror', seed='seed', tick_kimg='tick_kimg',
                 snapshot_ticks='snapshot_ticks', metric_images='metric_images', num_gpus='num_devices',
                 resume='resume', resume_kimg='resume_kimg', conditional='conditional', augment='augment',
                 augment_enable='augment_enable', augment_disable='augment_disable', ada_target='ada_target',
                 ada_kimg='ada_kimg', augment_p='augment_p')
    given = {setting: getattr(args, flag) for flag, setting in names.items() if getattr(args, flag) is not None}
    if args.metrics is not None:
        given['metrics'] = sorted(set(args.metrics) - {'none'})
    return given


def network_kwargs(args):
    """Network settings given on the command line: (G_kwargs, D_kwargs)."""
    shared = {key: value for key, value in (('fmap_base', args.fmap_base), ('fmap_max', args.fmap_max))
              if value is not None}
    G_kwargs = dict(shared)
    if args.latent_size is not None:
        G_kwargs['latent_size'] = args.latent_size
    return G_kwargs, shared


def main(argv=None):
    args = parse_args(argv)
    settings, resume, resume_kimg, origins = training_settings.resolve_settings(explicit_settings(args), args.outdir)
    G_kwargs, D_kwargs = network_kwargs(args)
    from nodules.training import loop as training_loop  # TensorFlow: only once the arguments are known to be good
    training_loop.train(settings, args.outdir, resume=resume, resume_kimg=resume_kimg, G_kwargs=G_kwargs,
                        D_kwargs=D_kwargs, origins=origins)


if __name__ == '__main__':
    cli.run(main)
