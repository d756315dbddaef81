"""Train a progressive-growing WGAN-GP nodule generator on a multi-resolution TFRecord dataset."""
import cli


def resolution_map(text):
    """'4:64,8:32' -> {4: 64, 8: 32}: per-resolution minibatch overrides."""
    try:
        pairs = [item.split(':') for item in text.split(',') if item.strip()]
        return {int(res): int(size) for res, size in pairs}
    except ValueError:
        raise cli.argparse.ArgumentTypeError('expected RES:SIZE pairs like 4:64,8:32, got %r' % text)


def parse_args(argv=None):
    parser = cli.ArgumentParser(
        description='Progressive-growing WGAN-GP training (PGGAN). Writes a new numbered run directory under '
                    'OUTDIR with log.txt, config.json, reals.png, fakes*.png grids, network-snapshot-*.pkl and '
                    'network-final.pkl (use the latter with 2-inference.py --model).')
    parser.add_argument('--data', default='processData/AIS', help='dataset directory (default: %(default)s)')
    parser.add_argument('--outdir', default='results', help='root of the run directories (default: %(default)s)')
    parser.add_argument('--total-kimg', type=float, default=15000,
                        help='train until this many thousand real images were shown (default: %(default)s)')
    parser.add_argument('--lod-training-kimg', type=float, default=600,
                        help='kimg at each resolution before the next fades in (default: %(default)s)')
    parser.add_argument('--lod-transition-kimg', type=float, default=600,
                        help='kimg of each fade-in (default: %(default)s)')
    parser.add_argument('--minibatch', type=cli.positive_int, default=16, help='minibatch size (default: %(default)s)')
    parser.add_argument('--minibatch-per-res', type=resolution_map, metavar='RES:SIZE,...',
                        help='per-resolution minibatch overrides, e.g. 4:64,8:64,16:32')
    parser.add_argument('--lr', type=float, default=0.001, help='Adam learning rate of G and D (default: %(default)s)')
    parser.add_argument('--fmap-base', type=cli.positive_int, default=8192,
                        help='feature-map budget; nf(stage) = min(fmap_base / 2^stage, fmap_max) (default: %(default)s)')
    parser.add_argument('--fmap-max', type=cli.positive_int, default=512,
                        help='most feature maps in any layer (default: %(default)s)')
    parser.add_argument('--latent-size', type=cli.positive_int,
                        help='length of the latent vector (default: nf(0), 512 with the defaults)')
    parser.add_argument('--g-smoothing', type=float, default=0.999,
                        help='Gs, the generator that is saved for inference, is the moving average of G with this '
                             'rate per minibatch; lower it (e.g. 0.99) for runs of only a few hundred kimg '
                             '(default: %(default)s)')
    parser.add_argument('--mirror', action='store_true', help='random horizontal flips of the real images')
    parser.add_argument('--seed', type=cli.nonnegative_int, default=1000, help='random seed (default: %(default)s)')
    parser.add_argument('--tick-kimg', type=float,
                        help='kimg between log lines and fakes grids (default: 160 at 4x4 down to 80 at 64x64)')
    parser.add_argument('--snapshot-ticks', type=cli.positive_int, default=10,
                        help='ticks between network snapshots (default: %(default)s)')
    parser.add_argument('--resume', metavar='PKL',
                        help='continue from a snapshot (networks, Gs and the schedule position); '
                             '"latest" picks the newest snapshot under OUTDIR')
    parser.add_argument('--resume-kimg', type=float,
                        help='schedule position of --resume (default: read from its file name)')
    parser.add_argument('--metrics', choices=['swd'], action='append', default=[],
                        help='compute at every snapshot and log: swd = sliced Wasserstein distance to the reals')
    parser.add_argument('--metric-images', type=cli.positive_int,
                        help='images per set for --metrics (default: the whole dataset, at most 1000)')
    parser.add_argument('--num-gpus', type=cli.positive_int, default=1,
                        help='split each minibatch over this many GPUs and average gradients '
                             '(without GPUs: as many logical CPU devices) (default: %(default)s)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import training_loop
    network_kwargs = dict(fmap_base=args.fmap_base, fmap_max=args.fmap_max)
    G_kwargs = dict(network_kwargs)
    if args.latent_size:
        G_kwargs['latent_size'] = args.latent_size
    training_loop.train(
        args.data, args.outdir, total_kimg=args.total_kimg, lod_training_kimg=args.lod_training_kimg,
        lod_transition_kimg=args.lod_transition_kimg, minibatch=args.minibatch,
        minibatch_dict=args.minibatch_per_res, lr=args.lr, G_kwargs=G_kwargs, D_kwargs=network_kwargs,
        G_smoothing=args.g_smoothing, mirror=args.mirror, seed=args.seed, tick_kimg=args.tick_kimg, snapshot_ticks=args.snapshot_ticks,
        resume=args.resume, resume_kimg=args.resume_kimg, num_devices=args.num_gpus, metrics=args.metrics,
        metric_images=args.metric_images)


if __name__ == '__main__':
    cli.run(main)
