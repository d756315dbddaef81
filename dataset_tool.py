"""Build and inspect multi-resolution TFRecord nodule datasets (one TFRecords file per resolution, 4x4 and up).

    python dataset_tool.py create_phantoms processData/AIS --subtype AIS --count 300 --seed 1
    python dataset_tool.py create_from_images datasets/mine path/to/pngs --shuffle
    python dataset_tool.py create_from_ct datasets/ct --scans scans/ --annotations nodules.csv
    python dataset_tool.py info processData/AIS
    python dataset_tool.py extract processData/AIS out/ --resolution 16
    python dataset_tool.py compare processData/AIS /tmp/AIS
"""
import argparse
import os

import numpy as np

import cli
from errors import UserError

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')
MAX_RESOLUTION = 1024            # the largest image a progressive GAN of this kind is built for
PHANTOM_MIN_RESOLUTION = 16      # phantoms.make_phantoms draws nothing smaller
# A new dataset is held in memory before it is written: refuse, before drawing or reading, one larger than this.
MAX_DATASET_BYTES = 2 ** 31
# Pillow modes of grayscale images with more than 8 bits per pixel (16-bit PNGs open as 'I;16' or 'I').
HIGH_DEPTH_MODES = ('I', 'I;16', 'I;16B', 'I;16L', 'I;16N', 'F')


