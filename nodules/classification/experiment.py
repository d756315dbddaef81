"""Do generated nodules help a subtype classifier?  The experiment behind 4-classify.py.

Real patches come from one dataset per class (AIS, MIA, IAC, ...) or from one dataset with one-hot labels.  They
are split by k-fold cross-validation that keeps every nodule whole (all views of one nodule, as listed in the
dataset's `<name>-groups.npy`, fall in the same fold) and spreads every class evenly over the folds; inside the
training folds, some nodules of each class are held out for early stopping.  On the same folds the classifier
(nodules/classification/cnn.py) is trained once per arm:

    none          real training patches only
    classic       real training patches with random flips, 90-degree rotations and shifts
    gan           real training patches plus N generated patches per class
    classic+gan   both, the augmentation applied to real and generated patches alike
    synthetic     generated patches only (the "classification accuracy score" of Ravuri and Vinyals, 2019)

and always tested on the real patches of the test fold; generated patches never enter a test or validation set.
Generated patches come from one unconditional generator per class or one conditional generator with a label
index per class.  A fold's generated count is a number per class or a ratio to that class's real training patches.

Where the generators come from decides what the gan arms' numbers mean (Generators):
    per-fold     trained inside each training fold on its training nodules only (per_fold.py, --gan-train): the
                 test nodules stay unseen, and a memorization audit (audit.py) checks each generator for copies;
    pretrained   given ready-made (--gan, --gan-model) and used for every fold: trained on every nodule of a class,
                 they have seen the test folds' nodules, which makes the gan arms' estimates optimistic.  The
                 results say so in their first lines.
"""
import collections
import json
import os
import sys

import numpy as np

from nodules import generation
from nodules.classification import statistics
from nodules.util.errors import UserError

# nodules/data/dataset.py (and with it TensorFlow) is imported where data is read, so that 4-classify.py answers a bad argument
# at once.

ARMS = ('none', 'classic', 'gan', 'classic+gan', 'synthetic')
GENERATED_ARMS = ('gan', 'classic+gan', 'synthetic')
OUTPUT_FILES = ('results.json', 'folds.json', 'results.md', 'roc_curves.png', 'confusion_matrices.png')
MEMORIZATION_FIGURE = 'memorization.png'  # written too when the generators are audited (per-fold ones)

PatchData = collections.namedtuple('PatchData', [
    'images',       # uint8 [N, H, W]
    'labels',       # int64 [N], index into class_names
    'groups',       # int64 [N], which nodule (index into group_names)
    'group_names',  # 'CLASS/ID' per nodule
    'class_names',  # one per class, in class order
    'sources',      # the dataset directories
    'has_groups',   # False when some dataset had no groups file (each patch its own nodule)
])


def derived_seed(*keys):
    """A seed in 0..2**31-2 determined by a tuple of non-negative integers (the same on every stack)."""
    return int(np.random.RandomState([int(k) for k in keys]).randint(2 ** 31 - 1))


# ----------------------------------------------------------------------------------------------------------------
# Real patches


def dataset_class_name(dataset_dir):
    """The class of a one-class dataset: from its metadata (`subtype`, `label_filter` or a one-element `classes`),
    else the folder's name."""
    from nodules.data import dataset
    metadata = dataset.read_metadata(dataset_dir) or {}
    for key in ('subtype', 'label_filter'):
        if isinstance(metadata.get(key), str) and metadata[key]:
            return metadata[key]
    classes = metadata.get('classes')
    if isinstance(classes, list) and len(classes) == 1 and isinstance(classes[0], str):
        return classes[0]
    return dataset.dataset_name(dataset_dir)


def read_patches(dataset_dir, resolution):
    """uint8 [N, H, W] patches of one dataset at `resolution` (its rNN TFRecords file)."""
    from nodules.data import dataset
    available = dataset.list_tfrecords(dataset_dir)
    log2 = int(np.log2(resolution))
    if log2 not in available:
        raise UserError('%s: has no %dx%d TFRecords file (%s); available: %s' % (
            dataset_dir, resolution, resolution, os.path.basename(dataset.tfrecord_path(dataset_dir, log2)),
            ', '.join('%dx%d' % (2 ** k, 2 ** k) for k in sorted(available))))
    path = available[log2]
    images = dataset.read_images(path)
    if images.shape[1] != 1:
        raise UserError('%s: has %d-channel images; the classifier takes grayscale patches' % (path, images.shape[1]))
    if images.shape[-1] != resolution:
        raise UserError('%s: holds %dx%d images, not %dx%d' % (path, images.shape[-1], images.shape[-1],
                                                             resolution, resolution))
    return images[:, 0]


