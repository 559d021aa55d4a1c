"""Convolution lowering through the zoo, the training step and the engine: the matmul lowering
leaves no convolution in a vmapped training step (values = the lax lowering's), and the
engine records the resolved lowering in the workdir and reuses it on resume."""

import json
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_sweeps import tiny_sweep

from coordjax import cli, models, tasks
from coordjax import linen as cjnn
from coordjax.paper.data import device_data, split_indices
from coordjax.sweep import EngineOptions, WorkdirError, run_sweep
from coordjax.train import (
    RunSpec,
    TrainSetup,
    init_state,
    make_hparams,
    train_step,
)

BATCH = 4


@pytest.fixture(scope="module")
def all_data():
    return {name: device_data(tasks.get(name)) for name in ("classification", "regression")}


def _setup(name, lowering, **kwargs):
    kind = models.MODELS[name].input_kind
    task = tasks.get("classification" if kind == "coords" else "regression")
    model = models.build(name, lowering=lowering, **kwargs)
    return TrainSetup(model=model, task=task, batch_size=BATCH, steps_per_epoch=1)


def _runs(n):
    runs = [
        RunSpec(make_hparams(3e-3, 1e-3), np.int32(i), split_indices("uniform")) for i in range(n)
    ]
    return jax.tree.map(lambda *x: jnp.stack([jnp.asarray(v) for v in x]), *runs)


def _vmapped_steps(setup, data, steps):
    idx = jnp.arange(BATCH, dtype=jnp.int32) * 7
    mask = jnp.ones((BATCH,), bool)

    def one_model(run, state):
        def body(state, _):
            return train_step(setup, data, run, state, idx, mask)

        return jax.lax.scan(body, state, None, length=steps)

    return jax.jit(jax.vmap(one_model))


CONV_MODELS = [
    ("deconv_painter", {"filter_size": 3}),
    ("deconv_painter", {"filter_size": 2}),
    ("conv_regressor_quadrant", {}),
    ("coordconv_regressor", {}),
    ("coordconv_renderer", {"filter_size": 2}),
]


@pytest.mark.parametrize(("name", "kwargs"), CONV_MODELS, ids=lambda v: str(v))
def test_vmapped_training_step_has_no_convolution_with_matmul_lowering(name, kwargs, all_data):
    """The lowered (StableHLO) program of a vmapped training step: with the lax lowering the
    model axis turns every conv into a grouped convolution; with the matmul lowering there is
    no convolution at all (forward and every gradient are dot_generals)."""
    data = all_data[
        "classification" if models.MODELS[name].input_kind == "coords" else "regression"
    ]
    texts = {}
    for lowering in ("lax", "matmul"):
        setup = _setup(name, lowering, **kwargs)
        runs = _runs(2)
        states = jax.eval_shape(jax.vmap(lambda r, setup=setup: init_state(setup, data, r)), runs)
        texts[lowering] = _vmapped_steps(setup, data, 1).lower(runs, states).as_text()
    assert "stablehlo.convolution" in texts["lax"]
    assert "feature_group_count = 2" in texts["lax"] or "batch_group_count = 2" in texts["lax"]
    assert "convolution" not in texts["matmul"]
    assert "feature_group_count" not in texts["matmul"]
    assert "stablehlo.dot_general" in texts["matmul"]


# Biases whose exact gradient is zero: those directly followed by BatchNorm (it subtracts the
# mean) and the painter's logits bias (a softmax over all pixels ignores a constant shift).
ZERO_GRAD_BIASES = {"deconv_painter": {f"deconv_{i}" for i in range(6)},
                    "conv_regressor_quadrant": {"conv_4"}}  # fmt: skip


