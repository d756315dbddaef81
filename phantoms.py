"""Synthetic lung-CT phantoms of subcentimetre adenocarcinoma nodules.

These images are procedurally generated phantoms, NOT patient data.  They
imitate lung-window CT crops centred on a small nodule so that the GAN
pipeline can be demonstrated without shipping any real scans:

  AIS  adenocarcinoma in situ:          pure ground-glass, faint and hazy
  MIA  minimally invasive adenocarcinoma: ground-glass halo + small solid core
  IAC  invasive adenocarcinoma:          dense solid, lobulated / spiculated

Each patch is built in Hounsfield units (HU) - parenchyma, vessel trees,
vessel cross-sections, sometimes chest wall and rib, then the nodule - blurred
by a CT-like point spread function, given correlated noise, windowed and
quantised to uint8.

Reproducibility: every patch has its own np.random.RandomState seeded from
(seed, subtype, patch index), so the first N patches of a larger run are the
same as a run of N.  Per-pixel maths uses only + - * / sqrt and clipping
(correctly rounded in IEEE 754) and scalar trigonometry goes through Python's
math module (the C library), so NumPy 1.16 and NumPy 2.x, whose SIMD exp/sin
may differ in the last bit, produce identical bytes on the same machine.
"""
import math

import numpy as np

SUBTYPES = ('AIS', 'MIA', 'IAC')
_SUBTYPE_CODES = {'AIS': 0x41495301, 'MIA': 0x4D494102, 'IAC': 0x49414303}
_CHUNK = 32           # patches rendered together; results do not depend on it
_SAMPLE = 0.5         # spacing (px) of the points that paint vessels
_TAU = 2.0 * math.pi


