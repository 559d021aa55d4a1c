"""The recipe's functions jitted for the tests, the setup static (hashable, compared by value).

Eager, an init or a step dispatches hundreds of small ops, each compiled on its own; jitted, it
is one compile. Tests that compare op order with an eager reference call the eager functions.
"""

import jax

from coordjax.train import evaluate, init_state, train_step

jit_init = jax.jit(init_state, static_argnums=0)
jit_step = jax.jit(train_step, static_argnums=0)
jit_evaluate = jax.jit(evaluate, static_argnums=0)
