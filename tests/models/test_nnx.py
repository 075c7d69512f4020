"""Our Linen models from Flax NNX code (models/nnx.py): the same parameters, one shared kernel
per stage, the same training step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx, traverse_util

from sharesnet_jax.models import create_model
from sharesnet_jax.models.nnx import ShaResNetNNX, linen_variables, num_params

TINY = dict(num_classes=10, stage_features=(4, 8, 8))  # on ShaResNet-20: two uses per kernel


def _images(batch=6, size=12, seed=0):
    return jnp.asarray(np.random.RandomState(seed).rand(batch, size, size, 3), jnp.float32)


def _flat(tree):
    return traverse_util.flatten_dict(tree, sep="/")


def _abstract_nnx(name, **fields):
    model = create_model(name, **fields)
    size = 32 if name.startswith("cifar") else 64
    return nnx.eval_shape(lambda: ShaResNetNNX(model, jnp.zeros((1, size, size, 3)),
                                               jax.random.key(0)))


@pytest.mark.parametrize("name, expected", [
    ("cifar_sharesnet164", 929_114), ("cifar_resnet164", 1_703_258),  # the paper's table
])
def test_parameter_count_is_the_papers(name, expected):
    assert num_params(_abstract_nnx(name, num_classes=10)) == expected


@pytest.mark.parametrize("name, distinct_3x3", [("sharesnet50", 7), ("resnet50", 16)])
def test_one_param_per_shared_kernel_in_nnx_state(name, distinct_3x3):
    """ResNet-50 has 3+4+6+3 = 16 3x3 convs; sharing leaves one per stage plus the strided 3x3
    opening stages 2-4: 7 Params in `nnx.state`, the shared ones under `shared_conv3x3`."""
    net = _abstract_nnx(name, num_classes=10)
    kernels = [path for path, variable in nnx.state(net, nnx.Param).flat_state()
               if path[-1] == "kernel" and variable.get_value().shape[:2] == (3, 3)]
    assert len(kernels) == distinct_3x3
    shared = [path for path in kernels if "shared_conv3x3" in path]
    assert len(shared) == (4 if name.startswith("share") else 0)
    assert len({path[1] for path in shared}) == len(shared)  # one per stage


def test_initial_parameters_are_linens_exactly():
    model = create_model("cifar_sharesnet20", **TINY)
    images, key = _images(), jax.random.key(7)
    net = ShaResNetNNX(model, images, key)
    reference = model.init(key, images, train=False)  # Linen's own init with the same key
    got, want = _flat(linen_variables(net)), _flat(reference)
    assert got.keys() == want.keys()
    for path in want:
        np.testing.assert_array_equal(got[path], want[path], err_msg=path)
    assert num_params(net) == sum(x.size for x in jax.tree.leaves(reference["params"]))
    np.testing.assert_array_equal(net(images), model.apply(reference, images, train=False))


def test_from_variables_carries_given_arrays_and_refuses_another_models():
    model = create_model("cifar_sharesnet20", **TINY)
    images = _images()
    variables = model.init(jax.random.key(1), images, train=False)
    # Values no init would draw (BatchNorm statistics moved off 0 and 1 as training moves them).
    noise = iter(jax.random.split(jax.random.key(2), len(jax.tree.leaves(variables))))
    variables = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(next(noise), x.shape), variables)
    net = ShaResNetNNX.from_variables(model, variables, images)
    got, want = _flat(linen_variables(net)), _flat(variables)
    for path in want:
        np.testing.assert_array_equal(got[path], want[path], err_msg=path)
    np.testing.assert_array_equal(net(images), model.apply(variables, images, train=False))
    other = create_model("cifar_resnet20", **TINY).init(jax.random.key(1), images, train=False)
    with pytest.raises(ValueError, match=r"variables hold params/stage1/block2/conv2/kernel, "
                                         r"which this model does not have"):
        ShaResNetNNX.from_variables(model, other, images)


def test_one_optax_step_equals_the_linen_step():
    """Training-mode BatchNorm (statistics of the batch, running averages updated), gradients
    through the shared kernel's uses, SGD with momentum and weight decay: the NNX step and a
    plain Linen + optax step give the same loss, parameters and statistics."""
    model = create_model("cifar_sharesnet20", **TINY)
    images, key = _images(8), jax.random.key(3)
    labels = jnp.arange(8) % 10
    tx = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.1, momentum=0.9))

    def linen_loss(params, batch_stats):
        logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, images,
                                      train=True, mutable=["batch_stats"])
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, updates["batch_stats"]

    variables = model.init(key, images, train=False)
    params, batch_stats, opt_state = variables["params"], variables["batch_stats"], None
    opt_state = tx.init(params)
    linen_losses = []
    for _ in range(2):
        (loss, batch_stats), grads = jax.value_and_grad(linen_loss, has_aux=True)(
            params, batch_stats)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        linen_losses.append(float(loss))

    net = ShaResNetNNX(model, images, key)
    optimizer = nnx.Optimizer(net, tx, wrt=nnx.Param)

    @nnx.jit
    def nnx_step(net, optimizer):
        def loss_fn(net):
            logits = net(images, train=True)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(net)
        optimizer.update(net, grads)
        return loss

    nnx_losses = [float(nnx_step(net, optimizer)) for _ in range(2)]
    np.testing.assert_allclose(nnx_losses, linen_losses, rtol=1e-6)
    got = _flat(linen_variables(net))
    want = _flat({"params": params, "batch_stats": batch_stats})
    initial = _flat(variables)
    for path in want:
        np.testing.assert_allclose(got[path], want[path], rtol=1e-5, atol=1e-6, err_msg=path)
    # The step did move the shared kernel and the running statistics.
    for path in ("params/stage2/shared_conv3x3/kernel", "batch_stats/stage2/block3/bn2/mean"):
        assert np.abs(want[path] - initial[path]).max() > 1e-4, path
