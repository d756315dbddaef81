"""Synthetic lung-CT phantoms of subcentimetre adenocarcinoma nodules.

These images are procedurally generated phantoms, NOT patient data.  They
imitate lung-window CT crops centred on a small nodule so that the GAN
pipeline can be demonstrated without shipping any real scans:

  AIS  adenocarcinoma in situ:            pure ground glass, faint and hazy
  MIA  minimally invasive adenocarcinoma: ground-glass halo + small solid core
  IAC  invasive adenocarcinoma:           dense solid, lobulated / spiculated

Each patch is built in Hounsfield units (HU): parenchyma, vessel trees and
vessel cross-sections, sometimes chest wall and rib, then the nodule.  It is
then blurred by a CT-like point spread function, given correlated noise,
windowed and quantised to uint8.

Reproducibility: every patch has its own random stream, seeded from
(seed, subtype, patch index), so the first N patches of a larger run equal a
run of N.  Array maths uses only + - * / sqrt, min, max, floor and rint
(exact or correctly rounded in IEEE 754), sums run in a fixed order, and
trigonometry and exp go through Python's math module (the C library) on
scalars.  So NumPy 1.16 and NumPy 2.x - whose SIMD exp, sin and pow may
differ in the last bit - give identical bytes on the same machine.
"""
import math
from itertools import accumulate

import numpy as np

SUBTYPES = ('AIS', 'MIA', 'IAC')
_SUBTYPE_CODES = {'AIS': 0x41495301, 'MIA': 0x4D494102, 'IAC': 0x49414303}
_CHUNK = 32           # patches rendered together; the output does not depend on it
_STEP = 1.0           # spacing (px) of points along vessel and spicule centre lines
_SAMPLE = 0.5         # spacing (px) of the area samples that paint them
_SUBSTEPS = 2         # area samples along the line per centre-line point
_HARMONICS = 6        # Fourier terms in a nodule outline
_TAU = 2.0 * math.pi


def _smoothstep(t):
    """0 for t <= -1, 1 for t >= 1, a smooth cubic in between (a polynomial, so bit-exact everywhere)."""
    u = np.minimum(np.maximum(t * 0.5 + 0.5, 0.0), 1.0)
    return u * u * (3.0 - 2.0 * u)


def _gauss_taps(sigma_px):
    radius = max(1, int(math.ceil(3.0 * sigma_px)))
    weights = [math.exp(-0.5 * (i / sigma_px) ** 2) for i in range(-radius, radius + 1)]
    total = sum(weights)
    return [w / total for w in weights]


def _blur_valid(images, taps):
    """Separable convolution of [B, H, W] images, dropping the border the kernel cannot fill."""
    n = len(taps)
    height, width = images.shape[1] - n + 1, images.shape[2] - n + 1
    rows = taps[0] * images[:, :, 0:width]
    for i in range(1, n):
        rows = rows + taps[i] * images[:, :, i:i + width]
    out = taps[0] * rows[:, 0:height, :]
    for i in range(1, n):
        out = out + taps[i] * rows[:, i:i + height, :]
    return out


class _BSplineNoise(object):
    """Smooth random field: a coarse grid of unit normals upsampled with cubic B-splines (no blur cost)."""

    def __init__(self, size, cell_px):
        u = (np.arange(size, dtype=np.float64) + 0.5) / cell_px
        base = np.floor(u)
        t = (u - base).reshape(size, 1)
        s = 1.0 - t
        self.index = base.astype(np.int64).reshape(size, 1) + np.arange(4).reshape(1, 4)
        self.weight = np.concatenate([s * s * s, (3.0 * t - 6.0) * t * t + 4.0,
                                      ((-3.0 * t + 3.0) * t + 3.0) * t + 1.0, t * t * t], axis=1) / 6.0
        self.grid = int(self.index.max()) + 1
        self.gain = 1.0 / 0.48     # B-spline smoothing leaves unit noise with a variance of ~0.48 in 2-D

    def __call__(self, coarse):
        rows = 0.0
        for j in range(4):
            rows = rows + self.weight[:, j] * coarse[:, :, self.index[:, j]]
        out = 0.0
        for i in range(4):
            out = out + self.weight[:, i].reshape(-1, 1) * rows[:, self.index[:, i], :]
        return out * self.gain


