"""Turning a trained generator into nodule images: the one path from a network pickle to 8-bit images.

latents (random_latents, seed_latents, load_latents, interpolation_latents) -> generate_images(Gs, latents)
-> uint8 images.
2-inference.py, compute_metrics.py and the training loop's image grids all generate through generate_images.
"""
import os
import re

import numpy as np

from nodules.util.errors import UserError, check_regular_file
from nodules.util import outputs, values

PRECISIONS = ('float32', 'bfloat16', 'float16')
# One command generates at most this many images: they are held in memory (64x64: 4 KB each, plus 2 KB of
# float32 latents), and written as that many PNG files.
MAX_IMAGES = 100000
# Generator output is converted to 8 bits this many images at a time, so float32 output never piles up.
_CHUNK_IMAGES = 1024
# Float32 values held per feature-map value of one image while a minibatch is generated: about 1.2 measured (peak
# resident memory of 2-inference.py with the demo weights at --batch-size 250 and 2000), rounded up.
GENERATION_ACTIVATION_COPIES = 2
_LAYER_BIAS = re.compile(r'(\d+)x\1/.+/bias\Z')  # a layer of the RxR block: its bias has one value per feature map
# Latent values beyond this overflow float32 in the generator's input normalisation (the mean of their squares),
# which then gives every such vector the image of the all-zero latent.
MAX_LATENT_MAGNITUDE = 1e15


def check_image_count(count, what='images'):
    """Refuse, before anything is allocated, a request for more than MAX_IMAGES images."""
    if count > MAX_IMAGES:
        raise UserError('%d %s asked for; one command generates at most %d' % (count, what, MAX_IMAGES))


def random_latents(number, latent_size, seed):
    """Standard-normal latent vectors; the same seed gives the same vectors on every stack (RandomState)."""
    check_image_count(number, 'latent vectors')
    return np.random.RandomState(seed).randn(number, latent_size).astype(np.float32)


def seed_latents(seeds, latent_size):
    """One latent vector per seed, each drawn on its own: row i is random_latents(1, latent_size, seeds[i]), so an
    image depends on its seed only, not on the other seeds asked for (it is also the first of `--seed S`)."""
    check_image_count(len(seeds), 'latent vectors')
    latents = np.empty((len(seeds), latent_size), np.float32)
    rng = np.random.RandomState(0)
    for row, seed in enumerate(seeds):
        rng.seed(seed)  # the numbers of RandomState(seed), without the cost of a new generator per seed
        latents[row] = rng.randn(latent_size)
    return latents


def read_latents(path, max_count=MAX_IMAGES):
    """Latent vectors float32 [N, size] from a .npy file, checked as far as possible without a generator.

    The file's header (kind of numbers, shape, count) is checked before its data is read; the values must
    stay finite once cast to float32.  check_latent_size() then checks them against the generator.
    """
    check_regular_file(path, 'latents file (.npy)', missing='no such latents file')  # a folder or pipe says so
    with open(path, 'rb') as f:
        magic = f.read(6)
    if magic.startswith(b'PK\x03\x04'):
        raise UserError('%s: is a .npz archive; latents must be one array saved with numpy.save (.npy)' % path)
    if magic != b'\x93NUMPY':
        raise UserError('%s: not a NumPy .npy array' % path)
    try:
        latents = np.load(path, mmap_mode='r', allow_pickle=False)  # mapped: nothing is read yet
    except ValueError as error:
        if 'allow_pickle' in str(error):
            raise UserError('%s: holds Python objects; latents must be a plain numeric .npy array' % path)
        raise UserError('%s: not a NumPy .npy array (%s)' % (path, str(error).split('\n')[0]))
    except Exception:
        raise UserError('%s: not a NumPy .npy array' % path)
    if latents.dtype.names is not None:
        raise UserError('%s: holds a structured array (%s); latents must be plain numbers' % (path, latents.dtype))
    if latents.dtype.kind != 'f':
        raise UserError('%s: holds %s values; latents must be floating-point numbers (float16, float32 or float64)'
                        % (path, latents.dtype))
    if latents.ndim != 2 or 0 in latents.shape:
        raise UserError('%s: latents have shape %s; generators need [N, latent_size]' % (path, list(latents.shape)))
    if latents.shape[0] > max_count:
        raise UserError('%s: holds %d latent vectors; one command generates at most %d'
                        % (path, latents.shape[0], max_count))
    try:
        with np.errstate(over='ignore'):  # values beyond float32 become infinite, refused just below
            latents = np.array(latents, dtype=np.float32)
    except (OSError, ValueError) as error:
        raise UserError('%s: cannot be read (%s)' % (path, error))
    if not np.all(np.isfinite(latents)):
        raise UserError('%s: latents contain NaN or infinite values, or values beyond float32 range (3.4e38)'
                        % path)
    largest = float(np.max(np.abs(latents)))
    if largest > MAX_LATENT_MAGNITUDE:
        raise UserError('%s: latents hold values up to %.3g; beyond %g they overflow the generator\'s input '
                        'normalisation (standard-normal latents stay within about 6)'
                        % (path, largest, MAX_LATENT_MAGNITUDE))
    return latents


