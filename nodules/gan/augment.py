"""Differentiable augmentation of every image the discriminator sees, for training GANs on a few dozen nodules.

Two policies from the literature, adapted to single-channel lung-window CT patches:

* `diffaugment` (Zhao et al. 2020, "Differentiable augmentation for data-efficient GAN training"): a fixed set,
  translation, cutout and colour (for grey CT: brightness and contrast), applied to every real and generated image,
  in the discriminator's loss and in the generator's.
* `ada` (Karras et al. 2020, "Training generative adversarial networks with limited data"): every enabled
  augmentation is applied to each image independently with one probability p, which follows the overfitting
  heuristic r_t = E[sign(D(real))]: every few minibatches p <- clip(p + sign(r_t - target) * images / (ada_kimg *
  1000), 0, 1), so p can go from 0 to 1 in 500k images.  Augmentations applied with p below about 0.8 do not leak
  into the generator: it cannot tell a flipped real from a real it should imitate flipped.

  The ADA paper's discriminator outputs logits, whose zero is its decision threshold.  A WGAN critic's scores have
  no such zero: only differences count, and the drift term holds the real scores' mean near 0 however well D
  separates reals from fakes, so E[sign(D(real))] stays near 0 and p would never rise.  Given the fake scores too,
  r_t measures each real score from the critic's threshold instead, the midpoint between the minibatch's mean real
  and mean fake score: 1 when D puts every real above it (overfitting), about 0 when reals and fakes overlap.

Everything happens inside the TensorFlow graph on NHWC float images in -1..1 of any size from 4x4 up, and is
differentiable with respect to the images (the gradient penalty and the generator's loss differentiate through
it).  Random parameters are drawn per sample for a whole minibatch (`draw`) and applied separately (`apply`), so a
minibatch split over devices slices the parameters with the images and computes exactly what one device would,
and tests can feed known parameters.  Random ops take no op seeds: the graph seed makes a seeded run repeatable.

The augmentations, in the order they are applied (geometric ones are composed into one resampling):

  xflip, yflip   mirror left-right / top-bottom (ADA: "applied" means a random choice of flip or not, so an image
                 is flipped with probability p/2)
  rotate90       rotation by a random multiple of 90 degrees (0 included), counter-clockwise as np.rot90
  translate      integer shift of up to `translate_max` of the side in x and y, uniform over whole pixels
  scale          isotropic zoom by a factor log-uniform in [1/(1+scale_max), 1+scale_max]; bilinear
  rotate         rotation by an angle uniform in [-rotate_max, rotate_max] degrees; bilinear
  brightness     adds an offset uniform in [-brightness_max, brightness_max]
  contrast       scales every pixel's deviation from its image's mean by a factor log-uniform in
                 [1/(1+contrast_max), 1+contrast_max]
  cutout         sets a square of `cutout_size` of the side, centred anywhere in the image, to `cutout_value`

Pixels outside the image are whole-sample reflections of those inside (... 2 1 | 0 1 2 ... n-1 | n-2 ...), as
np.pad(mode='reflect'), so shifted and rotated patches keep looking like lung instead of growing black borders.

Mild intensity ranges, because lung-window grey levels encode Hounsfield units.  With the default window of the
patch extractor (-1350..150 HU onto -1..1, 750 HU per unit), brightness_max 0.05 moves the window level by at most
37.5 HU (6.4 of 255 grey levels), and contrast_max 0.1 is a window width between 1364 and 1650 HU instead of 1500.
Geometric ranges are small too (10 degrees, 10 % zoom): nodule size and margin are what tells the subtypes apart.
"""
import math

import numpy as np

from nodules.gan import tfutil
from nodules.training import settings as training_settings
from nodules.util.tfcompat import tf

# The policies and augmentations a run can ask for, and what each policy applies unless told otherwise, are
# declared with the training settings (training_settings, which 3-train.py reads without TensorFlow).
POLICIES = training_settings.AUGMENT_POLICIES
AUGMENTATIONS = training_settings.AUGMENTATIONS
POLICY_AUGMENTATIONS = training_settings.POLICY_AUGMENTATIONS
_SETTINGS = training_settings.defaults_for('augment')  # the defaults of ada_target, ada_kimg

