"""Quality metrics of generated nodules against a dataset.

    python compute_metrics.py --real processData/AIS --fake demo/weight/AIS.pkl        # real vs generated
    python compute_metrics.py --real processData/AIS --fake processData/IAC            # two datasets
    python compute_metrics.py --real processData/AIS --halves                          # baseline: two halves
    python compute_metrics.py --real processData/MIA --fake all.pkl --label MIA        # one class of a conditional model
    python compute_metrics.py --real processData/AIS --fake demo/weight/AIS.pkl \
        --metrics frd,prdc,memorization,spectral --heldout HELDOUT_DIR --json metrics.json
    python compute_metrics.py --real PAIRS --fake demo/weight/pix2pix-AIS.pkl --metrics maskfidelity  # pix2pix

swd and msssim (the default) are the metrics of PGGAN; frd, prdc, memorization and spectral are those of current
medical-imaging papers (nodules/metrics/); maskfidelity measures a pix2pix model (nodules/metrics/maskfidelity.py).  Everything is computed offline; nothing is downloaded.  FRD and the
radiomic feature space need Python >= 3.10 and the optional packages of requirements-metrics.txt.
"""
import argparse
import json
import os
import sys

import numpy as np

from nodules.metrics import maskfidelity
from nodules.util import cli
from nodules.util.errors import UserError

METRICS = ('swd', 'msssim', 'frd', 'prdc', 'memorization', 'spectral', 'maskfidelity')
DEFAULT_METRICS = ('swd', 'msssim')
PRDC_SPACES = ('radiomics', 'pixels')


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
        description='Image-quality metrics (offline): swd = sliced Wasserstein distance (x1e3 per Laplacian '
                    'pyramid level, lower = closer to the real images); msssim = MS-SSIM of consecutive image '
                    'pairs (lower = more diverse); frd = Frechet Radiomics Distance (frd-score v1, lower = '
                    'closer); prdc = precision and recall (k=3, fidelity and diversity) and density and coverage '
                    '(k=5); memorization = distances to the nearest training patch (--real) of generated patches '
                    'against those of real held-out patches (--heldout); spectral = largest peak of the mean '
                    'power spectrum at the up-sampling periods 2, 4, 8 px over its neighbourhood (~1 = no '
                    'lattice); maskfidelity = for a pix2pix model (--fake from 5-pix2pix.py) and pairs (--real: '
                    'a dataset with masks or a folder of PNG pairs): Dice between each mask and the nodule '
                    'segmented from the patch generated from it by a fixed rule (%s), the same for the real '
                    'patch of each mask (what the rule finds in real data), and SWD of generated against real '
                    'patches. With a pix2pix --fake every metric compares the real patches of --real\'s pairs '
                    'with those generated from their masks' % maskfidelity.RULE)
    parser.add_argument('--real', required=True, metavar='DATASET_DIR',
                        help='the reference dataset (a directory of multi-resolution TFRecords, e.g. processData/AIS; '
                             'for a pix2pix --fake a dataset with masks or a folder of PNG pairs)')
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
                        help='seed of the latent vectors (as in 2-inference.py; of the dropout draws for a pix2pix '
                             'model, as in 5-pix2pix.py generate) and of the SWD sampling (default: %(default)s)')
    parser.add_argument('--metrics', type=metric_list, default=list(DEFAULT_METRICS), metavar='LIST',
                        help='comma-separated subset of %s (default: %s)' % (','.join(METRICS),
                                                                              ','.join(DEFAULT_METRICS)))
    parser.add_argument('--heldout', metavar='DATASET_DIR',
                        help='for memorization: real patches the generator never saw (its training set is '
                             '--real, all of whose images are searched)')
    parser.add_argument('--prdc-space', choices=PRDC_SPACES, default='radiomics',
                        help='feature space of prdc: radiomics = the z-scored radiomic features of FRD (needs '
                             'Python >= 3.10, as FRD), pixels = raw grey levels (default: %(default)s)')
    parser.add_argument('--workers', type=cli.positive_int, default=1,
                        help='processes extracting radiomic features (~0.18 CPU-seconds per 64x64 patch; '
                             'default: %(default)s)')
    parser.add_argument('--json', metavar='FILE',
                        help='also write every figure with its settings (sample counts, seeds, feature space, '
                             'package versions) to FILE as JSON')
    parser.add_argument('--closest-pairs', metavar='FILE.png',
                        help='for memorization: picture of the 8 closest generated/training pairs (generated on '
                             'top, nearest training patch below)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing --json or --closest-pairs file that differs (default: refuse)')
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