class _Geometry(object):
    """Everything that depends only on resolution and pixel size."""

    def __init__(self, resolution, mm_per_pixel):
        self.size = resolution
        self.px = resolution / (64.0 * mm_per_pixel)   # pixels per mm; the field of view stays 64 * mm_per_pixel
        self.centre = (resolution - 1) / 2.0
        self.half = resolution / 2.0
        coords = np.arange(resolution, dtype=np.float64)
        self.x = coords.reshape(1, 1, resolution)
        self.y = coords.reshape(1, resolution, 1)
        self.splat_taps = _gauss_taps(0.35 * self.px)  # anti-aliasing of painted vessels
        self.psf_taps = _gauss_taps(0.30 * self.px)    # reconstruction kernel
        self.noise_taps = _gauss_taps(0.50 * self.px)  # grain of the CT noise
        self.noise_gain = 1.0 / sum(w * w for w in self.noise_taps)   # back to unit standard deviation
        self.noise_shape = (resolution + len(self.noise_taps) - 1,) * 2
        self.coarse = _BSplineNoise(resolution, 5.0 * self.px)   # slow density variation of the lung
        self.fine = _BSplineNoise(resolution, 1.6 * self.px)     # lobular texture, ground-glass mottling


# ----------------------------------------------------------------------------- vessels and spicules

class _Strokes(object):
    """Centre-line points (x, y, direction cos/sin, radius, weight) and dots (x, y, radius, weight) of one patch.

    Plain Python lists and floats: branches are short, and NumPy's per-call overhead would dominate.
    """

    def __init__(self):
        self.columns = ([], [], [], [], [], [])
        self.dots = []

    def add_line(self, *columns):
        for column, values in zip(self.columns, columns):
            column.extend(values)


def _smooth1(t):
    """_smoothstep for one Python float."""
    u = min(max(t * 0.5 + 0.5, 0.0), 1.0)
    return u * u * (3.0 - 2.0 * u)


def _walk(rs, g, x, y, heading, length_mm, curl):
    """A gently curving path of points _STEP px apart: lists x, y, cos, sin and the final heading.

    curl is the heading's random-walk spread in radians per sqrt(mm), so shapes do not depend on resolution.
    """
    n = max(2, int(length_mm * g.px / _STEP))
    turns = (rs.normal(0.0, curl * math.sqrt(_STEP / g.px), n)).tolist()
    headings = list(accumulate([heading] + turns))[1:]
    cs = list(map(math.cos, headings))    # math, not np.cos: see the module docstring
    ss = list(map(math.sin, headings))
    xs = list(accumulate([x] + [_STEP * c for c in cs]))[1:]
    ys = list(accumulate([y] + [_STEP * s for s in ss]))[1:]
    return xs, ys, cs, ss, headings[-1]


def _grow_tree(rs, g, strokes, x, y, heading, radius, budget):
    """Pulmonary vessels: tapering segments that fork into a thicker and a thinner daughter."""
    limit = 1.6 * g.half    # far enough outside the field of view that nothing there is visible
    min_radius = 0.18 * g.px
    stack = [(x, y, heading, radius, 0, rs.uniform(0.75, 1.0))]
    while stack:
        x, y, heading, radius, depth, weight = stack.pop()
        xs, ys, cs, ss, heading = _walk(rs, g, x, y, heading, rs.uniform(6.0, 14.0), 0.06)
        n = len(xs)
        taper = radius * rs.uniform(0.05, 0.2) / n
        radii = [radius - taper * (i + 1) for i in range(n)]
        weights = [weight] * n
        left = abs(xs[-1] - g.centre) >= limit or abs(ys[-1] - g.centre) >= limit
        # some branches dive out of the slice instead of forking
        forks = not left and depth < 4 and radii[-1] > min_radius and budget[0] >= 2 and rs.uniform() < 0.8
        if not forks and not left:
            # a vessel ending inside the patch is leaving the slice: partial volume fades it out
            fades = [_smooth1(3.0 - 4.0 * i / (n - 1)) for i in range(n)]
            weights = [weight * f for f in fades]
            radii = [r * (0.4 + 0.6 * f) for r, f in zip(radii, fades)]
        strokes.add_line(xs, ys, cs, ss, radii, weights)
        if not forks:
            continue
        side = 1.0 if rs.uniform() < 0.5 else -1.0
        if rs.uniform() < 0.7:
            children = [(side * rs.uniform(0.08, 0.35), rs.uniform(0.78, 0.92)),
                        (-side * rs.uniform(0.45, 1.0), rs.uniform(0.5, 0.72))]
        else:
            children = [(rs.normal(0.0, 0.1), rs.uniform(0.9, 1.0))]
        for turn, shrink in children:
            if radii[-1] * shrink > min_radius:
                budget[0] -= 1
                stack.append((xs[-1], ys[-1], heading + turn, radii[-1] * shrink, depth + 1,
                              weight * rs.uniform(0.85, 1.0)))


