"""The TensorFlow compatibility layer: names and settings that differ between TF 1.12 and TF 2.x."""
from nodules.util.tfcompat import tf, without_autotune


def test_without_autotune_switches_tf_data_autotuning_off_and_keeps_the_elements(tf_session):
    dataset = without_autotune(tf.data.Dataset.range(3))
    options = dataset.options()
    enabled = options.autotune.enabled if hasattr(options, 'autotune') else options.experimental_autotune
    assert enabled is False
    element = dataset.make_one_shot_iterator().get_next()
    assert [tf_session.run(element) for _ in range(3)] == [0, 1, 2]