def generation_bytes(Gs, batch_size):
    """About how many bytes generating one minibatch of `batch_size` images with `Gs` holds: its feature maps,
    counted from the biases of its layers."""
    per_image = 0
    for name, var in Gs.vars.items():
        match = _LAYER_BIAS.match(name)
        if match:
            per_image += int(match.group(1)) ** 2 * int(np.prod(var.shape.as_list()))
    return 4 * GENERATION_ACTIVATION_COPIES * batch_size * per_image


def check_latent_size(latents, latent_size, path):
    """Refuse latents read from `path` whose vectors do not have the generator's length."""
    if latents.shape[1] != latent_size:
        raise UserError('%s: latents have shape %s; this generator needs [N, %d]'
                        % (path, list(latents.shape), latent_size))


def load_latents(path, latent_size, max_count=MAX_IMAGES):
    """read_latents() and check_latent_size() in one: float32 [N, latent_size]."""
    latents = read_latents(path, max_count)
    check_latent_size(latents, latent_size, path)
    return latents


def load_generator(pkl_path, session=None):
    """The generator Gs of a network pickle, in the default TensorFlow session (made if there is none), or in
    `session` (a tf.Session on a graph of its own: several generators held at once, as 4-classify.py does; run
    Gs inside `session.graph.as_default()` and `session.as_default()` then)."""
    from nodules.gan import legacy
    from nodules.gan import tfutil
    if session is None:
        tfutil.init_tf()
        return legacy.load_network_pkl(pkl_path, which=('Gs',))
    with session.graph.as_default(), session.as_default():
        return legacy.load_network_pkl(pkl_path, which=('Gs',))


def class_names(Gs):
    """The class names stored with a conditional generator, one per label column in column order
    (static_kwargs['label_names'], written by 3-train.py --conditional), or None where it stores none.

    Old and unconditional pickles, and conditional ones from the original code, store none: their classes
    have only indices.
    """
    label_size = Gs.input_shapes[1][1]
    names = Gs.static_kwargs.get('label_names')
    if not label_size or names is None:
        return None
    if (not isinstance(names, (list, tuple)) or len(names) != label_size
            or not all(isinstance(name, str) and name for name in names)):
        raise UserError('this generator stores class names %r that do not name its %d label columns'
                        % (names, label_size))
    return list(names)


def label_index_for(Gs, name=None, index=None, source=None):
    """The label column to generate from `Gs`: that of the class `name` (--label) or `index` (--label-index);
    None for an unconditional generator given neither.

    A class name matches exactly, or else case-insensitively if that picks one class.  Every refusal is a
    UserError naming `source` (the network pickle) when given.
    """
    if name is not None and index is not None:
        raise ValueError('give a class name or a label index, not both')
    prefix = '%s: ' % source if source else ''
    label_size = Gs.input_shapes[1][1]
    if not label_size:
        if name is not None or index is not None:
            raise UserError('%sthis generator was trained without labels; %s does not apply'
                            % (prefix, '--label' if name is not None else '--label-index'))
        return None
    names = class_names(Gs)
    indices = '--label-index 0..%d' % (label_size - 1)
    if name is not None:
        if names is None:
            raise UserError('%sthis conditional generator stores no class names; use %s' % (prefix, indices))
        if name in names:
            return names.index(name)
        folded = [i for i, known in enumerate(names) if known.lower() == name.lower()]
        if len(folded) == 1:
            return folded[0]
        raise UserError('%sno class %r; the classes of this generator are %s' % (prefix, name, ', '.join(names)))
    if index is None or not 0 <= index < label_size:
        choices = ('--label %s or %s' % ('|'.join(names), indices)) if names else indices
        raise UserError('%sthis generator is conditional on %d classes%s: pass %s'
                        % (prefix, label_size, ' (%s)' % ', '.join(names) if names else '', choices))
    return index


def one_hot_labels(number, label_size, label_index=None):
    """Labels for a conditional generator (all of one class), or the empty [N, 0] input of an unconditional one."""
    labels = np.zeros((number, label_size), dtype=np.float32)
    if not label_size:
        if label_index is not None:
            raise UserError('this generator was trained without labels; --label-index does not apply to it')
        return labels
    if label_index is None or not 0 <= label_index < label_size:
        raise UserError('this generator is conditional on %d classes: pass --label-index 0..%d'
                        % (label_size, label_size - 1))
    labels[:, label_index] = 1.0
    return labels