def _draw_vessels(rs, g, strokes):
    budget = [16]     # branches per patch, so that the lung does not become a thicket
    for tree in range(rs.randint(1, 4)):
        entry = rs.uniform(0.0, _TAU)
        # start just outside the square field of view, so that trunks enter from the edge
        distance = g.half * rs.uniform(1.05, 1.3) / max(abs(math.cos(entry)), abs(math.sin(entry)))
        x = g.centre + distance * math.cos(entry)
        y = g.centre + distance * math.sin(entry)
        # the first tree often runs through the nodule, as vessels do through ground glass
        aim = rs.normal(0.0, 0.08) if (tree == 0 and rs.uniform() < 0.6) else rs.uniform(-0.7, 0.7)
        _grow_tree(rs, g, strokes, x, y, entry + math.pi + aim, rs.uniform(0.45, 1.15) * g.px, budget)
    for _ in range(rs.randint(2, 8)):
        # vessels running through the slice show up as round dots
        strokes.dots.append((rs.uniform(0.0, g.size - 1.0), rs.uniform(0.0, g.size - 1.0),
                             rs.uniform(0.35, 1.0) * g.px, rs.uniform(0.6, 1.0)))


def _area_samples(patches):
    """Expand centre lines and dots of a chunk into (patch, x, y, area) samples on a _SAMPLE grid."""
    parts = []
    lengths = [len(strokes.columns[0]) for strokes in patches]
    if sum(lengths):
        b = np.repeat(np.arange(len(patches)), lengths)
        x, y, cos_h, sin_h, radius, weight = [
            np.array([v for strokes in patches for v in strokes.columns[i]], dtype=np.float64) for i in range(6)]
        k = int(math.ceil(float(radius.max()) / _SAMPLE))
        across = np.arange(-k, k + 1) * _SAMPLE
        # exact 1-D overlap of each sample's cell with the vessel's cross-section, so thin vessels keep their area
        cover = np.maximum(np.minimum(across + 0.5 * _SAMPLE, radius[:, None])
                           - np.maximum(across - 0.5 * _SAMPLE, -radius[:, None]), 0.0)
        area = cover * (weight * (_STEP / _SUBSTEPS))[:, None]
        for j in range(_SUBSTEPS):
            # fill in between centre-line points, which are _STEP apart
            back = j * _STEP / _SUBSTEPS
            parts.append((np.broadcast_to(b[:, None], cover.shape),
                          (x - back * cos_h)[:, None] - sin_h[:, None] * across,
                          (y - back * sin_h)[:, None] + cos_h[:, None] * across, area))
    dots = [(b,) + dot for b, strokes in enumerate(patches) for dot in strokes.dots]
    if dots:
        b = np.array([dot[0] for dot in dots], dtype=np.int64).reshape(-1, 1, 1)
        x, y, radius, weight = [np.array([dot[i] for dot in dots]).reshape(-1, 1, 1) for i in range(1, 5)]
        k = int(math.ceil(float(radius.max()) / _SAMPLE))
        offset = np.arange(-k, k + 1) * _SAMPLE
        dx, dy = offset.reshape(1, 1, -1), offset.reshape(1, -1, 1)
        cover = np.minimum(np.maximum((radius - np.sqrt(dx * dx + dy * dy)) / _SAMPLE + 0.5, 0.0), 1.0)
        parts.append((np.broadcast_to(b, cover.shape), x + dx + 0.0 * dy, y + dy + 0.0 * dx,
                      cover * (weight * _SAMPLE * _SAMPLE)))
    keep = [part[3] > 0.0 for part in parts]
    return [np.concatenate([part[i][ok] for part, ok in zip(parts, keep)] + [np.zeros(0)]) for i in range(4)]