def is_pix2pix_model(fake):
    """Whether --fake is a pix2pix pickle (which generates from masks, not from latent vectors)."""
    if fake is None or os.path.isdir(fake):
        return False
    from nodules.gan import legacy
    return legacy.model_kind(fake) == 'pix2pix'


def load_pix2pix_sets(args):
    """(real patches, generated patches [N, 1, H, W], masks [N, H, W], descriptions): the first NUM pairs of
    --real and the patches the pix2pix model --fake generates from their masks."""
    from nodules.pix2pix import data, generation
    pairs = data.read_pairs(args.real)
    number = args.num or len(pairs)
    _need(args.real, len(pairs), number, 'pairs')
    pairs = pairs.subset(np.arange(number))
    generator = generation.load_generator(args.fake)
    masks = generator.check_masks(pairs.masks, args.real)
    with cli.progress(number, 'generating') as bar:
        fake = generator.generate(masks, args.seed, args.batch_size, bar.update)
    return (pairs.patches[:, np.newaxis], fake[:, np.newaxis], masks,
            '%s, the patches of pairs 0..%d' % (args.real, number - 1),
            '%s, %d patches generated from their masks, dropout seed %d, minibatch %d'
            % (args.fake, number, args.seed, args.batch_size))


def check_options(args, pix2pix=False):
    """Refuse combinations that cannot work, before anything is read or computed (FRD's packages included)."""
    if 'maskfidelity' in args.metrics and not pix2pix:
        raise UserError('--metrics maskfidelity measures a pix2pix model: give its pickle (5-pix2pix.py train) as '
                        '--fake and pairs as --real')
    if pix2pix and (args.label is not None or args.label_index is not None):
        raise UserError('%s: a pix2pix model has no classes; --label and --label-index do not apply' % args.fake)
    if 'memorization' in args.metrics:
        if args.halves:
            raise UserError('--metrics memorization audits a generator (--fake) against its training set (--real), '
                            'not two halves of one dataset')
        if not args.heldout:
            raise UserError('--metrics memorization needs --heldout DATASET_DIR: real patches the generator never '
                            'saw, to tell chance closeness to the training set from copying')
    elif args.heldout or args.closest_pairs:
        raise UserError('%s is used by --metrics memorization only (add it to --metrics)'
                        % ('--heldout' if args.heldout else '--closest-pairs'))
    if args.heldout and not os.path.isdir(args.heldout):
        raise UserError('%s: no such dataset directory' % args.heldout)
    if needs_radiomics(args):
        from nodules.metrics import frd
        reason = frd.unavailable_reason()
        if reason:
            if 'frd' not in args.metrics:
                reason += ' (--prdc-space pixels works here)'
            raise UserError(reason)
    outputs_written = [path for path in (args.json, args.closest_pairs) if path]
    if outputs_written:
        from nodules.util import outputs
        outputs.check_targets(outputs_written)


def needs_radiomics(args):
    return 'frd' in args.metrics or ('prdc' in args.metrics and args.prdc_space == 'radiomics')


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
    pix2pix = is_pix2pix_model(args.fake)
    check_options(args, pix2pix)
    masks = None
    if pix2pix:
        real, fake, masks, real_text, fake_text = load_pix2pix_sets(args)
    else:
        real, fake, real_text, fake_text = load_sets(args)
    try:
        results, pictures = report(args, real, fake, real_text, fake_text, masks)
    except ValueError as error:  # what nodules/metrics/ refuses (sizes, shapes) is the user's input
        raise UserError(str(error))
    write_outputs(args, results, pictures)


