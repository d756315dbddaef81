"""Where pix2pix pairs and masks come from: a dataset with masks, or a folder of PNGs in the original's layout.

* A dataset (dataset_tool.py, with a masks file): the full-resolution images and their masks, and the nodule
  groups when it has them.
* A folder of side-by-side PNG pairs, 8-bit grayscale, H x 2H: the CT patch in columns 0..H-1, its binary mask
  (0 outside, 255 inside the nodule) in columns H..2H-1, as the original's demo data.  Files in name order.
* For generation also a folder of mask PNGs, H x H each (pairs are accepted too: their right half is the mask).

Every problem is one UserError line naming the folder or file.
"""
import os

import numpy as np

from nodules.data import dataset, image_files
from nodules.generation import MAX_IMAGES
from nodules.util.errors import UserError, check_folder_exists, check_regular_file

GRAY_PNGS = 'pairs and masks are 8-bit grayscale PNGs'


class Pairs(object):
    """uint8 patches [N, H, W] (None when only masks are known), masks [N, H, W] (0/255), groups int64 [N] or
    None, and names: a short name of each pair (file name or dataset index) for messages."""

    def __init__(self, source, patches, masks, groups=None, names=None):
        self.source, self.patches, self.masks, self.groups = source, patches, masks, groups
        self.names = names if names is not None else ['%s image %d' % (source, i) for i in range(len(masks))]

    def __len__(self):
        return len(self.masks)

    def subset(self, indices):
        take = lambda array: None if array is None else array[indices]
        return Pairs(self.source, take(self.patches), self.masks[indices], take(self.groups),
                     [self.names[i] for i in indices])


def is_dataset(path):
    return os.path.isdir(path) and any(name.endswith('.tfrecords') for name in os.listdir(path))


def read_pairs(source, need_patches=True):
    """The pairs of a dataset with masks or of a folder of PNG pairs (masks alone from a folder of mask PNGs
    unless `need_patches`).  Every mask must hold a nodule pixel."""
    if is_dataset(source):
        return _dataset_pairs(source, need_patches)
    check_folder_exists(source, 'folder of PNG pairs or dataset', missing='no such dataset or folder of PNGs')
    files = sorted(name for name in os.listdir(source) if name.lower().endswith('.png'))
    if not files:
        raise UserError('%s: no PNG files and no dataset (*.tfrecords) here' % source)
    if len(files) > MAX_IMAGES:
        raise UserError('%s: holds %d PNG files; at most %d are read' % (source, len(files), MAX_IMAGES))
    patches, masks = [], []
    size = None
    for name in files:
        path = os.path.join(source, name)
        image = _read_gray_png(path)
        height, width = image.shape
        if size is None:
            size = height
        if width == 2 * height and height == size:
            patch, mask = image_files.split_pair(image[np.newaxis], path, allow_empty=False)
            patches.append(patch[0])
            masks.append(mask)
        elif width == height == size and not need_patches:
            masks.append(dataset.check_mask_image(image, path, allow_empty=False))
        else:
            expected = '%dx%d pairs (patch left, mask right)' % (2 * size, size)
            if not need_patches:
                expected += ' or %dx%d masks' % (size, size)
            raise UserError('%s: is %dx%d; the files of %s are %s' % (path, width, height, source, expected))
    if patches and len(patches) != len(masks):
        raise UserError('%s: mixes pairs and masks alone; keep one kind per folder' % source)
    return Pairs(source, np.stack(patches) if patches else None, np.stack(masks), None, files)


def _dataset_pairs(source, need_patches):
    if not dataset.has_masks(source):
        raise UserError('%s: this dataset has no nodule masks (make one with masks: dataset_tool.py '
                        'create_phantoms, create_from_images --pairs)' % source)
    masks = dataset.check_masks(dataset.read_masks(source), None, None, dataset.masks_path(source), allow_empty=False)
    patches = None
    if need_patches:
        files = dataset.list_tfrecords(source)
        images = dataset.read_images(files[max(files)])
        if images.shape[1] != 1:
            raise UserError('%s: has %d-channel images; pix2pix works on grayscale patches' % (source,
                                                                                                images.shape[1]))
        patches = images[:, 0]
    return Pairs(source, patches, masks, dataset.read_groups(source, len(masks)))


def _read_gray_png(path):
    """uint8 [H, W] of an 8-bit grayscale PNG (image_files.read_image); anything else (colour, 16 bits, not a PNG)
    is refused."""
    check_regular_file(path, 'PNG image')
    pixels = image_files.read_image(path)
    if not image_files.is_png(path):
        raise UserError('%s: is not a PNG file; %s' % (path, GRAY_PNGS))
    return image_files.grayscale_8bit(pixels, path, GRAY_PNGS)


def split_validation(pairs, fraction):
    """(training, validation) for a share `fraction` held out: the last whole nodules when there are groups
    (no nodule on both sides), else the last pairs in order.  At least one of each when fraction > 0."""
    if fraction <= 0:
        return pairs, None
    if pairs.groups is not None:
        nodules = np.unique(pairs.groups)
        held = max(1, int(round(fraction * len(nodules))))
        if held >= len(nodules):
            raise UserError('%s: %d nodule(s) cannot be split into training and validation; give --val-data'
                            % (pairs.source, len(nodules)))
        validation = np.isin(pairs.groups, nodules[-held:])
    else:
        held = max(1, int(round(fraction * len(pairs))))
        if held >= len(pairs):
            raise UserError('%s: %d pair(s) cannot be split into training and validation; give --val-data'
                            % (pairs.source, len(pairs)))
        validation = np.arange(len(pairs)) >= len(pairs) - held
    return pairs.subset(np.flatnonzero(~validation)), pairs.subset(np.flatnonzero(validation))
