"""Build and inspect multi-resolution TFRecord nodule datasets (one TFRecords file per resolution, 4x4 and up).

    python dataset_tool.py create_phantoms processData/AIS --subtype AIS --nodules 30 --views 10 --seed 1
    python dataset_tool.py create_from_images datasets/mine path/to/pngs --groups-from "^(.+)_view"
    python dataset_tool.py create_from_ct datasets/ct --scans scans/ --annotations nodules.csv
    python dataset_tool.py create_from_images datasets/pairs path/to/pairs --pairs
    python dataset_tool.py merge datasets/all processData/AIS processData/MIA processData/IAC
    python dataset_tool.py info processData/AIS
    python dataset_tool.py extract processData/AIS out/ --resolution 16
    python dataset_tool.py compare processData/AIS /tmp/AIS

Every dataset records which nodule each image shows (D/<name>-groups.npy, int64 [N]; equal numbers are views
of one nodule), so that views of one nodule never end up on both sides of a train/test split.
A dataset may also carry one binary nodule mask per image (D/<name>-masks.npy, uint8 [N, H, W], 0 and 255, at the
full resolution; lower resolutions derived on reading): create_phantoms always writes them, create_from_ct with
--masks, create_from_images with --pairs; merge, extract, info and compare carry them.
"""
import argparse
import collections
import contextlib
import os
import re
import signal
import sys
import threading

import numpy as np

from nodules.util import cli
from nodules.util.errors import UserError, check_folder_exists, check_regular_file

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')
MAX_RESOLUTION = 1024            # the largest image a progressive GAN of this kind is built for
PHANTOM_MIN_RESOLUTION = 16      # phantoms.draw_dataset draws nothing smaller
# A new dataset is held in memory before it is written: refuse, before drawing or reading, one larger than this.
MAX_DATASET_BYTES = 2 ** 31
# What `extract` writes next to the PNGs: one row per PNG, `file,nodule`.
GROUPS_CSV = 'groups.csv'
# --groups-from is matched against every file name within this many seconds: a pattern that backtracks
# catastrophically (`^(a+)+$` on a long name) is stopped with a message instead of running for ever.
GROUPS_FROM_SECONDS = 10.0


