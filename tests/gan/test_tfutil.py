"""Tests for nodules/gan/tfutil.py: sessions that give the same bits on every run."""
import hashlib

import numpy as np
import pytest

from nodules.util.tfcompat import tf
from nodules.gan import tfutil

# The smallest generator found on which Grappler's memory optimizer rewrites the fused up-scaling kernel's add_n
# into in-place adds of arbitrary order (512 feature maps; 448 escape it): the default network built to 16x16.
FULL_WIDTH_16 = dict(resolution=16, fmap_base=8192, fmap_max=512)
REPEATS = 20


def optimized_op_types(session, fetches, feed):
    """Types of the ops the session actually runs for `fetches`, after Grappler has rewritten the graph."""
    metadata = tf.RunMetadata()
    session.run(fetches, feed, options=tf.RunOptions(output_partition_graphs=True), run_metadata=metadata)
    return set(node.op for graph in metadata.partition_graphs for node in graph.node)


@pytest.mark.slow
def test_full_width_generator_is_repeatable():
    """The same latents through a 512-feature-map generator, many times in one session: bitwise the same output
    every time, and no in-place accumulation in the graph that runs.  Without session_config's setting the
    graph holds TemporaryVariable/AssignAdd in place of every add_n and outputs differ between runs."""
    graph = tf.Graph()
    with graph.as_default(), tf.Session(graph=graph, config=tfutil.session_config()) as session, \
            session.as_default():
        tf.set_random_seed(1)
        Gs = tfutil.Network('Gs', 'G_paper', **FULL_WIDTH_16)
        Gs.init_vars()
        latents = tf.placeholder(tf.float32, [None, 512])
        labels = tf.placeholder(tf.float32, [None, 0])
        images = Gs.get_output_for(latents, labels)
        feed = {latents: np.random.RandomState(2).randn(8, 512).astype(np.float32),
                labels: np.zeros((8, 0), np.float32)}
        op_types = optimized_op_types(session, images, feed)
        assert 'AddN' in op_types
        assert not op_types & {'TemporaryVariable', 'AssignAdd', 'DestroyTemporaryVariable'}
        digests = [hashlib.sha1(session.run(images, feed).tobytes()).hexdigest() for _ in range(REPEATS)]
    assert len(set(digests)) == 1, '%d different outputs in %d runs' % (len(set(digests)), REPEATS)


def test_session_config_keeps_add_n_order():
    config = tfutil.session_config()
    rewrite_options = config.graph_options.rewrite_options
    assert rewrite_options.memory_optimization == rewrite_options.NO_MEM_OPT
