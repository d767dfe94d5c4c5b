r"""Random numbers of the d-dimensional Monte Carlo: a per-run Gaussian generator.

Every run owns ``LANES`` independent xoroshiro128++ generators (Blackman & Vigna 2019; state
(2, LANES) uint64, seeded by :func:`rng_states` from ``numpy.random.SeedSequence``), advanced
together so that the loop over lanes vectorises.  One *round* turns two 64-bit outputs per lane
into two standard normals per lane by the Box-Muller transform

    u = 1 - U1 in (0, 1] (52-bit U1),   rad = sqrt(-2 log u),   theta = 2 pi U2,
    z1 = rad cos(theta),   z2 = rad sin(theta),

with branch-free polynomial log (degree-17 fit of log(1 + f) on [sqrt(1/2) - 1, sqrt(2) - 1],
max error 2.4e-15, after splitting off the binary exponent) and sin/cos (Taylor polynomials of
degree 13/14 on a quarter turn, error < 3e-14; the quadrant comes from two low bits of the
second output), so that the transform vectorises too.  The first LANES normals of a round are the
cosine parts, the next LANES the sine parts; rounds fill a flat buffer in order, and normals of
a last partial round are discarded.  A run's noise therefore depends only on its seed state,
never on the thread count or on the other runs.

Seeding (:func:`rng_states`): run i of base seed S uses ``SeedSequence(S, spawn_key=(i, 1))``
(the initial means use ``spawn_key=(i, 0)``, :func:`analysis.montecarlo.initial_means`).

Also the home of :data:`FASTMATH`, the floating-point flags of every Monte Carlo kernel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from llvmlite import ir
from numba import njit, types, uint64
from numba.extending import intrinsic

__all__ = ["LANES", "FASTMATH", "fill_normals", "draw_normals", "rng_states"]

#: Generator lanes per run (two normals per lane and round).
LANES = 64

#: Floating-point flags: reassociation and contraction (so that reductions vectorise), but no
#: ``nnan``/``ninf``: a diverging run must show up as NaN/inf, not be optimised away.
FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


# ----------------------------------------------------------------------------------------
# intrinsics: bit casts, and the preference for 512-bit vectors where the CPU has them
# ----------------------------------------------------------------------------------------

@intrinsic
def _bits_to_f64(typingctx, x):
    sig = types.float64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return sig, codegen


@intrinsic
def _f64_to_bits(typingctx, x):
    sig = types.uint64(types.float64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))
    return sig, codegen


@intrinsic
def _prefer_wide_vectors(typingctx):
    """Mark the enclosing function with ``"prefer-vector-width"="512"``.

    LLVM's default for AVX-512 CPUs is 256-bit vectors; the generator is ~20-30 % faster with
    512-bit ones.  On CPUs without AVX-512 the attribute is a no-op.  llvmlite only accepts a fixed
    list of attribute names, so the string attribute is added to the underlying set directly; if
    that ever fails the attribute is simply not set.
    """
    sig = types.void()

    def codegen(context, builder, signature, args):
        try:
            set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        except Exception:  # pragma: no cover - depends on llvmlite internals
            pass
        return context.get_dummy_value()
    return sig, codegen


# ----------------------------------------------------------------------------------------
# Gaussian generator: xoroshiro128++ lanes + polynomial Box-Muller
# ----------------------------------------------------------------------------------------

_LOG_C = (0.9999999999999791, -0.5000000000017079, 0.333333333344286, -0.24999999955861604,
          0.199999998125466, -0.16666670497112884, 0.1428572929274647, -0.12499846103249702,
          0.1111047459514277, -0.1000311013152213, 0.09105899374321165, -0.08304672668749206,
          0.07498619628228685, -0.07171087543082301, 0.0789808379920228, -0.07528423575021233,
          0.03553591841142104)
(_L0, _L1, _L2, _L3, _L4, _L5, _L6, _L7, _L8, _L9, _L10, _L11, _L12, _L13, _L14, _L15,
 _L16) = _LOG_C
_H = 0.5 * math.pi
# sin(pi t / 2) = t sum_k S_k t^(2k), cos(pi t / 2) = sum_k C_k t^(2k), |t| <= 1/2
_S0, _S1, _S2, _S3, _S4, _S5, _S6 = ((-1) ** k * _H ** (2 * k + 1) / math.factorial(2 * k + 1)
                                     for k in range(7))
_C0, _C1, _C2, _C3, _C4, _C5, _C6, _C7 = ((-1) ** k * _H ** (2 * k) / math.factorial(2 * k)
                                          for k in range(8))
_LN2 = math.log(2.0)
_SQRT2 = math.sqrt(2.0)
_MASK52 = np.uint64(0x000FFFFFFFFFFFFF)
_ONE_BITS = np.uint64(0x3FF0000000000000)


@njit(cache=True)
def _rotl(x, k):
    return (x << uint64(k)) | (x >> uint64(64 - k))


@njit(fastmath=FASTMATH, cache=True)
def fill_normals(s0, s1, zc, zs):
    """One round: advance every lane twice and write LANES normal pairs.

    s0, s1 : (L,) uint64 generator states (updated in place).
    zc, zs : (>= L,) float64 outputs: ``zc[l] = rad cos(theta)``, ``zs[l] = rad sin(theta)``.
    """
    _prefer_wide_vectors()
    L = s0.shape[0]
    for l in range(L):
        a = s0[l]
        b = s1[l]
        r1 = _rotl(a + b, 17) + a
        b ^= a
        a = _rotl(a, 49) ^ b ^ (b << uint64(21))
        b = _rotl(b, 28)
        r2 = _rotl(a + b, 17) + a
        b ^= a
        s0[l] = _rotl(a, 49) ^ b ^ (b << uint64(21))
        s1[l] = _rotl(b, 28)
        # radius: u = 2 - [1, 2) in (0, 1]; log u = e log 2 + log(1 + f),
        # with the mantissa 1 + f brought into [sqrt(1/2), sqrt 2)
        u = 2.0 - _bits_to_f64((r1 >> uint64(12)) | _ONE_BITS)
        bits = _f64_to_bits(u)
        e = np.float64(np.int64(bits >> uint64(52))) - 1023.0
        mant = _bits_to_f64((bits & _MASK52) | _ONE_BITS)
        big = mant > _SQRT2
        mant = 0.5 * mant if big else mant
        e = e + 1.0 if big else e
        f = mant - 1.0
        p = _L16
        p = p * f + _L15
        p = p * f + _L14
        p = p * f + _L13
        p = p * f + _L12
        p = p * f + _L11
        p = p * f + _L10
        p = p * f + _L9
        p = p * f + _L8
        p = p * f + _L7
        p = p * f + _L6
        p = p * f + _L5
        p = p * f + _L4
        p = p * f + _L3
        p = p * f + _L2
        p = p * f + _L1
        p = p * f + _L0
        lg = p * f + e * _LN2
        rad = math.sqrt(-2.0 * lg)
        # angle: quarter turn t in [-1/2, 1/2) times pi/2, rotated by a random quadrant
        t = _bits_to_f64((r2 >> uint64(12)) | _ONE_BITS) - 1.5
        t2 = t * t
        sn = ((((((_S6 * t2 + _S5) * t2 + _S4) * t2 + _S3) * t2 + _S2) * t2 + _S1) * t2 + _S0) * t
        cs = (((((((_C7 * t2 + _C6) * t2 + _C5) * t2 + _C4) * t2 + _C3) * t2 + _C2) * t2 + _C1)
              * t2 + _C0)
        swap = (r2 & uint64(1)) != uint64(0)
        neg = (r2 & uint64(2)) != uint64(0)
        x = -sn if swap else cs
        y = cs if swap else sn
        rad = -rad if neg else rad
        zc[l] = rad * x
        zs[l] = rad * y


@njit(cache=True)
def draw_normals(s0, s1, out, tmp):
    """Fill ``out`` (flat float64) with standard normals, round after round.

    tmp : (2 L,) work array for the last, partial round (its surplus normals are discarded).
    """
    L = s0.shape[0]
    N = out.shape[0]
    full = N // (2 * L)
    for r in range(full):
        o = 2 * L * r
        fill_normals(s0, s1, out[o:o + L], out[o + L:o + 2 * L])
    rem = N - 2 * L * full
    if rem > 0:
        fill_normals(s0, s1, tmp[:L], tmp[L:])
        o = 2 * L * full
        for i in range(rem):
            out[o + i] = tmp[i]


def rng_states(seed: int, run_ids: Sequence[int]) -> np.ndarray:
    """Generator states (S, 2, LANES) uint64 of the runs, from ``SeedSequence(seed, (i, 1))``."""
    ids = np.asarray(run_ids, dtype=np.int64).ravel()
    L = LANES
    st = np.empty((ids.size, 2, L), dtype=np.uint64)
    for j, i in enumerate(ids):
        s = np.random.SeedSequence(seed, spawn_key=(int(i), 1)).generate_state(2 * L, np.uint64)
        s = s.reshape(2, L)
        zero = (s[0] == 0) & (s[1] == 0)          # xoroshiro's forbidden all-zero state
        s[0, zero] = 1
        st[j] = s
    return st