def parse_args(argv=None):
    parser = cli.ArgumentParser(description=__doc__.split('\n')[0], epilog=__doc__.split('\n', 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest='command', metavar='COMMAND')
    commands.required = True

    def command(name, help_text):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(func=globals()[name])
        return sub

    p = command('create_phantoms', 'Synthetic nodule patches (not patient data) for AIS, MIA or IAC: 3-D phantom '
                                   'nodules, several views of each, with the exact nodule mask of each view.')
    p.add_argument('out_dir', metavar='OUT_DIR', help='new dataset directory')
    p.add_argument('--subtype', required=True, choices=['AIS', 'MIA', 'IAC'], help='nodule subtype to draw')
    p.add_argument('--nodules', type=cli.positive_int, required=True, help='number of 3-D phantom nodules')
    p.add_argument('--views', type=cli.positive_int, default=1,
                   help='patches per nodule: different slices through it, each shifted (up to 2 mm), turned (up to '
                        '15 degrees) and given one of the 8 quarter-turn/flip orientations (default: %(default)s)')
    p.add_argument('--seed', type=cli.seed, default=0, help='random seed (default: %(default)s)')
    p.add_argument('--resolution', type=cli.power_of_two(PHANTOM_MIN_RESOLUTION, MAX_RESOLUTION), default=64,
                   help='patch size, a power of two from %d to %d; the field of view stays 44.8 mm '
                        '(default: %%(default)s)' % (PHANTOM_MIN_RESOLUTION, MAX_RESOLUTION))
    p.add_argument('--overwrite', action='store_true', help='replace an existing dataset at OUT_DIR')

    p = command('create_from_images', 'A folder of PNG/JPEG images -> multi-resolution dataset.')
    p.add_argument('out_dir', metavar='OUT_DIR', help='new dataset directory')
    p.add_argument('image_dir', metavar='IMAGE_DIR',
                   help='folder of square, power-of-two, equally sized images (grayscale or RGB)')
    p.add_argument('--shuffle', action='store_true', help='store the images in random order')
    p.add_argument('--seed', type=cli.seed, default=123, help='seed for --shuffle (default: %(default)s)')
    p.add_argument('--labels-from-subdirs', action='store_true',
                   help='IMAGE_DIR holds one subfolder per class; write one-hot labels in sorted folder order')
    p.add_argument('--groups-from', metavar='REGEX',
                   help='which nodule each image shows, from its file name: images whose names give the same first '
                        'group of REGEX (or, without groups, the same match) are views of one nodule; e.g. '
                        '"^(.+)_view[0-9]+" (default: one nodule per image)')
    p.add_argument('--pairs', action='store_true',
                   help='every image is a side-by-side pair as in the original pix2pix data: 8-bit grayscale, twice '
                        'as wide as high (64x128), the CT patch in the left half and its binary nodule mask '
                        '(exactly 0 and 255) in the right half; the patches become the images, the masks the '
                        "dataset's masks file")
    p.add_argument('--input-range', type=float, nargs=2, metavar=('LOW', 'HIGH'),
                   help='for 16-bit grayscale images: the values that become black and white, linearly between '
                        '(default: the lowest and highest value of all the images)')
    p.add_argument('--overwrite', action='store_true', help='replace an existing dataset at OUT_DIR')

    p = command('create_from_ct', 'CT scans + LUNA16-style nodule list -> nodule-centred patches (SimpleITK).')
    p.add_argument('out_dir', metavar='OUT_DIR', help='new dataset directory')
    p.add_argument('--scans', required=True, metavar='DIR',
                   help='folder with the CT volumes: DICOM series folders, .mhd/.raw or .nii/.nii.gz files')
    p.add_argument('--annotations', required=True, metavar='CSV',
                   help='nodule list with columns seriesuid, coordX, coordY, coordZ, diameter_mm [, label]; each '
                        'row is one nodule (its slices and augmentations share a nodule group)')
    p.add_argument('--label', help='keep only rows whose label column equals this (e.g. AIS)')
    p.add_argument('--spacing', type=float, default=0.7,
                   help='in-plane pixel spacing in mm, 0.01 to 10 (default: %(default)s)')
    p.add_argument('--window', type=float, nargs=2, default=[-1350.0, 150.0], metavar=('LOW', 'HIGH'),
                   help='Hounsfield window mapped to 0..255 (default: lung window %(default)s)')
    p.add_argument('--slices', type=cli.positive_int, default=1,
                   help='patches per nodule from this many neighbouring axial slices, 1 to 64 (default: %(default)s)')
    p.add_argument('--augment', action='store_true', help='add horizontal flips and 90-degree rotations')
    p.add_argument('--masks', metavar='DIR',
                   help='folder of nodule segmentations, one per scan, named after its series UID like the scans '
                        '(.nii/.nii.gz/.mhd/.mha) and on exactly its voxel grid, every non-zero voxel nodule: '
                        'the same patches are cut from them (nearest neighbour) into the dataset\'s masks file')
    p.add_argument('--resolution', type=cli.positive_int, default=64,
                   help='patch size, a power of two from 4 to 1024 (default: %(default)s)')
    p.add_argument('--overwrite', action='store_true', help='replace an existing dataset at OUT_DIR')

    p = command('merge', 'Per-class datasets -> one dataset with one-hot labels (class names and nodule groups '
                         'kept), for conditional training.')
    p.add_argument('out_dir', metavar='OUT_DIR', help='new dataset directory')
    p.add_argument('inputs', metavar='DIR', nargs='+',
                   help='two or more datasets of one resolution and channel count: each one class (the subtype in '
                        'its metadata, else its folder name), or labelled with class names in its metadata')
    p.add_argument('--overwrite', action='store_true', help='replace an existing dataset at OUT_DIR')

    p = command('info', 'Files, resolutions, record counts, image shape, labels, nodules and masks of a dataset.')
    p.add_argument('dataset_dir', metavar='DIR')

    p = command('extract', 'Save every record of one resolution as PNG files, and the nodule of each in %s; a '
                           'dataset with nodule masks also gets imgNNNNNNNN-mask.png (0 and 255) beside each image.'
                % GROUPS_CSV)
    p.add_argument('dataset_dir', metavar='DIR')
    p.add_argument('out_dir', metavar='OUT')
    p.add_argument('--resolution', type=cli.power_of_two(4, MAX_RESOLUTION),
                   help='which resolution (default: the largest)')
    p.add_argument('--overwrite', action='store_true', help='replace existing files that differ')

    p = command('compare', 'Check two datasets record by record (images, labels, nodule groups and masks).')
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
    from nodules.data import phantoms
    count = args.nodules * args.views
    check_dataset_size(count, 1, args.resolution, '--nodules %d --views %d' % (args.nodules, args.views))
    with cli.progress(count, 'drawing %s phantoms' % args.subtype) as bar:
        images, groups, drawn = phantoms.draw_dataset(args.subtype, args.nodules, args.views, args.seed,
                                                      args.resolution, progress=bar.update, masks=True)
    field_of_view_mm = 64 * phantoms.DEFAULT_MM_PER_PIXEL  # the same at every resolution
    metadata = {'source': 'synthetic phantoms (phantoms.py) -- NOT patient data', 'subtype': args.subtype,
                'nodules': args.nodules, 'views': args.views, 'count': count, 'seed': args.seed,
                'resolution': args.resolution, 'mm_per_pixel': field_of_view_mm / args.resolution,
                'window_hu': list(phantoms.DEFAULT_WINDOW),
                'windowing': 'grey = clip(rint((HU - low) / (high - low) * 255), 0, 255), (low, high) = window_hu',
                'mask_definition': phantoms.MASK_DEFINITION}
    _write(args, images, groups=groups, metadata=metadata, masks=np.where(drawn['masks'], 255, 0).astype(np.uint8))


def _list_images(args):
    """[(path, class index or None)] in sorted order, and the class names (None without --labels-from-subdirs)."""
    check_folder_exists(args.image_dir, 'folder of images', missing='no such image folder')
    if args.labels_from_subdirs:
        classes = sorted(d for d in os.listdir(args.image_dir) if os.path.isdir(os.path.join(args.image_dir, d)))
        files = [(os.path.join(args.image_dir, c, f), i) for i, c in enumerate(classes)
                 for f in sorted(os.listdir(os.path.join(args.image_dir, c))) if f.lower().endswith(IMAGE_EXTENSIONS)]
        # A class without images would be a label column no image has; an image beside the class folders would
        # be left out without a word.
        stray = sorted(f for f in os.listdir(args.image_dir) if f.lower().endswith(IMAGE_EXTENSIONS)
                       and not os.path.isdir(os.path.join(args.image_dir, f)))
        if stray:
            raise UserError('%s: is an image outside the class folders; with --labels-from-subdirs every image '
                            'belongs in the folder of its class' % os.path.join(args.image_dir, stray[0]))
        empty = [c for i, c in enumerate(classes) if not any(label == i for _, label in files)]
        if empty and files:
            raise UserError('%s: the class folder holds no PNG or JPEG images; remove it or add its images'
                            % os.path.join(args.image_dir, empty[0]))
    else:
        classes = None
        files = [(os.path.join(args.image_dir, f), None) for f in sorted(os.listdir(args.image_dir))
                 if f.lower().endswith(IMAGE_EXTENSIONS)]
    if not files:
        raise UserError('%s: no PNG or JPEG images found' % args.image_dir)
    for path, _ in files:  # a pipe named *.png would block the reader for ever, a device never end
        check_regular_file(path, 'PNG or JPEG image')
    return files, classes


def to_8bit(images, input_range, source):
    """High-bit-depth grayscale [N, 1, H, W] -> uint8 by the linear map of `input_range` (LOW, HIGH) onto
    0..255 (default: the lowest and highest value present); returns (images, the range used)."""
    from nodules.util import outputs
    if input_range is None:
        low, high = float(images.min()), float(images.max())
        if low == high:
            raise UserError('%s: every pixel of the 16-bit images is %g; give --input-range LOW HIGH' % (source, low))
    else:
        low, high = input_range
        outside = int(np.count_nonzero((images < low) | (images > high)))
        if outside == images.size:
            raise UserError('%s: every pixel lies outside --input-range %g %g (the images hold %g to %g): the '
                            'dataset would be all black or all white' % (source, low, high, images.min(),
                                                                         images.max()))
        if outside:
            print('warning: %s: %d of %d pixels lie outside --input-range %g %g and become black or white'
                  % (source, outside, images.size, low, high), file=sys.stderr)
    return outputs.float_to_uint8(images, drange=(low, high)), [low, high]


def nodule_groups(files, pattern, classes=None):
    """(int64 [N] nodule number of each file, nodule names) from the file names by the --groups-from `pattern`.

    The nodule's name is the first group of the pattern, or its whole match when it has no groups, prefixed by
    the class folder when there are classes (nodules never span classes); numbers follow the first appearance
    in `files`.  Without a pattern each file is its own nodule (names None).
    """
    if pattern is None:
        return np.arange(len(files), dtype=np.int64), None
    try:
        regex = re.compile(pattern)
    except re.error as error:
        raise UserError('--groups-from %r is not a regular expression (%s)' % (pattern, error))
    numbers, names = collections.OrderedDict(), []
    matches = []
    with time_limit(GROUPS_FROM_SECONDS, lambda: '%s: matching its file name to --groups-from %r takes more than '
                    '%g s (a pattern that backtracks without end, like (a+)+?); simplify the pattern'
                    % (files[len(matches)][0], pattern, GROUPS_FROM_SECONDS)):
        for path, _ in files:
            matches.append(regex.search(os.path.basename(path)))
    for (path, label), match in zip(files, matches):
        if match is None:
            raise UserError('%s: its file name does not match --groups-from %r' % (path, pattern))
        name = match.group(1) if regex.groups else match.group(0)
        if not name:
            raise UserError('%s: --groups-from %r finds no nodule name in its file name (an empty match)'
                            % (path, pattern))
        if classes is not None:
            name = '%s/%s' % (classes[label], name)
        names.append(numbers.setdefault(name, len(numbers)))
    return np.array(names, dtype=np.int64), list(numbers)


@contextlib.contextmanager
def time_limit(seconds, message):
    """Stop the block with UserError(message()) after `seconds` (Python's regular expressions check for signals
    while they match, so this bounds them).  Outside the main thread the block runs without a limit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum, frame):
        raise UserError(message())
    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def create_from_images(args):
    from nodules.data import dataset, image_files
    if args.input_range is not None and not (np.all(np.isfinite(args.input_range))
                                             and args.input_range[0] < args.input_range[1]):
        raise UserError('--input-range needs finite LOW < HIGH, got %g %g' % tuple(args.input_range))
    if args.pairs and args.input_range is not None:
        raise UserError('--input-range applies to 16-bit grayscale images; --pairs are 8-bit')
    files, classes = _list_images(args)
    groups, nodule_names = nodule_groups(files, args.groups_from, classes)
    images, masks = [], []
    with cli.progress(len(files), 'reading images') as bar:
        for path, _ in files:
            array = image_files.read_image(path)
            if args.pairs:
                array, mask = image_files.split_pair(array, path)
                masks.append(mask)
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
                                % (path, image_files.bit_depth_name(array), files[0][0],
                                   image_files.bit_depth_name(images[0])))
            images.append(array)
            bar.update(1)
    images = np.stack(images)
    masks = np.stack(masks) if args.pairs else None
    metadata = {'source': 'images from %s' % os.path.abspath(args.image_dir), 'count': len(images),
                'shuffled_with_seed': args.seed if args.shuffle else None, 'classes': classes,
                'groups_from': args.groups_from, 'nodules': int(groups.max()) + 1, 'nodule_names': nodule_names}
    if args.pairs:
        metadata['pairs'] = 'side-by-side pairs: the patch from the left half, the nodule mask from the right half'
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
        images, groups = images[order], groups[order]
        labels = labels[order] if labels is not None else None
        masks = masks[order] if masks is not None else None
    _write(args, images, labels=labels, groups=groups, metadata=metadata, masks=masks)


def create_from_ct(args):
    from nodules.data import ct_patches
    images, labels, groups, metadata, masks = ct_patches.patches_and_masks_from_ct(
        args.scans, args.annotations, masks=args.masks, label=args.label, spacing=args.spacing,
        window=tuple(args.window), slices=args.slices, augment=args.augment, resolution=args.resolution,
        progress=cli.progress)
    _write(args, images, labels=labels, groups=groups, metadata=metadata, masks=masks)


def _write(args, images, labels=None, groups=None, metadata=None, masks=None):
    from nodules.data import dataset
    with cli.progress(len(images), 'writing %s' % args.out_dir) as bar:
        dataset.write_dataset(args.out_dir, images, labels=labels, metadata=metadata, groups=groups, masks=masks,
                              overwrite=args.overwrite, progress=bar.update)
    print('wrote %d images of %d nodules, %dx%d (%d channel(s)), %sto %s'
          % (images.shape[0], len(np.unique(groups)), images.shape[3], images.shape[2], images.shape[1],
             'and their nodule masks, ' if masks is not None else '', args.out_dir))


# ----------------------------------------------------------------------------------------------------------------
# merge


MergeInput = collections.namedtuple('MergeInput', 'path levels classes class_index groups nodules metadata masks')


def check_merge_arguments(args):
    """Two or more different inputs (OUT_DIR apart from them is checked with the other commands' inputs)."""
    if len(args.inputs) < 2:
        raise UserError('merge needs two or more datasets, got only %s' % args.inputs[0])
    where = {}
    for path in args.inputs:
        key = os.path.normcase(os.path.realpath(path))
        if key in where:
            raise UserError('%s: is given twice (also as %s)' % (path, where[key]))
        where[key] = path


def command_inputs(args):
    """[(how the command line names it, path)]: what a new dataset's OUT_DIR must neither be nor hold."""
    if args.command == 'create_from_images':
        return [('IMAGE_DIR', args.image_dir)]
    if args.command == 'create_from_ct':
        return [('--scans', args.scans), ('--annotations', args.annotations)] + (
            [('--masks', args.masks)] if args.masks else [])
    if args.command == 'merge':
        return [('DIR', path) for path in args.inputs]
    return []


def merge(args):
    from nodules.data import dataset
    parts, shape, owner = [], None, {}
    for path in args.inputs:
        part = _merge_input(path)
        part_shape = list(part.levels[max(part.levels)].shape[1:])
        if shape is not None and part_shape != shape:
            raise UserError('%s: holds images of shape [C, H, W] = %s but %s holds %s; merged datasets need one '
                            'resolution and channel count' % (path, part_shape, parts[0].path, shape))
        shape = part_shape
        for name in part.classes:
            if name in owner:
                raise UserError('%s: its class %r is also a class of %s; each class must come from one dataset'
                                % (path, name, owner[name]))
            owner[name] = path
        parts.append(part)
    count = sum(len(part.groups) for part in parts)
    check_dataset_size(count, shape[0], shape[1], 'merging %d datasets' % len(parts))

    classes = [name for part in parts for name in part.classes]
    class_index, groups, sources = [], [], []
    first_image = first_nodule = 0
    for part in parts:
        offset = classes.index(part.classes[0])
        class_index.append(part.class_index + offset)
        groups.append(part.groups + first_nodule)  # renumbered: nodules of different inputs stay apart
        sources.append(collections.OrderedDict([
            ('dataset', os.path.abspath(part.path)), ('classes', part.classes),
            ('images', [first_image, first_image + len(part.groups)]),
            ('nodules', [first_nodule, first_nodule + part.nodules]), ('metadata', part.metadata)]))
        first_image += len(part.groups)
        first_nodule += part.nodules
    class_index = np.concatenate(class_index)
    labels = np.eye(len(classes), dtype=np.float32)[class_index]
    levels = dict((log2, np.concatenate([part.levels[log2] for part in parts])) for log2 in parts[0].levels)
    metadata = collections.OrderedDict([
        ('source', 'merge of %s' % ', '.join(os.path.abspath(part.path) for part in parts)),
        ('classes', classes),
        ('class_counts', [int(n) for n in np.bincount(class_index, minlength=len(classes))]),
        ('count', count), ('nodules', first_nodule),
        ('label_format', 'one-hot float32 [N, %d] in %s, columns in the order of classes'
                   % (len(classes), os.path.basename(dataset.labels_path(args.out_dir)))),
        ('sources', sources)])
    groups = np.concatenate(groups)
    masks = _merged_masks(parts)
    with cli.progress(count, 'writing %s' % args.out_dir) as bar:
        dataset.write_levels(args.out_dir, levels, labels=labels, metadata=metadata, groups=groups, masks=masks,
                             overwrite=args.overwrite, progress=bar.update)
    print('wrote %d images of %d nodules in %d classes (%s), %dx%d, %sto %s'
          % (count, first_nodule, len(classes), ', '.join('%s: %d' % item for item in
                                                          zip(classes, metadata['class_counts'])),
             shape[2], shape[1], 'with nodule masks, ' if masks is not None else '', args.out_dir))


def _merged_masks(parts):
    """The inputs' masks in the order of their images, or None (with a warning naming the inputs without masks
    when only some have them: a dataset has a mask for every image or none)."""
    from nodules.data import dataset
    missing = [part.path for part in parts if part.masks is None]
    if not missing:
        return np.concatenate([part.masks for part in parts])
    if len(missing) < len(parts):
        print('warning: %s %s no nodule masks (%s); the merged dataset has none'
              % (', '.join(missing), 'has' if len(missing) == 1 else 'have',
                 os.path.basename(dataset.masks_path(missing[0]))), file=sys.stderr)
    return None


def _merge_input(path):
    """One dataset to merge, checked and read whole: its levels, classes, the class of each image (an index into
    its classes) and its nodule groups renumbered 0, 1, ... in order of first appearance."""
    from nodules.data import dataset
    summary = dataset.check_dataset(path)
    levels = dict((log2, dataset.read_images(file_path)) for log2, file_path in summary.files.items())
    metadata = dataset.read_metadata(path)
    count = summary.num_images
    if summary.labels is None:
        subtype = (metadata or {}).get('subtype')
        classes = [subtype if isinstance(subtype, str) and subtype else dataset.dataset_name(path)]
        class_index = np.zeros(count, dtype=np.int64)
    else:
        classes = _labelled_classes(path, summary.labels, metadata)
        class_index = summary.labels.argmax(axis=1)
    groups = summary.groups
    if groups is None:
        print('warning: %s has no nodule groups file (%s); each of its images counts as its own nodule'
              % (path, os.path.basename(dataset.groups_path(path))), file=sys.stderr)
        groups = np.arange(count, dtype=np.int64)
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    order = np.argsort(first, kind='stable')   # number nodules by first appearance
    renumbered = np.empty(len(order), dtype=np.int64)
    renumbered[order] = np.arange(len(order))
    groups = renumbered[inverse.reshape(-1)]
    for nodule in np.unique(groups):
        present = np.unique(class_index[groups == nodule])
        if len(present) > 1:
            original = summary.groups[groups == nodule][0]
            raise UserError('%s: nodule %d has images of the classes %s; a nodule has one class'
                            % (dataset.groups_path(path), original, ' and '.join(classes[c] for c in present)))
    return MergeInput(path, levels, classes, class_index, groups, len(order), metadata, summary.masks)


def _labelled_classes(path, labels, metadata):
    """The class names of a labelled dataset (its metadata's `classes`), after checking that labels are one-hot."""
    from nodules.data import dataset
    dataset.check_one_hot(labels, dataset.labels_path(path), 'merge')
    classes = (metadata or {}).get('classes')
    if not (isinstance(classes, list) and len(classes) == labels.shape[1] and len(set(classes)) == len(classes)
            and all(isinstance(name, str) and name for name in classes)):
        raise UserError('%s: has %d label columns but its metadata names no class for each (a `classes` list of '
                        '%d different names in %s)' % (path, labels.shape[1], labels.shape[1],
                                                       os.path.basename(dataset.metadata_path(path))))
    return classes


# ----------------------------------------------------------------------------------------------------------------
# info, extract, compare


def info(args):
    from nodules.data import dataset
    files = dataset.list_tfrecords(args.dataset_dir)
    print('dataset %s' % args.dataset_dir)
    count = 0
    for log2, path in sorted(files.items()):
        records, shape = 0, None
        for records, image in dataset.iterate_images(path):
            shape = image.shape
        records = records + 1 if shape else 0
        count = max(count, records)
        print('  %-28s %4dx%-4d %6d records, shape [C, H, W] = %s'
              % (os.path.basename(path), 2 ** log2, 2 ** log2, records, list(shape or [])))
    labels = dataset.read_labels(args.dataset_dir, count)
    if labels is None:
        print('  labels: none')
    else:
        print('  labels: %d x %d, per class %s' % (labels.shape[0], labels.shape[1],
                                                   labels.sum(axis=0).astype(int).tolist()))
    groups = dataset.read_groups(args.dataset_dir, count)
    if groups is None:
        print('  nodules: unknown (no %s)' % os.path.basename(dataset.groups_path(args.dataset_dir)))
    else:
        views = np.unique(np.unique(groups, return_counts=True)[1])
        print('  nodules: %d (%s image%s each)' % (len(np.unique(groups)), '%d' % views[0] if len(views) == 1
                                                    else '%d to %d' % (views[0], views[-1]),
                                                    '' if views[-1] == 1 else 's'))
    if dataset.has_masks(args.dataset_dir):
        masks = dataset.read_masks(args.dataset_dir)
        area = dataset.mask_area_fraction(masks)
        print('  masks: yes, %dx%d, mean nodule area %.1f pixels (%.2f%% of the patch), %d empty'
              % (masks.shape[2], masks.shape[1], area.mean() * masks.shape[1] * masks.shape[2], 100 * area.mean(),
                 int((area == 0).sum())))
    else:
        print('  masks: no')
    metadata = dataset.read_metadata(args.dataset_dir)
    if metadata:
        for key in sorted(metadata):
            if key != 'nodules' or groups is None:  # else counted from the groups file just above
                print('  %s: %s' % (key, _short(metadata[key])))


def _short(value, width=100):
    """A metadata value on one line: long lists and objects (per-nodule records, sources) by their size only."""
    text = str(value).replace('\n', ' ')
    if len(text) <= width:
        return text
    if isinstance(value, (list, dict)):
        return '[%d entries]' % len(value) if isinstance(value, list) else '{%d fields}' % len(value)
    return text[:width - 3] + '...'


def extract(args):
    from nodules.data import dataset
    from nodules.util import outputs
    files = dataset.list_tfrecords(args.dataset_dir)
    log2 = max(files) if args.resolution is None else int(np.log2(args.resolution))
    if log2 not in files or 2 ** log2 != (args.resolution or 2 ** log2):
        raise UserError('%s: has no %dx%d records (it has %s)' % (
            args.dataset_dir, args.resolution, args.resolution, ', '.join(str(2 ** k) for k in sorted(files))))
    outputs.check_outdir(args.out_dir)
    images = dataset.read_images(files[log2])
    images = images[:, 0] if images.shape[1] == 1 else images.transpose(0, 2, 3, 1)
    groups = dataset.read_groups(args.dataset_dir, len(images))
    masks = dataset.read_masks(args.dataset_dir, 2 ** log2) if dataset.has_masks(args.dataset_dir) else None
    paths, _ = outputs.png_set_paths(args.out_dir, 'img%08d.png', len(images))
    mask_paths = outputs.png_set_paths(args.out_dir, 'img%08d-mask.png', len(images))[0] if masks is not None else []
    groups_csv = os.path.join(args.out_dir, GROUPS_CSV)
    with outputs.FileSet(paths + mask_paths + ([groups_csv] if groups is not None else []),
                         args.overwrite) as written:
        for path, image in zip(paths, images):
            written.write_png(path, image)
        for path, mask in zip(mask_paths, masks if masks is not None else []):
            written.write_png(path, mask)
        if groups is not None:
            rows = ['file,nodule'] + ['%s,%d' % (os.path.basename(path), nodule) for path, nodule in zip(paths, groups)]
            written.write(groups_csv, ('\n'.join(rows) + '\n').encode('ascii'))
    print('wrote %d PNGs of %dx%d%s to %s, %s' % (
        len(images), 2 ** log2, 2 ** log2, ' and their nodule masks (img*-mask.png)' if masks is not None else '',
        args.out_dir,
        'and the nodule of each (%d nodules) to %s' % (len(np.unique(groups)), GROUPS_CSV) if groups is not None
        else 'no %s (the dataset has no nodule groups)' % GROUPS_CSV))


def compare(args):
    from nodules.data import dataset
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
    def masks(path):
        return dataset.read_masks(path) if dataset.has_masks(path) else None
    for what, read in (('labels', dataset.read_labels), ('nodule groups', dataset.read_groups),
                       ('nodule masks', masks)):
        a, b = read(args.dataset_a), read(args.dataset_b)
        if (a is None) != (b is None):
            problems.append('only %s has %s' % ('the first' if b is None else 'the second', what))
        elif a is not None and (a.shape != b.shape or not np.array_equal(a, b)):
            problems.append('%s differ' % what)
    if problems:
        same_records = not any('record' in problem or 'resolutions' in problem for problem in problems)
        raise UserError('%s and %s %s: %s' % (args.dataset_a, args.dataset_b, 'hold identical records but differ'
                                               if same_records else 'differ', '; '.join(problems)))
    print('%s and %s hold identical records, labels, nodule groups and masks' % (args.dataset_a, args.dataset_b))


def main(argv=None):
    args = parse_args(argv)
    if args.command == 'merge':
        check_merge_arguments(args)
    if args.command.startswith('create_') or args.command == 'merge':
        from nodules.data import dataset
        # Before minutes of work, not after: a folder holding anything but a dataset, or an input, is never
        # replaced, --overwrite or not.
        dataset.check_new_dataset_dir(args.out_dir, args.overwrite, inputs=command_inputs(args))
    args.func(args)


if __name__ == '__main__':
    cli.run(main)