@pytest.mark.parametrize(
    ("name", "kwargs"),
    # Paper models, under -m slow (each compiles for half a minute on 2 cores). By default the
    # lowerings' values and gradients under vmap are checked per op (test_conv.py), and the
    # vmapped training steps of these models for their structure (above).
    [
        pytest.param("deconv_painter", {"filter_size": 3}, marks=pytest.mark.slow),
        pytest.param("conv_regressor_quadrant", {}, marks=pytest.mark.slow),
    ],
    ids=lambda v: str(v),
)
def test_few_training_steps_same_for_both_lowerings(name, kwargs, all_data):
    """Same initial parameters (bit for bit), and three vmapped Adam steps agree."""
    data = all_data[
        "classification" if models.MODELS[name].input_kind == "coords" else "regression"
    ]
    runs = _runs(2)
    finals = {}
    for lowering in ("lax", "matmul"):
        setup = _setup(name, lowering, **kwargs)
        states = jax.jit(jax.vmap(lambda r, setup=setup: init_state(setup, data, r)))(runs)
        finals[lowering] = (states.params, *_vmapped_steps(setup, data, 3)(runs, states))
    (init_lax, state_lax, loss_lax), (init_mm, state_mm, loss_mm) = finals["lax"], finals["matmul"]
    for a, b in zip(jax.tree.leaves(init_lax), jax.tree.leaves(init_mm), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(loss_lax, loss_mm, rtol=1e-4, atol=1e-6)
    for path, a in jax.tree_util.tree_leaves_with_path(state_lax.params):
        layer = path[0].key
        if path[-1].key == "bias" and layer in ZERO_GRAD_BIASES.get(name, ()):
            continue  # zero gradient up to rounding: Adam turns the rounding into ±lr steps
        b = state_mm.params[layer][path[-1].key]
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5, err_msg=jax.tree_util.keystr(path))


def test_build_rejects_an_unknown_lowering():
    with pytest.raises(ValueError, match="lowering must be one of"):
        models.build("tiny", lowering="fastest")
    with pytest.raises(ValueError, match="lowering must be one of"):
        EngineOptions(lowering="conv")


# -- the engine records the resolved lowering --------------------------------------------------


def _tiny_sweep():
    return tiny_sweep(lrs=(0.01,), splits=("quadrant",))


def _recorded(workdir):
    return json.loads((workdir / "config.json").read_text())["lowering"]


def test_engine_records_resolved_lowering_and_reuses_it_on_resume(tmp_path, monkeypatch):
    quiet = {"progress": False, "strategy": "vmap", "shard": False}
    run_sweep(_tiny_sweep(), tmp_path / "auto", options=EngineOptions(**quiet))
    assert _recorded(tmp_path / "auto") == "matmul"  # the CPU rule
    run_sweep(_tiny_sweep(), tmp_path / "lax", options=EngineOptions(lowering="lax", **quiet))
    assert _recorded(tmp_path / "lax") == "lax"
    # A resumed "auto" run keeps the workdir's lowering, even where the rule would differ.
    seen = []
    real_build = models.build

    def spy(name, *, lowering="auto", **kwargs):
        seen.append(lowering)
        return real_build(name, lowering=lowering, **kwargs)

    monkeypatch.setattr(models, "build", spy)
    # Make the finished run resumable: drop its last checkpoint, so the rerun retrains epoch 2.
    (latest,) = [d for d in (tmp_path / "lax" / "checkpoints").glob("*/2")]
    shutil.rmtree(latest)
    run_sweep(_tiny_sweep(), tmp_path / "lax", options=EngineOptions(**quiet))
    assert _recorded(tmp_path / "lax") == "lax"
    assert seen and set(seen) == {"lax"}
    # Another lowering on resume would change the numbers: refused, the config untouched.
    config = (tmp_path / "lax" / "config.json").read_text()
    with pytest.raises(WorkdirError, match="lowering 'matmul' differs from 'lax'"):
        run_sweep(_tiny_sweep(), tmp_path / "lax", options=EngineOptions(lowering="matmul",
                                                                         **quiet))  # fmt: skip
    assert (tmp_path / "lax" / "config.json").read_text() == config


def test_zero_insertion_is_a_global_lowering():
    assert EngineOptions(lowering="zero_insertion").lowering == "zero_insertion"
    args = cli._parser().parse_args(["sweep", "classification", "--lowering", "zero_insertion"])
    assert args.lowering == "zero_insertion"
    setup = _setup("deconv_painter", "zero_insertion", filter_size=2)
    assert setup.model.lowering == "zero_insertion"


def test_engine_resolves_auto_for_a_vmapped_model_axis(monkeypatch, tmp_path):
    """The engine's "auto" is the rule for convolutions whose weights carry the model axis:
    one value per platform (matmul on CPU and GPU, lax on TPU), whatever the workdir says when
    it records nothing."""
    from coordjax import conv
    from coordjax.sweep import engine

    for platform, want in (("cpu", "matmul"), ("gpu", "matmul"), ("tpu", "lax")):
        monkeypatch.setattr(jax, "default_backend", lambda platform=platform: platform)
        assert engine._lowering(EngineOptions(), tmp_path) == want
        assert conv.resolve_lowering("auto") == want
    (tmp_path / "config.json").write_text(json.dumps({"lowering": "zero_insertion"}))
    assert engine._lowering(EngineOptions(), tmp_path) == "zero_insertion"


