"""Probes of frozen features: what a representation makes linearly readable, and whether it collapsed.

A probe here is a ridge regression onto one-hot labels (closed form, NumPy):
no learning rate, no epochs, no seed, so two encoders are compared on their
features alone. The features are standardised with the training set's mean and
standard deviation; `l2` is fixed in advance, never chosen on a test split.
"""

import numpy as np

RIDGE_L2 = 10.0


def ridge_classifier(x, y, num_classes, l2=RIDGE_L2):
    """Fits x [N, D] → one-hot y [N] by ridge regression.

    Returns:
      predict: [M, D] float → [M] int64 labels.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.int64)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"need as many labels as features, at least one: got {len(x)} and {len(y)}")
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"labels must be in [0, {num_classes}), got [{y.min()}, {y.max()}]")
    mean, std = x.mean(0), x.std(0) + 1e-6

    def design(z):
        z = (np.asarray(z, np.float64) - mean) / std
        return np.concatenate([z, np.ones((len(z), 1))], axis=1)

    a = design(x)
    weights = np.linalg.solve(a.T @ a + l2 * np.eye(a.shape[1]), a.T @ np.eye(num_classes)[y])
    return lambda z: (design(z) @ weights).argmax(1)


def probe_accuracy(train_x, train_y, test_x, test_y, num_classes=None, l2=RIDGE_L2):
    """Test accuracy in percent of a `ridge_classifier` fitted on the training features."""
    train_y = np.asarray(train_y, np.int64)
    test_y = np.asarray(test_y, np.int64)
    num_classes = num_classes or int(max(train_y.max(), test_y.max())) + 1
    predict = ridge_classifier(train_x, train_y, num_classes, l2)
    return float(100.0 * np.mean(predict(test_x) == test_y))


def effective_rank(features):
    """exp(entropy) of the normalised singular values of the centred features [N, D].

    Between 1 (every feature on one line: collapse) and min(N, D) (all
    directions used equally); Roy & Vetterli (2007).
    """
    features = np.asarray(features, np.float64)
    singular = np.linalg.svd(features - features.mean(0), compute_uv=False)
    if singular.sum() <= 0:
        return 1.0
    p = singular / singular.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def same_item_top1(query_features, gallery_features):
    """Percent of queries whose nearest gallery item (cosine) is the one at the same index.

    query_features and gallery_features: [N, D], row n of each from the same
    video. Chance is 100 / N.
    """
    from asc_tf.evaluation import retrieval

    query_features = np.asarray(query_features)
    if len(query_features) != len(gallery_features) or len(query_features) == 0:
        raise ValueError(f"need paired, non-empty sets: got {len(query_features)} and {len(gallery_features)}")
    nearest = retrieval.nearest_neighbours(query_features, gallery_features, 1)[:, 0]
    return float(100.0 * np.mean(nearest == np.arange(len(query_features))))
