"""Cost of the discriminator augmentation (nodules/gan/augment.py) at 64x64, as ratios to discriminator work in the same run.

On a minibatch of 16 images of 64x64 and a small discriminator (fmap_base 1024, fmap_max 128, as the small
configuration of bench_training.py), it times, over interleaved rounds after warm-up (median and best round):

  D fwd+bwd        forward pass and weight gradients of D on one minibatch (the reference)
  aug fwd+bwd      augmentation of one minibatch and its gradient w.r.t. the images, for each policy
  D step           a WGAN-GP discriminator step without the generator: D on reals, fakes and mixed images,
                   the gradient penalty (a second derivative through D, and through the augmentation) and the
                   weight gradients; once per policy, so its overhead over `none` is what augmentation adds to the
                   D half of a training step

A full training step also runs G forward and backward (without augmentation cost of its own), so the overhead of
the D step overstates what --augment adds to a training step; the issue's budget is at most 15 % of a step.
`ada` is timed at p = 1 with every augmentation on (cutout included): the most it can cost.

    python benchmarks/bench_augment.py [--repeats 15] [--iterations 2] [--clock cpu|wall]
"""
import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

MINIBATCH = 16
RESOLUTION = 64
SMALL = dict(fmap_base=1024, fmap_max=128)


def build(tf, tfutil, augment):
    """{name: op} of every timed computation, sharing one D and one set of image variables."""
    rng = np.random.RandomState(0)
    images = lambda name: tf.Variable(rng.uniform(-1, 1, (MINIBATCH, RESOLUTION, RESOLUTION, 1)).astype(np.float32),
                                      trainable=False, name=name)  # variables: nothing is constant-folded
    reals, fakes = images('reals'), images('fakes')
    D = tfutil.Network('D', 'D_paper', num_channels=1, resolution=RESOLUTION, **SMALL)
    weights = list(D.trainables.values())
    score = lambda x: D.get_output_for(x)[0]
    pipes = {'none': augment.AugmentPipe('none', name='none'),
             'diffaugment': augment.AugmentPipe('diffaugment', name='diffaugment'),
             'ada': augment.AugmentPipe('ada', initial_p=1.0, cutout=True, name='ada')}

    # Each op is fetched as one scalar summing its results: Grappler may skip work a tf.group only depends on.
    total = lambda tensors: tf.add_n([tf.reduce_sum(t) for t in tensors])
    ops = {'D fwd+bwd': total(tf.gradients(tf.reduce_mean(score(reals)), weights))}
    upstream = tf.constant(rng.randn(MINIBATCH, RESOLUTION, RESOLUTION, 1).astype(np.float32))
    mixing = tf.random_uniform([MINIBATCH, 1, 1, 1])
    for name, pipe in pipes.items():
        if name != 'none':
            augmented = pipe(reals, RESOLUTION)
            ops['aug fwd+bwd %s' % name] = total([augmented] + tf.gradients(tf.reduce_sum(augmented * upstream),
                                                                             [reals]))
        real_scores, fake_scores = score(pipe(reals, RESOLUTION)), score(pipe(fakes, RESOLUTION))
        mixed = reals + (fakes - reals) * mixing
        mixed_grads = tf.gradients(tf.reduce_sum(score(pipe(mixed, RESOLUTION))), [mixed])[0]
        penalty = tf.square(tf.sqrt(tf.reduce_sum(tf.square(mixed_grads), axis=[1, 2, 3])) - 1.0)
        loss = tf.reduce_mean(fake_scores - real_scores + 10.0 * penalty[:, None] + 0.001 * tf.square(real_scores))
        ops['D step %s' % name] = total(tf.gradients(loss, weights))
    return ops


def time_ops(tfutil, ops, repeats, iterations, clock):
    """{name: [seconds per run, one per round]}; the ops take turns so that machine load hits them alike."""
    for op in ops.values():
        for _ in range(2):
            tfutil.run(op)
    seconds = {name: [] for name in ops}
    for _ in range(repeats):
        for name, op in ops.items():
            start = clock()
            for _ in range(iterations):
                tfutil.run(op)
            seconds[name].append((clock() - start) / iterations)
    return seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--repeats', type=int, default=15, help='timed rounds (default %(default)s)')
    parser.add_argument('--iterations', type=int, default=2, help='runs of each op per round (default %(default)s)')
    parser.add_argument('--clock', choices=['wall', 'cpu'], default='cpu',
                        help='wall time, or CPU time of this process (all its threads), which other work on a '
                             'shared machine disturbs less (default %(default)s)')
    args = parser.parse_args(argv)

    from nodules.util.tfcompat import TF_VERSION, tf
    from nodules.gan import augment
    from nodules.gan import tfutil
    tfutil.init_tf(seed=1)
    ops = build(tf, tfutil, augment)
    tfutil.run(tf.global_variables_initializer())
    seconds = time_ops(tfutil, ops, args.repeats, args.iterations,
                       time.process_time if args.clock == 'cpu' else time.time)
    # The median is the usual figure; the best round is the one least disturbed by other work on a busy machine.
    median = {name: statistics.median(values) for name, values in seconds.items()}
    best = {name: min(values) for name, values in seconds.items()}

    print('TensorFlow %s, minibatch %d at %dx%d, D fmap_base %d fmap_max %d; %d rounds of %d runs, %s time'
          % (TF_VERSION, MINIBATCH, RESOLUTION, RESOLUTION, SMALL['fmap_base'], SMALL['fmap_max'], args.repeats,
             args.iterations, args.clock))
    print('%-24s %10s %10s %16s %14s' % ('', 'median ms', 'best ms', 'median/D f+b', 'best/D f+b'))
    for name in ops:
        print('%-24s %10.2f %10.2f %16.4f %14.4f' % (name, median[name] * 1e3, best[name] * 1e3,
                                                     median[name] / median['D fwd+bwd'],
                                                     best[name] / best['D fwd+bwd']))
    for name in ('diffaugment', 'ada'):
        print('D step overhead of %-11s median %+6.1f %%, best %+6.1f %%' % (
            name, (median['D step ' + name] / median['D step none'] - 1) * 100,
            (best['D step ' + name] / best['D step none'] - 1) * 100))


if __name__ == '__main__':
    main()
