"""ASCNet's train step against NumPy: losses, partner choice, EMA, queue, and what trains."""

import keras
import numpy as np
import pytest

from asc_tf.ascnet import ASCNet

CLIP = (8, 32, 32, 3)
DIM = 8


def make_model(lr=0.5, **overrides):
    settings = dict(backbone="r3d_18", width=0.125, dim=DIM, predictor_hidden=16, queue_size=32,
                    speed_set=(1, 2), tau=0.9)
    settings.update(overrides)
    model = ASCNet(**settings)
    model.build_networks(CLIP)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr))
    return model


def make_batch(seed=0, batch=4, third_view=False):
    rng = np.random.default_rng(seed)
    data = {
        "view_i": rng.normal(size=(batch, *CLIP)).astype(np.float32),
        "view_j": rng.normal(size=(batch, *CLIP)).astype(np.float32),
        "video_id": np.arange(batch, dtype=np.int64) + 10 * seed,
        "speed_i": np.array([1, 2, 1, 2][:batch], np.int32),
        "speed_j": np.array([2, 2, 1, 1][:batch], np.int32),
        "label": np.array([0, 1, 0, 1][:batch], np.int64),
    }
    if third_view:
        data["view_k"] = rng.normal(size=(batch, *CLIP)).astype(np.float32)
    return data


