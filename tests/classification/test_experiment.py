"""Subtype classification: metrics and statistics (nodules/classification/statistics.py), the CNN and its training (nodules/classification/cnn.py), data,
folds and arms (nodules/classification/experiment.py), and 4-classify.py run for real on small datasets and on the demo generators."""
import itertools
import json
import math
import os

import numpy as np
import pytest

from conftest import ROOT, assert_clean_failure, directory_contents, run_script
from nodules.util.errors import UserError
from nodules.classification import statistics

DEMO_WEIGHTS = [os.path.join(ROOT, 'demo', 'weight', '%s.pkl' % c) for c in ('AIS', 'MIA', 'IAC')]


# ----------------------------------------------------------------------------------------------------------------
# Metrics, pinned against hand computations and independent NumPy ones


def test_metrics_of_a_hand_worked_example():
    # true:      0 0 0 0 1 1 1 2 2 2;  predicted (argmax): 0 0 0 1 1 1 2 2 2 0
    true = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    predicted = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 0])
    probabilities = np.full((10, 3), 0.1)
    probabilities[np.arange(10), predicted] = 0.8
    metrics = statistics.classification_metrics(true, probabilities, ['A', 'B', 'C'])
    assert metrics['confusion_matrix'] == [[3, 1, 0], [0, 2, 1], [1, 0, 2]]
    assert metrics['accuracy'] == pytest.approx(7 / 10.0)
    # sensitivities 3/4, 2/3, 2/3; specificities: A 5/6 (TN 5 of the 6 non-A), B 6/7, C 6/7
    assert metrics['balanced_accuracy'] == pytest.approx((3 / 4.0 + 2 / 3.0 + 2 / 3.0) / 3)
    assert metrics['per_class']['A']['sensitivity'] == pytest.approx(0.75)
    assert metrics['per_class']['A']['specificity'] == pytest.approx(5 / 6.0)
    assert metrics['per_class']['B']['specificity'] == pytest.approx(6 / 7.0)
    assert metrics['per_class']['C']['specificity'] == pytest.approx(6 / 7.0)
    assert metrics['per_class']['A']['patches'] == 4
    # AUC of A: scores 0.8 for the 4 patches predicted A (3 positives, 1 negative), 0.1 for the rest.
    # Positives: 3 at 0.8, 1 at 0.1; negatives: 1 at 0.8, 5 at 0.1.  Pairs won: 3*5 + 0.5*3*1 + 0.5*1*5 = 19 of 24.
    assert metrics['per_class']['A']['auc'] == pytest.approx(19 / 24.0)
    aucs = [metrics['per_class'][c]['auc'] for c in 'ABC']
    assert metrics['auc_macro'] == pytest.approx(np.mean(aucs))


def brute_force_auc(is_positive, scores):
    """Every positive-negative pair: 1 when the positive scores higher, 1/2 on a tie."""
    positives, negatives = scores[is_positive], scores[~is_positive]
    wins = (positives[:, None] > negatives[None, :]).sum() + 0.5 * (positives[:, None] == negatives[None, :]).sum()
    return wins / float(len(positives) * len(negatives))


def test_auc_and_roc_curve_agree_with_pairwise_counting_including_ties():
    rng = np.random.RandomState(3)
    for trial in range(20):
        count = rng.randint(2, 60)
        scores = rng.randint(0, 6, size=count) / 5.0  # few distinct values: many ties
        is_positive = rng.uniform(size=count) < 0.4
        if is_positive.all() or not is_positive.any():
            assert statistics.roc_auc(is_positive, scores) is None
            continue
        expected = brute_force_auc(is_positive, scores)
        assert statistics.roc_auc(is_positive, scores) == pytest.approx(expected, abs=1e-12)
        fpr, tpr = statistics.roc_curve(is_positive, scores)
        assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
        assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
        # Straight segments between the tie-grouped points enclose the tie-counted area.
        area = np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)
        assert area == pytest.approx(expected, abs=1e-12)


def test_auc_small_examples():
    assert statistics.roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert statistics.roc_auc([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1]) == 1.0
    assert statistics.roc_auc([1, 0], [0.5, 0.5]) == 0.5


def test_summaries_use_the_sample_standard_deviation():
    assert statistics.mean_sd([0.5, 0.7, 0.9]) == {'mean': pytest.approx(0.7), 'sd': pytest.approx(0.2), 'n': 3}
    assert statistics.mean_sd([0.4]) == {'mean': 0.4, 'sd': 0.0, 'n': 1}
    assert statistics.mean_sd([None, 0.4]) == {'mean': 0.4, 'sd': 0.0, 'n': 1}


