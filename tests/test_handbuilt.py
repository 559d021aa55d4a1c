"""The critique's point as a test: hand-set CoordConv regressor weights, exact with no training."""

import jax
import numpy as np
import pytest

from coordjax import datasets, handbuilt, models, tasks


def test_handbuilt_regressor_is_exact_on_all_3136_examples():
    model = models.build("coordconv_regressor")
    params = handbuilt.coordconv_regressor_params()
    # Same tree and shapes as the trainable model: it is the paper's 906-parameter network.
    image = jax.ShapeDtypeStruct((1, 64, 64, 1), np.float32)
    init = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), image)
    assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, init["params"])
    assert models.count_params(params) == 906

    examples = datasets.all_examples()
    apply = jax.jit(lambda x: model.apply({"params": params}, x, train=False))
    predicted = np.concatenate([apply(examples.onehots[i : i + 512]) for i in range(0, 3136, 512)])
    np.testing.assert_allclose(predicted, examples.normalized_centers, atol=1e-6, rtol=0)
    errors = tasks.get("regression").metrics(predicted, examples.normalized_centers)
    assert float(np.max(errors["pixel_error"])) < 1e-4  # pixels
    assert np.array_equal(np.round(predicted * 64).astype(int), examples.centers)


def test_handbuilt_margin_must_separate_the_one_hot_pixel():
    with pytest.raises(ValueError, match="margin"):
        handbuilt.coordconv_regressor_params(margin=0.5)
