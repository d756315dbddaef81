"""Quality metrics of generated nodules against a dataset: sliced Wasserstein distance and MS-SSIM diversity.

    python compute_metrics.py --real processData/AIS --fake demo/weight/AIS.pkl        # real vs generated
    python compute_metrics.py --real processData/AIS --fake processData/IAC            # two datasets
    python compute_metrics.py --real processData/AIS --halves                          # baseline: two halves
    python compute_metrics.py --real processData/MIA --fake all.pkl --label MIA        # one class of a conditional model

Everything is computed offline in NumPy (nodules/metrics/swd.py); nothing is downloaded.
"""
import argparse
import os

from nodules.util import cli
from nodules.util.errors import UserError

METRICS = ('swd', 'msssim')


def metric_list(text):
    """argparse type: a comma-separated subset of METRICS."""
    names = [name.strip().lower() for name in text.split(',') if name.strip()]
    unknown = [name for name in names if name not in METRICS]
    if unknown or not names:
        raise argparse.ArgumentTypeError('unknown metric %r: choose from %s'
                                             % (','.join(unknown) or text, ','.join(METRICS)))
    return [name for name in METRICS if name in names]


def parse_args(argv=None):
    parser = cli.ArgumentParser(
        description='Image-quality metrics (offline): sliced Wasserstein distance (SWD, x1e3 per Laplacian '
                    'pyramid level, lower = closer to the real images) and MS-SSIM of consecutive image pairs '
                    '(lower = more diverse)')
    parser.add_argument('--real', required=True, metavar='DATASET_DIR',
                        help='the reference dataset (a directory of multi-resolution TFRecords, e.g. processData/AIS)')
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--fake', metavar='MODEL.pkl|DATASET_DIR',
                        help='a network pickle to generate images from, or another dataset directory')
    source.add_argument('--halves', action='store_true',
                        help='compare the first NUM images of --real with the next NUM ones (what SWD between two '
                             'samples of one distribution looks like)')
    parser.add_argument('--num', type=cli.positive_int,
                        help='images per set (default: all images of --real, half of them with --halves, '
                             'the smaller dataset for two datasets)')
    parser.add_argument('--seed', type=cli.seed, default=0,
                        help='seed of the latent vectors (as in 2-inference.py) and of the SWD sampling '
                             '(default: %(default)s)')
    parser.add_argument('--metrics', type=metric_list, default=list(METRICS), metavar='LIST',
                        help='comma-separated subset of %s (default: all)' % ','.join(METRICS))
    parser.add_argument('--batch-size', type=cli.positive_int, default=32,
                        help='images generated per step from a network pickle (default: %(default)s)')
    cli.add_label_options(parser, '; measures that class against --real, its own dataset')
    return parser.parse_args(argv)


def _shape_text(images):
    return '%dx%d, %d channel%s' % (images.shape[3], images.shape[2], images.shape[1],
                                    '' if images.shape[1] == 1 else 's')


def _need(path, available, number, what='images'):
    if available < number:
        raise UserError('%s: holds %d images, %d %s were asked for (lower --num)'
                            % (path, available, number, what))


def dataset_images(dataset_dir):
    """uint8 [N, C, H, W]: every image of the dataset's full-resolution TFRecords file."""
    from nodules.data import dataset
    files = dataset.list_tfrecords(dataset_dir)
    return dataset.read_images(files[max(files)])