@pytest.mark.parametrize('df, probability, expected', [
    (1, 0.975, 12.7062047362), (2, 0.975, 4.3026527297), (4, 0.975, 2.7764451052), (9, 0.975, 2.2621571628),
    (24, 0.975, 2.0638985616), (100, 0.975, 1.9839715185), (5, 0.95, 2.0150483733), (3, 0.025, -3.1824463053)])
def test_student_t_quantiles_match_tables(df, probability, expected):
    assert statistics.student_t_quantile(probability, df) == pytest.approx(expected, abs=1e-8)


def test_student_t_cdf_matches_closed_forms():
    for t in (-30.0, -2.5, -0.3, 0.0, 0.7, 1.0, 4.0, 50.0):
        cauchy = 0.5 + math.atan(t) / math.pi                   # df = 1
        df2 = 0.5 + t / (2.0 * math.sqrt(2.0 + t * t))          # df = 2
        assert statistics.student_t_cdf(t, 1) == pytest.approx(cauchy, abs=1e-12)
        assert statistics.student_t_cdf(t, 2) == pytest.approx(df2, abs=1e-12)


def test_corrected_paired_t_by_hand():
    differences = [0.10, 0.20, 0.30, 0.00, 0.10]
    result = statistics.corrected_paired_t(differences, test_train_ratio=0.25)
    mean = 0.14
    variance = np.var(differences, ddof=1)                      # 0.013
    corrected = (1 / 5.0 + 0.25) * variance
    half_width = 2.7764451052 * math.sqrt(corrected)            # t(0.975, 4)
    assert result['mean_difference'] == pytest.approx(mean)
    assert result['ci95'] == pytest.approx([mean - half_width, mean + half_width], abs=1e-9)
    assert result['t'] == pytest.approx(mean / math.sqrt(corrected))
    # Two-sided p from the closed-form CDF of Student's t with 4 degrees of freedom.
    def cdf4(t):
        x = t * t / 4.0
        return 0.5 + 0.375 * (t / math.sqrt(1 + x)) * (1 - x / (3.0 * (1 + x)))
    assert cdf4(2.7764451052) == pytest.approx(0.975, abs=1e-9)
    t = mean / math.sqrt(corrected)
    assert result['p_value'] == pytest.approx(2 * (1 - cdf4(t)), abs=1e-9)
    assert (result['wins'], result['ties'], result['losses']) == (4, 1, 0)
    assert result['units'] == 5
    # The correction widens the interval over the naive paired t one.
    naive = 2.7764451052 * math.sqrt(variance / 5)
    assert half_width > naive


def test_compare_arms_pairs_by_fold():
    folds = {'none': [{'balanced_accuracy': v} for v in (0.5, 0.6, 0.7)],
             'gan': [{'balanced_accuracy': v} for v in (0.6, 0.6, 0.9)]}
    [comparison] = statistics.compare_arms(folds, ['none', 'gan'], 0.5)
    assert (comparison['arm'], comparison['baseline']) == ('gan', 'none')
    assert comparison['mean_difference'] == pytest.approx(0.1)
    assert (comparison['wins'], comparison['ties'], comparison['losses']) == (2, 1, 0)


# ----------------------------------------------------------------------------------------------------------------
# Folds and arms


def synthetic_patch_data(groups_per_class=(7, 9, 6), views=(1, 4), resolution=16, seed=0):
    from nodules.classification import experiment
    rng = np.random.RandomState(seed)
    images, labels, groups, names, classes = [], [], [], [], ['AIS', 'MIA', 'IAC']
    for c, count in enumerate(groups_per_class):
        for g in range(count):
            n = rng.randint(views[0], views[1] + 1)
            images.append(rng.randint(0, 128, size=(n, resolution, resolution)).astype(np.uint8))
            labels += [c] * n
            groups += [len(names)] * n
            names.append('%s/%d' % (classes[c], g))
    return experiment.PatchData(np.concatenate(images), np.array(labels), np.array(groups), names, classes,
                              ['a', 'b', 'c'], True)


def test_grouped_folds_keep_nodules_whole_and_spread_classes():
    from nodules.classification import experiment
    for seed in range(5):
        data = synthetic_patch_data(seed=seed)
        fold_of = experiment.stratified_group_folds(data.labels, data.groups, 3, seed)
        for g in np.unique(data.groups):
            assert len(np.unique(fold_of[data.groups == g])) == 1
        for c in range(3):
            per_fold = np.bincount(fold_of[data.labels == c], minlength=3)
            assert per_fold.min() > 0
            assert per_fold.max() - per_fold.min() <= 4  # at most one nodule's views apart (max 4 views)


