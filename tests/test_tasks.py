"""Tests for coordjax.tasks against independent NumPy formulas, including edge cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coordjax import tasks


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _onehot_maps(rows, cols, h=64, w=64):
    out = np.zeros((len(rows), h, w, 1), np.float32)
    out[np.arange(len(rows)), rows, cols, 0] = 1.0
    return out


# ---- NumPy references ---------------------------------------------------------------------


def np_softmax_xent(logits, targets):
    z = logits.reshape(len(logits), -1).astype(np.float64)
    t = targets.reshape(len(targets), -1).astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -(t * log_p).sum(axis=1)


def np_classification_metrics(logits, targets):
    w = logits.shape[2]
    out = {"accuracy": [], "eucl_dist": [], "manh_dist": []}
    for z, t in zip(logits, targets, strict=True):
        a, b = int(np.argmax(z.ravel())), int(np.argmax(t.ravel()))
        (ra, ca), (rb, cb) = divmod(a, w), divmod(b, w)
        out["accuracy"].append(float(a == b))
        out["eucl_dist"].append(np.hypot(ra - rb, ca - cb))
        out["manh_dist"].append(abs(ra - rb) + abs(ca - cb))
    return {k: np.array(v) for k, v in out.items()}


def np_sigmoid_xent(logits, targets):
    z = logits.reshape(len(logits), -1).astype(np.float64)
    t = targets.reshape(len(targets), -1).astype(np.float64)
    # numerically stable: max(z, 0) - z t + log(1 + exp(-|z|))
    return (np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))).mean(axis=1)


def np_iou(painted, truth):
    union = np.logical_or(painted, truth).sum()
    return 1.0 if union == 0 else np.logical_and(painted, truth).sum() / union


def np_rendering_metrics(logits, targets, loss="sigmoid"):
    out = {"iou": [], "pixel_accuracy": []} | ({"output_iou": []} if loss == "mse" else {})
    for z, t in zip(logits, targets, strict=True):
        painted = (1 / (1 + np.exp(-z.astype(np.float64)))) > 0.5
        truth = t > 0
        out["iou"].append(np_iou(painted, truth))
        out["pixel_accuracy"].append((painted == truth).mean())
        if loss == "mse":
            out["output_iou"].append(np_iou(z > 0.5, truth))
    return {k: np.array(v) for k, v in out.items()}


# ---- classification -----------------------------------------------------------------------


def test_classification_fields():
    t = tasks.get("classification")
    assert (t.name, t.input_field, t.target_field) == ("classification", "centers", "onehots")


def test_classification_against_numpy(rng):
    b = 6
    logits = rng.normal(size=(b, 64, 64, 1)).astype(np.float32) * 3
    rows, cols = rng.integers(0, 64, b), rng.integers(0, 64, b)
    targets = _onehot_maps(rows, cols)
    # examples 0 and 1: make the argmax hit the target; example 2: a far corner miss
    for i in (0, 1):
        logits[i, rows[i], cols[i], 0] = 50.0
    logits[2, 63 - rows[2] // 2, 0, 0] = 50.0
    task = tasks.get("classification")
    loss = task.loss(jnp.asarray(logits), jnp.asarray(targets))
    assert loss.shape == (b,) and loss.dtype == jnp.float32
    np.testing.assert_allclose(loss, np_softmax_xent(logits, targets), rtol=1e-5, atol=1e-5)
    metrics = task.metrics(jnp.asarray(logits), jnp.asarray(targets))
    ref = np_classification_metrics(logits, targets)
    assert set(metrics) == set(ref)
    for k in ref:
        assert metrics[k].shape == (b,) and metrics[k].dtype == jnp.float32
        np.testing.assert_allclose(metrics[k], ref[k], rtol=1e-6, atol=1e-6)
    assert metrics["accuracy"][0] == metrics["accuracy"][1] == 1.0


def test_classification_decoding_row_major():
    """Flat index a -> (row a // 64, col a % 64); rows and cols are not swapped."""
    logits = np.zeros((1, 64, 64, 1), np.float32)
    logits[0, 10, 3, 0] = 1.0  # predicted (row 10, col 3)
    targets = _onehot_maps([13], [7])  # true (row 13, col 7)
    m = tasks.get("classification").metrics(jnp.asarray(logits), jnp.asarray(targets))
    assert float(m["eucl_dist"][0]) == pytest.approx(5.0)
    assert float(m["manh_dist"][0]) == 7.0
    assert float(m["accuracy"][0]) == 0.0


def test_classification_edge_cases():
    task = tasks.get("classification")
    # constant logits: the argmax is index 0 (like np.argmax); loss = log(4096)
    logits = np.zeros((2, 64, 64, 1), np.float32)
    targets = _onehot_maps([0, 63], [0, 63])
    loss = task.loss(jnp.asarray(logits), jnp.asarray(targets))
    np.testing.assert_allclose(loss, np.log(4096.0), rtol=1e-6)
    m = task.metrics(jnp.asarray(logits), jnp.asarray(targets))
    np.testing.assert_allclose(m["accuracy"], [1.0, 0.0])
    np.testing.assert_allclose(m["eucl_dist"], [0.0, np.hypot(63, 63)], rtol=1e-6)
    np.testing.assert_allclose(m["manh_dist"], [0.0, 126.0])
    # huge logits stay finite; integer/bool targets are accepted
    logits = np.full((1, 64, 64, 1), -1e4, np.float32)
    logits[0, 5, 5, 0] = 1e4
    loss = task.loss(jnp.asarray(logits), jnp.asarray(_onehot_maps([5], [5]).astype(np.uint8)))
    assert np.isfinite(loss).all() and float(loss[0]) == pytest.approx(0.0, abs=1e-6)
    loss_bool = task.loss(jnp.asarray(logits), jnp.asarray(_onehot_maps([5], [6]) > 0))
    np.testing.assert_allclose(loss_bool, [2e4], rtol=1e-5)


# ---- rendering ----------------------------------------------------------------------------


def _squares(rows, cols):
    out = np.zeros((len(rows), 64, 64, 1), np.float32)
    for i, (r, c) in enumerate(zip(rows, cols, strict=True)):
        out[i, r - 4 : r + 5, c - 4 : c + 5, 0] = 1.0
    return out


@pytest.mark.parametrize("loss", ["sigmoid", "mse"])
def test_rendering_against_numpy(loss, rng):
    b = 5
    targets = _squares(rng.integers(4, 60, b), rng.integers(4, 60, b))
    logits = (rng.normal(size=(b, 64, 64, 1)) * 2 + 4 * (targets - 0.5)).astype(np.float32)
    task = tasks.get("rendering", loss=loss)
    assert (task.name, task.input_field, task.target_field) == ("rendering", "centers", "images")
    got = task.loss(jnp.asarray(logits), jnp.asarray(targets))
    assert got.shape == (b,) and got.dtype == jnp.float32
    if loss == "sigmoid":
        ref = np_sigmoid_xent(logits, targets)
    else:
        ref = ((logits.astype(np.float64) - targets) ** 2).reshape(b, -1).mean(axis=1)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    metrics = task.metrics(jnp.asarray(logits), jnp.asarray(targets))
    ref_m = np_rendering_metrics(logits, targets, loss)
    assert set(metrics) == set(ref_m)
    for k in ref_m:
        assert metrics[k].shape == (b,) and metrics[k].dtype == jnp.float32
        np.testing.assert_allclose(metrics[k], ref_m[k], rtol=1e-6, atol=1e-7)
    assert 0 < float(metrics["iou"].min()) < 1


def test_rendering_default_loss_is_sigmoid():
    logits = jnp.full((1, 64, 64, 1), 2.0)
    targets = jnp.ones((1, 64, 64, 1))
    np.testing.assert_allclose(
        tasks.get("rendering").loss(logits, targets), [np.log1p(np.exp(-2.0))], rtol=1e-6
    )


def test_rendering_mse_output_iou_ignores_background_noise():
    """An MSE fit leaves the background at 0 +- noise: the faithful ``iou`` (output > 0) paints
    the positive half of it, ``output_iou`` (output > 0.5) only the square."""
    target = _squares([30], [30])
    noise = np.random.default_rng(0).normal(scale=1e-3, size=target.shape)
    fitted = jnp.asarray((target + noise).astype(np.float32))
    m = tasks.get("rendering", loss="mse").metrics(fitted, jnp.asarray(target))
    assert float(m["output_iou"][0]) == 1.0
    assert float(m["iou"][0]) < 0.1
    assert "output_iou" not in tasks.get("rendering").metrics(fitted, jnp.asarray(target))


def test_rendering_iou_edge_cases():
    metrics = tasks.get("rendering").metrics
    target = _squares([10], [20])
    perfect = np.where(target > 0, 10.0, -10.0).astype(np.float32)
    m = metrics(jnp.asarray(perfect), jnp.asarray(target))
    assert float(m["iou"][0]) == 1.0 and float(m["pixel_accuracy"][0]) == 1.0
    # logit exactly 0 -> sigmoid 0.5 -> not painted (strict threshold, tf.round(0.5) == 0)
    m = metrics(jnp.zeros((1, 64, 64, 1)), jnp.asarray(target))
    assert float(m["iou"][0]) == 0.0
    np.testing.assert_allclose(m["pixel_accuracy"], [1 - 81 / 4096], rtol=1e-6)
    # empty union (nothing painted, empty target): IoU defined as 1
    m = metrics(jnp.full((1, 64, 64, 1), -3.0), jnp.zeros((1, 64, 64, 1)))
    assert float(m["iou"][0]) == 1.0 and float(m["pixel_accuracy"][0]) == 1.0
    # everything painted vs a 9x9 square: IoU 81/4096
    m = metrics(jnp.full((1, 64, 64, 1), 3.0), jnp.asarray(target))
    np.testing.assert_allclose(m["iou"], [81 / 4096], rtol=1e-6)
    # soft targets (the reference's 0.502) are binarised: same IoU as 0/1 targets
    soft = metrics(jnp.asarray(perfect), jnp.asarray(target * 0.50196))
    assert float(soft["iou"][0]) == 1.0
    # half-overlapping square shifted by 4 columns: 9*5 / (81 + 81 - 45)
    shifted = np.where(_squares([10], [24]) > 0, 5.0, -5.0).astype(np.float32)
    m = metrics(jnp.asarray(shifted), jnp.asarray(target))
    np.testing.assert_allclose(m["iou"], [45 / 117], rtol=1e-6)


# ---- regression ---------------------------------------------------------------------------


def test_regression_against_numpy(rng):
    b = 7
    target = (rng.integers(4, 60, (b, 2)) / 64).astype(np.float32)
    pred = (target + rng.normal(size=(b, 2)) * 0.05).astype(np.float32)
    pred[0] = target[0]  # exact hit
    task = tasks.get("regression")
    assert (task.name, task.input_field, task.target_field) == (
        "regression",
        "onehots",
        "normalized_centers",
    )
    diff = pred.astype(np.float64) - target
    loss = task.loss(jnp.asarray(pred), jnp.asarray(target))
    assert loss.shape == (b,) and loss.dtype == jnp.float32
    np.testing.assert_allclose(loss, (diff**2).mean(axis=1), rtol=1e-5, atol=1e-9)
    m = task.metrics(jnp.asarray(pred), jnp.asarray(target))
    assert set(m) == {"pixel_error", "mse"}
    np.testing.assert_allclose(m["pixel_error"], 64 * np.sqrt((diff**2).sum(axis=1)), rtol=1e-5)
    np.testing.assert_allclose(m["mse"], (diff**2).mean(axis=1), rtol=1e-5, atol=1e-9)
    assert float(m["pixel_error"][0]) == 0.0 and float(loss[0]) == 0.0


def test_regression_pixel_error_units():
    # one pixel right and one pixel down = sqrt(2) pixels
    m = tasks.get("regression").metrics(
        jnp.array([[11 / 64, 21 / 64]]), jnp.array([[10 / 64, 20 / 64]])
    )
    np.testing.assert_allclose(m["pixel_error"], [np.sqrt(2)], rtol=1e-5)


# ---- registry, errors, transformations ----------------------------------------------------


def test_registry_and_errors():
    assert set(tasks.TASKS) == {"classification", "rendering", "regression"}
    with pytest.raises(ValueError, match="unknown task 'segmentation'.*classification"):
        tasks.get("segmentation")
    with pytest.raises(ValueError, match="has no option 'loss'"):
        tasks.get("classification", loss="mse")
    with pytest.raises(ValueError, match="rendering loss must be one of.*'bce'"):
        tasks.get("rendering", loss="bce")
    with pytest.raises(ValueError, match="has no option 'los'.*\\['loss'\\]"):
        tasks.get("rendering", los="mse")


def test_shape_mismatch_errors():
    with pytest.raises(ValueError, match="classification.*same shape"):
        tasks.get("classification").loss(jnp.zeros((2, 64, 64, 1)), jnp.zeros((2, 64, 64)))
    with pytest.raises(ValueError, match="regression.*\\(B, 2\\)"):
        tasks.get("regression").metrics(jnp.zeros((2, 2)), jnp.zeros((3, 2)))


@pytest.mark.parametrize(
    ("name", "options", "shape"),
    [
        ("classification", {}, (4, 64, 64, 1)),
        ("rendering", {"loss": "mse"}, (4, 64, 64, 1)),
        ("regression", {}, (4, 2)),
    ],
)
def test_jit_and_vmap_over_models(name, options, shape, rng):
    """Losses and metrics are per example and compose with jit and a vmapped model axis."""
    task = tasks.get(name, **options)
    out = jnp.asarray(rng.normal(size=(3, *shape)).astype(np.float32))
    tgt = jnp.asarray((rng.random((3, *shape)) > 0.5).astype(np.float32))

    def both(o, t):
        return task.loss(o, t), task.metrics(o, t)

    loss, metrics = jax.jit(jax.vmap(both))(out, tgt)
    assert loss.shape == (3, 4)
    for i in range(3):
        l_i, m_i = both(out[i], tgt[i])
        np.testing.assert_allclose(loss[i], l_i, rtol=1e-6)
        for k in m_i:
            np.testing.assert_allclose(metrics[k][i], m_i[k], rtol=1e-6)
    # per example: an example's loss does not depend on the rest of the batch
    np.testing.assert_allclose(task.loss(out[0, :1], tgt[0, :1]), loss[0, :1], rtol=1e-6)