GEOMETRIC = ('xflip', 'yflip', 'rotate90', 'translate', 'scale', 'rotate')
RESAMPLED = ('scale', 'rotate')  # the geometric augmentations that move pixels by fractions (bilinear)

# The per-sample parameters, one column each of a [N, len(PARAMETERS)] float32 tensor, with the value that leaves an
# image unchanged.  Translations are in whole pixels (content moves right / down), angles in degrees, cutout_x/_y
# the centre of the hole as a fraction of the side (0 = left / top edge), cutout 1 where the hole is cut.
PARAMETERS = (('xflip', 0.0), ('yflip', 0.0), ('rotate90', 0.0), ('translate_x', 0.0), ('translate_y', 0.0),
              ('scale', 1.0), ('rotate', 0.0), ('brightness', 0.0), ('contrast', 1.0),
              ('cutout', 0.0), ('cutout_x', 0.5), ('cutout_y', 0.5))
COLUMN = {name: index for index, (name, _) in enumerate(PARAMETERS)}
IDENTITY = np.array([value for _, value in PARAMETERS], np.float32)


def pack(count, **columns):
    """float32 [count, len(PARAMETERS)] parameters: identity except the named columns (scalars or [count])."""
    params = np.tile(IDENTITY, (count, 1))
    for name, values in columns.items():
        if name not in COLUMN:
            raise ValueError('unknown augmentation parameter %r (known: %s)' % (name, ', '.join(COLUMN)))
        params[:, COLUMN[name]] = values
    return params


def switches(enable=(), disable=()):
    """Keyword arguments of AugmentPipe that turn the named augmentations on or off (e.g. from command-line lists)."""
    unknown = [name for name in list(enable) + list(disable) if name not in AUGMENTATIONS]
    if unknown:
        raise ValueError('unknown augmentation %s (known: %s)' % (', '.join(unknown), ', '.join(AUGMENTATIONS)))
    both = sorted(set(enable) & set(disable))
    if both:
        raise ValueError('augmentation %s both enabled and disabled' % ', '.join(both))
    kwargs = {name: True for name in enable}
    kwargs.update({name: False for name in disable})
    return kwargs