def test_plans_never_share_a_nodule_between_fit_validation_and_test():
    from nodules.classification import experiment
    data = synthetic_patch_data()
    plans = experiment.plan_folds(data, folds=3, repeats=2, validation_fraction=0.2, seed=5)
    assert len(plans) == 6
    for repeat in range(2):
        tests = np.concatenate([p.test for p in plans if p.repeat == repeat])
        assert sorted(tests) == list(range(len(data.labels)))  # every patch tested once per repeat
    for plan in plans:
        fit, validation, test = (set(data.groups[i]) for i in (plan.fit, plan.validation, plan.test))
        assert not fit & validation and not fit & test and not validation & test
        assert len(plan.fit) + len(plan.validation) + len(plan.test) == len(data.labels)
        for c in range(3):  # every class has validation nodules and keeps training ones
            assert np.any(data.labels[plan.validation] == c) and np.any(data.labels[plan.fit] == c)
    document = experiment.folds_document(data, plans)
    for entry, plan in zip(document['folds'], plans):
        assert not set(entry['train_groups']) & set(entry['test_groups'])
        assert set(entry['validation_groups']) <= set(entry['train_groups'])
        assert len(entry['train_groups']) + len(entry['test_groups']) == len(data.group_names)
        assert all(name.split('/')[0] in data.class_names for name in entry['test_groups'])
    # A new repeat reshuffles; the same seed gives the same folds.
    again = experiment.plan_folds(data, folds=3, repeats=2, validation_fraction=0.2, seed=5)
    assert all(np.array_equal(a.test, b.test) for a, b in zip(plans, again))
    assert not np.array_equal(plans[0].test, plans[3].test)


def test_generated_patches_only_ever_train():
    from nodules.classification import experiment
    data = synthetic_patch_data()
    plan = experiment.plan_folds(data, folds=3, repeats=1, validation_fraction=0.2, seed=1)[0]
    # Generated patches are recognisable: real ones stay below 128, generated ones are 200 and up.
    pools = [np.full((40, 16, 16), 200 + c, np.uint8) for c in range(3)]
    for spec in [('count', 5), ('ratio', 1.0)]:
        counts = experiment.generated_counts(spec, data, plan)
        real_fit = np.bincount(data.labels[plan.fit], minlength=3)
        assert counts == ([5, 5, 5] if spec[0] == 'count' else list(real_fit))
        for arm in experiment.ARMS:
            sets = experiment.fold_sets(arm, data, plan, pools, spec)
            images, labels, is_generated = sets['fit']
            looks_generated = images.reshape(len(images), -1).min(axis=1) >= 200
            assert np.array_equal(looks_generated, is_generated)
            for part in ('validation', 'test'):
                assert sets[part][0].max() < 128, (arm, part)
            assert np.array_equal(sets['test'][0], data.images[plan.test])
            expected_generated = counts if arm in experiment.GENERATED_ARMS else [0, 0, 0]
            assert list(np.bincount(labels[is_generated], minlength=3)) == expected_generated
            assert np.all(images[is_generated][:, 0, 0] == 200 + labels[is_generated])  # right class's pool
            expected_real = 0 if arm == 'synthetic' else len(plan.fit)
            assert np.sum(~is_generated) == expected_real


def test_generated_count_parsing():
    from nodules.classification import experiment
    assert experiment.parse_generated_count('300') == ('count', 300)
    assert experiment.parse_generated_count('0.5x') == ('ratio', 0.5)
    assert experiment.parse_generated_count('2X') == ('ratio', 2.0)
    for bad in ('0', '-3', 'x', 'abc', '0x', 'nanx', '1.5'):
        with pytest.raises(ValueError):
            experiment.parse_generated_count(bad)


def test_classic_augmentation_is_a_symmetry_of_a_shifted_patch():
    from nodules.classification import cnn
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, size=(32, 16, 16)).astype(np.uint8)
    out = cnn.classic_augmentation(max_shift=0)(images, np.random.RandomState(1))
    for image, augmented in zip(images, out):
        symmetries = [np.rot90(image, k) for k in range(4)] + [np.rot90(image, k)[:, ::-1] for k in range(4)]
        assert any(np.array_equal(augmented, s) for s in symmetries)
    assert len(set(out[i].tobytes() for i in range(32)) - set(images[i].tobytes() for i in range(32))) > 0
    shifted = cnn.classic_augmentation(max_shift=2)(images, np.random.RandomState(1))
    again = cnn.classic_augmentation(max_shift=2)(images, np.random.RandomState(1))
    assert np.array_equal(shifted, again)
    # A shift of at most 2 keeps the centre 12x12 of some symmetry of the patch.
    for image, augmented in zip(images[:8], shifted[:8]):
        candidates = [s[:, ::-1] if flip else s for s in (np.rot90(image, k) for k in range(4)) for flip in (0, 1)]
        assert any(np.array_equal(augmented[2:14, 2:14], s[2 + dy:14 + dy, 2 + dx:14 + dx])
                   for s in candidates for dy, dx in itertools.product(range(-2, 3), repeat=2))


