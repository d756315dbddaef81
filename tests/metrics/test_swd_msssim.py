"""nodules/metrics/swd.py (SWD, Laplacian pyramid, MS-SSIM) against independent references, and compute_metrics.py end to end.

The references below are written from the definitions (PGGAN's SWD and the metrics' papers), with loops and
full 2-D kernels where nodules/metrics/swd.py uses separable filters, explicit tiling where it folds grayscale channels,
and np.std where it accumulates sums; they share no code with nodules/metrics/swd.py.
"""
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import ROOT, assert_clean_failure, run_script
from nodules.util.errors import UserError
import compute_metrics
from nodules.data import dataset
from nodules.metrics import msssim, swd
from nodules.data import phantoms

SCRIPT = 'compute_metrics.py'
KERNEL_1D = np.array([1.0, 4.0, 6.0, 4.0, 1.0])


@pytest.fixture(scope='module')
def shipped():
    """The shipped synthetic datasets at full resolution: {'AIS': uint8 [300, 1, 64, 64], 'IAC': ...}."""
    return {name: dataset.read_images(os.path.join(ROOT, 'processData', name, '%s-r06.tfrecords' % name))
            for name in ('AIS', 'IAC')}


# ---------------------------------------------------------------------------------------------------------------
# Laplacian pyramid


def mirror(i, n):
    """Whole-sample mirror of index i into 0..n-1 (d c b | a b c d | c b a), for |overhang| < n."""
    i = abs(i)
    return 2 * (n - 1) - i if i >= n else i


def loop_blur(image):
    """5x5 binomial filter of one 2-D image, pixel by pixel."""
    h, w = image.shape
    out = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            total = 0.0
            for a in range(5):
                for b in range(5):
                    total += KERNEL_1D[a] * KERNEL_1D[b] * image[mirror(y + a - 2, h), mirror(x + b - 2, w)]
            out[y, x] = total / 256.0
    return out


def padded_blur(images):
    """5x5 binomial filter of [..., H, W] as one full 2-D kernel over a reflect-padded copy."""
    kernel = np.outer(KERNEL_1D, KERNEL_1D) / 256.0
    h, w = images.shape[-2:]
    padded = np.pad(images, [(0, 0)] * (images.ndim - 2) + [(2, 2), (2, 2)], mode='reflect')
    out = np.zeros(images.shape)
    for a in range(5):
        for b in range(5):
            out += kernel[a, b] * padded[..., a:a + h, b:b + w]
    return out


def reference_laplacian(images, levels, blur):
    """Burt-Adelson pyramid with the given blur: down = blur then even samples; up = zero-insert, blur, x4."""
    def down(x):
        return blur(x)[..., ::2, ::2]

    def up(x):
        z = np.zeros(x.shape[:-2] + (2 * x.shape[-2], 2 * x.shape[-1]))
        z[..., ::2, ::2] = x
        return 4.0 * blur(z)

    gaussian = [np.asarray(images, np.float64)]
    for _ in range(levels - 1):
        gaussian.append(down(gaussian[-1]))
    return [g - up(coarser) for g, coarser in zip(gaussian[:-1], gaussian[1:])] + [gaussian[-1]]


def blur_each_image(blur2d):
    return lambda x: np.stack([blur2d(image) for image in x.reshape((-1,) + x.shape[-2:])]).reshape(x.shape)


def test_laplacian_pyramid_matches_pixel_loop_reference():
    images = np.random.RandomState(0).uniform(0, 255, size=(2, 3, 16, 16))
    ours = swd.laplacian_pyramid(images, 3)
    reference = reference_laplacian(images, 3, blur_each_image(loop_blur))
    assert [level.shape for level in ours] == [(2, 3, 16, 16), (2, 3, 8, 8), (2, 3, 4, 4)]
    for mine, theirs in zip(ours, reference):
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-10)