def load_patch_data(data_dirs, resolution=64, warn=None):
    """Patches, classes and nodule groups of one dataset per class, or of one dataset with one-hot labels.

    `warn(line)` receives the warning about missing groups files (default: stderr).
    """
    from nodules.data import dataset
    warn = warn or (lambda line: print(line, file=sys.stderr))
    data_dirs = [os.path.normpath(d) for d in data_dirs]
    if len(set(data_dirs)) != len(data_dirs):
        repeated = sorted(d for d in data_dirs if data_dirs.count(d) > 1)[0]
        raise UserError('%s: given more than once in --data' % repeated)
    if len(data_dirs) == 1:
        return _labelled_dataset(data_dirs[0], resolution, warn)
    images, labels, groups, group_names, class_names, missing = [], [], [], [], [], []
    for class_index, data_dir in enumerate(data_dirs):
        name = dataset_class_name(data_dir)
        if name in class_names:
            raise UserError('%s: its class %r is also the class of %s; give one dataset per class'
                            % (data_dir, name, data_dirs[class_names.index(name)]))
        class_names.append(name)
        patches = read_patches(data_dir, resolution)
        ids = dataset.read_groups(data_dir, len(patches))
        if ids is None:
            missing.append(data_dir)
            ids = np.arange(len(patches), dtype=np.int64)
        unique_ids, inverse = np.unique(ids, return_inverse=True)
        groups.append(inverse + len(group_names))
        group_names += ['%s/%d' % (name, i) for i in unique_ids]
        images.append(patches)
        labels.append(np.full(len(patches), class_index, np.int64))
    _warn_missing_groups(missing, warn)
    return PatchData(np.concatenate(images), np.concatenate(labels), np.concatenate(groups), group_names,
                     class_names, data_dirs, not missing)


def _labelled_dataset(data_dir, resolution, warn):
    from nodules.data import dataset
    patches = read_patches(data_dir, resolution)
    one_hot = dataset.read_labels(data_dir)
    if one_hot is None:
        raise UserError('%s: one dataset without labels (%s) cannot be classified; give one dataset per class, '
                        'e.g. --data processData/AIS processData/MIA processData/IAC'
                        % (data_dir, os.path.basename(dataset.labels_path(data_dir))))
    where = dataset.labels_path(data_dir)
    if len(one_hot) != len(patches):
        raise UserError('%s: has %d label rows for %d images' % (where, len(one_hot), len(patches)))
    dataset.check_one_hot(one_hot, where, 'classification')
    labels = np.argmax(one_hot, axis=1).astype(np.int64)
    metadata = dataset.read_metadata(data_dir) or {}
    class_names = metadata.get('classes')
    if not (isinstance(class_names, list) and len(class_names) == one_hot.shape[1]
            and all(isinstance(c, str) for c in class_names) and len(set(class_names)) == len(class_names)):
        class_names = ['class%d' % c for c in range(one_hot.shape[1])]
    if one_hot.shape[1] < 2:
        raise UserError('%s: has only one class; classification needs at least two' % where)
    ids = dataset.read_groups(data_dir, len(patches))
    has_groups = ids is not None
    if not has_groups:
        _warn_missing_groups([data_dir], warn)
        ids = np.arange(len(patches), dtype=np.int64)
    unique_ids, groups = np.unique(ids, return_inverse=True)
    group_names = []
    for g, nodule in enumerate(unique_ids):
        classes = np.unique(labels[groups == g])
        if len(classes) > 1:
            raise UserError('%s: nodule group %d has patches of classes %s; a nodule has one class'
                            % (dataset.groups_path(data_dir), nodule, ' and '.join(class_names[c] for c in classes)))
        group_names.append('%s/%d' % (class_names[classes[0]], nodule))
    return PatchData(patches, labels, groups.astype(np.int64), group_names, class_names, [data_dir], has_groups)