def _paint(patches, g):
    """Bilinear splat of all area samples into [B, H, W] occupancy (np.bincount adds in a fixed order)."""
    margin = len(g.splat_taps) // 2
    side = g.size + 2 * margin
    b, x, y, w = _area_samples(patches)
    x, y = x + margin, y + margin
    # samples beyond the canvas (branches running outside the field of view) cannot affect it
    near = (x > -1.0) & (x < side) & (y > -1.0) & (y < side)
    b, x, y, w = b[near].astype(np.int64), x[near], y[near], w[near]
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    ix, iy = x0.astype(np.int64), y0.astype(np.int64)
    index, value = [], []
    for ox, oy, share in ((0, 0, (1.0 - fx) * (1.0 - fy)), (1, 0, fx * (1.0 - fy)),
                          (0, 1, (1.0 - fx) * fy), (1, 1, fx * fy)):
        jx, jy = ix + ox, iy + oy
        ok = (jx >= 0) & (jx < side) & (jy >= 0) & (jy < side)
        index.append(((b * side + jy) * side + jx)[ok])
        value.append((w * share)[ok])
    canvas = np.bincount(np.concatenate(index), np.concatenate(value), minlength=len(patches) * side * side)
    return np.minimum(_blur_valid(canvas.reshape(len(patches), side, side), g.splat_taps), 1.0)


# ----------------------------------------------------------------------------- nodule

def _blob(rs, cx, cy, radius_mm, edge_mm, density, mottle, roughness, g):
    """A radial-Fourier blob: [cx, cy, R, edge, density, mottle, a_1..a_6, b_1..b_6], lengths in px."""
    a, b = [], []
    for k in range(_HARMONICS):
        amplitude = rs.uniform(0.0, roughness[k]) if k < len(roughness) else 0.0
        phase = rs.uniform(0.0, _TAU)
        a.append(amplitude * math.cos(phase))
        b.append(amplitude * math.sin(phase))
    return [cx, cy, radius_mm * g.px, edge_mm * g.px, density, mottle] + a + b


def _blob_radius(blob, angle):
    shape = 1.0
    for k in range(_HARMONICS):
        shape += blob[6 + k] * math.cos((k + 1) * angle) + blob[6 + _HARMONICS + k] * math.sin((k + 1) * angle)
    return blob[2] * shape


def _draw_nodule(rs, subtype, g, strokes):
    """Returns (ground-glass blob, solid blob, bubbles); None switches a component off."""
    jitter = 3.0 * g.size / 64.0
    cx = g.centre + rs.uniform(-jitter, jitter)
    cy = g.centre + rs.uniform(-jitter, jitter)
    if subtype == 'AIS':
        glass = _blob(rs, cx, cy, rs.uniform(2.8, 5.0), rs.uniform(1.0, 1.8), rs.uniform(0.18, 0.34),
                      rs.uniform(0.15, 0.35), [0.06, 0.14, 0.08, 0.05, 0.03, 0.02], g)
        return glass, None, []
    if subtype == 'MIA':
        radius = rs.uniform(3.0, 5.0)
        glass = _blob(rs, cx, cy, radius, rs.uniform(0.9, 1.5), rs.uniform(0.2, 0.36),
                      rs.uniform(0.08, 0.22), [0.06, 0.14, 0.08, 0.05, 0.03, 0.02], g)
        core_radius = rs.uniform(1.1, 2.5)   # the solid part of an MIA is at most ~5 mm across
        shift, angle = rs.uniform(0.0, 0.35) * (radius - core_radius) * g.px, rs.uniform(0.0, _TAU)
        core = _blob(rs, cx + shift * math.cos(angle), cy + shift * math.sin(angle), core_radius,
                     rs.uniform(0.4, 0.7), rs.uniform(0.7, 0.95), 0.08, [0.08, 0.18, 0.1, 0.05], g)
        return glass, core, []
    radius = rs.uniform(2.6, 5.0)
    solid = _blob(rs, cx, cy, radius, rs.uniform(0.3, 0.5), rs.uniform(0.9, 1.0), 0.04,
                  [0.05, 0.09, 0.1, 0.08, 0.06, 0.04], g)
    glass = None
    if rs.uniform() < 0.5:
        glass = _blob(rs, cx, cy, radius * rs.uniform(1.15, 1.45), rs.uniform(0.7, 1.1),
                      rs.uniform(0.12, 0.26), 0.25, [0.04, 0.1, 0.06, 0.04], g)
    if rs.uniform() < 0.75:
        # spicules: thin strands of fibrosis radiating from the margin
        for _ in range(rs.randint(3, 13)):
            angle = rs.uniform(0.0, _TAU)
            start = 0.8 * _blob_radius(solid, angle)
            length = rs.uniform(4.0, 9.0) if rs.uniform() < 0.3 else rs.uniform(1.5, 4.0)
            xs, ys, cs, ss, _ = _walk(rs, g, cx + start * math.cos(angle), cy + start * math.sin(angle),
                                      angle + rs.normal(0.0, 0.25), length, 0.12)
            n, root, tip = len(xs), rs.uniform(0.2, 0.4) * g.px, 0.08 * g.px
            radii = [root + (tip - root) * i / (n - 1) for i in range(n)]
            strokes.add_line(xs, ys, cs, ss, radii, [rs.uniform(0.5, 1.0)] * n)
    bubbles = []
    if rs.uniform() < 0.1:
        # air bronchogram / bubble-like lucency inside the solid part
        for _ in range(rs.randint(1, 3)):
            angle, reach = rs.uniform(0.0, _TAU), rs.uniform(0.0, 0.5) * radius * g.px
            bubbles.append((cx + reach * math.cos(angle), cy + reach * math.sin(angle), rs.uniform(0.45, 0.8) * g.px))
    return glass, solid, bubbles


