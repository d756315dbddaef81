"""pix2pix speed: one training step (a G step then a D step on one minibatch) and generation, at the original's
ngf = ndf = 128 by default, as a share of the float32 GEMM peak timed in the same process.

FLOP estimate, counted layer by layer from the architecture (nodules/pix2pix/networks.py) as multiply-adds per
image: a 4x4 convolution costs 16 cin cout per output pixel, a 4x4 stride-2 transposed convolution 16 cin cout per
input pixel; batch norm, activations and dropout are ignored.  A training step then costs about
4 F_G + 8 F_D multiply-adds per image, taking a backward pass as twice its forward pass: the G step is G forward,
D forward on the fakes, D's input gradient and G's backward (3 F_G + 2 F_D); the D step generates again (F_G) and
runs D forward and backward on the real and the fake pairs (6 F_D).  Generation is F_G.  An estimate to about
+-30%, good for orders of magnitude.

    python benchmarks/bench_pix2pix.py                   # ngf = ndf = 128, minibatch 32 (the original's)
    python benchmarks/bench_pix2pix.py --ngf 16 --ndf 16 # the demo model
"""
import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from bench_training import gemm_rates  # noqa: E402  (the same GEMM peak as the PGGAN benchmark)


def unet_macs(resolution=64, ngf=128, num_channels=1):
    """Forward multiply-adds per image of G_unet."""
    levels = int(np.log2(resolution))
    filters = lambda level: min(ngf * 2 ** (level - 1), 8 * ngf)
    macs = 0
    for level in range(1, levels + 1):
        out_size = resolution >> level
        cin = 1 if level == 1 else filters(level - 1)
        macs += out_size ** 2 * 16 * cin * filters(level)                       # down
        cin = filters(level) * (1 if level == levels else 2)                     # the skip doubles the input
        cout = num_channels if level == 1 else filters(level - 1)
        macs += out_size ** 2 * 16 * cin * cout                                  # up: per input pixel
    return macs


def patchgan_macs(resolution=64, ndf=128, num_channels=1, strided_layers=3):
    """Forward multiply-adds per image of D_patchgan (mask and patch in)."""
    macs, cin, size = 0, 1 + num_channels, resolution
    for layer in range(strided_layers):
        size //= 2
        cout = ndf * 2 ** layer
        macs += size ** 2 * 16 * cin * cout
        cin = cout
    size = size + 2 - 3                                                          # pad 1, 4x4 valid
    macs += size ** 2 * 16 * cin * 2 * cin
    size = size + 2 - 3
    return macs + size ** 2 * 16 * 2 * cin * 1


def median_seconds(run, warmup, repeats):
    for _ in range(warmup):  # the first runs also optimise the graph: not timed
        run()
    times = []
    for _ in range(repeats):
        start = time.time()
        run()
        times.append(time.time() - start)
    return statistics.median(times), min(times), max(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--ngf', type=int, default=128)
    parser.add_argument('--ndf', type=int, default=128)
    parser.add_argument('--minibatch', type=int, default=32)
    parser.add_argument('--repeats', type=int, default=5)
    args = parser.parse_args(argv)

    from nodules.gan import tfutil
    from nodules.pix2pix import training
    from nodules.util import tfcompat
    from nodules.util.tfcompat import tf
    print('TensorFlow %s, Python %d.%d, %d CPU(s)' % ((tfcompat.TF_VERSION,) + sys.version_info[:2]
                                                     + (os.cpu_count(),)))
    peak, _ = gemm_rates(tf, tfutil, tfcompat.TF_VERSION, args.repeats)

    F_G, F_D = unet_macs(ngf=args.ngf), patchgan_macs(ndf=args.ndf)
    trainer = training.Trainer({'ngf': args.ngf, 'ndf': args.ndf, 'minibatch': args.minibatch, 'seed': 1})
    config = trainer.config
    print('ngf %d, ndf %d: G %.1f M and D %.1f M parameters; forward %.2f G multiply-adds per image in G, %.3f in D'
          % (args.ngf, args.ndf, config['G_params'] / 1e6, config['D_params'] / 1e6, F_G / 1e9, F_D / 1e9))
    rs = np.random.RandomState(0)
    masks = np.where(rs.rand(args.minibatch, 64, 64) < 0.1, 255, 0).astype(np.uint8)
    patches = rs.randint(0, 256, (args.minibatch, 64, 64)).astype(np.uint8)
    scaled_masks, scaled_patches = training.to_network_range(masks), training.to_network_range(patches)

    step = lambda: trainer._step(scaled_masks, scaled_patches)
    median, low, high = median_seconds(step, 2, args.repeats)
    flops = 2.0 * (4 * F_G + 8 * F_D) * args.minibatch
    print('training step, minibatch %d: median %.3f s (%.3f-%.3f), %.1f pairs/s, ~%.1f GFLOP/s = %.0f%% of the '
          'GEMM peak' % (args.minibatch, median, low, high, args.minibatch / median, flops / median / 1e9,
                         100.0 * flops / median / 1e9 / peak))
    generate = lambda: trainer.generate(masks, args.minibatch)
    median, low, high = median_seconds(generate, 2, args.repeats)
    flops = 2.0 * F_G * args.minibatch
    print('generation, minibatch %d: median %.3f s (%.3f-%.3f), %.1f patches/s, ~%.1f GFLOP/s = %.0f%% of the GEMM '
          'peak' % (args.minibatch, median, low, high, args.minibatch / median, flops / median / 1e9,
                    100.0 * flops / median / 1e9 / peak))
    trainer.close()
    later, _ = gemm_rates(tf, tfutil, tfcompat.TF_VERSION, args.repeats)
    print('GEMM peak at the end: %.2fx the one at the start (how much the machine\'s load moved)' % (later / peak))


if __name__ == '__main__':
    main()