class AugmentPipe(object):
    """One augmentation policy with its probability p and the overfitting heuristic that steers p (for `ada`).

    Build it once, before the graph is finalised; it owns four non-trainable variables under `name`/: `p`, `rt`
    (r_t of the last update) and the running sum and count of sign(D(real)) since then.  Per minibatch and role
    (reals, fakes, ...): `params = pipe.draw(minibatch, resolution)`, then `pipe.apply(images, params)`.  Run
    `pipe.accumulate(real_scores, fake_scores)` with each discriminator step, and `pipe.update_op` on its own every
    4 minibatches (ADA's interval): never in the same run as a draw, which reads p.
    """

    def __init__(self, policy='ada',
                 xflip=None, yflip=None, rotate90=None, translate=None, scale=None, rotate=None,   # None: as the
                 brightness=None, contrast=None, cutout=None,                                    # policy says
                 translate_max=0.125,   # largest shift, fraction of the image side (rounded to whole pixels)
                 scale_max=0.1,         # zoom factors within [1/(1+scale_max), 1+scale_max]
                 rotate_max=10.0,       # largest rotation, degrees
                 brightness_max=0.05,   # largest offset in -1..1 units (37.5 HU in the default lung window)
                 contrast_max=0.1,      # contrast factors within [1/(1+contrast_max), 1+contrast_max]
                 cutout_size=0.5,       # side of the cut square, fraction of the image side
                 cutout_value=0.0,      # value of the cut square (0 = mid-window grey, as both papers)
                 initial_p=0.0,         # ada: p at the start of training (restored with set_p on resume)
                 ada_target=_SETTINGS['ada_target'],  # ada: target of r_t; None keeps p fixed at initial_p
                 ada_kimg=_SETTINGS['ada_kimg'],      # ada: thousands of images for p to move from 0 to 1
                 name='Augment'):
        if policy not in POLICIES:
            raise ValueError('unknown augmentation policy %r (known: %s)' % (policy, ', '.join(POLICIES)))
        chosen = dict(xflip=xflip, yflip=yflip, rotate90=rotate90, translate=translate, scale=scale, rotate=rotate,
                      brightness=brightness, contrast=contrast, cutout=cutout)
        if policy == 'none' and any(chosen.values()):
            raise ValueError('policy "none" applies no augmentation; choose diffaugment or ada to enable %s'
                             % ', '.join(k for k in AUGMENTATIONS if chosen[k]))
        self.policy = policy
        self.enabled = tuple(k for k in AUGMENTATIONS
                             if (k in POLICY_AUGMENTATIONS[policy] if chosen[k] is None else chosen[k]))
        self.adaptive = policy == 'ada' and ada_target is not None
        self.translate_max, self.scale_max, self.rotate_max = translate_max, scale_max, rotate_max
        self.brightness_max, self.contrast_max = brightness_max, contrast_max
        self.cutout_size, self.cutout_value = cutout_size, cutout_value
        self.ada_target, self.ada_kimg = ada_target, ada_kimg
        self.name = name
        self.config = dict(policy=policy, augmentations=list(self.enabled), translate_max=translate_max,
                           scale_max=scale_max, rotate_max=rotate_max, brightness_max=brightness_max,
                           contrast_max=contrast_max, cutout_size=cutout_size, cutout_value=cutout_value)
        if policy == 'ada':
            self.config.update(initial_p=initial_p, ada_target=ada_target, ada_kimg=ada_kimg)

        with tf.name_scope(name):
            fixed_p = {'none': 0.0, 'diffaugment': 1.0}.get(policy, initial_p)
            # p is a variable for every policy so that the training loop reads, logs and stores it the same way.
            self.p = tf.Variable(np.float32(fixed_p), trainable=False, name='p')
            self._sign_sum = tf.Variable(np.float32(0), trainable=False, name='real_sign_sum')
            self._sign_count = tf.Variable(np.float32(0), trainable=False, name='real_sign_count')
            self.rt = tf.Variable(np.float32(0), trainable=False, name='rt')
            self._p_in = tf.placeholder(tf.float32, [], name='p_in')
            self._set_p_op = tf.assign(self.p, tf.clip_by_value(self._p_in, 0.0, 1.0))
            self.update_op = self._build_update()

    # ------------------------------------------------------------------------------------------------------------
    # Random parameters

    def draw(self, minibatch, resolution):
        """Random parameters float32 [minibatch, len(PARAMETERS)] for images of resolution x resolution.

        Each enabled augmentation is switched on per sample with probability p (always, for diffaugment) and
        draws its values; disabled ones and those switched off keep the identity.
        """
        with tf.name_scope(self.name + '_draw'):
            columns = [tf.fill([minibatch], value) for value in IDENTITY]
            uniform = lambda low=0.0, high=1.0: tf.random_uniform([minibatch], low, high)
            log_uniform = lambda spread: tf.exp(uniform(-1.0, 1.0) * float(np.log1p(spread)))
            integers = lambda count: tf.minimum(tf.floor(uniform() * count), count - 1.0)  # 0 .. count-1

            def set_if_applied(names_and_values):
                applied = uniform() < self.p
                for name, value in names_and_values:
                    columns[COLUMN[name]] = tf.where(applied, value, columns[COLUMN[name]])

            if 'xflip' in self.enabled:
                set_if_applied([('xflip', integers(2))])
            if 'yflip' in self.enabled:
                set_if_applied([('yflip', integers(2))])
            if 'rotate90' in self.enabled:
                set_if_applied([('rotate90', integers(4))])
            if 'translate' in self.enabled:
                shift = int(self.translate_max * resolution + 0.5)
                set_if_applied([('translate_x', integers(2 * shift + 1) - shift),
                                ('translate_y', integers(2 * shift + 1) - shift)])
            if 'scale' in self.enabled:
                set_if_applied([('scale', log_uniform(self.scale_max))])
            if 'rotate' in self.enabled:
                set_if_applied([('rotate', uniform(-self.rotate_max, self.rotate_max))])
            if 'brightness' in self.enabled:
                set_if_applied([('brightness', uniform(-self.brightness_max, self.brightness_max))])
            if 'contrast' in self.enabled:
                set_if_applied([('contrast', log_uniform(self.contrast_max))])
            if 'cutout' in self.enabled:
                set_if_applied([('cutout', tf.ones([minibatch])), ('cutout_x', uniform()), ('cutout_y', uniform())])
            return tf.stack(columns, axis=1)

    # ------------------------------------------------------------------------------------------------------------
    # Applying them

    def apply(self, images, params):
        """Augmented NHWC images; differentiable w.r.t. `images`; identity (bit for bit) where params are identity.

        Only the enabled augmentations are built into the graph; the other columns of `params` are ignored.
        """
        if not self.enabled:
            return images
        with tf.name_scope(self.name + '_apply'):
            column = lambda name: params[:, COLUMN[name]]
            x = images
            if any(k in self.enabled for k in GEOMETRIC):
                x = self._transform(x, params)
            if 'brightness' in self.enabled:
                x = x + column('brightness')[:, None, None, None]
            if 'contrast' in self.enabled:
                # x + (x - mean)(c - 1) rather than mean + (x - mean) c: exactly x when c = 1.
                mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
                x = x + (x - mean) * (column('contrast') - 1.0)[:, None, None, None]
            if 'cutout' in self.enabled:
                x = self._cutout(x, params)
            return x

    def __call__(self, images, resolution=None):
        """apply(images, draw(...)) with fresh parameters: for one-device use and interactive experiments."""
        resolution = resolution or images.shape.as_list()[1]
        return self.apply(images, self.draw(tf.shape(images)[0], resolution))

    def _transform(self, images, params):
        """All enabled geometric augmentations as one resampling: nearest for whole pixels, else bilinear."""
        _, height, width, channels = images.shape.as_list()
        column = lambda name: params[:, COLUMN[name]]
        zeros, ones = tf.zeros_like(column('xflip')), tf.ones_like(column('xflip'))

        def matrix(rows):  # 3x3 nested lists of [N] tensors -> [N, 3, 3]
            return tf.stack([tf.stack(row, axis=-1) for row in rows], axis=-2)

        def rotation(cos, sin):
            return matrix([[cos, -sin, zeros], [sin, cos, zeros], [zeros, zeros, ones]])

        # Each augmentation moves the image content; the pixel an output pixel takes its value from is found by
        # undoing them, last first: source = U_xflip U_yflip U_rotate90 U_translate U_scale U_rotate . output,
        # in coordinates centred on the image (x right, y down).
        undo = []
        if 'xflip' in self.enabled:
            undo.append(matrix([[1.0 - 2.0 * column('xflip'), zeros, zeros], [zeros, ones, zeros],
                                [zeros, zeros, ones]]))
        if 'yflip' in self.enabled:
            undo.append(matrix([[ones, zeros, zeros], [zeros, 1.0 - 2.0 * column('yflip'), zeros],
                                [zeros, zeros, ones]]))
        if 'rotate90' in self.enabled:
            quarter = tf.floormod(tf.cast(tf.round(column('rotate90')), tf.int32), 4)
            undo.append(rotation(tf.gather(tf.constant([1.0, 0.0, -1.0, 0.0]), quarter),  # exact, unlike cos()
                                 tf.gather(tf.constant([0.0, 1.0, 0.0, -1.0]), quarter)))
        if 'translate' in self.enabled:
            undo.append(matrix([[ones, zeros, -column('translate_x')], [zeros, ones, -column('translate_y')],
                                [zeros, zeros, ones]]))
        if 'scale' in self.enabled:
            zoom = column('scale')
            # 1 / x can run as an approximate reciprocal (1 / 1 gave 0.99999994 on an AVX-512 CPU): keep the
            # identity exact.
            shrink = tf.where(tf.equal(zoom, 1.0), ones, 1.0 / zoom)
            undo.append(matrix([[shrink, zeros, zeros], [zeros, shrink, zeros], [zeros, zeros, ones]]))
        if 'rotate' in self.enabled:
            radians = column('rotate') * (math.pi / 180.0)
            undo.append(rotation(tf.cos(radians), tf.sin(radians)))
        source = undo[0]
        for step in undo[1:]:
            source = tf.matmul(source, step)

        centre_x, centre_y = (width - 1) / 2.0, (height - 1) / 2.0
        grid_x = tf.constant(np.tile(np.arange(width) - centre_x, height)[None].astype(np.float32))   # [1, H*W]
        grid_y = tf.constant(np.repeat(np.arange(height) - centre_y, width)[None].astype(np.float32))
        source_x = source[:, 0, 0:1] * grid_x + source[:, 0, 1:2] * grid_y + source[:, 0, 2:3] + centre_x
        source_y = source[:, 1, 0:1] * grid_x + source[:, 1, 1:2] * grid_y + source[:, 1, 2:3] + centre_y

        flat = tf.reshape(images, [-1, channels])
        first_pixel = (tf.range(tf.shape(images)[0]) * (height * width))[:, None]

        def pixels(ix, iy):  # [N, H*W] integer coordinates, reflected into the image -> [N, H*W, C]
            return tf.gather(flat, first_pixel + _reflect(iy, height) * width + _reflect(ix, width))

        if not any(k in self.enabled for k in RESAMPLED):
            to_int = lambda v: tf.cast(tf.round(v), tf.int32)
            out = pixels(to_int(source_x), to_int(source_y))
        else:
            x0, y0 = tf.floor(source_x), tf.floor(source_y)
            fx, fy = (source_x - x0)[:, :, None], (source_y - y0)[:, :, None]
            ix, iy = tf.cast(x0, tf.int32), tf.cast(y0, tf.int32)
            # (1 - f) a + f b, which is exactly a when f = 0 (integer positions stay bit-exact).
            top = pixels(ix, iy) * (1.0 - fx) + pixels(ix + 1, iy) * fx
            bottom = pixels(ix, iy + 1) * (1.0 - fx) + pixels(ix + 1, iy + 1) * fx
            out = top * (1.0 - fy) + bottom * fy
        return tf.reshape(out, [-1, height, width, channels])

    def _cutout(self, images, params):
        _, height, width, _ = images.shape.as_list()
        column = lambda name: params[:, COLUMN[name]]
        half = self.cutout_size / 2.0
        centres_x = tf.constant(((np.arange(width) + 0.5) / width)[None].astype(np.float32))     # [1, W]
        centres_y = tf.constant(((np.arange(height) + 0.5) / height)[None].astype(np.float32))   # [1, H]
        inside_x = tf.cast(tf.abs(centres_x - column('cutout_x')[:, None]) < half, tf.float32)  # [N, W]
        inside_y = tf.cast(tf.abs(centres_y - column('cutout_y')[:, None]) < half, tf.float32)  # [N, H]
        hole = inside_y[:, :, None, None] * inside_x[:, None, :, None] * column('cutout')[:, None, None, None]
        return images * (1.0 - hole) + self.cutout_value * hole  # exact both inside and outside the hole

    # ------------------------------------------------------------------------------------------------------------
    # The overfitting heuristic and p

    def accumulate(self, real_scores, fake_scores=None):
        """Op adding the signs of a minibatch's real scores to the running sum: sign(D(real)) for a logistic
        discriminator, sign(D(real) - threshold) for a WGAN critic when `fake_scores` are given, the threshold
        being the midpoint of the minibatch's mean real and mean fake score.  Pass the scores of ALL devices in one
        list each (one update of the sums per step: separate ops per device could race on the variables)."""
        flat = lambda scores: tf.concat([tf.reshape(s, [-1]) for s in
                                         (scores if isinstance(scores, (list, tuple)) else [scores])], axis=0)
        with tf.name_scope(self.name + '_accumulate'):
            scores = flat(real_scores)
            if fake_scores is not None:
                scores -= (tf.reduce_mean(scores) + tf.reduce_mean(flat(fake_scores))) * 0.5
            return tf.group(tf.assign_add(self._sign_sum, tf.reduce_sum(tf.sign(scores))),
                            tf.assign_add(self._sign_count, tf.cast(tf.size(scores), tf.float32)))

    def _build_update(self):
        """r_t = mean sign since the last update; ada moves p by sign(r_t - target) * images / (ada_kimg * 1000),
        clipped to 0..1; the sums restart.  Fixed policies only record r_t (a useful overfitting signal anyway)."""
        count, total = tf.identity(self._sign_count), tf.identity(self._sign_sum)
        rt = tf.where(count > 0, total / tf.maximum(count, 1.0), tf.identity(self.rt))
        assignments = [tf.assign(self.rt, rt)]
        if self.adaptive:
            step = tf.sign(rt - self.ada_target) * count / (self.ada_kimg * 1000.0)
            assignments.append(tf.assign(self.p, tf.clip_by_value(self.p + step, 0.0, 1.0)))
        with tf.control_dependencies(assignments):
            return tf.group(tf.assign(self._sign_sum, 0.0), tf.assign(self._sign_count, 0.0), name='update')

    def get_p(self):
        return float(tfutil.run(self.p))

    def get_rt(self):
        return float(tfutil.run(self.rt))

    def set_p(self, value):
        """Restore p (from a snapshot, on resume); only meaningful for ada, whose p changes."""
        if self.policy != 'ada':
            raise ValueError('policy %s has a fixed probability; only ada restores p' % self.policy)
        tfutil.run(self._set_p_op, {self._p_in: value})