def normalize(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def snapshot(variables):
    return [v.numpy().copy() for v in variables]


def test_train_step_losses_equal_numpy_reference():
    model = make_model()
    data = make_batch()
    batch = len(data["video_id"])
    # The same forward passes the step makes (BatchNorm in training mode: batch statistics).
    features = model.online_encoder(data["view_i"], training=True)
    pred_a = normalize(model.appearance_predictor(model.online_appearance(features, training=True), training=True))
    pred_m = normalize(model.speed_predictor(model.online_speed(features, training=True), training=True))
    target = model.target_encoder(np.concatenate([data["view_i"], data["view_j"]]), training=True)
    keys = normalize(model.target_appearance(target, training=True))
    feats = normalize(model.target_speed(target, training=True))

    expected_a = np.mean(np.sum((pred_a - keys[batch:]) ** 2, axis=1))
    # SCP partner by hand (Algorithm 1, lines 14-16): the queue is empty, so the candidates are the
    # batch's 2B clips. The video whose clip's key is nearest to a_j is retrieved; the target is the
    # speed feature of that video's OTHER clip, which must be at the anchor's speed.
    ids = np.concatenate([data["video_id"]] * 2)
    other = np.concatenate([np.arange(batch, 2 * batch), np.arange(batch)])  # row of the same video's other clip
    other_speeds = np.concatenate([data["speed_i"], data["speed_j"]])[other]
    losses, partners = [], []
    for b in range(batch):
        allowed = (ids != data["video_id"][b]) & (other_speeds == data["speed_i"][b])
        if not allowed.any():
            continue
        scores = np.where(allowed, keys @ keys[batch + b], -np.inf)
        k = int(np.argmax(scores))
        partners.append((b, k))
        losses.append(np.sum((pred_m[b] - feats[other[k]]) ** 2))
    assert len(partners) == batch  # every anchor has a candidate in this batch
    expected_m = np.mean(losses)

    logs = model.train_on_batch(data, return_dict=True)
    assert logs["loss_a"] == pytest.approx(expected_a, rel=1e-4, abs=1e-5)
    assert logs["loss_m"] == pytest.approx(expected_m, rel=1e-4, abs=1e-5)
    assert logs["loss"] == pytest.approx(0.5 * expected_m + 0.5 * expected_a, rel=1e-4, abs=1e-5)
    assert logs["scp_masked_fraction"] == 0.0
    partner_labels = np.concatenate([data["label"]] * 2)
    same = np.mean([data["label"][b] == partner_labels[k] for b, k in partners])
    assert logs["neighbour_same_label"] == pytest.approx(same)


def test_ema_equals_tau_target_plus_one_minus_tau_online():
    model = make_model(tau=0.9)
    pairs = model.ema_pairs()
    target_before = snapshot([t for t, _ in pairs])
    model.train_on_batch(make_batch(), return_dict=True)
    online_after = snapshot([o for _, o in pairs])
    for (target, _), t0, o1 in zip(pairs, target_before, online_after):
        np.testing.assert_allclose(target.numpy(), 0.9 * t0 + 0.1 * o1, atol=1e-6, err_msg=target.path)
    assert any(not np.allclose(t0, target.numpy()) for (target, _), t0 in zip(pairs, target_before))


def test_gradients_reach_online_variables_only():
    model = make_model(tau=1.0)
    online_ids = {id(v) for v in model.online_variables}
    target_vars = (model.target_encoder.trainable_weights + model.target_appearance.trainable_weights
                   + model.target_speed.trainable_weights)
    assert not online_ids & {id(v) for v in target_vars}
    target_before = snapshot(target_vars)
    online_before = snapshot(model.online_variables)
    model.train_on_batch(make_batch(), return_dict=True)
    for variable, before in zip(target_vars, target_before):
        np.testing.assert_array_equal(variable.numpy(), before, err_msg=variable.path)
    changed = [not np.array_equal(v.numpy(), b) for v, b in zip(model.online_variables, online_before)]
    assert np.mean(changed) > 0.95, f"only {np.mean(changed):.0%} of online variables moved"
    # The optimiser holds slots for the online variables only.
    assert len(model.optimizer.variables) < 2 + 2 * len(model.online_variables)


def test_target_batchnorm_statistics_move_during_training():
    model = make_model()
    moving = [v for v in model.target_encoder.non_trainable_weights if "moving_mean" in v.path]
    before = snapshot(moving)
    model.train_on_batch(make_batch(), return_dict=True)
    assert all(not np.allclose(v.numpy(), b) for v, b in zip(moving, before))


def test_queue_rows_pair_a_clips_key_with_the_other_clips_speed_feature():
    model = make_model(tau=1.0, lr=0.0)
    data = make_batch()
    target = model.target_encoder(np.concatenate([data["view_i"], data["view_j"]]), training=True)
    keys = normalize(model.target_appearance(target, training=True))
    model.train_on_batch(data, return_dict=True)
    queue = model.queue
    assert int(queue.pointer.numpy()) == 8
    np.testing.assert_array_equal(queue.ids.numpy()[:8], np.concatenate([data["video_id"]] * 2))
    # A row: one clip's appearance key, and the speed feature and speed of the video's other clip.
    feats = normalize(model.target_speed(target, training=True))
    np.testing.assert_allclose(queue.keys.numpy()[:8], keys, atol=1e-5)
    np.testing.assert_allclose(queue.feats.numpy()[:8], np.concatenate([feats[4:], feats[:4]]), atol=1e-5)
    np.testing.assert_array_equal(queue.speeds.numpy()[:8], np.concatenate([data["speed_j"], data["speed_i"]]))
    logs = model.train_on_batch(make_batch(seed=1), return_dict=True)
    # train_on_batch resets the trackers: the value is this step's fill, after the write.
    assert int(queue.pointer.numpy()) == 16 and logs["queue_fill"] == pytest.approx(16 / 32)


@pytest.mark.parametrize(
    "settings,third_view",
    [
        (dict(gamma=0.0), False),
        (dict(gamma=1.0), False),
        (dict(speed_task="sp"), False),
        (dict(scp_mode="same"), True),
        (dict(scp_mode="random"), False),
        (dict(symmetric=True), False),
        (dict(tau_schedule="cosine", total_steps=10, projection="mlp"), False),
    ],
)
def test_ablations_train(settings, third_view):
    model = make_model(**settings)
    logs = model.train_on_batch(make_batch(third_view=third_view), return_dict=True)
    assert all(np.isfinite(v) for v in logs.values()), logs
    if settings.get("gamma") == 0.0:
        assert logs["loss_m"] == 0.0 and logs["loss"] == pytest.approx(logs["loss_a"])
    if settings.get("gamma") == 1.0:
        assert logs["loss_a"] == 0.0 and logs["loss"] == pytest.approx(logs["loss_m"])
    assert 0.0 < logs["encoder_std"] < 1.0
    # The projection the loss trains, and the SCP partners' labels, only where there are some.
    assert ("projection_std" in logs) == (settings.get("gamma") != 1.0 or settings.get("speed_task") != "sp")
    if "projection_std" in logs:
        assert 0.0 < logs["projection_std"] < 1.0
    chooses = settings.get("gamma", 0.5) > 0 and settings.get("speed_task", "scp") == "scp" \
        and settings.get("scp_mode", "similar") != "same"
    assert ("neighbour_same_label" in logs) == chooses, logs
    scp = settings.get("gamma", 0.5) > 0 and settings.get("speed_task", "scp") == "scp"
    assert ("speed_projection_std" in logs) == scp, logs


def test_speed_prediction_ablation_is_cross_entropy_over_the_speed_set():
    model = make_model(speed_task="sp", gamma=1.0)
    data = make_batch()
    logits = model.speed_classifier(model.online_encoder(data["view_i"], training=True)).numpy().astype(np.float64)
    classes = np.searchsorted(model.speed_set, data["speed_i"])
    log_softmax = logits - np.log(np.sum(np.exp(logits - logits.max(1, keepdims=True)), 1, keepdims=True)) - logits.max(1, keepdims=True)
    expected = -np.mean(log_softmax[np.arange(len(classes)), classes])
    logs = model.train_on_batch(data, return_dict=True)
    assert logs["loss_m"] == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("symmetric", [False, True])
def test_the_infonce_reference_is_cross_entropy_against_the_batchs_target_keys(symmetric):
    model = make_model(gamma=0.0, appearance_loss="infonce", temperature=0.2, symmetric=symmetric)
    data = make_batch()
    batch = len(data["video_id"])
    online = np.concatenate([data["view_i"], data["view_j"]] if symmetric else [data["view_i"]])
    features = model.online_encoder(online, training=True)
    pred = normalize(model.appearance_predictor(model.online_appearance(features, training=True), training=True))
    target = model.target_encoder(np.concatenate([data["view_i"], data["view_j"]]), training=True)
    keys = normalize(model.target_appearance(target, training=True))
    # Direction i→j: row b's positive is key_j[b], the batch's other key_j rows its negatives; j→i mirrored.
    pairs = [(pred[:batch], keys[batch:])] + ([(pred[batch:], keys[:batch])] if symmetric else [])
    losses = []
    for p, k in pairs:
        logits = p @ k.T / 0.2
        log_softmax = logits - logits.max(1, keepdims=True)
        log_softmax -= np.log(np.exp(log_softmax).sum(1, keepdims=True))
        losses.append(-np.mean(np.diag(log_softmax)))
    logs = model.train_on_batch(data, return_dict=True)
    assert logs["loss_a"] == pytest.approx(np.mean(losses), rel=1e-4)
    assert logs["loss"] == pytest.approx(logs["loss_a"])


def test_invalid_settings_are_rejected():
    for bad in (dict(scp_mode="nearest"), dict(speed_task="rsp"), dict(gamma=1.5), dict(tau_schedule="linear"),
                dict(scp_mode="same", symmetric=True), dict(appearance_loss="nce"), dict(temperature=0.0)):
        with pytest.raises(ValueError):
            ASCNet(backbone="r3d_18", width=0.125, dim=DIM, predictor_hidden=16, queue_size=8, **bad)