def load_sets(args):
    """(real images, fake images, description of each) as uint8 [N, C, H, W], N equal for both."""
    real = dataset_images(args.real)
    if args.halves:
        number = args.num or len(real) // 2
        if number < 1:
            raise UserError('%s: holds %d image(s); --halves needs at least 2' % (args.real, len(real)))
        _need(args.real, len(real), 2 * number, 'images (two halves of %d)' % number)
        return (real[:number], real[number:2 * number],
                '%s, images 0..%d' % (args.real, number - 1),
                '%s, images %d..%d' % (args.real, number, 2 * number - 1))
    if os.path.isdir(args.fake):
        fake = dataset_images(args.fake)
        number = args.num or min(len(real), len(fake))
        _need(args.real, len(real), number)
        _need(args.fake, len(fake), number)
        return (real[:number], fake[:number], '%s, images 0..%d' % (args.real, number - 1),
                '%s, images 0..%d' % (args.fake, number - 1))
    from nodules import generation
    number = args.num or len(real)
    _need(args.real, len(real), number)
    with cli.progress(number, 'generating') as bar:
        fake = generation.images_from_pickle(args.fake, number, args.seed, args.batch_size, args.label_index,
                                             progress=bar.update, label=args.label)
    if args.label is not None or args.label_index is not None:
        which = 'class %s' % (args.label if args.label is not None else 'index %d' % args.label_index)
    else:
        which = None
    return (real[:number], generation.channels_first(fake), '%s, images 0..%d' % (args.real, number - 1),
            '%s, %d generated images%s, latent seed %d'
            % (args.fake, number, ' of %s' % which if which else '', args.seed))


def main(argv=None):
    args = parse_args(argv)
    # Fail on missing inputs before importing TensorFlow (seconds) or reading anything.
    if not os.path.isdir(args.real):
        raise UserError('%s: no such dataset directory' % args.real)
    if args.fake is not None and not os.path.exists(args.fake):
        raise UserError('%s: no such model file or dataset directory' % args.fake)
    if (args.label is not None or args.label_index is not None) and (args.halves or os.path.isdir(args.fake)):
        raise UserError('%s applies to a network pickle given as --fake, not to datasets'
                        % ('--label' if args.label is not None else '--label-index'))
    real, fake, real_text, fake_text = load_sets(args)
    try:
        report(args, real, fake, real_text, fake_text)
    except ValueError as error:  # what nodules/metrics/swd.py refuses (sizes, shapes) is the user's input
        raise UserError(str(error))


def report(args, real, fake, real_text, fake_text):
    from nodules.metrics import msssim, swd
    if real.shape[2:] != fake.shape[2:]:
        raise UserError('the real images are %dx%d but the fake ones are %dx%d; metrics compare one size'
                            % (real.shape[3], real.shape[2], fake.shape[3], fake.shape[2]))
    size = real.shape[2]
    print('real: %s (%s)' % (real_text, _shape_text(real)))
    print('fake: %s (%s)' % (fake_text, _shape_text(fake)))

    if 'swd' in args.metrics:
        resolutions = swd.swd_resolutions(size)
        if not resolutions:
            raise UserError('SWD needs images of at least %dx%d, these are %dx%d'
                                % (swd.SWD_MIN_RESOLUTION, swd.SWD_MIN_RESOLUTION, size, size))
        with cli.progress(len(resolutions) * 2 * len(real), 'SWD') as bar:
            per_level, average = swd.sliced_wasserstein_distance(real, fake, seed=args.seed,
                                                                     progress=bar.update)
        print('')
        print('Sliced Wasserstein distance x1e3 (seed %d, %d images per set; lower = closer)'
              % (args.seed, len(real)))
        for resolution, value in zip(resolutions, per_level):
            print('  %-9s %10.3f' % ('%dx%d' % (resolution, resolution), value))
        print('  %-9s %10.3f' % ('average', average))

    if 'msssim' in args.metrics:
        smallest = 2 ** (len(msssim.MS_SSIM_WEIGHTS) - 1)
        if size < smallest:
            raise UserError('MS-SSIM needs images of at least %dx%d, these are %dx%d'
                                % (smallest, smallest, size, size))
        if len(real) < 2:
            raise UserError('MS-SSIM of consecutive pairs needs at least 2 images per set (raise --num)')
        print('')
        print('MS-SSIM of consecutive pairs (0,1), (2,3), ... (%d pairs per set; lower = more diverse)'
              % (len(real) // 2))
        print('  %-9s %10.4f' % ('fake', msssim.ms_ssim_consecutive_pairs(fake)))
        print('  %-9s %10.4f' % ('real', msssim.ms_ssim_consecutive_pairs(real)))


if __name__ == '__main__':
    cli.run(main)