def test_balanced_class_weights():
    from nodules.classification import cnn
    weights = cnn.class_loss_weights([0, 0, 0, 1, 2, 2], 3)
    assert weights == pytest.approx([6 / 9.0, 6 / 3.0, 6 / 6.0])
    assert np.sum(weights[[0, 0, 0, 1, 2, 2]]) == pytest.approx(6)  # the total weight is the patch count
    assert cnn.class_loss_weights([0, 0], 3) == pytest.approx([1.0, 0.0, 0.0])
    assert cnn.class_loss_weights([0, 1], 2, 'none') == pytest.approx([1, 1])


def test_architecture_arithmetic():
    from nodules.classification import cnn
    layers = cnn.conv_layers(64, (64, 128, 256))
    assert [(l.in_channels, l.out_channels, l.size) for l in layers] == [
        (16, 64, 16), (64, 64, 16), (64, 128, 8), (128, 128, 8), (128, 256, 4), (256, 256, 4)]
    macs = 256 * 9 * (16 * 64 + 64 * 64) + 64 * 9 * (64 * 128 + 128 * 128) + 16 * 9 * (128 * 256 + 256 * 256)
    assert cnn.multiply_adds(64, 3, (64, 128, 256)) == macs + 256 * 3
    first = 256 * 9 * 16 * 64  # the first layer needs no gradient with respect to its input
    assert cnn.training_flops(64, 3, (64, 128, 256)) == 2 * (3 * (macs + 256 * 3) - first)
    net = cnn.Classifier(64, 3, (64, 128, 256))
    try:  # the weights the graph really has
        assert sum(int(np.prod(v.shape.as_list())) for v in net.model_vars) == (
            cnn.num_weights(64, 3, (64, 128, 256)) + 2 * (2 * (64 + 128 + 256)))  # + moving mean, variance
    finally:
        net.close()
    with pytest.raises(ValueError):
        cnn.conv_layers(8)


# ----------------------------------------------------------------------------------------------------------------
# The network, trained for real