def _reflect(index, size):
    """Integer positions mirrored into 0..size-1 about the edge pixels (... 2 1 | 0 1 2 ... | size-2 ...)."""
    period = 2 * (size - 1)
    index = tf.floormod(index, period)
    return tf.minimum(index, period - index)


# ----------------------------------------------------------------------------------------------------------------
# Leak check: does a set of (generated) images keep the orientation of the reals?


def orientation_statistics(images, bins=16):
    """Orientation statistics of an image set [N, C, H, W] (any real scale; channels are averaged).

    left_right, top_bottom: mean over the set of (mean of the left half - mean of the right half), and of top -
        bottom, in units of the set's pixel standard deviation; a flip changes their sign.
    gradient_histogram: [bins] directions of the intensity gradient over -180..180 degrees, weighted by its
        magnitude, summing to 1; flips mirror it, rotations shift it.
    principal_histogram: [bins] each image's dominant orientation (structure tensor) over 0..180 degrees,
        weighted by how strongly oriented the image is, summing to 1.
    """
    x = np.asarray(images, np.float64).mean(axis=1)
    if x.ndim != 3 or x.shape[1] < 2 or x.shape[2] < 2 or len(x) == 0:
        raise ValueError('expected a non-empty batch [N, C, H, W] of images of at least 2x2, got shape %s'
                         % (list(np.shape(images)),))
    x = x - x.mean(axis=(1, 2), keepdims=True)
    scale = x.std() or 1.0
    height, width = x.shape[1:]
    left, right = x[:, :, :width // 2].mean(), x[:, :, width - width // 2:].mean()
    top, bottom = x[:, :height // 2].mean(), x[:, height - height // 2:].mean()
    gy, gx = np.gradient(x, axis=(1, 2))  # y down, x right, as the images are stored
    magnitude = np.hypot(gx, gy)
    gradient_histogram = np.histogram(np.degrees(np.arctan2(gy, gx)), bins, range=(-180.0, 180.0),
                                      weights=magnitude)[0]
    jxx, jyy, jxy = (gx * gx).sum(axis=(1, 2)), (gy * gy).sum(axis=(1, 2)), (gx * gy).sum(axis=(1, 2))
    principal = np.degrees(0.5 * np.arctan2(2.0 * jxy, jxx - jyy)) % 180.0
    coherence = np.hypot(jxx - jyy, 2.0 * jxy) / np.maximum(jxx + jyy, 1e-12)
    principal_histogram = np.histogram(principal, bins, range=(0.0, 180.0), weights=coherence)[0]
    normalise = lambda h: h / max(h.sum(), 1e-12)
    return dict(left_right=(left - right) / scale, top_bottom=(top - bottom) / scale,
                gradient_histogram=normalise(gradient_histogram), principal_histogram=normalise(principal_histogram))


def orientation_difference(stats_a, stats_b):
    """How far apart two sets' orientation_statistics are: absolute differences of the half means, and total
    variation distances (0 = same, 1 = disjoint) of the histograms."""
    return dict(left_right=abs(stats_a['left_right'] - stats_b['left_right']),
                top_bottom=abs(stats_a['top_bottom'] - stats_b['top_bottom']),
                gradient_histogram=0.5 * float(np.abs(stats_a['gradient_histogram']
                                                      - stats_b['gradient_histogram']).sum()),
                principal_histogram=0.5 * float(np.abs(stats_a['principal_histogram']
                                                       - stats_b['principal_histogram']).sum()))