def generate_images(Gs, latents, label_index=None, batch_size=32, precision='float32', progress=None,
                    labels=None, check_finite=True):
    """uint8 images for `latents`: [N, H, W] for grayscale generators, [N, H, W, 3] for RGB ones.

    Pixels are clip(rint((x + 1) / 2 * 255), 0, 255) of the generator output x, as in the original.
    `labels` (float32 [N, label_size]) replaces the one-hot labels of `label_index` where each image needs its
    own class.  With `check_finite`, NaN or infinite generator output (diverged weights, extreme latents) is an
    error instead of black pixels.  `progress`, if given, is called with the number of images just made.
    """
    from nodules.util.tfcompat import TF_VERSION, tf
    if precision not in PRECISIONS:
        raise ValueError('precision must be one of %s, got %r' % (', '.join(PRECISIONS), precision))
    latents = np.asarray(latents, dtype=np.float32)
    label_size = Gs.input_shapes[1][1]
    if labels is None:
        labels = one_hot_labels(len(latents), label_size, label_index)
    else:
        labels = np.asarray(labels, dtype=np.float32)
        if label_index is not None or labels.shape != (len(latents), label_size):
            raise ValueError('labels must be [%d, %d] (and label_index None), got %s'
                             % (len(latents), label_size, list(labels.shape)))
    values.check_memory(generation_bytes(Gs, min(batch_size, len(latents))),
                        '--batch-size %d: generating %d images at once' % (batch_size, min(batch_size, len(latents))))
    height, width, channels = Gs.output_shapes[0][1:]
    images = np.empty((len(latents), height, width) + ((channels,) if channels != 1 else ()), dtype=np.uint8)
    chunk = batch_size * max(1, _CHUNK_IMAGES // batch_size)  # whole minibatches: results do not depend on it
    for start in range(0, len(latents), chunk):
        stop = min(start + chunk, len(latents))
        try:
            output = Gs.run(latents[start:stop], labels[start:stop], minibatch_size=batch_size, progress=progress,
                            dtype=precision)
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, tf.errors.UnimplementedError):
            if precision == 'float32':
                raise
            raise UserError('TensorFlow %s has no %s kernels for these layers on this device; use --precision '
                            'float32' % (TF_VERSION, precision))
        if check_finite and not np.all(np.isfinite(output)):
            bad = start + int(np.argmax(~np.isfinite(output).reshape(len(output), -1).all(axis=1)))
            raise UserError('the generator produced NaN or infinite values (first for image %d): its weights or '
                            'the latent vectors are out of range' % bad)
        output = outputs.float_to_uint8(output)
        images[start:stop] = output[..., 0] if channels == 1 else output
    return images


def generate_images_each_alone(Gs, latents, batch_size=32, progress=None, **kwargs):
    """generate_images() with every minibatch full (the last one padded with zero latents), so that each image
    depends on its latent (and batch_size) only, not on how many images share its minibatch: TensorFlow's CPU
    kernels round every image of a batch alike, but a few pixels by a grey level differently at other sizes."""
    count = len(latents)
    padding = -count % batch_size
    latents = np.concatenate([np.asarray(latents, np.float32), np.zeros((padding, latents.shape[1]), np.float32)])
    done = [0]

    def report(made):  # the padding is not progress
        if progress is not None:
            progress(max(0, min(made, count - done[0])))
        done[0] += made
    return generate_images(Gs, latents, batch_size=batch_size, progress=report, **kwargs)[:count]


def channels_first(images):
    """[N, H, W] or [N, H, W, C] images as [N, C, H, W], the layout of datasets and nodules/metrics/swd.py."""
    images = np.asarray(images)
    return images[:, np.newaxis] if images.ndim == 3 else images.transpose(0, 3, 1, 2)


def images_from_pickle(pkl_path, number, seed=0, batch_size=32, label_index=None, precision='float32',
                       progress=None, label=None):
    """uint8 images [N, H, W] (or [N, H, W, 3]) of the generator Gs of a network pickle for RandomState(seed)
    latents, all of the class `label` (a stored class name) or `label_index`: the images
    `2-inference.py --model PKL --number N --seed S [--label NAME]` writes."""
    Gs = load_generator(pkl_path)
    label_index = label_index_for(Gs, label, label_index, source=pkl_path)
    latents = random_latents(number, Gs.input_shapes[0][1], seed)
    return generate_images(Gs, latents, label_index, batch_size, precision, progress=progress)


def interpolation_latents(endpoints, steps):
    """For pairs of latents (rows 0-1, 2-3, ...) the strip [a, `steps` points between, b] of each pair,
    linearly interpolated: returns [pairs * (steps + 2), latent_size]."""
    a, b = endpoints[0::2], endpoints[1::2]
    t = np.linspace(0.0, 1.0, steps + 2, dtype=np.float32)[np.newaxis, :, np.newaxis]
    strips = a[:, np.newaxis] * (1 - t) + b[:, np.newaxis] * t  # this form ends exactly on a and b
    return strips.reshape(-1, endpoints.shape[1])