def _render_blobs(blobs, mottle, g):
    """Soft-tissue occupancy [B, H, W] of one blob per patch (None: no blob), computed on a central window."""
    out = np.zeros((len(blobs), g.size, g.size))
    chosen = [i for i, blob in enumerate(blobs) if blob is not None]
    if not chosen:
        return out
    p = np.array([blobs[i] for i in chosen], dtype=np.float64).T.reshape(-1, len(chosen), 1, 1)
    # the smoothstep is exactly 0 beyond R * (1 + sum |harmonics|) + edge, so nothing outside the window changes
    reach = (np.maximum(np.abs(p[0] - g.centre), np.abs(p[1] - g.centre))
             + p[2] * (1.0 + np.sqrt(p[6:6 + _HARMONICS] * p[6:6 + _HARMONICS]
                                     + p[6 + _HARMONICS:] * p[6 + _HARMONICS:]).sum(axis=0)) + p[3])
    lo = max(0, int(math.floor(g.centre - float(reach.max()))) - 1)
    hi = g.size - lo
    dx, dy = g.x[:, :, lo:hi] - p[0], g.y[:, lo:hi, :] - p[1]
    rho = np.sqrt(dx * dx + dy * dy)
    inv = 1.0 / np.maximum(rho, 1e-9)
    c1, s1 = dx * inv, dy * inv
    ck, sk = c1, s1
    shape = 1.0
    for k in range(_HARMONICS):
        if k:
            # cos/sin of (k+1) * angle by angle addition: exact arithmetic instead of per-pixel trig
            ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1
        shape = shape + p[6 + k] * ck + p[6 + _HARMONICS + k] * sk
    inside = _smoothstep((p[2] * shape - rho) / p[3])
    fill = p[4] * inside * (1.0 + p[5] * mottle[chosen][:, lo:hi, lo:hi])
    out[chosen, lo:hi, lo:hi] = np.minimum(np.maximum(fill, 0.0), 1.0)
    return out


# ----------------------------------------------------------------------------- chest wall