def _warn_missing_groups(data_dirs, warn):
    from nodules.data import dataset
    if data_dirs:
        warn('warning: no nodule groups file (%s) in %s: each patch counts as its own nodule, so views of one '
             'nodule may leak across folds' % (os.path.basename(dataset.groups_path(data_dirs[0])).replace(
                 dataset.dataset_name(data_dirs[0]), '<name>'), ', '.join(data_dirs)))


# ----------------------------------------------------------------------------------------------------------------
# Folds


def check_foldable(data, folds):
    """Every class needs at least `folds` nodules so that each test fold holds every class."""
    if folds < 2:
        raise UserError('--folds must be at least 2, got %d' % folds)
    group_class = group_classes(data)
    for c, name in enumerate(data.class_names):
        count = int(np.sum(group_class == c))
        if count < folds:
            raise UserError('%s: class %s has %d nodule(s), fewer than the %d folds; use fewer --folds'
                            % (', '.join(data.sources), name, count, folds))


def group_classes(data):
    group_class = np.zeros(len(data.group_names), np.int64)
    group_class[data.groups] = data.labels
    return group_class


def stratified_group_folds(labels, groups, folds, seed):
    """Fold number (0..folds-1) of every patch.  Whole groups go to one fold; within each class, groups are
    dealt largest first (random among equal sizes) to the fold that has the fewest of that class's patches so
    far, ties broken in a random fold order per class."""
    group_ids, group_of_patch = np.unique(groups, return_inverse=True)
    sizes = np.bincount(group_of_patch)
    group_class = np.zeros(len(group_ids), np.int64)
    group_class[group_of_patch] = labels
    rng = np.random.RandomState(seed)
    group_fold = np.zeros(len(group_ids), np.int64)
    for c in np.unique(group_class):
        members = np.flatnonzero(group_class == c)
        members = members[rng.permutation(len(members))]
        members = members[np.argsort(-sizes[members], kind='mergesort')]
        load = np.zeros(folds, np.int64)
        fold_order = rng.permutation(folds)
        for g in members:
            fold = fold_order[np.argmin(load[fold_order])]
            group_fold[g] = fold
            load[fold] += sizes[g]
    return group_fold[group_of_patch]


def validation_split(train_indices, labels, groups, fraction, seed):
    """(fit indices, validation indices): per class, whole groups in random order go to validation until they
    hold `fraction` of the class's training patches, always at least one group and never the last one."""
    rng = np.random.RandomState(seed)
    validation = []
    if fraction > 0:
        for c in np.unique(labels[train_indices]):
            members = train_indices[labels[train_indices] == c]
            ids, counts = np.unique(groups[members], return_counts=True)
            order = rng.permutation(len(ids))
            taken = 0
            for g in order[:-1]:
                validation.append(ids[g])
                taken += counts[g]
                if taken >= fraction * len(members):
                    break
    is_validation = np.isin(groups[train_indices], validation)
    return train_indices[~is_validation], train_indices[is_validation]


FoldPlan = collections.namedtuple('FoldPlan', 'repeat fold fit validation test')


def plan_folds(data, folds, repeats, validation_fraction, seed):
    """FoldPlans (index arrays into the patches) for every repeat and fold; each repeat reshuffles."""
    plans = []
    for repeat in range(repeats):
        fold_of = stratified_group_folds(data.labels, data.groups, folds, derived_seed(seed, 0, repeat))
        for fold in range(folds):
            train = np.flatnonzero(fold_of != fold)
            fit, validation = validation_split(train, data.labels, data.groups, validation_fraction,
                                               derived_seed(seed, 1, repeat, fold))
            plans.append(FoldPlan(repeat, fold, fit, validation, np.flatnonzero(fold_of == fold)))
    return plans


