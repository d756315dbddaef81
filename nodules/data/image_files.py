"""Reading image files (PNG, JPEG) into pixel arrays, and the side-by-side pairs of the original pix2pix data.

read_image drops nothing without a word: an image that is transparent anywhere, or a 16-bit colour PNG (Pillow
keeps only the high bytes of its pixels), is refused; a fully opaque alpha channel is left out, a palette image
whose colours are all grey is grayscale, and 16-bit grayscale pixels keep their stored values.

A side-by-side pair is one 8-bit grayscale image H x 2H: the CT patch in columns 0..H-1 and its binary nodule mask
(0 outside, 255 inside the nodule) in columns H..2H-1, as the original pix2pix demo data.

Every problem is one UserError line naming the file.
"""
import numpy as np

from nodules.data import dataset
from nodules.util.errors import UserError, check_regular_file

# Pillow modes of grayscale images with more than 8 bits per pixel (16-bit PNGs open as 'I;16' or 'I').
HIGH_DEPTH_MODES = ('I', 'I;16', 'I;16B', 'I;16L', 'I;16N', 'F')
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
PAIR_FORMAT = 'side-by-side pairs are 8-bit grayscale'


def read_image(path):
    """[C, H, W] pixels of one image file, C 1 (grayscale) or 3 (RGB): uint8 for 8-bit images, float32 holding
    the stored values for grayscale images of more bits per pixel (16-bit PNGs).  See the module docstring for
    what is refused and what is converted."""
    from PIL import Image
    check_regular_file(path, 'PNG or JPEG image')  # a pipe would block the reader for ever, a device never end
    if _png_depth_and_colour(path) in ((16, 2), (16, 6)):  # 16-bit RGB, RGBA
        raise UserError('%s: is a 16-bit colour PNG, whose low bytes would be lost; convert it to 8-bit RGB or to '
                        'grayscale first' % path)
    try:
        with Image.open(path) as image:
            if image.mode in HIGH_DEPTH_MODES:
                array = np.array(image, dtype=np.float32)
            else:
                if image.mode == 'P':
                    image = image.convert('RGBA')
                with_alpha = image.mode in ('LA', 'RGBA', 'PA')
                array = np.asarray(image.convert(('LA' if image.mode in ('1', 'L', 'LA') else 'RGBA') if with_alpha
                                                 else 'L' if image.mode in ('1', 'L') else 'RGB'))
    except Exception:
        raise UserError('%s: cannot be read as an image' % path)
    if array.ndim == 3 and array.shape[2] in (2, 4):  # the last channel is alpha
        if np.any(array[..., -1] != 255):
            raise UserError('%s: is transparent in places (an alpha channel); only grayscale or RGB pixels are '
                            'read: flatten it onto a background first' % path)
        array = array[..., :-1]
    if array.ndim == 3 and array.shape[2] == 3 and _palette_is_grey(path):
        array = array[..., 0]
    return array[np.newaxis] if array.ndim == 2 else array.transpose(2, 0, 1)


def is_png(path):
    """Whether the file starts with the PNG signature (whatever its name says)."""
    return _png_depth_and_colour(path) is not None


def _png_depth_and_colour(path):
    """(bit depth, colour type) from a PNG file's header, or None for other files."""
    try:
        with open(path, 'rb') as f:
            header = f.read(26)
    except OSError as error:
        raise UserError('%s: cannot read (%s)' % (path, error.strerror or error))
    if len(header) < 26 or header[:8] != PNG_SIGNATURE or header[12:16] != b'IHDR':
        return None
    return header[24], header[25]


def _palette_is_grey(path):
    """Whether `path` is a palette image whose colours are all grey (a grayscale image stored with a palette)."""
    from PIL import Image
    with Image.open(path) as image:
        if image.mode != 'P':
            return False
        palette = np.array(image.getpalette() or [], dtype=np.uint8)
    colours = palette[:len(palette) // 3 * 3].reshape(-1, 3)
    return bool(np.all(colours == colours[:, :1]))


def bit_depth_name(array):
    """How a message names the depth of read_image's pixels: '8-bit' or '16-bit grayscale'."""
    return '8-bit' if array.dtype == np.uint8 else '16-bit grayscale'


def grayscale_8bit(array, path, requirement):
    """uint8 [H, W] of read_image's [C, H, W] pixels of `path`, refused unless 8-bit grayscale; `requirement`
    ends the error line (what such files must be)."""
    channels = array.shape[0]
    if array.dtype != np.uint8 or channels != 1:
        raise UserError('%s: is a %s image with %d channel(s); %s'
                        % (path, bit_depth_name(array) if channels == 1 else 'colour', channels, requirement))
    return array[0]


def split_pair(array, path, allow_empty=True):
    """([1, H, H] patch, [H, H] mask) from read_image's [C, H, 2H] pixels of one side-by-side pair (see the module
    docstring); the mask half must be binary (dataset.check_mask_image), and hold a nodule pixel unless
    `allow_empty`."""
    pixels = grayscale_8bit(array, path, PAIR_FORMAT)
    height, width = pixels.shape
    if width != 2 * height:
        raise UserError('%s: is %dx%d; a side-by-side pair is twice as wide as high (e.g. 128x64: the patch in '
                        'columns 0-63, its mask in columns 64-127)' % (path, width, height))
    mask = dataset.check_mask_image(pixels[:, height:], path, allow_empty, columns=(height, width - 1))
    return pixels[np.newaxis, :, :height], mask
