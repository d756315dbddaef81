"""The TensorFlow compatibility layer: names and settings that differ between TF 1.12 and TF 2.x."""
from nodules.util.tfcompat import IS_TF2, tf, without_autotune


def autotune_enabled(dataset):
    """What the runtime will do: on TF 2.x the options travel in the graph (an OptionsDataset op), and reading them
    back from the Python object would only show what was asked; TF 1.12 keeps them on the Python object."""
    if not IS_TF2:
        return dataset.options().experimental_autotune
    from tensorflow.core.framework import dataset_options_pb2
    ops = [op for op in tf.get_default_graph().get_operations() if op.type == 'OptionsDataset']
    assert len(ops) == 1, [op.type for op in tf.get_default_graph().get_operations()]
    autotune = dataset_options_pb2.Options.FromString(ops[0].get_attr('serialized_options')).autotune_options
    return autotune.enabled if autotune.HasField('enabled') else None  # unset: TensorFlow's default, which is on


def test_without_autotune_switches_tf_data_autotuning_off_and_keeps_the_elements(tf_session):
    dataset = without_autotune(tf.data.Dataset.range(3))
    assert autotune_enabled(dataset) is False
    element = dataset.make_one_shot_iterator().get_next()
    assert [tf_session.run(element) for _ in range(3)] == [0, 1, 2]