def test_laplacian_pyramid_matches_full_kernel_reference_on_shipped_images(shipped):
    images = shipped['AIS'][:6].astype(np.float64)
    ours = swd.laplacian_pyramid(images, 4)
    reference = reference_laplacian(images, 4, padded_blur)
    assert [level.shape[-1] for level in ours] == [64, 32, 16, 8]
    for mine, theirs in zip(ours, reference):
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-9)
    gaussian = swd.gaussian_pyramid(images, 4)
    np.testing.assert_allclose(gaussian[-1], ours[-1], rtol=0, atol=0)


def test_laplacian_pyramid_reconstructs_the_image_exactly(shipped):
    images = np.concatenate([shipped['AIS'][:4], shipped['IAC'][:4]])
    for levels in (1, 2, 4, 5):
        pyramid = swd.laplacian_pyramid(images, levels)
        assert len(pyramid) == levels
        rebuilt = swd.reconstruct_laplacian(pyramid)
        assert np.max(np.abs(rebuilt - images)) < 1e-9
        assert np.array_equal(np.rint(rebuilt).astype(np.uint8), images)


def test_pyramid_filters_keep_constants_and_reject_bad_sizes():
    constant = np.full((1, 1, 32, 32), 77.0)
    np.testing.assert_allclose(swd.pyramid_down(constant), np.full((1, 1, 16, 16), 77.0), atol=1e-12)
    np.testing.assert_allclose(swd.pyramid_up(constant), np.full((1, 1, 64, 64), 77.0), atol=1e-12)
    pyramid = swd.laplacian_pyramid(constant, 3)
    assert all(np.max(np.abs(band)) < 1e-12 for band in pyramid[:-1])
    with pytest.raises(ValueError):
        swd.laplacian_pyramid(np.zeros((1, 1, 24, 24)), 5)  # 24 is not a multiple of 16


# ---------------------------------------------------------------------------------------------------------------
# Sliced Wasserstein distance