def report(args, real, fake, real_text, fake_text, masks=None):
    """Print every metric asked for; returns (results for --json, {path: PNG bytes}).  `masks`: those the fake
    patches were generated from (a pix2pix model), for maskfidelity."""
    if real.shape[1:] != fake.shape[1:]:
        raise UserError('the real images (%s) are %s but the fake ones (%s) are %s; metrics compare images of one '
                        'size and channel count' % (args.real, _shape_text(real), args.fake or args.real,
                                                     _shape_text(fake)))
    print('real: %s (%s)' % (real_text, _shape_text(real)))
    print('fake: %s (%s)' % (fake_text, _shape_text(fake)))
    results = dict(real=dict(source=args.real, description=real_text, count=int(len(real))),
                   fake=dict(source=args.fake if not args.halves else args.real, description=fake_text,
                             count=int(len(fake))),
                   seed=args.seed, metrics=list(args.metrics))
    if 'prdc' in args.metrics:  # checked before any slow work
        from nodules.metrics import prdc
        smallest = max(prdc.PRECISION_RECALL_K, prdc.DENSITY_COVERAGE_K) + 1
        if min(len(real), len(fake)) < smallest:
            raise UserError('prdc needs at least %d images per set (k = %d nearest neighbours and the image '
                            'itself); raise --num' % (smallest, prdc.DENSITY_COVERAGE_K))
    pictures = {}
    if 'swd' in args.metrics or 'maskfidelity' in args.metrics:
        results['swd'] = report_swd(args, real, fake)
    if 'maskfidelity' in args.metrics:
        results['maskfidelity'] = report_maskfidelity(masks, real, fake)
    if 'msssim' in args.metrics:
        results['msssim'] = report_msssim(real, fake)
    features = None
    if needs_radiomics(args):
        features = radiomic_features(args, real, fake)
    if 'frd' in args.metrics:
        results.update(report_frd(features))
    if 'prdc' in args.metrics:
        results.update(report_prdc(args, real, fake, features))
    if 'memorization' in args.metrics:
        results['memorization'], picture = report_memorization(args, fake)
        if picture is not None:
            pictures[args.closest_pairs] = picture
    if 'spectral' in args.metrics:
        results['spectral'] = report_spectral(real, fake)
    results['versions'] = versions(needs_radiomics(args))
    return results, pictures


def report_swd(args, real, fake):
    from nodules.metrics import swd
    size = real.shape[2]
    resolutions = swd.swd_resolutions(size)
    if not resolutions:
        raise UserError('SWD needs images of at least %dx%d, these are %dx%d'
                            % (swd.SWD_MIN_RESOLUTION, swd.SWD_MIN_RESOLUTION, size, size))
    with cli.progress(len(resolutions) * 2 * len(real), 'SWD') as bar:
        per_level, average = swd.sliced_wasserstein_distance(real, fake, seed=args.seed, progress=bar.update)
    print('')
    print('Sliced Wasserstein distance x1e3 (seed %d, %d images per set; lower = closer)' % (args.seed, len(real)))
    for resolution, value in zip(resolutions, per_level):
        print('  %-9s %10.3f' % ('%dx%d' % (resolution, resolution), value))
    print('  %-9s %10.3f' % ('average', average))
    return dict(per_level=dict(('%dx%d' % (r, r), float(v)) for r, v in zip(resolutions, per_level)),
                average=float(average), seed=args.seed, images_per_set=int(len(real)))