def test_cli_rejects_an_unknown_lowering(capsys):
    status = cli.main(["sweep", "classification", "--lowering", "fast", "--dry-run"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("coordjax: ") and len(err.strip().splitlines()) == 1
    assert "--lowering" in err and "'matmul'" in err


# -- the library's layers take the lowering ------------------------------------------------------


@pytest.mark.parametrize("lowering", ["matmul", "zero_insertion"])
@pytest.mark.parametrize("coord_weights", ["concat", "split"])
@pytest.mark.parametrize("transpose", [False, True], ids=["conv", "transpose"])
def test_coordconv_layers_same_for_every_lowering(transpose, coord_weights, lowering):
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 6, 3)), jnp.float32)
    layer_type = cjnn.CoordConvTranspose if transpose else cjnn.CoordConv
    make = lambda low: layer_type(  # noqa: E731
        4, (3, 2), strides=(2, 1), coord_weights=coord_weights, with_r=True, lowering=low
    )
    # Jitted throughout: eager, the matmul forms dispatch hundreds of small ops.
    variables = jax.jit(make("lax").init)(jax.random.key(0), x)
    init_mm = jax.jit(make(lowering).init)(jax.random.key(0), x)
    for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(init_mm), strict=True):
        np.testing.assert_array_equal(a, b)

    def loss(low):
        return lambda v, x: jnp.sum(jnp.sin(make(low).apply(v, x)))

    want = jax.jit(jax.value_and_grad(loss("lax"), argnums=(0, 1)))(variables, x)
    got = jax.jit(jax.value_and_grad(loss(lowering), argnums=(0, 1)))(variables, x)
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)


def test_plain_layers_equal_flax_layers():
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5, 4, 3)), jnp.float32)
    for mine, theirs in (
        (cjnn.Conv(4, (3, 3), strides=2, lowering="matmul"), nn.Conv(4, (3, 3), strides=2)),
        (
            cjnn.ConvTranspose(4, (4, 4), strides=(2, 2), lowering="matmul"),
            nn.ConvTranspose(4, (4, 4), strides=(2, 2)),
        ),
    ):
        variables = theirs.init(jax.random.key(3), x)
        assert jax.tree.all(
            jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)),
                         mine.init(jax.random.key(3), x), variables)
        )  # fmt: skip
        np.testing.assert_allclose(
            mine.apply(variables, x), theirs.apply(variables, x), rtol=1e-5, atol=1e-5
        )


def test_matmul_lowering_refuses_what_it_cannot_compute_and_auto_falls_back():
    with pytest.raises(ValueError, match="lowering='matmul' does not support padding='CIRCULAR'"):
        cjnn.CoordConv(4, (3, 3), padding="CIRCULAR", lowering="matmul")
    with pytest.raises(ValueError, match="feature_group_count"):
        cjnn.CoordConv(4, (3, 3), feature_group_count=2, lowering="matmul")
    x = jnp.ones((1, 5, 5, 2))
    auto = cjnn.CoordConv(4, (3, 3), padding="CIRCULAR", lowering="auto")
    lax_layer = cjnn.CoordConv(4, (3, 3), padding="CIRCULAR", lowering="lax")
    variables = lax_layer.init(jax.random.key(0), x)
    np.testing.assert_array_equal(auto.apply(variables, x), lax_layer.apply(variables, x))
    with pytest.raises(ValueError, match="dense_kernel"):
        cjnn.CoordConv(4, (3, 3), dense_kernel=True)
    with pytest.raises(ValueError, match="tile_shape"):
        cjnn.CoordConv(4, (1, 1), tile_shape=(8,))


def test_nnx_layers_take_the_lowering():
    from flax import nnx

    from coordjax import nnx as cjnnx

    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 4, 4, 3)), jnp.float32)
    for layer_type in (cjnnx.CoordConv, cjnnx.CoordConvTranspose):
        outs = [
            layer_type(3, 5, (3, 3), strides=2, lowering=low, rngs=nnx.Rngs(0))(x)
            for low in ("lax", "matmul")
        ]
        np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="lowering must be one of"):
        cjnnx.CoordConv(3, 5, (3, 3), lowering="fast", rngs=nnx.Rngs(0))