def reference_swd(images_a, images_b, seed, nhood=7, per_image=128, repeats=4, directions=128, smallest=16):
    """SWD computed the long way: grayscale tiled to 3 channels, every descriptor cut out one by one, np.std.

    Random draws follow the protocol nodules/metrics/swd.py documents: positions of set k at level l from
    RandomState([seed, k, l]).randint(3, side - 3, (N * 128, 2)); directions from RandomState([seed, 2, l]).
    """
    sets = [np.tile(np.asarray(s, np.float64), (1, 3 // s.shape[1], 1, 1)) for s in (images_a, images_b)]
    levels = 0
    while images_a.shape[-1] >> levels >= smallest:
        levels += 1
    pyramids = [reference_laplacian(s, levels, padded_blur) for s in sets]
    half = nhood // 2
    results = []
    for level in range(levels):
        descriptors = []
        for k in range(2):
            band = pyramids[k][level]
            side = band.shape[-1]
            rng = np.random.RandomState([seed, k, level])
            centres = rng.randint(half, side - half, size=(len(band) * per_image, 2))
            d = np.stack([band[i // per_image, :, y - half:y + half + 1, x - half:x + half + 1]
                          for i, (y, x) in enumerate(centres)])
            d = (d - d.mean(axis=(0, 2, 3), keepdims=True)) / d.std(axis=(0, 2, 3), keepdims=True)
            descriptors.append(d.reshape(len(d), -1))
        rng = np.random.RandomState([seed, 2, level])
        distances = []
        for _ in range(repeats):
            dirs = rng.randn(descriptors[0].shape[1], directions)
            dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
            pa = np.sort(descriptors[0].dot(dirs), axis=0)
            pb = np.sort(descriptors[1].dot(dirs), axis=0)
            distances.append(np.mean(np.abs(pa - pb)))
        results.append(1e3 * np.mean(distances))
    return results


def test_swd_matches_the_long_way_reference(shipped):
    gray_a, gray_b = shipped['AIS'][:6, :, ::2, ::2], shipped['IAC'][:6, :, ::2, ::2]  # 32x32: two levels
    ours, average = swd.sliced_wasserstein_distance(gray_a, gray_b, seed=5)
    reference = reference_swd(gray_a, gray_b, seed=5)
    assert len(ours) == 2
    np.testing.assert_allclose(ours, reference, rtol=2e-5)
    assert average == pytest.approx(np.mean(reference), rel=2e-5)

    rgb = np.random.RandomState(1).randint(0, 256, size=(5, 3, 16, 16)).astype(np.uint8)
    rgb[:, 1] = rgb[:, 0] // 2  # correlated channels, so per-channel statistics differ
    ours, _ = swd.sliced_wasserstein_distance(rgb, shipped['AIS'][:5, :, ::4, ::4], seed=2)
    np.testing.assert_allclose(ours, reference_swd(rgb, shipped['AIS'][:5, :, ::4, ::4], seed=2), rtol=2e-5)


@pytest.mark.slow  # ~3 s: SWD of whole shipped datasets
def test_swd_of_a_dataset_half_is_far_below_another_subtype_and_noise(shipped):
    ais, iac = shipped['AIS'], shipped['IAC']
    n = 150  # halves of the 30 AIS nodules: fewer nodules per half make the halves' distance noisy at 16x16
    halves, halves_avg = swd.sliced_wasserstein_distance(ais[:n], ais[n:2 * n], seed=0)
    subtype, subtype_avg = swd.sliced_wasserstein_distance(ais[:n], iac[:n], seed=0)
    assert len(halves) == len(subtype) == 3  # 64x64, 32x32, 16x16
    assert halves_avg < 0.5 * subtype_avg, (halves, subtype)
    # the nodule tells the subtypes apart at 32x32 and 16x16; at 64x64 the lung's fine texture, the same in both,
    # dominates, so there the subtype is only somewhat farther than the other half
    assert halves[0] < subtype[0], (halves, subtype)
    assert all(h < 0.8 * s for h, s in zip(halves[1:], subtype[1:])), (halves, subtype)

    m = 32  # noise is so far away that a smaller sample shows it
    noise = np.random.RandomState(0).randint(0, 256, size=(m, 1, 64, 64)).astype(np.uint8)
    to_noise, noise_avg = swd.sliced_wasserstein_distance(ais[:m], noise, seed=0)
    assert halves_avg < 0.2 * noise_avg, (halves, to_noise)
    assert all(h < 0.3 * s for h, s in zip(halves, to_noise)), (halves, to_noise)


def test_swd_is_deterministic_and_independent_of_chunking_and_tiling(shipped):
    a, b = shipped['AIS'][:8, :, ::2, ::2], shipped['IAC'][:8, :, ::2, ::2]
    first = swd.sliced_wasserstein_distance(a, b, seed=3)
    assert swd.sliced_wasserstein_distance(a, b, seed=3) == first
    assert swd.sliced_wasserstein_distance(a, b, seed=3, chunk=3) == first
    assert swd.sliced_wasserstein_distance(a, b, seed=4) != first
    tiled = swd.sliced_wasserstein_distance(np.tile(a, (1, 3, 1, 1)), np.tile(b, (1, 3, 1, 1)), seed=3)
    np.testing.assert_allclose(tiled[0], first[0], rtol=1e-5)


def test_swd_input_checks(shipped):
    a = shipped['AIS'][:4]
    with pytest.raises(ValueError, match='equal size'):
        swd.sliced_wasserstein_distance(a, shipped['IAC'][:5])
    with pytest.raises(ValueError, match='one size'):
        swd.sliced_wasserstein_distance(a, a[:, :, ::2, ::2])
    with pytest.raises(ValueError, match='at least 16'):
        swd.sliced_wasserstein_distance(a[:, :, ::8, ::8], a[:, :, ::8, ::8])
    with pytest.raises(ValueError, match='C = 1 or 3'):
        swd.sliced_wasserstein_distance(a[:, 0], a[:, 0])
    assert swd.swd_resolutions(64) == [64, 32, 16]
    assert swd.swd_resolutions(8) == []


# ---------------------------------------------------------------------------------------------------------------
# MS-SSIM


def reference_ms_ssim(a, b, weights=(0.0448, 0.2856, 0.3001, 0.2363, 0.1333)):
    """MS-SSIM from the definition: full 2-D Gaussian window on a grid centred like the reference code
    (half-pixel offset for even sizes), 'valid' 2-D filtering by explicit shifts, 2x2 block means."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    cs_terms = []
    for scale in range(len(weights)):
        size = min(11, a.shape[-1])
        sigma = 1.5 * size / 11.0
        coords = np.arange(size) - (size - 1) / 2.0
        yy, xx = np.meshgrid(coords, coords, indexing='ij')
        window = np.exp(-(xx ** 2 + yy ** 2) / (2 * sigma ** 2))
        window /= window.sum()
        out = a.shape[-1] - size + 1

        def filt(x):
            total = np.zeros(x.shape[:2] + (out, out))
            for i in range(size):
                for j in range(size):
                    total += window[i, j] * x[:, :, i:i + out, j:j + out]
            return total

        mu_a, mu_b = filt(a), filt(b)
        s_aa, s_bb, s_ab = filt(a * a) - mu_a ** 2, filt(b * b) - mu_b ** 2, filt(a * b) - mu_a * mu_b
        cs = (2 * s_ab + c2) / (s_aa + s_bb + c2)
        ssim = (2 * mu_a * mu_b + c1) / (mu_a ** 2 + mu_b ** 2 + c1) * cs
        cs_terms.append(np.clip(cs.mean(axis=(1, 2, 3)), 0, None))
        last_ssim = np.clip(ssim.mean(axis=(1, 2, 3)), 0, None)
        if scale < len(weights) - 1:
            n, c, h, w = a.shape
            a = a.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))
            b = b.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))
    result = last_ssim ** weights[-1]
    for cs, weight in zip(cs_terms[:-1], weights[:-1]):
        result = result * cs ** weight
    return result


def test_ms_ssim_matches_reference(shipped):
    for images_a, images_b in [(shipped['AIS'][:5], shipped['IAC'][:5]),                   # 64x64
                               (shipped['AIS'][5:9, :, ::2, ::2], shipped['AIS'][9:13, :, ::2, ::2])]:  # 32x32
        np.testing.assert_allclose(msssim.ms_ssim(images_a, images_b), reference_ms_ssim(images_a, images_b),
                                   rtol=1e-10, atol=1e-12)
    rgb = np.random.RandomState(0).randint(0, 256, size=(2, 3, 16, 16)).astype(np.uint8)
    blurred = np.rint(swd.pyramid_up(swd.pyramid_down(rgb))).clip(0, 255)
    np.testing.assert_allclose(msssim.ms_ssim(rgb, blurred), reference_ms_ssim(rgb, blurred), rtol=1e-10)


def test_ms_ssim_identity_symmetry_and_range(shipped):
    a, b = shipped['AIS'][:20], shipped['IAC'][:20]
    np.testing.assert_allclose(msssim.ms_ssim(a, a), 1.0, rtol=0, atol=1e-6)
    np.testing.assert_allclose(msssim.ms_ssim(np.tile(b, (1, 3, 1, 1)), np.tile(b, (1, 3, 1, 1))), 1.0, atol=1e-6)
    different = msssim.ms_ssim(a, b)
    assert different.shape == (20,)
    assert np.all(different < 1.0 - 1e-3) and np.all(different >= 0.0)
    np.testing.assert_allclose(msssim.ms_ssim(b, a), different, rtol=1e-12)
    assert msssim.ms_ssim(a[:1], 255 - a[:1])[0] < 0.5  # a negative image shares little structure


def test_ms_ssim_of_consecutive_pairs_measures_diversity(shipped):
    diverse = shipped['AIS'][:40]
    rng = np.random.RandomState(0)
    near_duplicates = np.repeat(shipped['AIS'][:20], 2, axis=0).astype(np.float64)
    near_duplicates[1::2] += rng.normal(0, 2.0, size=near_duplicates[1::2].shape)
    near_duplicates = np.clip(np.rint(near_duplicates), 0, 255).astype(np.uint8)
    diverse_score = msssim.ms_ssim_consecutive_pairs(diverse)
    duplicate_score = msssim.ms_ssim_consecutive_pairs(near_duplicates)
    assert duplicate_score > 0.9
    assert diverse_score < duplicate_score - 0.3
    odd = msssim.ms_ssim_consecutive_pairs(diverse[:31])  # the unpaired last image is left out
    assert odd == msssim.ms_ssim_consecutive_pairs(diverse[:30])
    with pytest.raises(ValueError, match='at least 2 images'):
        msssim.ms_ssim_consecutive_pairs(diverse[:1])
    with pytest.raises(ValueError, match='at least 16x16'):
        msssim.ms_ssim(diverse[:2, :, ::8, ::8], diverse[2:4, :, ::8, ::8])


# ---------------------------------------------------------------------------------------------------------------
# compute_metrics.py


def parse_report(text):
    """{'64x64': swd, ..., 'average': swd, 'fake': ms-ssim, 'real': ms-ssim} from the command's table."""
    values = {}
    for line in text.splitlines():
        parts = line.split()
        if line.startswith('  ') and len(parts) == 2:
            values[parts[0]] = float(parts[1])
    return values


TINY = {'num_channels': 1, 'resolution': 16, 'label_size': 0, 'fmap_base': 64, 'fmap_max': 16}


def tiny_pickle(path):
    """A 16x16 generator with fixed random weights, saved as a PGGAN pickle; returns its images for seed 3."""
    from nodules import generation
    from nodules.gan import legacy
    from nodules.gan import tfutil
    from nodules.util.tfcompat import tf
    graph = tf.Graph()
    with graph.as_default(), tf.Session(graph=graph):
        nets = []
        for seed, (name, func) in enumerate((('G', 'G_paper'), ('D', 'D_paper'))):
            net = tfutil.Network(name, func, **TINY)
            rng = np.random.RandomState(seed)
            values = {}
            for var_name, var in net.vars.items():
                scale = 0.3 if var_name.startswith('ToRGB') else 1.0  # keep most pixels inside -1..1
                values[var_name] = (np.float32(0) if var_name == 'lod' else
                                    (scale * rng.standard_normal(var.shape.as_list())).astype(np.float32))
            net.set_vars(values)
            nets.append(net)
        Gs = nets[0].clone('Gs')
        legacy.save_network_pkl(path, (nets[0], nets[1], Gs))
        latents = generation.random_latents(8, Gs.input_shapes[0][1], 3)
        return generation.generate_images(Gs, latents)[:, np.newaxis]


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """Small datasets and a tiny pickle; the commands run in fresh interpreters, started once, concurrently."""
    root = tmp_path_factory.mktemp('metrics')
    sets = {'A': phantoms.make_phantoms('AIS', 24, 1, resolution=32)[:, np.newaxis],
            'B': phantoms.make_phantoms('IAC', 24, 2, resolution=32)[:, np.newaxis],
            'S': phantoms.make_phantoms('MIA', 8, 3, resolution=16)[:, np.newaxis]}
    for name, images in sets.items():
        dataset.write_dataset(str(root / name), images)
    model = str(root / 'tiny.pkl')
    generated = tiny_pickle(model)
    from test_inference import conditional_pickle
    conditional = conditional_pickle(str(root / 'conditional.pkl'))
    commands = {
        'label MIA': ['--real', root / 'S', '--fake', conditional, '--num', 8, '--seed', 3, '--label', 'MIA'],
        'datasets': ['--real', root / 'A', '--fake', root / 'B', '--num', 12, '--seed', 1],
        'pickle': ['--real', root / 'S', '--fake', model, '--num', 8, '--seed', 3],
        'missing': ['--real', root / 'nothing-here', '--halves'],
        'seed 2**32': ['--real', root / 'A', '--halves', '--seed', 2 ** 32],
    }
    with ThreadPoolExecutor(len(commands)) as pool:
        futures = {key: pool.submit(run_script, SCRIPT, *args) for key, args in commands.items()}
        results = {key: future.result() for key, future in futures.items()}
    return {'root': root, 'sets': sets, 'generated': generated, 'results': results, 'model': model,
            'conditional': conditional}


def test_command_compares_two_datasets(runs):
    result = runs['results']['datasets']
    assert result.returncode == 0, result.stderr
    a, b = runs['sets']['A'][:12], runs['sets']['B'][:12]
    report = parse_report(result.stdout)
    per_level, average = swd.sliced_wasserstein_distance(a, b, seed=1)
    assert [report['32x32'], report['16x16']] == pytest.approx(per_level, abs=6e-4)
    assert report['average'] == pytest.approx(average, abs=6e-4)
    assert report['fake'] == pytest.approx(msssim.ms_ssim_consecutive_pairs(b), abs=6e-5)
    assert report['real'] == pytest.approx(msssim.ms_ssim_consecutive_pairs(a), abs=6e-5)
    assert 'images 0..11' in result.stdout and '32x32, 1 channel' in result.stdout


def test_command_compares_halves_of_one_dataset(runs, capsys):
    compute_metrics.main(['--real', str(runs['root'] / 'A'), '--halves'])  # in-process: TF is already loaded
    out = capsys.readouterr().out
    a = runs['sets']['A']
    report = parse_report(out)
    assert report['average'] == pytest.approx(swd.sliced_wasserstein_distance(a[:12], a[12:], seed=0)[1],
                                              abs=6e-4)
    assert report['fake'] == pytest.approx(msssim.ms_ssim_consecutive_pairs(a[12:]), abs=6e-5)
    assert report['real'] == pytest.approx(msssim.ms_ssim_consecutive_pairs(a[:12]), abs=6e-5)
    assert 'images 0..11' in out and 'images 12..23' in out


def test_command_generates_from_a_network_pickle(runs):
    result = runs['results']['pickle']
    assert result.returncode == 0, result.stderr
    fake, real = runs['generated'], runs['sets']['S']
    report = parse_report(result.stdout)
    assert set(report) == {'16x16', 'average', 'fake', 'real'}
    assert report['16x16'] == pytest.approx(swd.sliced_wasserstein_distance(real, fake, seed=3)[1], abs=6e-4)
    assert report['fake'] == pytest.approx(msssim.ms_ssim_consecutive_pairs(fake), abs=6e-5)
    assert 'latent seed 3' in result.stdout


def test_command_measures_one_class_of_a_conditional_pickle(runs):
    from nodules import generation
    from nodules.gan import legacy
    from nodules.util.tfcompat import tf
    result = runs['results']['label MIA']
    assert result.returncode == 0, result.stderr
    graph = tf.Graph()
    with graph.as_default(), tf.Session(graph=graph):
        Gs = legacy.load_network_pkl(runs['conditional'], which=('Gs',))
        latents = generation.random_latents(8, Gs.input_shapes[0][1], 3)
        labels = np.zeros((8, 3), np.float32)
        labels[:, 2] = 1  # MIA, the third class
        mia = generation.generate_images(Gs, latents, labels=labels)[:, np.newaxis]
        labels = np.roll(labels, -1, axis=1)  # IAC, to show the class changes the measurement
        iac = generation.generate_images(Gs, latents, labels=labels)[:, np.newaxis]
    real = runs['sets']['S']
    report = parse_report(result.stdout)
    expected = swd.sliced_wasserstein_distance(real, mia, seed=3)[1]
    assert report['16x16'] == pytest.approx(expected, abs=6e-4)
    assert abs(swd.sliced_wasserstein_distance(real, iac, seed=3)[1] - expected) > 1e-2
    assert report['fake'] == pytest.approx(msssim.ms_ssim_consecutive_pairs(mia), abs=6e-5)
    assert 'generated images of class MIA, latent seed 3' in result.stdout


def test_command_fails_cleanly_on_a_missing_dataset(runs):
    assert_clean_failure(runs['results']['missing'], 'nothing-here', 'no such dataset directory')


def test_command_refuses_a_seed_numpy_cannot_take(runs):
    result = runs['results']['seed 2**32']
    assert_clean_failure(result, '--seed', '2**32')
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1


def test_command_refuses_sets_of_different_channel_counts(runs, tmp_path):
    """A grayscale dataset against an RGB one: one line naming both, not a figure computed on mixed layouts."""
    rgb = dataset.write_dataset(str(tmp_path / 'rgb'), np.repeat(runs['sets']['S'], 3, axis=1))
    result = run_script(SCRIPT, '--real', runs['root'] / 'S', '--fake', rgb)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert_clean_failure(result, 'error: the real images (%s) are 16x16, 1 channel but the fake ones (%s) are 16x16, '
                                 '3 channels; metrics compare images of one size and channel count'
                         % (runs['root'] / 'S', rgb))


def test_metrics_module_needs_no_tensorflow():
    """The metrics package is pure NumPy: importing it in a fresh interpreter loads neither TensorFlow nor a network."""
    code = ('import sys; sys.path.insert(0, %r); '
            'from nodules.metrics import frd, memorization, msssim, neighbours, prdc, spectral, swd; '
            'print(sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow" or m.startswith("nodules.gan") '
            'or m in ("nodules.generation", "nodules.data.dataset")))' % ROOT)
    result = subprocess.run([sys.executable, '-c', code], stdout=subprocess.PIPE, universal_newlines=True)
    assert result.stdout.strip() == '[]'


def test_command_reports_bad_input_as_user_errors(runs, capsys):
    root = runs['root']
    cases = [
        (['--real', root / 'A', '--fake', root / 'missing.pkl'], 'no such model file or dataset directory'),
        (['--real', root / 'A', '--halves', '--num', 13], 'holds 24 images'),
        (['--real', root / 'A', '--fake', root / 'B', '--num', 25], 'holds 24 images'),
        (['--real', root / 'A', '--fake', root / 'S'], r'are 32x32, 1 channel but the fake ones \(.*\) are 16x16'),
        (['--real', root / 'S', '--fake', runs['model'], '--label', 'AIS'],
         'trained without labels; --label does not apply'),
        (['--real', root / 'S', '--fake', runs['conditional'], '--label', 'SCC'],
         "no class 'SCC'; the classes of this generator are AIS, IAC, MIA"),
        (['--real', root / 'S', '--fake', runs['conditional']], r'pass --label AIS\|IAC\|MIA or --label-index'),
        (['--real', root / 'A', '--fake', root / 'B', '--label', 'AIS'], '--label applies to a network pickle'),
        (['--real', root / 'A', '--halves', '--label-index', '0'], '--label-index applies to a network pickle'),
    ]
    for argv, message in cases:
        with pytest.raises(UserError, match=message):
            compute_metrics.main([str(a) for a in argv])
    with pytest.raises(SystemExit):
        compute_metrics.main(['--real', str(root / 'A'), '--halves', '--metrics', 'swd,fid'])
    assert 'unknown metric' in capsys.readouterr().err
    compute_metrics.main(['--real', str(root / 'A'), '--halves', '--num', '4', '--metrics', 'msssim'])
    out = capsys.readouterr().out
    assert 'MS-SSIM' in out and 'Sliced' not in out
