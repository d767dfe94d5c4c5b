r"""The batched RealNVP: one flowjax affine coupling flow per seed, stacked along axis 0.

RealNVP (Dinh, Sohl-Dickstein and Bengio 2017): ``x = f(z)``, ``z ~ N(0, I_d)``, with ``f`` a
composition of ``layers`` affine coupling layers, each followed by a fixed permutation of the
coordinates (a random one, or the flip in d = 2).  Layer ``l`` keeps the first ``h = d // 2``
coordinates ``u`` and maps the other ones as

    v -> v * sigma(u) + b(u),    sigma = softplus(.) + 0.01 > 0,

with ``(b, sigma)`` the output of an MLP conditioner (``nn_depth`` hidden layers of ``width``
ReLU units); the permutations alternate the two halves (:func:`_layer`).  The density is ``log q(x) = log N(z; 0, I) - sum_l sum_i log sigma_{l,i}``
(the change of variables; flowjax's ``Transformed.sample_and_log_prob`` computes both in one
forward pass and ``log_prob`` inverts the layers exactly).  Built from flowjax's ``Coupling``,
``Affine``, ``Permute`` and ``Scan`` as its ``coupling_flow`` is (same transformer and
conditioner; forward direction = sampling, the direction reverse-KL training uses), except
for the permutations.

``init_scale`` multiplies the initial weights and biases of every conditioner's output layer:
1 is flowjax's initialisation (a random flow close to, but not, the identity: the random
output layer is what breaks the symmetry between the target's modes, as the random initial
means do for a mixture); 0 starts every seed at exactly ``q = N(0, I)``.

All seeds are one pytree whose array leaves carry a leading seed axis of length S (built by
``eqx.filter_vmap``); :func:`log_prob` and :func:`sample_and_log_prob` map over it.  Arrays:
``x`` of shape (S, N, d); log-densities (S, N), in nats.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.nn as jnn
import jax.numpy as jnp
import jax.random as jr
import paramax
from flowjax.bijections import Affine, Chain, Coupling, Permute, Scan
from flowjax.distributions import StandardNormal, Transformed
from paramax.utils import inv_softplus

from . import _jax  # noqa: F401  (the compilation cache)

__all__ = ["build_flows", "split_flows", "log_prob", "sample_and_log_prob", "sample"]


def _is_nontrainable(leaf: Any) -> bool:
    return isinstance(leaf, paramax.NonTrainable)


def _scale_output_layers(flow: Any, init_scale: float) -> Any:
    """Multiply the conditioners' output-layer weights and biases by ``init_scale``."""
    if init_scale == 1.0:
        return flow
    chain = flow.bijection.bijection              # Scan(Chain([Coupling, permutation]))
    coupling = chain.bijections[0]
    last = coupling.conditioner.layers[-1]
    return eqx.tree_at(
        lambda f: (f.bijection.bijection.bijections[0].conditioner.layers[-1].weight,
                   f.bijection.bijection.bijections[0].conditioner.layers[-1].bias),
        flow, (last.weight * init_scale, last.bias * init_scale))


def _affine_transformer(min_scale: float = 1e-2) -> Affine:
    """The affine transformer ``v -> v * (softplus(a) + min_scale) + b``, starting at the
    identity (flowjax's default transformer of ``coupling_flow``)."""
    scale = paramax.Parameterize(lambda x: jnn.softplus(x) + min_scale,
                                 inv_softplus(1 - min_scale))
    return eqx.tree_at(lambda aff: aff.scale, Affine(), replace=scale)


def _layer(key: Any, d: int, width: int, nn_depth: int) -> Any:
    """One coupling layer and the permutation after it.

    The permutation sends the coordinates just transformed to the front (they condition the
    next layer) and the conditioning ones to the back, each group shuffled at random: every
    coordinate is transformed at least every second layer.  (flowjax's ``coupling_flow`` uses a
    uniformly random permutation, under which a coordinate can stay untransformed through all
    layers: with 2 layers in d = 4 a target mean along it could not be reached at all.)
    """
    bij_key, perm_key = jr.split(key)
    h = d // 2
    coupling = Coupling(key=bij_key, transformer=_affine_transformer(), untransformed_dim=h,
                        dim=d, nn_width=width, nn_depth=nn_depth, nn_activation=jnn.relu)
    rev = jnp.arange(d)[::-1]
    k1, k2 = jr.split(perm_key)
    perm = jnp.concatenate([jr.permutation(k1, rev[:h]), jr.permutation(k2, rev[h:])])
    return Chain([coupling, Permute(perm)]).merge_chains()


def build_flows(keys: Any, d: int, layers: int, width: int, nn_depth: int,
                init_scale: float) -> Any:
    """S RealNVP flows on R^d, one per key of ``keys`` (a (S,) array of JAX keys).

    Returns the stacked flowjax ``Transformed`` (array leaves with a leading axis S).  Built
    eagerly (flowjax's coupling layers keep their initial transformer parameters in a closure,
    which must hold a concrete array, not a tracer of a compiled build); the persistent
    compilation cache of :mod:`._jax` makes the repeated builds cheap.
    """
    def one(key: Any) -> Any:
        stack = eqx.filter_vmap(lambda k: _layer(k, d, width, nn_depth))(jr.split(key, layers))
        flow = Transformed(StandardNormal((d,)), Scan(stack))
        return _scale_output_layers(flow, init_scale)

    return eqx.filter_vmap(one)(keys)


def split_flows(flows: Any) -> tuple[Any, Any]:
    """(trainable parameters, the rest): ``eqx.partition`` with the permutations (and any
    other ``paramax.NonTrainable`` leaf) on the static side."""
    return eqx.partition(flows, eqx.is_inexact_array, is_leaf=_is_nontrainable)


def log_prob(flows: Any, x: Any) -> Any:
    """``log q_s(x_{s, i})`` of every seed's flow at its own points; x (S, N, d) -> (S, N)."""
    return eqx.filter_vmap(lambda f, xs: paramax.unwrap(f).log_prob(xs))(flows, x)


def sample_and_log_prob(flows: Any, keys: Any, n: int) -> tuple[Any, Any]:
    """``n`` reparameterised samples of every seed's flow and their log-densities.

    keys : (S,) JAX keys, one per seed.  Returns x (S, n, d) and log q (S, n).
    """
    return eqx.filter_vmap(
        lambda f, k: paramax.unwrap(f).sample_and_log_prob(k, (n,)))(flows, keys)


def sample(flows: Any, keys: Any, n: int) -> Any:
    """``n`` samples of every seed's flow: (S, n, d)."""
    return sample_and_log_prob(flows, keys, n)[0]


def run_keys(seed: int, run_ids: Any) -> Any:
    """The root key of each run: ``fold_in(key(seed), run_id)``, so that run i's stream does
    not depend on which other runs share its batch."""
    base = jr.key(int(seed))
    return jax.vmap(lambda i: jr.fold_in(base, i))(jnp.asarray(run_ids, dtype=jnp.uint32))