def _smoothstep(t):
    """0 for t <= -1, 1 for t >= 1, a smooth cubic in between (a polynomial, so bit-exact everywhere)."""
    u = np.clip(t * 0.5 + 0.5, 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def _ramp(start, stop, n):
    """Like np.linspace, whose arithmetic has changed between NumPy releases."""
    return start + (stop - start) * (np.arange(n, dtype=np.float64) / (n - 1))


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


def _blur_same(images, taps):
    r = len(taps) // 2
    return _blur_valid(np.pad(images, ((0, 0), (r, r), (r, r)), mode='reflect'), taps)


class _Geometry(object):
    """Everything that depends only on resolution and pixel size; built once per call."""

    def __init__(self, resolution, mm_per_pixel):
        self.size = resolution
        self.mm = mm_per_pixel * 64.0 / resolution     # keeps the field of view fixed (~45 mm)
        self.px = 1.0 / self.mm                        # pixels per millimetre
        self.centre = (resolution - 1) / 2.0
        self.half = resolution / 2.0
        coords = np.arange(resolution, dtype=np.float64)
        self.x = coords.reshape(1, 1, resolution)
        self.y = coords.reshape(1, resolution, 1)
        self.splat_taps = _gauss_taps(0.35 * self.px)  # anti-aliasing of painted vessels
        self.psf_taps = _gauss_taps(0.30 * self.px)    # reconstruction kernel
        self.noise_taps = _gauss_taps(0.40 * self.px)  # noise grain size
        # blurring unit white noise with a separable kernel leaves this standard deviation
        self.noise_gain = 1.0 / sum(w * w for w in self.noise_taps)
        self.noise_shape = (resolution + len(self.noise_taps) - 1,) * 2
        self.coarse = _BSplinePlan(resolution, 5.0 * self.px)   # low-frequency parenchyma texture
        self.fine = _BSplinePlan(resolution, 1.6 * self.px)     # lobular texture, ground-glass mottling


class _BSplinePlan(object):
    """Upsamples a coarse grid of random values with cubic B-splines: smooth noise with no blur cost."""

    def __init__(self, size, cell_px):
        u = (np.arange(size, dtype=np.float64) + 0.5) / cell_px
        base = np.floor(u)
        t = (u - base).reshape(size, 1)
        self.index = base.astype(np.int64).reshape(size, 1) + np.arange(4).reshape(1, 4)
        s, t2, t3 = 1.0 - t, t * t, t * t * t    # products, not **: np.power may use SIMD pow
        self.weight = np.concatenate([s * s * s, 3.0 * t3 - 6.0 * t2 + 4.0,
                                      -3.0 * t3 + 3.0 * t2 + 3.0 * t + 1.0, t3], axis=1) / 6.0
        self.grid = int(self.index.max()) + 1
        # cubic B-splines shrink unit noise to a standard deviation of about 0.69 per axis
        self.gain = 1.0 / 0.48

    def __call__(self, coarse):
        rows = 0.0
        for j in range(4):
            rows = rows + self.weight[:, j] * coarse[:, :, self.index[:, j]]
        out = 0.0
        for i in range(4):
            out = out + self.weight[:, i].reshape(-1, 1) * rows[:, self.index[:, i], :]
        return out * self.gain


def _patch_rng(seed, subtype, index):
    # init_by_array mixes every word, so neighbouring patches get unrelated streams
    words = [seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF, _SUBTYPE_CODES[subtype], index & 0xFFFFFFFF,
             (index >> 32) & 0xFFFFFFFF, 0x5EED1E55]
    return np.random.RandomState(words)


# ----------------------------------------------------------------------------- vessels and spicules

class _Strokes(object):
    """Centre-line points with radius and weight; painted later as area samples and blurred."""

    def __init__(self):
        self.parts = []

    def add_path(self, x, y, heading, radius, weight):
        cos_h = np.array([math.cos(a) for a in heading])
        sin_h = np.array([math.sin(a) for a in heading])
        k = int(math.ceil(float(radius.max()) / _SAMPLE))
        offsets = np.arange(-k, k + 1) * _SAMPLE
        # exact 1-D overlap of each sample's cell with the vessel cross-section, so thin vessels keep their area
        lo = np.maximum(offsets - 0.5 * _SAMPLE, -radius[:, None])
        hi = np.minimum(offsets + 0.5 * _SAMPLE, radius[:, None])
        cover = np.clip(hi - lo, 0.0, None) * _SAMPLE
        self._add(x[:, None] - sin_h[:, None] * offsets, y[:, None] + cos_h[:, None] * offsets,
                  cover * weight[:, None])

    def add_dot(self, x, y, radius, weight):
        k = int(math.ceil(radius / _SAMPLE))
        offsets = np.arange(-k, k + 1) * _SAMPLE
        dx, dy = offsets[None, :], offsets[:, None]
        cover = np.clip((radius - np.sqrt(dx * dx + dy * dy)) / _SAMPLE + 0.5, 0.0, 1.0)
        self._add(x + dx + 0.0 * dy, y + dy + 0.0 * dx, cover * (weight * _SAMPLE * _SAMPLE))

    def _add(self, x, y, w):
        keep = w > 0.0
        self.parts.append((x[keep], y[keep], w[keep]))

    def arrays(self):
        if not self.parts:
            return np.zeros(0), np.zeros(0), np.zeros(0)
        return tuple(np.concatenate([part[i] for part in self.parts]) for i in range(3))


def _walk(rs, g, x0, y0, heading, length_px, curl):
    """A gently curving path of points _SAMPLE apart, as Python-math trigonometry (see module docstring)."""
    n = max(2, int(length_px / _SAMPLE))
    angles = heading + np.cumsum(rs.normal(0.0, curl, n))
    x = x0 + np.cumsum(_SAMPLE * np.array([math.cos(a) for a in angles]))
    y = y0 + np.cumsum(_SAMPLE * np.array([math.sin(a) for a in angles]))
    return x, y, angles


def _grow_tree(rs, g, strokes, x, y, heading, radius_mm, budget):
    """Pulmonary vessels: tapering segments that fork into a thicker and a thinner daughter."""
    limit = 1.6 * g.half
    min_radius = 0.18 * g.px
    stack = [(x, y, heading, radius_mm * g.px, 0, rs.uniform(0.75, 1.0))]
    while stack and budget[0] > 0:
        budget[0] -= 1
        x, y, heading, radius, depth, weight = stack.pop()
        xs, ys, angles = _walk(rs, g, x, y, heading, rs.uniform(6.0, 14.0) * g.px, 0.035)
        radii = radius * (1.0 - rs.uniform(0.05, 0.2) * np.arange(1, len(xs) + 1) / len(xs))
        inside = (np.abs(xs - g.centre) < limit) & (np.abs(ys - g.centre) < limit)
        left = not inside.all()
        n = int(np.argmin(inside)) if left else len(xs)
        weights = np.full(len(xs), weight)
        end_radius = radii[-1]
        # some branches dive out of the slice instead of forking
        forks = not left and depth < 4 and end_radius > min_radius and rs.uniform() < 0.8
        if not forks and not left:
            # vessels that end inside the patch are leaving the slice: fade them out
            weights = weights * np.clip(_ramp(3.0, 0.0, len(xs)), 0.0, 1.0)
        if depth == 0:
            # ... and a trunk that starts inside the patch is entering it
            weights = weights * np.clip(_ramp(0.0, 3.0, len(xs)), 0.0, 1.0)
        if n > 1:
            strokes.add_path(xs[:n], ys[:n], angles[:n], radii[:n], weights[:n])
        if not forks:
            continue
        side = 1.0 if rs.uniform() < 0.5 else -1.0
        if rs.uniform() < 0.7:
            children = [(side * rs.uniform(0.08, 0.35), rs.uniform(0.78, 0.92)),
                        (-side * rs.uniform(0.45, 1.0), rs.uniform(0.5, 0.72))]
        else:
            children = [(rs.normal(0.0, 0.1), rs.uniform(0.9, 1.0))]
        for turn, shrink in children:
            if end_radius * shrink > min_radius:
                stack.append((xs[-1], ys[-1], angles[-1] + turn, end_radius * shrink, depth + 1,
                              weight * rs.uniform(0.85, 1.0)))


def _draw_vessels(rs, g, strokes):
    budget = [16]
    for tree in range(rs.randint(1, 4)):
        entry = rs.uniform(0.0, _TAU)
        distance = g.half * rs.uniform(1.0, 1.45)
        x = g.centre + distance * math.cos(entry)
        y = g.centre + distance * math.sin(entry)
        # the first tree often runs through the nodule, as vessels do through ground glass
        aim = rs.normal(0.0, 0.08) if (tree == 0 and rs.uniform() < 0.6) else rs.uniform(-0.7, 0.7)
        _grow_tree(rs, g, strokes, x, y, entry + math.pi + aim, rs.uniform(0.45, 1.15), budget)
    for _ in range(rs.randint(2, 8)):
        # vessels running through the slice show up as round dots
        strokes.add_dot(rs.uniform(0.0, g.size - 1.0), rs.uniform(0.0, g.size - 1.0),
                        rs.uniform(0.35, 1.0) * g.px, rs.uniform(0.6, 1.0))


# ----------------------------------------------------------------------------- nodule

_HARMONICS = 6


def _blob(rs, cx, cy, radius_mm, edge_mm, density, mottle, roughness, g):
    """One radial-harmonic blob: (cx, cy, R, edge, density, mottle, a_1..a_6, b_1..b_6), lengths in px."""
    coeffs = []
    for k in range(_HARMONICS):
        amplitude = rs.uniform(0.0, roughness[k]) if k < len(roughness) else 0.0
        phase = rs.uniform(0.0, _TAU)
        coeffs.append((amplitude * math.cos(phase), amplitude * math.sin(phase)))
    return ([cx, cy, radius_mm * g.px, edge_mm * g.px, density, mottle]
            + [c[0] for c in coeffs] + [c[1] for c in coeffs])


def _blob_radius(blob, angle):
    shape = 1.0
    for k in range(_HARMONICS):
        shape += blob[6 + k] * math.cos((k + 1) * angle) + blob[6 + _HARMONICS + k] * math.sin((k + 1) * angle)
    return blob[2] * shape


def _draw_nodule(rs, subtype, g, strokes):
    """Returns (ground-glass blob, solid blob, bubbles); a density of 0 switches a component off."""
    jitter = 3.0 * g.size / 64.0
    cx = g.centre + rs.uniform(-jitter, jitter)
    cy = g.centre + rs.uniform(-jitter, jitter)
    off = [cx, cy, 1.0, 1.0, 0.0, 0.0] + [0.0] * (2 * _HARMONICS)
    bubbles = [(0.0, 0.0, -1.0), (0.0, 0.0, -1.0)]
    if subtype == 'AIS':
        glass = _blob(rs, cx, cy, rs.uniform(2.8, 5.0), rs.uniform(1.0, 1.8), rs.uniform(0.18, 0.34),
                      rs.uniform(0.15, 0.35), [0.06, 0.14, 0.08, 0.05, 0.03, 0.02], g)
        return glass, off, bubbles
    if subtype == 'MIA':
        radius = rs.uniform(3.0, 5.0)
        glass = _blob(rs, cx, cy, radius, rs.uniform(0.9, 1.5), rs.uniform(0.2, 0.36),
                      rs.uniform(0.15, 0.3), [0.06, 0.14, 0.08, 0.05, 0.03, 0.02], g)
        core_radius = rs.uniform(1.0, 2.4)   # solid part <= ~5 mm across
        shift, angle = rs.uniform(0.0, 0.35) * (radius - core_radius) * g.px, rs.uniform(0.0, _TAU)
        core = _blob(rs, cx + shift * math.cos(angle), cy + shift * math.sin(angle), core_radius,
                     rs.uniform(0.3, 0.5), rs.uniform(0.75, 1.0), 0.05, [0.05, 0.1, 0.05, 0.03], g)
        return glass, core, bubbles
    radius = rs.uniform(2.6, 5.0)
    solid = _blob(rs, cx, cy, radius, rs.uniform(0.3, 0.5), rs.uniform(0.9, 1.0), 0.04,
                  [0.05, 0.09, 0.1, 0.08, 0.06, 0.04], g)
    if rs.uniform() < 0.5:
        glass = _blob(rs, cx, cy, radius * rs.uniform(1.15, 1.45), rs.uniform(0.7, 1.1),
                      rs.uniform(0.12, 0.26), 0.25, [0.04, 0.1, 0.06, 0.04], g)
    else:
        glass = off
    if rs.uniform() < 0.75:
        # spicules: thin strands of fibrosis radiating from the margin
        for _ in range(rs.randint(5, 15)):
            angle = rs.uniform(0.0, _TAU)
            start = 0.8 * _blob_radius(solid, angle)
            xs, ys, angles = _walk(rs, g, cx + start * math.cos(angle), cy + start * math.sin(angle),
                                   angle + rs.normal(0.0, 0.15), rs.uniform(2.0, 7.5) * g.px, 0.05)
            radii = _ramp(rs.uniform(0.2, 0.4), 0.08, len(xs)) * g.px
            strokes.add_path(xs, ys, angles, radii, np.full(len(xs), rs.uniform(0.5, 1.0)))
    if rs.uniform() < 0.15:
        # air bronchogram / bubble-like lucency inside the solid part
        for i in range(rs.randint(1, 3)):
            angle, reach = rs.uniform(0.0, _TAU), rs.uniform(0.0, 0.5) * radius * g.px
            bubbles[i] = (cx + reach * math.cos(angle), cy + reach * math.sin(angle), rs.uniform(0.45, 0.8) * g.px)
    return glass, solid, bubbles


def _render_blobs(blobs, fine, g):
    """Fractional soft-tissue occupancy of a stack of blobs, [B, H, W]."""
    p = np.array(blobs, dtype=np.float64).T.reshape(-1, len(blobs), 1, 1)
    dx, dy = g.x - p[0], g.y - p[1]
    rho = np.sqrt(dx * dx + dy * dy)
    inv = 1.0 / np.maximum(rho, 1e-9)
    c1, s1 = dx * inv, dy * inv
    ck, sk = c1, s1
    shape = 1.0
    for k in range(_HARMONICS):
        if k:
            # cos/sin of (k+1)*theta by angle addition: exact arithmetic instead of per-pixel trig
            ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1
        shape = shape + p[6 + k] * ck + p[6 + _HARMONICS + k] * sk
    inside = _smoothstep((p[2] * shape - rho) / p[3])
    return np.clip(p[4] * inside * (1.0 + p[5] * fine), 0.0, 1.0)


# ----------------------------------------------------------------------------- chest wall

def _draw_wall(rs, g):
    """Parameters of a pleura/chest-wall region, or a far-away dummy that renders as nothing."""
    if rs.uniform() >= 0.35:
        return [0.0, 1.0, 1e6, 1e6, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 2.0, 1.0, 0.0, 0.0, 0.0]
    side = rs.uniform(0.0, _TAU)
    bulge = -1.0 if rs.uniform() < 0.25 else 1.0   # -1: wall bulging into the lung (e.g. diaphragm)
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
    ccx = g.centre + (dist - bulge * radius) * ux
    ccy = g.centre + (dist - bulge * radius) * uy
    dx, dy = g.x - ccx, g.y - ccy
    depth = bulge * (np.sqrt(dx * dx + dy * dy) - radius)       # px into the wall
    along = (g.x - g.centre) * (-uy) + (g.y - g.centre) * ux
    occupancy = _smoothstep(depth / (0.4 * g.px))
    hu = fat_hu + (muscle_hu - fat_hu) * _smoothstep((depth - fat) / (0.8 * g.px)) + 12.0 * texture
    # parietal pleura / endothoracic fascia: a thin line denser than the fat beneath it
    line = np.clip(1.0 - np.abs(depth - 0.5 * g.px) / (0.5 * g.px), 0.0, 1.0)
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
    scalars = [rs.uniform(-880.0, -815.0),          # parenchyma HU
               rs.uniform(0.0, _TAU), rs.uniform(0.0, 40.0),   # gravity-dependent density gradient
               rs.uniform(8.0, 20.0),                # low-frequency texture HU
               rs.uniform(3.0, 7.0),                 # lobular texture HU
               rs.uniform(15.0, 50.0),               # soft tissue HU of vessels and solid nodule
               rs.uniform(18.0, 32.0)]               # noise standard deviation HU
    coarse = rs.standard_normal((g.coarse.grid, g.coarse.grid))
    fine = rs.standard_normal((g.fine.grid, g.fine.grid))
    noise = rs.standard_normal(g.noise_shape)
    strokes = _Strokes()
    _draw_vessels(rs, g, strokes)
    glass, solid, bubbles = _draw_nodule(rs, subtype, g, strokes)
    wall = _draw_wall(rs, g)
    return scalars, coarse, fine, noise, strokes.arrays(), glass, solid, bubbles, wall


def _paint(strokes, g):
    """Bilinear splat of all stroke samples into [B, H, W] occupancy (bincount sums in a fixed order)."""
    margin = len(g.splat_taps) // 2
    side = g.size + 2 * margin
    index, value = [], []
    for b, (x, y, w) in enumerate(strokes):
        x, y = x + margin, y + margin
        x0, y0 = np.floor(x), np.floor(y)
        fx, fy = x - x0, y - y0
        for ox, oy, share in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                              (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            ix, iy = x0.astype(np.int64) + ox, y0.astype(np.int64) + oy
            ok = (ix >= 0) & (ix < side) & (iy >= 0) & (iy < side)
            index.append((b * side + iy[ok]) * side + ix[ok])
            value.append(w[ok] * share[ok])
    canvas = np.bincount(np.concatenate(index), np.concatenate(value), minlength=len(strokes) * side * side)
    return np.minimum(_blur_valid(canvas.reshape(len(strokes), side, side), g.splat_taps), 1.0)


def _render(patches, g, window):
    (scalars, coarse, fine, noise, strokes, glass, solid, bubbles, walls) = zip(*patches)
    bg_hu, grad_angle, grad_hu, coarse_hu, fine_hu, tissue_hu, noise_hu = (
        np.array(scalars, dtype=np.float64).T.reshape(-1, len(patches), 1, 1))
    texture = g.coarse(np.array(coarse))
    mottle = g.fine(np.array(fine))
    grad_x = np.array([math.cos(a) for a in grad_angle.ravel()]).reshape(-1, 1, 1)
    grad_y = np.array([math.sin(a) for a in grad_angle.ravel()]).reshape(-1, 1, 1)
    lung = (bg_hu + (grad_hu / g.size) * ((g.x - g.centre) * grad_x + (g.y - g.centre) * grad_y)
            + coarse_hu * texture + fine_hu * mottle)
    # ground glass is partial filling of air spaces: it adds to whatever is there, so vessels show through
    nodule = 1.0 - (1.0 - _render_blobs(glass, mottle, g)) * (1.0 - _render_blobs(solid, mottle, g))
    filled = 1.0 - (1.0 - _paint(strokes, g)) * (1.0 - nodule)
    hu = lung + (tissue_hu - lung) * filled
    for i in range(2):
        p = np.array([b[i] for b in bubbles], dtype=np.float64).T.reshape(3, -1, 1, 1)
        dx, dy = g.x - p[0], g.y - p[1]
        air = _smoothstep((p[2] - np.sqrt(dx * dx + dy * dy)) / (0.3 * g.px))
        hu = hu + (-700.0 - hu) * air * nodule
    occupancy, wall_hu = _render_wall(walls, texture, g)
    hu = hu + (wall_hu - hu) * occupancy
    hu = _blur_same(hu, g.psf_taps)
    hu = hu + (noise_hu * g.noise_gain) * _blur_valid(np.array(noise), g.noise_taps)
    low, high = window
    grey = np.rint((hu - low) * (255.0 / (high - low)))
    return np.clip(grey, 0.0, 255.0).astype(np.uint8)


def make_phantoms(subtype, count, seed, resolution=64, progress=None, mm_per_pixel=0.7, window=(-1350.0, 150.0)):
    """Synthetic lung-window CT patches of one nodule subtype.

    subtype: 'AIS', 'MIA' or 'IAC'.  count: number of patches (>= 1).  seed: integer in [0, 2**64).
    resolution: power of two >= 16; the field of view stays 64 * mm_per_pixel millimetres.
    progress: optional callable given the number of patches just finished.
    window: (low, high) HU mapped to grey levels 0..255.
    Returns uint8 array [count, resolution, resolution]; patch i depends only on (subtype, seed, i).
    """
    if subtype not in SUBTYPES:
        raise ValueError('unknown nodule subtype %r: expected one of %s' % (subtype, ', '.join(SUBTYPES)))
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count <= 0:
        raise ValueError('count must be a whole number of at least 1, got %r' % (count,))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 64:
        raise ValueError('seed must be a whole number in [0, 2**64), got %r' % (seed,))
    if (isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 16
            or resolution & (resolution - 1)):
        raise ValueError('resolution must be a power of two of at least 16, got %r' % (resolution,))
    if not mm_per_pixel > 0 or not window[1] > window[0]:
        raise ValueError('mm_per_pixel must be positive and window must be (low, high) with low < high')
    count, seed, resolution = int(count), int(seed), int(resolution)
    g = _Geometry(resolution, float(mm_per_pixel))
    out = np.empty((count, resolution, resolution), dtype=np.uint8)
    for start in range(0, count, _CHUNK):
        stop = min(count, start + _CHUNK)
        patches = [_draw_patch(_patch_rng(seed, subtype, i), subtype, g) for i in range(start, stop)]
        out[start:stop] = _render(patches, g, (float(window[0]), float(window[1])))
        if progress is not None:
            progress(stop - start)
    return out