def folds_document(data, plans):
    """folds.json: per repeat and fold, the training groups (validation ones included and also listed apart)
    and the test groups, as 'CLASS/ID'."""
    def names(indices):
        return [data.group_names[g] for g in np.unique(data.groups[indices])]
    return {'folds': [collections.OrderedDict([
        ('repeat', p.repeat), ('fold', p.fold),
        ('train_groups', names(np.concatenate([p.fit, p.validation]))),
        ('validation_groups', names(p.validation)),
        ('test_groups', names(p.test))]) for p in plans]}


# ----------------------------------------------------------------------------------------------------------------
# Generated patches


def parse_generated_count(text):
    """'300' (patches per class) or '1x' / '0.5x' (times the class's real training patches)."""
    text = text.strip()
    try:
        if text.lower().endswith('x'):
            ratio = float(text[:-1])
            if not ratio > 0 or not np.isfinite(ratio):
                raise ValueError
            return ('ratio', ratio)
        count = int(text)
        if count <= 0:
            raise ValueError
    except ValueError:
        raise ValueError('expected a number of patches per class (e.g. 300) or a positive ratio to the real '
                         'training patches (e.g. 1x or 0.5x), got %r' % text)
    if count > generation.MAX_IMAGES:
        raise ValueError('%d patches per class asked for; at most %d are generated per class'
                         % (count, generation.MAX_IMAGES))
    return ('count', count)


def generated_counts(spec, data, plan):
    """Generated patches per class for one fold."""
    kind, value = spec
    if kind == 'count':
        return [value] * len(data.class_names)
    real = np.bincount(data.labels[plan.fit], minlength=len(data.class_names))
    counts = [max(1, int(round(value * n))) for n in real]
    for name, count in zip(data.class_names, counts):
        if count > generation.MAX_IMAGES:
            raise UserError('--synthetic-per-class %gx asks for %d patches of class %s; at most %d are generated per '
                            'class' % (value, count, name, generation.MAX_IMAGES))
    return counts


class GeneratorSet(object):
    """The generators of the classes: one unconditional pickle per class, or one conditional pickle with a label
    index per class.  `generate(class_index, number, seed)` gives uint8 patches at the classifier's resolution."""

    def __init__(self, class_names, resolution, gan_paths=None, gan_model=None, gan_labels=None):
        self.class_names = list(class_names)
        self.resolution = resolution
        if gan_paths:
            if len(gan_paths) != len(class_names):
                raise UserError('--gan takes one generator per class (%d: %s), got %d'
                                % (len(class_names), ', '.join(class_names), len(gan_paths)))
            self.sources = [(path, None) for path in gan_paths]
        else:
            labels = list(range(len(class_names))) if gan_labels is None else list(gan_labels)
            if len(labels) != len(class_names):
                raise UserError('--gan-labels takes one label index per class (%d: %s), got %d'
                                % (len(class_names), ', '.join(class_names), len(labels)))
            self.sources = [(gan_model, label) for label in labels]
        self._loaded = {}

    def _generator(self, path, conditional):
        """Load (once) the Gs of `path` into its own graph and session, and check it suits the cnn."""
        if path not in self._loaded:
            from nodules.gan import tfutil
            from nodules.util.tfcompat import native_stderr_captured, tf
            with native_stderr_captured():
                session = tf.Session(graph=tf.Graph(), config=tfutil.session_config())
            try:
                Gs = generation.load_generator(path, session)
            except BaseException:
                session.close()
                raise
            graph = session.graph
            height, width, channels = Gs.output_shapes[0][1:]
            label_size = Gs.input_shapes[1][1]
            if channels != 1:
                raise UserError('%s: generates %d-channel images; the classifier takes grayscale' % (path, channels))
            if height < self.resolution or height % self.resolution:
                raise UserError('%s: generates %dx%d images, which cannot be reduced to the %dx%d patches '
                                'classified' % (path, height, width, self.resolution, self.resolution))
            if conditional and not label_size:
                raise UserError('%s: was trained without labels; give one generator per class with --gan' % path)
            if not conditional and label_size:
                raise UserError('%s: is conditional on %d classes; give it as --gan-model with --gan-labels'
                                % (path, label_size))
            self._loaded[path] = (graph, session, Gs)
        return self._loaded[path]

    def check(self):
        """Load every generator now, so that a bad pickle stops the run before any training."""
        for path, label in self.sources:
            graph, session, Gs = self._generator(path, label is not None)
            label_size = Gs.input_shapes[1][1]
            if label is not None and not 0 <= label < label_size:
                raise UserError('%s: has labels 0..%d; --gan-labels asks for %d' % (path, label_size - 1, label))

    def generate(self, class_index, number, seed, progress=None):
        from nodules.data import dataset
        path, label = self.sources[class_index]
        graph, session, Gs = self._generator(path, label is not None)
        with graph.as_default(), session.as_default():
            latents = generation.random_latents(number, Gs.input_shapes[0][1], seed)
            images = generation.generate_images(Gs, latents, label, batch_size=64, progress=progress)
        if images.shape[-1] != self.resolution:
            images = dataset.build_pyramid(images[:, np.newaxis])[int(np.log2(self.resolution))][:, 0]
        return images

    def close(self):
        for _, session, _ in self._loaded.values():
            session.close()
        self._loaded = {}