def _draw_wall(rs, g):
    """Parameters of a pleura / chest-wall region entering from one side, or None."""
    if rs.uniform() >= 0.35:
        return None
    side = rs.uniform(0.0, _TAU)
    bulge = -1.0 if rs.uniform() < 0.25 else 1.0   # -1: wall bulging into the lung (e.g. diaphragm, mediastinum)
    return [math.cos(side), math.sin(side), rs.uniform(11.0, 20.0) * g.px, rs.uniform(40.0, 200.0) * g.px,
            bulge, rs.uniform(1.0, 4.0) * g.px, rs.uniform(-120.0, -70.0), rs.uniform(25.0, 55.0),
            1.0 if rs.uniform() < 0.5 else 0.0,                 # rib present
            rs.uniform(4.0, 9.0) * g.px, rs.uniform(4.0, 8.0) * g.px, rs.uniform(2.5, 4.5) * g.px,
            rs.uniform(0.8, 1.5) * g.px, rs.uniform(-14.0, 14.0) * g.px,
            rs.uniform(60.0, 130.0), rs.uniform(500.0, 900.0)]


def _render_wall(walls, texture, g):
    """Returns (occupancy of the wall, HU inside the wall), both [B, H, W]."""
    (ux, uy, dist, radius, bulge, fat, fat_hu, muscle_hu, rib, rib_depth, rib_a, rib_b, cortex, rib_pos,
     marrow_hu, cortex_hu) = np.array(walls, dtype=np.float64).T.reshape(-1, len(walls), 1, 1)
    dx = g.x - (g.centre + (dist - bulge * radius) * ux)
    dy = g.y - (g.centre + (dist - bulge * radius) * uy)
    depth = bulge * (np.sqrt(dx * dx + dy * dy) - radius)       # px into the wall
    along = (g.x - g.centre) * (-uy) + (g.y - g.centre) * ux
    occupancy = _smoothstep(depth / (0.4 * g.px))
    hu = fat_hu + (muscle_hu - fat_hu) * _smoothstep((depth - fat) / (0.8 * g.px)) + 12.0 * texture
    # parietal pleura / endothoracic fascia: a thin line denser than the fat beneath it
    line = np.maximum(1.0 - np.abs(depth - 0.5 * g.px) / (0.5 * g.px), 0.0)
    hu = hu + (muscle_hu - hu) * line
    # rib in cross-section: an oval with a dense cortex around marrow
    e1, e2 = (depth - rib_depth) / rib_b, (along - rib_pos) / rib_a
    outer = _smoothstep((1.0 - np.sqrt(e1 * e1 + e2 * e2)) * rib_b / (0.3 * g.px))
    e1, e2 = (depth - rib_depth) / (rib_b - cortex), (along - rib_pos) / (rib_a - cortex)
    inner = _smoothstep((1.0 - np.sqrt(e1 * e1 + e2 * e2)) * (rib_b - cortex) / (0.3 * g.px))
    hu = hu + rib * ((cortex_hu - hu) * outer + (marrow_hu - cortex_hu) * inner)
    return occupancy, hu


# ----------------------------------------------------------------------------- assembly

def _draw_patch(rs, subtype, g):
    """All random choices for one patch, in a fixed order."""
    scalars = [rs.uniform(-880.0, -815.0),                      # parenchyma HU
               rs.uniform(0.0, _TAU), rs.uniform(0.0, 40.0),    # gravity-dependent density gradient
               rs.uniform(8.0, 20.0),                           # low-frequency texture HU
               rs.uniform(3.0, 7.0),                            # lobular texture HU
               rs.uniform(15.0, 50.0),                          # soft tissue HU of vessels and solid nodule
               rs.uniform(18.0, 32.0)]                          # noise standard deviation HU
    angle = scalars[1]
    scalars[1:2] = [math.cos(angle), math.sin(angle)]
    coarse = rs.standard_normal((g.coarse.grid, g.coarse.grid))
    fine = rs.standard_normal((g.fine.grid, g.fine.grid))
    # uniform, not normal, white noise: 10x faster to draw, and Gaussian enough once blurred
    noise = rs.random_sample(g.noise_shape)
    strokes = _Strokes()
    _draw_vessels(rs, g, strokes)
    glass, solid, bubbles = _draw_nodule(rs, subtype, g, strokes)
    wall = _draw_wall(rs, g)
    return scalars, coarse, fine, noise, strokes, glass, solid, bubbles, wall