def report_maskfidelity(masks, real, fake):
    result = maskfidelity.mask_fidelity(masks, _grayscale(fake, 'Mask fidelity'), _grayscale(real, 'Mask fidelity'))
    print('')
    print('Mask fidelity: Dice between each mask and the nodule segmented from the patch (%d masks; rule: %s; '
          '1 = the nodule follows the mask exactly)' % (result['count'], result['rule']))
    for key, note in (('fake', 'generated from the mask'), ('real', 'the real patch of the mask, for reference')):
        values = result['generated' if key == 'fake' else 'real']
        print('  %-9s mean %.3f  median %.3f  (10%%: %.3f, 90%%: %.3f)   (%s)'
              % (key, values['mean'], values['median'], values['p10'], values['p90'], note))
    return dict(rule=result['rule'], count=result['count'], fake=result['generated'], real=result['real'])


def report_msssim(real, fake):
    from nodules.metrics import msssim
    size = real.shape[2]
    smallest = 2 ** (len(msssim.MS_SSIM_WEIGHTS) - 1)
    if size < smallest:
        raise UserError('MS-SSIM needs images of at least %dx%d, these are %dx%d'
                            % (smallest, smallest, size, size))
    if len(real) < 2:
        raise UserError('MS-SSIM of consecutive pairs needs at least 2 images per set (raise --num)')
    print('')
    print('MS-SSIM of consecutive pairs (0,1), (2,3), ... (%d pairs per set; lower = more diverse)'
          % (len(real) // 2))
    values = dict(fake=float(msssim.ms_ssim_consecutive_pairs(fake)),
                  real=float(msssim.ms_ssim_consecutive_pairs(real)))
    print('  %-9s %10.4f' % ('fake', values['fake']))
    print('  %-9s %10.4f' % ('real', values['real']))
    values['pairs_per_set'] = int(len(real) // 2)
    return values


def _grayscale(images, what):
    if images.shape[1] != 1:
        raise UserError('%s works on grayscale patches; these images have %d channels' % (what, images.shape[1]))
    return images[:, 0]


def radiomic_features(args, real, fake):
    """frd.radiomic_features of both sets, extracted once for FRD and prdc: (real, fake, names, settings)."""
    from nodules.metrics import frd
    real, fake = _grayscale(real, 'FRD'), _grayscale(fake, 'FRD')
    with cli.progress(len(real) + len(fake), 'radiomic features') as bar:  # one call: worker processes start once
        features, names = frd.radiomic_features(np.concatenate([real, fake]), workers=args.workers,
                                                progress=bar.update)
    return dict(real=features[:len(real)], fake=features[len(real):], names=names, settings=frd.frd_settings())


def report_frd(features):
    from nodules.metrics import frd
    result = frd.frechet_radiomics_distance(features['real'], features['fake'], features['names'])
    settings = dict(features['settings'])
    settings.update((key, result[key]) for key in ('features_extracted', 'features_used', 'real_count',
                                                   'fake_count', 'rows_dropped'))
    versions = settings['package_versions']
    print('')
    print('Frechet Radiomics Distance (frd-score %s, FRD %s: %d of %d radiomic features, z-scored with the real '
          'set; log of the squared distance; %d + %d patches; lower = closer)'
          % (versions.get('frd-score'), settings['version'], result['features_used'], result['features_extracted'],
             result['real_count'], result['fake_count']))
    print('  %-9s %10.3f' % ('frd', result['value']))
    return dict(frd=result['value'], frd_settings=settings)


def report_prdc(args, real, fake, features):
    from nodules.metrics import frd, prdc
    if args.prdc_space == 'radiomics':
        real_z, fake_z, kept, info = frd.standardise(features['real'], features['fake'], features['names'])
        space = dict(name='radiomics', description='frd-score v1 radiomic features z-scored with the real set '
                                                   '(the features of FRD)', features_used=len(kept),
                     rows_dropped=info['rows_dropped'])
        real_x, fake_x = real_z.astype(np.float64), fake_z.astype(np.float64)
    else:
        space = dict(name='pixels', description='grey levels 0..255 of every pixel, flattened',
                     features_used=int(np.prod(real.shape[1:])))
        real_x, fake_x = real, fake
    result = prdc.prdc(real_x, fake_x)
    print('')
    print('Precision and recall (k=%d), density and coverage (k=%d) in %s space (%d features; %d real, %d fake)'
          % (result['k_precision_recall'], result['k_density_coverage'], space['name'], space['features_used'],
             result['real_count'], result['fake_count']))
    notes = dict(precision='fidelity: share of fake inside the real manifold',
                 recall='diversity: share of real inside the fake manifold',
                 density='fidelity: ~1 for one distribution', coverage='diversity: real neighbourhoods reached')
    for key in ('precision', 'recall', 'density', 'coverage'):
        print('  %-9s %10.3f   (%s)' % (key, result[key], notes[key]))
    settings = dict(feature_space=space)
    settings.update((key, result[key]) for key in ('k_precision_recall', 'k_density_coverage', 'real_count',
                                                   'fake_count'))
    return dict(precision=result['precision'], recall=result['recall'], density=result['density'],
                coverage=result['coverage'], prdc_settings=settings)


def report_memorization(args, fake):
    """The audit: generated = the fake set; training = every image of --real; held-out = every image of
    --heldout.  Returns (JSON-ready result, PNG bytes of the closest pairs or None)."""
    from nodules.metrics import memorization
    training = dataset_images(args.real)
    heldout = dataset_images(args.heldout)
    for name, images in ((args.heldout, heldout), (args.real, training)):
        if images.shape[1:] != fake.shape[1:]:
            raise UserError('%s: images are %s but the generated ones are %s; the audit compares one size'
                            % (name, _shape_text(images), _shape_text(fake)))
    result = memorization.audit(fake, heldout, training)
    result['space'] = 'pixels'
    result['training'] = '%s, all %d images' % (args.real, len(training))
    result['heldout'] = '%s, all %d images' % (args.heldout, len(heldout))
    print('')
    for line in memorization.summary_lines(result, 'pixel'):
        print(line)
    picture = None
    if args.closest_pairs:
        picture = memorization.pairs_png(fake, training, result['closest_pairs'])
        result['closest_pairs_picture'] = args.closest_pairs
    return result, picture


def report_spectral(real, fake):
    from nodules.metrics import spectral
    values = dict(fake=spectral.spectral_peaks(_grayscale(fake, 'The spectral check')),
                  real=spectral.spectral_peaks(_grayscale(real, 'The spectral check')))
    print('')
    print('Spectral check: largest peak of the mean power spectrum at periods 2, 4, 8 px over its neighbours '
          '(~1 = smooth; a lattice shows up as a peak)')
    for key in ('fake', 'real'):
        print('  %-9s %s' % (key, spectral.describe_peak(values[key])))
    return values


def versions(radiomics):
    """Python and the packages the figures depend on."""
    found = dict(python='%d.%d.%d' % tuple(sys.version_info[:3]), numpy=np.__version__)
    if radiomics:
        from nodules.metrics import frd
        found.update(frd.package_versions())
    return found


def _json_ready(value):
    """Non-finite floats become None (JSON has no inf/NaN); NumPy scalars become Python numbers."""
    if isinstance(value, dict):
        return dict((str(key), _json_ready(item)) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value


def json_bytes(results):
    return (json.dumps(_json_ready(results), indent=2, sort_keys=True, allow_nan=False) + '\n').encode('utf-8')


def write_outputs(args, results, pictures):
    """--json and --closest-pairs, together or not at all (never replacing a different file without
    --overwrite)."""
    files = {}
    if args.json:
        files[args.json] = json_bytes(results)
    files.update(pictures)
    if not files:
        return
    from nodules.util import outputs
    with outputs.FileSet(list(files), args.overwrite) as fileset:
        for path, data in files.items():
            fileset.write(path, data)
    for path in files:
        print('wrote %s' % path)


if __name__ == '__main__':
    cli.run(main)