class Generators(object):
    """The generators of the gan arms, and what their origin means for the results.

    `key(plan)` names the generators a fold uses (folds with the same key share them, and their generated
    patches); `generator_set(key)` gives their GeneratorSet, `release(key)` says it is no longer needed.
    """
    source = None              # 'pretrained' or 'per-fold'
    test_nodules_seen = None   # whether the generators were trained on nodules of the test folds
    audited = False            # whether each fold's generators get the memorization audit (audit.py)

    def key(self, plan):
        raise NotImplementedError

    def generator_set(self, key):
        raise NotImplementedError

    def release(self, key):
        pass

    def close(self):
        pass

    def document(self):
        """The results' "generators" entry."""
        return collections.OrderedDict([('source', self.source), ('test_nodules_seen', self.test_nodules_seen)])


OPTIMISTIC_WARNING = ('warning: the gan arms\' estimates are optimistic: their generators (--gan, --gan-model) were '
                      'trained on every nodule, the test folds\' included; train them inside each training fold with '
                      '--gan-train for an honest estimate')


class PretrainedGenerators(Generators):
    """Ready-made generators (--gan, --gan-model): one GeneratorSet for every fold, and generated patches drawn
    afresh for every repeat (the folds of a repeat take the first N of the same pool).  Trained on all nodules
    of a class, they have seen every test fold's nodules."""
    source = 'pretrained'
    test_nodules_seen = True

    def __init__(self, generator_set):
        self.set = generator_set

    def key(self, plan):
        return plan.repeat

    def generator_set(self, key):
        return self.set

    def close(self):
        self.set.close()

    def document(self):
        document = super(PretrainedGenerators, self).document()
        document['pickles'] = [path for path, _ in self.set.sources]
        document['labels'] = [label for _, label in self.set.sources]
        document['warning'] = OPTIMISTIC_WARNING
        return document


def generate_pools(generators, data, plans, spec, seed, progress=None):
    """{generators.key(plan): [uint8 patches per class]}: for each set of generators as many generated patches per
    class as the folds it serves need at most; patches of class c in repeat r come from the seed (seed, 2, r, c)."""
    needed = collections.OrderedDict()
    for plan in plans:
        key = generators.key(plan)
        counts = np.asarray(generated_counts(spec, data, plan))
        needed[key] = (plan.repeat, np.maximum(needed[key][1], counts) if key in needed else counts)
    pools = {}
    for key, (repeat, counts) in needed.items():
        generator_set = generators.generator_set(key)
        pools[key] = [generator_set.generate(c, int(count), derived_seed(seed, 2, repeat, c), progress)
                      for c, count in enumerate(counts)]
        generators.release(key)
    return pools


# ----------------------------------------------------------------------------------------------------------------
# One fold of one arm