def parse_args(argv=None):
    parser = cli.ArgumentParser(description=__doc__.split('\n')[0], epilog=__doc__.split('\n', 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest='command', metavar='COMMAND')
    commands.required = True

    def command(name, help_text):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(func=globals()[name])
        return sub

    p = command('create_phantoms', 'Synthetic nodule patches (not patient data) for AIS, MIA or IAC.')
    p.add_argument('out_dir', metavar='OUT_DIR', help='new dataset directory')
    p.add_argument('--subtype', required=True, choices=['AIS', 'MIA', 'IAC'], help='nodule subtype to draw')
    p.add_argument('--count', type=cli.positive_int, default=300, help='number of patches (default: %(default)s)')
    p.add_argument('--seed', type=cli.nonnegative_int, default=0, help='random seed (default: %(default)s)')
    p.add_argument('--resolution', type=cli.power_of_two(PHANTOM_MIN_RESOLUTION, MAX_RESOLUTION), default=64,
                   help='patch size, a power of two from %d to %d (default: %%(default)s)'
                        % (PHANTOM_MIN_RESOLUTION, MAX_RESOLUTION))
    p.add_argument('--overwrite', action='store_true', help='replace an existing dataset at OUT_DIR')

    p = command('create_from_images', 'A folder of PNG/JPEG images -> multi-resolution dataset.')
    p.add_argument('out_dir', metavar='OUT_DIR', help='new dataset directory')
    p.add_argument('image_dir', metavar='IMAGE_DIR',
                   help='folder of square, power-of-two, equally sized images (grayscale or RGB)')
    p.add_argument('--shuffle', action='store_true', help='store the images in random order')
    p.add_argument('--seed', type=cli.nonnegative_int, default=123, help='seed for --shuffle (default: %(default)s)')
    p.add_argument('--labels-from-subdirs', action='store_true',
                   help='IMAGE_DIR holds one subfolder per class; write one-hot labels in sorted folder order')
    p.add_argument('--input-range', type=float, nargs=2, metavar=('LOW', 'HIGH'),
                   help='for 16-bit grayscale images: the values that become black and white, linearly between '
                        '(default: the lowest and highest value of all the images)')
    p.add_argument('--overwrite', action='store_true', help='replace an existing dataset at OUT_DIR')

    p = command('create_from_ct', 'CT scans + LUNA16-style nodule list -> nodule-centred patches (SimpleITK).')
    p.add_argument('out_dir', metavar='OUT_DIR', help='new dataset directory')
    p.add_argument('--scans', required=True, metavar='DIR',
                   help='folder with the CT volumes: DICOM series folders, .mhd/.raw or .nii/.nii.gz files')
    p.add_argument('--annotations', required=True, metavar='CSV',
                   help='nodule list with columns seriesuid, coordX, coordY, coordZ, diameter_mm [, label]')
    p.add_argument('--label', help='keep only rows whose label column equals this (e.g. AIS)')
    p.add_argument('--spacing', type=float, default=0.7,
                   help='in-plane pixel spacing in mm, 0.01 to 10 (default: %(default)s)')
    p.add_argument('--window', type=float, nargs=2, default=[-1350.0, 150.0], metavar=('LOW', 'HIGH'),
                   help='Hounsfield window mapped to 0..255 (default: lung window %(default)s)')
    p.add_argument('--slices', type=cli.positive_int, default=1,
                   help='patches per nodule from this many neighbouring axial slices, 1 to 64 (default: %(default)s)')
    p.add_argument('--augment', action='store_true', help='add horizontal flips and 90-degree rotations')
    p.add_argument('--resolution', type=cli.positive_int, default=64,
                   help='patch size, a power of two from 4 to 1024 (default: %(default)s)')
    p.add_argument('--overwrite', action='store_true', help='replace an existing dataset at OUT_DIR')

    p = command('info', 'Files, resolutions, record counts, image shape and labels of a dataset.')
    p.add_argument('dataset_dir', metavar='DIR')

    p = command('extract', 'Save every record of one resolution as PNG files.')
    p.add_argument('dataset_dir', metavar='DIR')
    p.add_argument('out_dir', metavar='OUT')
    p.add_argument('--resolution', type=cli.positive_int, help='which resolution (default: the largest)')
    p.add_argument('--overwrite', action='store_true', help='replace existing PNGs that differ')

    p = command('compare', 'Check two datasets record by record (images and labels).')
    p.add_argument('dataset_a', metavar='DIR_A')
    p.add_argument('dataset_b', metavar='DIR_B')
    return parser.parse_args(argv)


def check_dataset_size(count, channels, resolution, what, bytes_per_value=1):
    """Refuse, before any work, a dataset too large to hold in memory (MAX_DATASET_BYTES)."""
    values = count * channels * resolution * resolution
    size = values * bytes_per_value + values * 4 // 3  # the images as read, and the uint8 pyramid written
    if size > MAX_DATASET_BYTES:
        raise UserError('%s: %d images of %dx%d would take %.1f GB in memory; at most %.1f GB at once'
                        % (what, count, resolution, resolution, size / 1e9, MAX_DATASET_BYTES / 1e9))


def create_phantoms(args):
    import phantoms
    check_dataset_size(args.count, 1, args.resolution, '--count %d' % args.count)
    with cli.progress(args.count, 'drawing %s phantoms' % args.subtype) as bar:
        images = phantoms.make_phantoms(args.subtype, args.count, args.seed, args.resolution, progress=bar.update)
    metadata = {'source': 'synthetic phantoms (phantoms.py) -- NOT patient data', 'subtype': args.subtype,
                'count': args.count, 'seed': args.seed, 'resolution': args.resolution}
    _write(args, images[:, np.newaxis], metadata=metadata)


def _list_images(args):
    """[(path, class index or None)] in sorted order, and the class names (None without --labels-from-subdirs)."""
    if not os.path.isdir(args.image_dir):
        raise UserError('%s: no such image folder' % args.image_dir)
    if args.labels_from_subdirs:
        classes = sorted(d for d in os.listdir(args.image_dir) if os.path.isdir(os.path.join(args.image_dir, d)))
        files = [(os.path.join(args.image_dir, c, f), i) for i, c in enumerate(classes)
                 for f in sorted(os.listdir(os.path.join(args.image_dir, c))) if f.lower().endswith(IMAGE_EXTENSIONS)]
    else:
        classes = None
        files = [(os.path.join(args.image_dir, f), None) for f in sorted(os.listdir(args.image_dir))
                 if f.lower().endswith(IMAGE_EXTENSIONS)]
    if not files:
        raise UserError('%s: no PNG or JPEG images found' % args.image_dir)
    return files, classes


def read_image(path):
    """[C, H, W] pixels of one image file: uint8 for 8-bit images (grayscale or RGB), float32 holding the
    stored values for grayscale images of more bits per pixel (16-bit PNGs)."""
    from PIL import Image
    try:
        with Image.open(path) as image:
            if image.mode in HIGH_DEPTH_MODES:
                array = np.array(image, dtype=np.float32)
            else:
                array = np.asarray(image.convert('L' if image.mode in ('1', 'L', 'LA') else 'RGB'))
    except Exception:
        raise UserError('%s: cannot be read as an image' % path)
    return array[np.newaxis] if array.ndim == 2 else array.transpose(2, 0, 1)


def to_8bit(images, input_range, source):
    """High-bit-depth grayscale [N, 1, H, W] -> uint8 by the linear map of `input_range` (LOW, HIGH) onto
    0..255 (default: the lowest and highest value present); returns (images, the range used)."""
    import outputs
    if input_range is None:
        low, high = float(images.min()), float(images.max())
        if low == high:
            raise UserError('%s: every pixel of the 16-bit images is %g; give --input-range LOW HIGH' % (source, low))
    else:
        low, high = input_range
    return outputs.float_to_uint8(images, drange=(low, high)), [low, high]


def create_from_images(args):
    import dataset
    if args.input_range is not None and not (np.all(np.isfinite(args.input_range))
                                             and args.input_range[0] < args.input_range[1]):
        raise UserError('--input-range needs finite LOW < HIGH, got %g %g' % tuple(args.input_range))
    files, classes = _list_images(args)
    images = []
    with cli.progress(len(files), 'reading images') as bar:
        for path, _ in files:
            array = read_image(path)
            if not images:
                dataset.check_image_batch(np.zeros((1,) + array.shape, np.uint8), path)
                check_dataset_size(len(files), array.shape[0], array.shape[1], args.image_dir,
                                   bytes_per_value=array.itemsize)
            elif array.shape != images[0].shape:
                raise UserError('%s: is %dx%d with %d channel(s), but %s is %dx%d with %d'
                                % (path, array.shape[2], array.shape[1], array.shape[0], files[0][0],
                                   images[0].shape[2], images[0].shape[1], images[0].shape[0]))
            elif (array.dtype == np.uint8) != (images[0].dtype == np.uint8):
                raise UserError('%s: is a %s image, but %s is %s; convert them to one bit depth first'
                                % (path, _depth(array), files[0][0], _depth(images[0])))
            images.append(array)
            bar.update(1)
    images = np.stack(images)
    metadata = {'source': 'images from %s' % os.path.abspath(args.image_dir), 'count': len(images),
                'shuffled_with_seed': args.seed if args.shuffle else None, 'classes': classes}
    if images.dtype != np.uint8:
        images, used_range = to_8bit(images, args.input_range, args.image_dir)
        metadata.update(source_bit_depth=16, input_range=used_range,
                        conversion='grey = clip(rint((value - low) * 255 / (high - low)), 0, 255), '
                                   '(low, high) = input_range')
    elif args.input_range is not None:
        raise UserError('%s: --input-range applies to 16-bit grayscale images; these have 8 bits' % args.image_dir)
    labels = None
    if classes is not None:
        labels = np.eye(len(classes), dtype=np.float32)[[label for _, label in files]]
    if args.shuffle:
        order = np.arange(len(images))
        np.random.RandomState(args.seed).shuffle(order)
        images = images[order]
        labels = labels[order] if labels is not None else None
    _write(args, images, labels=labels, metadata=metadata)


def _depth(array):
    return '8-bit' if array.dtype == np.uint8 else '16-bit grayscale'


def create_from_ct(args):
    import ct_patches
    images, labels, metadata = ct_patches.patches_from_ct(
        args.scans, args.annotations, label=args.label, spacing=args.spacing, window=tuple(args.window),
        slices=args.slices, augment=args.augment, resolution=args.resolution)
    _write(args, images, labels=labels, metadata=metadata)


def _write(args, images, labels=None, metadata=None):
    import dataset
    with cli.progress(len(images), 'writing %s' % args.out_dir) as bar:
        dataset.write_dataset(args.out_dir, images, labels=labels, metadata=metadata, overwrite=args.overwrite,
                              progress=bar.update)
    print('wrote %d images of %dx%d (%d channel(s)) to %s'
          % (images.shape[0], images.shape[3], images.shape[2], images.shape[1], args.out_dir))


def info(args):
    import dataset
    files = dataset.list_tfrecords(args.dataset_dir)
    print('dataset %s' % args.dataset_dir)
    for log2, path in sorted(files.items()):
        count, shape = 0, None
        for count, image in dataset.iterate_images(path):
            shape = image.shape
        print('  %-28s %4dx%-4d %6d records, shape [C, H, W] = %s'
              % (os.path.basename(path), 2 ** log2, 2 ** log2, count + 1 if shape else 0, list(shape or [])))
    labels = dataset.read_labels(args.dataset_dir)
    if labels is None:
        print('  labels: none')
    else:
        print('  labels: %d x %d, per class %s' % (labels.shape[0], labels.shape[1],
                                                   labels.sum(axis=0).astype(int).tolist()))
    metadata = dataset.read_metadata(args.dataset_dir)
    if metadata:
        for key in sorted(metadata):
            print('  %s: %s' % (key, metadata[key]))


def extract(args):
    import dataset
    import outputs
    files = dataset.list_tfrecords(args.dataset_dir)
    log2 = max(files) if args.resolution is None else int(np.log2(args.resolution))
    if log2 not in files or 2 ** log2 != (args.resolution or 2 ** log2):
        raise UserError('%s: has no %dx%d records (it has %s)' % (
            args.dataset_dir, args.resolution, args.resolution, ', '.join(str(2 ** k) for k in sorted(files))))
    outputs.check_outdir(args.out_dir)
    images = dataset.read_images(files[log2])
    images = images[:, 0] if images.shape[1] == 1 else images.transpose(0, 2, 3, 1)
    outputs.write_pngs(images, args.out_dir, 'img%08d.png', overwrite=args.overwrite)
    print('wrote %d PNGs of %dx%d to %s' % (len(images), 2 ** log2, 2 ** log2, args.out_dir))


def compare(args):
    import dataset
    files_a, files_b = dataset.list_tfrecords(args.dataset_a), dataset.list_tfrecords(args.dataset_b)
    problems = []
    if sorted(files_a) != sorted(files_b):
        problems.append('resolutions differ: %s vs %s' % ([2 ** k for k in sorted(files_a)],
                                                           [2 ** k for k in sorted(files_b)]))
    for log2 in sorted(set(files_a) & set(files_b)):
        records_a, records_b = dataset.iterate_images(files_a[log2]), dataset.iterate_images(files_b[log2])
        count = 0
        for (index, image_a), (_, image_b) in zip(records_a, records_b):
            count += 1
            if image_a.shape != image_b.shape or not np.array_equal(image_a, image_b):
                problems.append('%dx%d record %d differs' % (2 ** log2, 2 ** log2, index))
                break
        rest_a, rest_b = sum(1 for _ in records_a), sum(1 for _ in records_b)
        if rest_a != rest_b:
            problems.append('%dx%d: %d vs %d records' % (2 ** log2, 2 ** log2, count + rest_a, count + rest_b))
    labels_a, labels_b = dataset.read_labels(args.dataset_a), dataset.read_labels(args.dataset_b)
    if (labels_a is None) != (labels_b is None) or (labels_a is not None and not np.array_equal(labels_a, labels_b)):
        problems.append('labels differ')
    if problems:
        raise UserError('%s and %s differ: %s' % (args.dataset_a, args.dataset_b, '; '.join(problems)))
    print('%s and %s hold identical records' % (args.dataset_a, args.dataset_b))


def main(argv=None):
    args = parse_args(argv)
    if args.command.startswith('create_'):
        import dataset
        dataset.check_new_dataset_dir(args.out_dir, args.overwrite)  # before minutes of work, not after
    args.func(args)


if __name__ == '__main__':
    cli.run(main)