def two_class_patches(count, resolution=16, seed=0):
    """Dark patches with a bright centre (class 1) or without (class 0), plus noise."""
    rng = np.random.RandomState(seed)
    labels = np.arange(count) % 2
    images = rng.randint(20, 60, size=(count, resolution, resolution))
    middle = slice(resolution // 2 - 3, resolution // 2 + 3)
    images[labels == 1, middle, middle] += 150
    return images.astype(np.uint8), labels


def test_classifier_learns_is_deterministic_and_keeps_the_best_epoch():
    from nodules.classification import cnn
    images, labels = two_class_patches(96)
    val_images, val_labels = two_class_patches(32, seed=1)
    net = cnn.Classifier(16, 2, widths=(8, 16, 16))
    try:
        first = net.fit(images, labels, val_images, val_labels, seed=3, epochs=6, patience=2, batch_size=16)
        weights = net.get_weights()
        probabilities = net.predict(val_images)
        assert np.mean(np.argmax(probabilities, axis=1) == val_labels) == 1.0
        assert probabilities.shape == (32, 2) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
        # The weights kept are those of the epoch with the lowest validation loss.
        losses = [h['validation_loss'] for h in first['history']]
        assert first['best_epoch'] == 1 + int(np.argmin(losses))
        assert net.loss(val_images, val_labels) == pytest.approx(min(losses), rel=1e-5)
        # Same seed, same everything; another seed, other weights.
        second = net.fit(images, labels, val_images, val_labels, seed=3, epochs=6, patience=2, batch_size=16)
        assert first == second
        assert all(np.array_equal(a, b) for a, b in zip(weights, net.get_weights()))
        net.fit(images, labels, val_images, val_labels, seed=4, epochs=1, batch_size=16)
        assert not all(np.array_equal(a, b) for a, b in zip(weights, net.get_weights()))
        # No validation set: all epochs run.
        plain = net.fit(images, labels, seed=3, epochs=3, batch_size=16)
        assert plain['epochs_trained'] == 3 and plain['best_epoch'] == 3
    finally:
        net.close()


def test_early_stopping_stops_after_patience():
    from nodules.classification import cnn
    images, labels = two_class_patches(32)
    # Validation labels that contradict the images: its loss soon grows, so training stops early.
    val_images, val_labels = two_class_patches(32, seed=1)
    net = cnn.Classifier(16, 2, widths=(8, 8, 8), learning_rate=0.01)
    done = []
    try:
        summary = net.fit(images, labels, val_images, 1 - val_labels, seed=0, epochs=40, patience=2,
                          batch_size=16, progress=done.append)
    finally:
        net.close()
    assert summary['epochs_trained'] < 40
    assert summary['epochs_trained'] - summary['best_epoch'] == 2
    assert sum(done) == 40  # epochs saved by stopping early count as done for the progress bar


# ----------------------------------------------------------------------------------------------------------------
# Datasets on disk


def class_images(c, count, resolution):
    """Patches whose centre brightness depends on the class, so a small network tells them apart."""
    rng = np.random.RandomState(10 + c)
    images = rng.randint(30, 70, size=(count, 1, resolution, resolution))
    middle = slice(resolution // 2 - resolution // 8, resolution // 2 + resolution // 8)
    images[:, :, middle, middle] += 60 * c
    return images.astype(np.uint8)


def make_class_dataset(root, name, c, count=12, resolution=32, views=3, metadata=None, groups=True):
    """A dataset of `count` patches of class `c`, `views` per nodule; `groups=False` leaves out the groups file
    (as in datasets made before there were groups)."""
    from nodules.data import dataset
    path = os.path.join(str(root), name)
    dataset.write_dataset(path, class_images(c, count, resolution), metadata=metadata,
                          groups=np.arange(count, dtype=np.int64) // views)
    if not groups:
        os.remove(dataset.groups_path(path))
    return path


@pytest.fixture(scope='module')
def class_datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp('classes')
    return [make_class_dataset(root, name, c, metadata={'subtype': subtype})
            for c, (name, subtype) in enumerate([('a', 'AIS'), ('m', 'MIA'), ('i', 'IAC')])]


def test_per_class_datasets_load_with_names_and_groups(class_datasets, tmp_path):
    from nodules.classification import experiment
    warnings = []
    data = experiment.load_patch_data(class_datasets, 32, warn=warnings.append)
    assert data.class_names == ['AIS', 'MIA', 'IAC'] and not warnings and data.has_groups
    assert data.images.shape == (36, 32, 32) and list(np.bincount(data.labels)) == [12, 12, 12]
    assert len(data.group_names) == 12 and data.group_names[:2] == ['AIS/0', 'AIS/1']
    assert data.group_names[4] == 'MIA/0'
    assert list(data.groups[:6]) == [0, 0, 0, 1, 1, 1]
    # At 16x16 the r04 file is read.
    assert experiment.load_patch_data(class_datasets, 16, warn=warnings.append).images.shape == (36, 16, 16)
    # Without groups and metadata: folder names, one nodule per patch, and one warning line.
    plain = [make_class_dataset(tmp_path, n, c, count=4, groups=False) for c, n in enumerate(['x', 'y'])]
    data = experiment.load_patch_data(plain, 32, warn=warnings.append)
    assert data.class_names == ['x', 'y'] and not data.has_groups and len(data.group_names) == 8
    assert len(warnings) == 1 and 'leak' in warnings[0] and '\n' not in warnings[0]


def test_labelled_dataset_loads(tmp_path):
    from nodules.classification import experiment
    from nodules.data import dataset
    labels = np.array([0, 1, 2, 1, 0, 2, 2, 1])
    images = np.concatenate([class_images(c, 1, 16) for c in labels])
    path = dataset.write_dataset(str(tmp_path / 'lab'), images, labels=np.eye(3)[labels],
                                 metadata={'classes': ['AIS', 'MIA', 'IAC']},
                                 groups=np.array([5, 6, 7, 6, 5, 8, 8, 9]))
    data = experiment.load_patch_data([path], 16, warn=lambda line: None)
    assert data.class_names == ['AIS', 'MIA', 'IAC'] and list(data.labels) == list(labels)
    assert data.group_names == ['AIS/5', 'MIA/6', 'IAC/7', 'IAC/8', 'MIA/9']
    np.save(dataset.groups_path(path), np.array([5, 5, 7, 6, 5, 8, 8, 9]))  # nodule 5: an AIS and a MIA patch
    with pytest.raises(UserError, match='nodule group 5 has patches of classes AIS and MIA'):
        experiment.load_patch_data([path], 16, warn=lambda line: None)


@pytest.mark.parametrize('problem, message', [
    ('groups_length', 'lists nodule groups for 3 images but the dataset has 12'),
    ('groups_float', '1-D integer array'),
    ('resolution', 'has no 128x128 TFRecords file'),
    ('same_class', "its class 'AIS' is also the class of"),
    ('unlabelled', 'one dataset without labels'),
    ('not_one_hot', 'row 1 is not one-hot'),
    ('missing', 'no such dataset directory'),
])
def test_bad_data_is_a_user_error(tmp_path, problem, message):
    from nodules.classification import experiment
    from nodules.data import dataset
    a = make_class_dataset(tmp_path, 'a', 0, metadata={'subtype': 'AIS'})
    b = make_class_dataset(tmp_path, 'b', 1, metadata={'subtype': 'MIA'})
    dirs, resolution = [a, b], 32
    if problem == 'groups_length':
        np.save(os.path.join(a, 'a-groups.npy'), np.arange(3))
    elif problem == 'groups_float':
        np.save(os.path.join(a, 'a-groups.npy'), np.zeros(12))
    elif problem == 'resolution':
        resolution = 128
    elif problem == 'same_class':
        dirs = [a, make_class_dataset(tmp_path, 'c', 1, metadata={'subtype': 'AIS'})]
    elif problem == 'unlabelled':
        dirs = [a]
    elif problem == 'not_one_hot':
        dirs = [dataset.write_dataset(str(tmp_path / 'l'), class_images(0, 3, 32),
                                      labels=np.array([[1, 0], [1, 1], [0, 1]]))]
    elif problem == 'missing':
        dirs = [a, str(tmp_path / 'nope')]
    with pytest.raises(UserError, match=message):
        experiment.load_patch_data(dirs, resolution, warn=lambda line: None)


def test_too_few_nodules_for_the_folds(class_datasets):
    from nodules.classification import experiment
    data = experiment.load_patch_data(class_datasets, 32)
    experiment.check_foldable(data, 4)
    with pytest.raises(UserError, match='class AIS has 4 nodule'):
        experiment.check_foldable(data, 5)


# ----------------------------------------------------------------------------------------------------------------
# 4-classify.py, run for real

SMALL = ['--folds', '2', '--epochs', '2', '--widths', '8,16,16', '--resolution', '32', '--batch-size', '16']


@pytest.mark.slow
def test_cli_end_to_end_on_small_datasets(class_datasets, tmp_path):
    outdir = tmp_path / 'out'
    command = ['--data'] + class_datasets + SMALL + ['--outdir', outdir, '--arms', 'none,classic', '--repeats', '2']
    result = run_script('4-classify.py', *command)
    assert result.returncode == 0, result.stderr
    assert 'Traceback' not in result.stderr and 'leak' not in result.stderr
    assert sorted(os.listdir(str(outdir))) == sorted(
        ['results.json', 'folds.json', 'results.md', 'roc_curves.png', 'confusion_matrices.png'])
    with open(str(outdir / 'results.json'), encoding='utf-8') as f:
        results = json.load(f)
    assert results['classes'] == ['AIS', 'MIA', 'IAC']
    assert list(results['arms']) == ['none', 'classic']
    for arm in ('none', 'classic'):
        summary = results['arms'][arm]['summary']
        assert summary['accuracy']['n'] == 4  # 2 folds x 2 repeats
        runs = results['arms'][arm]['runs']
        assert [r['metrics']['accuracy'] for r in runs] == pytest.approx(
            [np.trace(r['metrics']['confusion_matrix']) / float(r['test_patches']) for r in runs])
        assert summary['accuracy']['mean'] == pytest.approx(np.mean([r['metrics']['accuracy'] for r in runs]))
        assert np.sum(summary['confusion_matrix']) == 2 * 36  # every patch tested once per repeat
        assert set(summary['per_class']) == {'AIS', 'MIA', 'IAC'}
        for c in ('AIS', 'MIA', 'IAC'):
            assert set(summary['per_class'][c]) == {'sensitivity', 'specificity', 'auc'}
    [comparison] = results['comparisons']
    assert (comparison['arm'], comparison['baseline'], comparison['units']) == ('classic', 'none', 4)
    with open(str(outdir / 'folds.json'), encoding='utf-8') as f:
        folds = json.load(f)['folds']
    assert len(folds) == 4
    for entry in folds:
        assert not set(entry['train_groups']) & set(entry['test_groups'])
        assert len(entry['train_groups']) + len(entry['test_groups']) == 12
    with open(str(outdir / 'results.md'), encoding='utf-8') as f:
        markdown = f.read()
    assert '| `classic` − `none` |' in markdown and '| `none` |' in markdown
    for png in ('roc_curves.png', 'confusion_matrices.png'):
        with open(str(outdir / png), 'rb') as f:
            assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    before = directory_contents(str(outdir))

    # An earlier run's results are never replaced silently, and the refusal comes before any work.
    refused = run_script('4-classify.py', *command)
    assert_clean_failure(refused, 'already holds', '--overwrite')
    assert directory_contents(str(outdir)) == before
    # The same command in another process gives the same bytes.
    again = run_script('4-classify.py', *(command + ['--overwrite']))
    assert again.returncode == 0, again.stderr
    assert directory_contents(str(outdir)) == before


@pytest.mark.slow
def test_cli_with_the_demo_generators(class_datasets, tmp_path):
    outdir = tmp_path / 'out'
    result = run_script('4-classify.py', '--data', *(class_datasets + SMALL + [
        '--outdir', outdir, '--arms', 'none,gan,classic+gan,synthetic', '--gan'] + DEMO_WEIGHTS
        + ['--synthetic-per-class', '8']))
    assert result.returncode == 0, result.stderr
    with open(str(outdir / 'results.json'), encoding='utf-8') as f:
        results = json.load(f)
    for arm in ('none', 'gan', 'classic+gan', 'synthetic'):
        for run in results['arms'][arm]['runs']:
            assert run['train_patches']['generated'] == (0 if arm == 'none' else 3 * 8)
            held_out = run['test_patches'] + run['validation_patches']
            assert run['train_patches']['real'] == (0 if arm == 'synthetic' else 36 - held_out)
    assert len(results['comparisons']) == 6
    assert 'synthetic' in results['settings']['arms']


@pytest.mark.parametrize('arguments, fragments', [
    (['--data', 'nowhere', 'processData/MIA'], ['nowhere', 'no such dataset directory']),
    (['--arms', 'none,gan'], ['--arms gan needs generated patches']),
    (['--arms', 'none,bogus'], ["unknown arm 'bogus'"]),
    (['--gan'] + DEMO_WEIGHTS[:2], ['--gan takes one generator per class (3: AIS, MIA, IAC), got 2']),
    (['--gan-labels', '0', '1', '2'], ['--gan-labels goes with --gan-model']),
    (['--synthetic-per-class', '0'], ['--synthetic-per-class']),
    (['--folds', '1'], ['--folds must be at least 2']),
    (['--resolution', '48'], ['--resolution', 'power of two from 16 to 1024, got 48']),
    (['--widths', '8,x'], ['--widths']),
    (['--seed', str(2 ** 32)], ['argument --seed: must be below 2**32 = 4294967296, got 4294967296']),
    (['--lr', 'inf'], ['argument --lr: must be a finite number above 0, got inf']),
    (['--lr', 'nan'], ['argument --lr: must be a finite number above 0, got nan']),
    (['--synthetic-per-class', '100001'], ['--synthetic-per-class', '100001 patches per class asked for; at most '
                                                                     '100000']),
])
def test_cli_bad_arguments(tmp_path, arguments, fragments):
    outdir = tmp_path / 'out'
    result = run_script('4-classify.py', '--outdir', outdir, '--epochs', '1', *arguments)
    assert_clean_failure(result, *fragments)
    assert not outdir.exists()


@pytest.mark.slow
def test_cli_bad_generator_and_folds(class_datasets, tmp_path):
    outdir = tmp_path / 'out'
    not_a_pickle = tmp_path / 'AIS.pkl'
    not_a_pickle.write_bytes(b'not a pickle at all')
    result = run_script('4-classify.py', '--data', *(class_datasets + SMALL + [
        '--outdir', outdir, '--gan', not_a_pickle] + DEMO_WEIGHTS[1:]))
    assert_clean_failure(result, str(not_a_pickle))
    result = run_script('4-classify.py', '--data', *(class_datasets + SMALL + ['--outdir', outdir, '--folds', '5']))
    assert_clean_failure(result, 'class AIS has 4 nodule(s), fewer than the 5 folds')
    assert not outdir.exists()
    existing_file = tmp_path / 'file'
    existing_file.write_text(u'x')
    result = run_script('4-classify.py', '--data', *(class_datasets + SMALL + ['--outdir', existing_file]))
    assert_clean_failure(result, str(existing_file))


@pytest.mark.parametrize('arguments, fragments', [
    # 3.6e11 weights in the last stage; a minibatch of 10**8 patches: refused before any training, not a crash
    # deep in TensorFlow or a loop that never ends
    (['--widths', '8,16,200000'], ['--widths 8,16,200000 --batch-size 16: training the classifier on 32x32 patches '
                                   'needs about', 'GB of memory, more than the']),
    (['--batch-size', '100000000'], ['--widths 8,16,16 --batch-size 100000000: training the classifier']),
    (['--arms', 'gan', '--synthetic-per-class', '100000x', '--gan'] + DEMO_WEIGHTS,
     ['--synthetic-per-class 100000x asks for 300000 patches of class AIS; at most 100000 are generated per class']),
])
def test_cli_sizes_that_cannot_fit_are_refused_before_training(class_datasets, tmp_path, arguments, fragments):
    outdir = tmp_path / 'out'
    small = [a for a in SMALL if a not in ('--batch-size', '16')] + ['--batch-size', '16']
    result = run_script('4-classify.py', '--data', *(class_datasets + small + ['--outdir', outdir] + arguments))
    assert_clean_failure(result, *fragments)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not outdir.exists()


def test_classifier_memory_estimate_grows_with_widths_and_minibatch():
    from nodules.classification import cnn
    base = cnn.training_bytes(64, 3)
    assert cnn.training_bytes(64, 3, batch_size=10 * cnn.EVAL_BATCH_SIZE) > 9 * base
    weights = cnn.num_weights(64, 3, (32, 64, 128))
    assert base > 4 * cnn.WEIGHT_COPIES * weights  # and the activations of at least one minibatch
    assert cnn.training_bytes(64, 3, (32, 64, 200000)) > 4 * 9 * 200000 ** 2  # the last stage's 3x3 convolution


# ----------------------------------------------------------------------------------------------------------------
# Generators: one per class, or one conditional generator with a label index per class

TINY_GAN = {'num_channels': 1, 'resolution': 32, 'fmap_base': 64, 'fmap_max': 16}


def save_tiny_gan(path, label_size, seed):
    """A real (G, D, Gs) network pickle with random weights, written by legacy.save_network_pkl."""
    from nodules.gan import legacy
    from nodules.gan import tfutil
    from nodules.util.tfcompat import tf
    graph = tf.Graph()
    with graph.as_default(), tf.Session(graph=graph):
        tf.set_random_seed(seed)
        G = tfutil.Network('G', 'G_paper', label_size=label_size, **TINY_GAN)
        D = tfutil.Network('D', 'D_paper', label_size=label_size, **TINY_GAN)
        G.init_vars()
        D.init_vars()
        legacy.save_network_pkl(path, (G, D, G.clone('Gs')))
    return path


@pytest.fixture(scope='module')
def tiny_gans(tmp_path_factory):
    root = tmp_path_factory.mktemp('gans')
    return {'conditional': save_tiny_gan(str(root / 'cond.pkl'), 3, 1),
            'plain': save_tiny_gan(str(root / 'plain.pkl'), 0, 2)}


def test_conditional_generator_gives_each_class_its_label(tiny_gans):
    from nodules.classification import experiment
    generators = experiment.GeneratorSet(['AIS', 'MIA', 'IAC'], 16, gan_model=tiny_gans['conditional'],
                                       gan_labels=[2, 0, 1])
    try:
        generators.check()
        first = generators.generate(0, 5, seed=7)
        assert first.shape == (5, 16, 16) and first.dtype == np.uint8  # 32x32 output reduced to 16x16
        assert np.array_equal(first, generators.generate(0, 5, seed=7))
        assert not np.array_equal(first, generators.generate(1, 5, seed=7))  # another label, other images
        assert not np.array_equal(first, generators.generate(0, 5, seed=8))
    finally:
        generators.close()
    # The same latents through label 2 of a GeneratorSet whose class 0 is label 2.
    same = experiment.GeneratorSet(['a', 'b', 'c'], 16, gan_model=tiny_gans['conditional'], gan_labels=[0, 1, 2])
    try:
        assert np.array_equal(first, same.generate(2, 5, seed=7))
    finally:
        same.close()


@pytest.mark.parametrize('kind, message', [
    ('plain as conditional', 'was trained without labels'),
    ('conditional as plain', 'is conditional on 3 classes'),
    ('label out of range', 'has labels 0..2; --gan-labels asks for 3'),
    ('too small', 'generates 32x32 images, which cannot be reduced to the 64x64 patches'),
])
def test_unsuitable_generators_are_refused(tiny_gans, kind, message):
    from nodules.classification import experiment
    classes = ['AIS', 'MIA', 'IAC']
    resolution = 64 if kind == 'too small' else 32
    if kind == 'plain as conditional':
        generators = experiment.GeneratorSet(classes, resolution, gan_model=tiny_gans['plain'])
    elif kind == 'label out of range':
        generators = experiment.GeneratorSet(classes, resolution, gan_model=tiny_gans['conditional'],
                                           gan_labels=[0, 1, 3])
    elif kind == 'conditional as plain':
        generators = experiment.GeneratorSet(classes, resolution, gan_paths=[tiny_gans['plain'],
                                                                           tiny_gans['conditional'],
                                                                           tiny_gans['plain']])
    else:
        generators = experiment.GeneratorSet(classes, resolution, gan_paths=[tiny_gans['plain']] * 3)
    try:
        with pytest.raises(UserError, match=message):
            generators.check()
    finally:
        generators.close()


@pytest.mark.slow
def test_cli_with_a_conditional_generator(class_datasets, tiny_gans, tmp_path):
    outdir = tmp_path / 'out'
    result = run_script('4-classify.py', '--data', *(class_datasets + SMALL + [
        '--outdir', outdir, '--arms', 'none,gan', '--gan-model', tiny_gans['conditional'], '--gan-labels', '2', '1',
        '0', '--synthetic-per-class', '0.5x']))
    assert result.returncode == 0, result.stderr
    with open(str(outdir / 'results.json'), encoding='utf-8') as f:
        results = json.load(f)
    for run in results['arms']['gan']['runs']:  # half as many generated as real training patches, per class
        assert run['train_patches']['generated'] == pytest.approx(run['train_patches']['real'] / 2.0, abs=2)