def fold_sets(arm, data, plan, pools=None, spec=None):
    """The patches of one training run: {'fit': (images, labels, is_generated), 'validation': (images, labels),
    'test': (images, labels)}.  Validation and test patches are always real; only 'fit' receives generated ones."""
    real_fit = (data.images[plan.fit], data.labels[plan.fit])
    parts_images, parts_labels, parts_generated = [], [], []
    if arm != 'synthetic':
        parts_images.append(real_fit[0])
        parts_labels.append(real_fit[1])
        parts_generated.append(np.zeros(len(plan.fit), bool))
    if arm in GENERATED_ARMS:
        for c, count in enumerate(generated_counts(spec, data, plan)):
            parts_images.append(pools[c][:count])
            parts_labels.append(np.full(count, c, np.int64))
            parts_generated.append(np.ones(count, bool))
    return {'fit': (np.concatenate(parts_images), np.concatenate(parts_labels), np.concatenate(parts_generated)),
            'validation': (data.images[plan.validation], data.labels[plan.validation]),
            'test': (data.images[plan.test], data.labels[plan.test])}


Settings = collections.namedtuple('Settings', [
    'arms', 'folds', 'repeats', 'epochs', 'patience', 'validation_fraction', 'seed', 'class_weighting',
    'generated', 'widths', 'dropout', 'learning_rate', 'batch_size'])


def run_experiment(data, settings, generators=None, progress=None, log=None, plans=None):
    """Train and test every arm on every fold of every repeat.  Returns (results dict, folds dict, pooled test
    predictions {arm: (labels, probabilities)}, figures {file name: PNG bytes}).

    `generators` (a Generators) serve the gan arms; audited ones get the memorization audit after each fold's
    classifier trained on real patches only (figure memorization.png).  `plans` defaults to plan_folds() of
    the settings.  `progress(epochs)` is told of finished (or early-stopping-skipped) epochs; `log(line)` gets
    one line per run.
    """
    from nodules.classification import audit
    from nodules.classification import cnn
    log = log or (lambda line: None)
    if plans is None:
        plans = plan_folds(data, settings.folds, settings.repeats, settings.validation_fraction, settings.seed)
    pools = {}
    if any(arm in GENERATED_ARMS for arm in settings.arms):
        pools = generate_pools(generators, data, plans, settings.generated, settings.seed)
    audit_arm = audit.feature_arm(settings.arms) if pools and generators.audited else None
    audited = []
    resolution = data.images.shape[-1]
    net = cnn.Classifier(resolution, len(data.class_names), widths=settings.widths,
                                dropout=settings.dropout, learning_rate=settings.learning_rate)
    augment = cnn.classic_augmentation()
    fold_metrics = collections.OrderedDict((arm, []) for arm in settings.arms)
    runs = collections.OrderedDict((arm, []) for arm in settings.arms)
    pooled = collections.OrderedDict((arm, ([], [])) for arm in settings.arms)
    try:
        for plan in plans:
            fit_seed = derived_seed(settings.seed, 3, plan.repeat, plan.fold)  # the same for every arm: paired
            for arm in settings.arms:
                pool = pools.get(generators.key(plan)) if pools else None
                sets = fold_sets(arm, data, plan, pool, settings.generated)
                images, labels, is_generated = sets['fit']
                summary = net.fit(images, labels, *sets['validation'], seed=fit_seed, epochs=settings.epochs,
                                  patience=settings.patience, class_weighting=settings.class_weighting,
                                  augment=augment if arm in ('classic', 'classic+gan') else None,
                                  batch_size=settings.batch_size, progress=progress)
                test_images, test_labels = sets['test']
                probabilities = net.predict(test_images)
                metrics = statistics.classification_metrics(test_labels, probabilities, data.class_names)
                if arm == audit_arm:  # the network now holds this fold's classifier of real patches
                    audited += audit.audit_fold(data, plan, pool, generated_counts(settings.generated, data, plan),
                                                net.features)
                fold_metrics[arm].append(metrics)
                pooled[arm][0].append(test_labels)
                pooled[arm][1].append(probabilities)
                runs[arm].append(collections.OrderedDict([
                    ('repeat', plan.repeat), ('fold', plan.fold),
                    ('train_patches', {'real': int(np.sum(~is_generated)), 'generated': int(np.sum(is_generated))}),
                    ('validation_patches', int(len(plan.validation))), ('test_patches', int(len(plan.test))),
                    ('epochs_trained', summary['epochs_trained']), ('best_epoch', summary['best_epoch']),
                    ('metrics', metrics)]))
                log('repeat %d/%d fold %d/%d %-11s %4d real + %4d generated patches, %2d epochs (best %2d): '
                    'accuracy %.3f, balanced accuracy %.3f' % (
                        plan.repeat + 1, settings.repeats, plan.fold + 1, settings.folds, arm,
                        np.sum(~is_generated), np.sum(is_generated), summary['epochs_trained'],
                        summary['best_epoch'], metrics['accuracy'], metrics['balanced_accuracy']))
    finally:
        net.close()
    test_train_ratio = float(np.mean([len(p.test) / float(len(p.fit) + len(p.validation)) for p in plans]))
    results = collections.OrderedDict([
        ('classes', list(data.class_names)),
        ('data', collections.OrderedDict([
            ('sources', list(data.sources)), ('resolution', int(resolution)),
            ('patches', collections.OrderedDict((c, int(np.sum(data.labels == i)))
                                                for i, c in enumerate(data.class_names))),
            ('nodules', collections.OrderedDict((c, int(np.sum(group_classes(data) == i)))
                                                for i, c in enumerate(data.class_names))),
            ('nodule_groups_given', bool(data.has_groups))])),
        ('settings', settings_document(settings)),
        ('generators', generators_document(generators, audited, audit_arm) if pools else None),
        ('arms', collections.OrderedDict(
            (arm, collections.OrderedDict([('summary', statistics.summarize(fold_metrics[arm], data.class_names)),
                                           ('runs', runs[arm])])) for arm in settings.arms)),
        ('comparisons', statistics.compare_arms(fold_metrics, list(settings.arms), test_train_ratio)),
    ])
    pooled = collections.OrderedDict((arm, (np.concatenate(l), np.concatenate(p))) for arm, (l, p) in pooled.items())
    figures = {}
    if audited:
        figures[MEMORIZATION_FIGURE] = audit.pairs_figure([png for _, png in audited])
    return results, folds_document(data, plans), pooled, figures