def _render(patches, g, window):
    scalars, coarse, fine, noise, strokes, glass, solid, bubbles, walls = zip(*patches)
    bg_hu, grad_x, grad_y, grad_hu, coarse_hu, fine_hu, tissue_hu, noise_hu = (
        np.array(scalars, dtype=np.float64).T.reshape(-1, len(patches), 1, 1))
    texture = g.coarse(np.array(coarse))
    mottle = g.fine(np.array(fine))
    hu = (bg_hu + (grad_hu / g.size) * ((g.x - g.centre) * grad_x + (g.y - g.centre) * grad_y)
          + coarse_hu * texture + fine_hu * mottle)
    # ground glass is partial filling of air spaces: it adds to what is there, so vessels show through it
    nodule = 1.0 - (1.0 - _render_blobs(glass, mottle, g)) * (1.0 - _render_blobs(solid, mottle, g))
    filled = 1.0 - (1.0 - _paint(strokes, g)) * (1.0 - nodule)
    hu = hu + (tissue_hu - hu) * filled
    for i, patch_bubbles in enumerate(bubbles):
        for bx, by, radius in patch_bubbles:
            dx, dy = g.x - bx, g.y - by
            air = _smoothstep((radius - np.sqrt(dx * dx + dy * dy)) / (0.3 * g.px)) * nodule[i]
            hu[i] = hu[i] + (-600.0 - hu[i]) * air
    chosen = [i for i, wall in enumerate(walls) if wall is not None]
    if chosen:
        occupancy, wall_hu = _render_wall([walls[i] for i in chosen], texture[chosen], g)
        hu[chosen] = hu[chosen] + (wall_hu - hu[chosen]) * occupancy
    r = len(g.psf_taps) // 2
    hu = _blur_valid(np.pad(hu, ((0, 0), (r, r), (r, r)), mode='reflect'), g.psf_taps)
    # uniform on [0, 1) has mean 1/2 and standard deviation 1 / sqrt(12)
    hu = hu + (noise_hu * g.noise_gain * math.sqrt(12.0)) * (_blur_valid(np.array(noise), g.noise_taps) - 0.5)
    low, high = window
    grey = np.rint((hu - low) * (255.0 / (high - low)))
    return np.minimum(np.maximum(grey, 0.0), 255.0).astype(np.uint8)


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def make_phantoms(subtype, count, seed, resolution=64, progress=None, mm_per_pixel=0.7, window=(-1350.0, 150.0)):
    """Synthetic lung-window CT patches of one nodule subtype (phantoms, not patient data).

    subtype: 'AIS', 'MIA' or 'IAC'.  count: number of patches (>= 1).  seed: integer in [0, 2**64).
    resolution: power of two >= 16; the field of view stays 64 * mm_per_pixel millimetres wide.
    progress: optional callable, given the number of patches just finished.
    window: (low, high) HU mapped to grey levels 0..255.
    Returns a uint8 array [count, resolution, resolution]; patch i depends only on (subtype, seed, i).
    """
    if subtype not in SUBTYPES:
        raise ValueError('unknown nodule subtype %r: expected one of %s' % (subtype, ', '.join(SUBTYPES)))
    if not _is_int(count) or count <= 0:
        raise ValueError('count must be a whole number of at least 1, got %r' % (count,))
    if not _is_int(seed) or not 0 <= seed < 2 ** 64:
        raise ValueError('seed must be a whole number in [0, 2**64), got %r' % (seed,))
    if not _is_int(resolution) or resolution < 16 or resolution & (resolution - 1):
        raise ValueError('resolution must be a power of two of at least 16, got %r' % (resolution,))
    if not mm_per_pixel > 0 or not window[1] > window[0]:
        raise ValueError('mm_per_pixel must be positive and window must be (low, high) with low < high')
    count, seed, resolution = int(count), int(seed), int(resolution)
    g = _Geometry(resolution, float(mm_per_pixel))
    window = (float(window[0]), float(window[1]))
    # one generator, re-seeded per patch: constructing a RandomState costs ~0.1 ms on NumPy 2
    rs = np.random.RandomState(0)
    out = np.empty((count, resolution, resolution), dtype=np.uint8)
    for start in range(0, count, _CHUNK):
        stop = min(count, start + _CHUNK)
        patches = []
        for index in range(start, stop):
            rs.seed([seed & 0xFFFFFFFF, seed >> 32, _SUBTYPE_CODES[subtype], index & 0xFFFFFFFF, index >> 32])
            patches.append(_draw_patch(rs, subtype, g))
        out[start:stop] = _render(patches, g, window)
        if progress is not None:
            progress(stop - start)
    return out