def generators_document(generators, audited, audit_arm):
    """The results' "generators" entry: their source, whether they saw test nodules, and the audit if any."""
    from nodules.classification import audit
    document = generators.document()
    if audited:
        document['memorization'] = audit.document([entry for entry, _ in audited], audit_arm)
    return document


def generators_lines(results):
    """The first lines of results.md (and of the terminal's report): where the gan arms' generators came from,
    with the warning when they saw the test nodules."""
    generators = results.get('generators')
    if not generators:
        return []
    if generators['test_nodules_seen']:
        return ['> **%s**' % generators['warning'], '']
    return ['Generators of the gan arms: trained inside each training fold on its training nodules only '
            '(test_nodules_seen: false; %s).' % generators['directory'], '']


def settings_document(settings):
    document = collections.OrderedDict(zip(settings._fields, settings))
    document['arms'] = list(settings.arms)
    document['widths'] = list(settings.widths)
    kind, value = settings.generated
    document['generated'] = ('%d per class' % value if kind == 'count' else
                             '%g x the real training patches of each class' % value)
    return document


def report_files(results, folds, pooled, figures=None):
    """{file name: bytes} of everything a run writes (`figures`: more PNGs by name, e.g. memorization.png)."""
    from nodules.classification import audit
    arms = list(results['arms'])
    matrices = {arm: results['arms'][arm]['summary']['confusion_matrix'] for arm in arms}
    markdown = ''.join(line + '\n' for line in generators_lines(results)) + statistics.markdown_report(results)
    memorization = (results.get('generators') or {}).get('memorization')
    if memorization:
        markdown += '\n' + '\n'.join(audit.markdown(memorization)) + '\n'
    files = collections.OrderedDict([
        ('results.json', _json_bytes(results)),
        ('folds.json', _json_bytes(folds)),
        ('results.md', markdown.encode('utf-8')),
        ('roc_curves.png', statistics.roc_figure(pooled, results['classes'], arms)),
        ('confusion_matrices.png', statistics.confusion_figure(matrices, results['classes'], arms)),
    ])
    files.update(sorted((figures or {}).items()))
    return files


def _json_bytes(document):
    return (json.dumps(document, indent=2, ensure_ascii=False) + '\n').encode('utf-8')
