r"""Numba kernels of the d-dimensional Monte Carlo (:mod:`analysis.montecarlo`).

Nothing here uses the reduced equations: the kernels work with the d-dimensional means
``m`` (M, d), the target means ``mu`` (K, d) and d-dimensional Gaussian samples, exactly as a
practitioner's VI code does.  Time is the gradient-flow time t = eta * steps.

Random numbers
--------------
Every run owns ``LANES`` independent xoroshiro128++ generators (Blackman & Vigna 2019; state
(2, LANES) uint64, seeded by the caller from ``numpy.random.SeedSequence``), advanced together so
that the loop over lanes vectorises.  One *round* turns two 64-bit outputs per lane into two
standard normals per lane by the Box-Muller transform

    u = 1 - U1 in (0, 1] (52-bit U1),   rad = sqrt(-2 log u),   theta = 2 pi U2,
    z1 = rad cos(theta),   z2 = rad sin(theta),

with branch-free polynomial log (degree-17 fit of log(1 + f) on [sqrt(1/2) - 1, sqrt(2) - 1],
max error 2.4e-15, after splitting off the binary exponent) and sin/cos (Taylor polynomials of
degree 13/14 on a quarter turn, error < 3e-14; the quadrant comes from two low bits of the
second output), so that the transform vectorises too.  The first LANES normals of a round are the
cosine parts, the next LANES the sine parts; rounds fill a flat buffer in order, and normals of
a last partial round are discarded.  A run's noise therefore depends only on its seed state,
never on the thread count or on the other runs.

Gradient estimators (DESIGN.md sections 1-2; F = E_q[log q - beta log p - gamma log p0])
---------------------------------------------------------------------------------------------
Samples ``x_ki = m_k + sqrt(s) eps_ki`` (i = 1..n per component, stratified by component), and
``phi(x) = log q(x) - beta log p(x) - gamma log p0(x)``,

    grad_x phi(x) = c x + (1/s) sum_j rho_j(x) m_j - (beta/Delta) sum_a r_a(x) mu_a,
    c = -1/s + beta/Delta + gamma/sigma0^2,

with ``rho_j(x) = softmax_j(log w_j + (x.m_j - Q_jj/2)/s)`` and
``r_a(x) = softmax_a(log pi_a + (x.mu_a - T_aa/2)/Delta)``.

* ``stl`` (sticking the landing; q's parameters held fixed inside log q):
  ``g_k = w_k mean_i grad_x phi(x_ki)``.
* ``reparam`` (plain reparameterisation gradient of the sample objective
  ``sum_j w_j mean_i phi(x_ji)``, q's parameters not stopped): adds the score term
  ``sum_j w_j mean_i rho_k(x_ji) (x_ji - m_k) / s``, whose expectation
  ``E_q[rho_k (x - m_k)] / s = w_k E_k[x - m_k] / s`` vanishes.

Both are unbiased for ``grad_{m_k} F``.  Weights (logits alpha, w = softmax(alpha)):
``dF/dalpha_k = w_k (f_k - sum_j w_j f_j)`` with ``f_j = E_{N(m_j, sI)} phi``; both estimators
replace f_j by the sample mean of phi over component j's samples (this is the reparameterisation
gradient with respect to the mixture weights of the stratified sample objective), and
``reparam`` adds ``sum_j w_j mean_i rho_k(x_ji) - w_k`` (the derivative through the weights
inside log q; zero mean since ``E_q rho_k = w_k``).  ``phi`` contains all normalising constants
and the |x|^2 terms, ``-(1/s - beta/Delta - gamma/sigma0^2) |x|^2 / 2``, whose sample
fluctuation (std ~ |1/s - beta/Delta - gamma/sigma0^2| s sqrt(d/2) per sample) makes the weight
gradient noisy in large d while beta < 1; no control variate is used, as in plain VI code.

Per step and run the work is: Q, R from the vectors; M n d normals into a per-run buffer;
for every sample its projections on the M + K means (:func:`_project`, four rows per pass);
softmaxes; the gradient assembly; the update.  Runs are independent (``prange`` over runs).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types, uint64
from numba.extending import intrinsic

__all__ = ["LANES", "FASTMATH", "WORK_ROWS", "fill_normals", "draw_normals", "grad_from_noise",
           "sgd_block", "qr_stats"]

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


# ----------------------------------------------------------------------------------------
# the gradient estimator
# ----------------------------------------------------------------------------------------

@njit(fastmath=FASTMATH, cache=True)
def _dot(a, b):
    acc = 0.0
    for i in range(a.shape[0]):
        acc += a[i] * b[i]
    return acc


@njit(fastmath=FASTMATH, cache=True)
def _axpy(alpha, x, y):
    """y += alpha x"""
    for i in range(y.shape[0]):
        y[i] += alpha * x[i]


@njit(fastmath=FASTMATH, cache=True)
def _project(e, B, out, acc):
    """``out[j] = e . B[j]`` for every row of B (nb, d), and ``acc += e`` (d,), in few passes.

    Rows are taken four (then two, then one) at a time so that every load of e serves several
    multiply-adds; the running sum of e rides along with the first pass.
    """
    nb = B.shape[0]
    d = e.shape[0]
    j = 0
    fused = False
    while j + 4 <= nb:
        b0 = B[j]
        b1 = B[j + 1]
        b2 = B[j + 2]
        b3 = B[j + 3]
        a0 = 0.0
        a1 = 0.0
        a2 = 0.0
        a3 = 0.0
        if not fused:
            for i in range(d):
                x = e[i]
                a0 += x * b0[i]
                a1 += x * b1[i]
                a2 += x * b2[i]
                a3 += x * b3[i]
                acc[i] += x
            fused = True
        else:
            for i in range(d):
                x = e[i]
                a0 += x * b0[i]
                a1 += x * b1[i]
                a2 += x * b2[i]
                a3 += x * b3[i]
        out[j] = a0
        out[j + 1] = a1
        out[j + 2] = a2
        out[j + 3] = a3
        j += 4
    while j + 2 <= nb:
        b0 = B[j]
        b1 = B[j + 1]
        a0 = 0.0
        a1 = 0.0
        if not fused:
            for i in range(d):
                x = e[i]
                a0 += x * b0[i]
                a1 += x * b1[i]
                acc[i] += x
            fused = True
        else:
            for i in range(d):
                x = e[i]
                a0 += x * b0[i]
                a1 += x * b1[i]
        out[j] = a0
        out[j + 1] = a1
        j += 2
    if j < nb:
        b0 = B[j]
        a0 = 0.0
        if not fused:
            for i in range(d):
                x = e[i]
                a0 += x * b0[i]
                acc[i] += x
            fused = True
        else:
            for i in range(d):
                a0 += e[i] * b0[i]
        out[j] = a0
    if not fused:
        for i in range(d):
            acc[i] += e[i]


@njit(fastmath=FASTMATH, cache=True)
def qr_stats(m, mu, Q, R):
    """``Q = m m^T`` (M, M), ``R = m mu^T`` (M, K) from the vectors m (M, d), mu (K, d)."""
    M = m.shape[0]
    K = mu.shape[0]
    for k in range(M):
        for l in range(k, M):
            v = _dot(m[k], m[l])
            Q[k, l] = v
            Q[l, k] = v
        for a in range(K):
            R[k, a] = _dot(m[k], mu[a])


@njit(fastmath=FASTMATH, cache=True)
def _softmax_inplace(x, need_lse):
    """x <- softmax(x) (1-d, small); returns log-sum-exp of the input if need_lse, else 0."""
    n = x.shape[0]
    mx = x[0]
    for j in range(1, n):
        if x[j] > mx:
            mx = x[j]
    z = 0.0
    for j in range(n):
        e = math.exp(x[j] - mx)
        x[j] = e
        z += e
    inv = 1.0 / z
    for j in range(n):
        x[j] *= inv
    return mx + math.log(z) if need_lse else 0.0


@njit(fastmath=FASTMATH, cache=True)
def _softmax_logits(alpha, w, logw):
    M = alpha.shape[0]
    amax = alpha[0]
    for k in range(1, M):
        if alpha[k] > amax:
            amax = alpha[k]
    z = 0.0
    for k in range(M):
        w[k] = math.exp(alpha[k] - amax)
        z += w[k]
    lz = math.log(z)
    for k in range(M):
        w[k] /= z
        logw[k] = alpha[k] - amax - lz


@njit(fastmath=FASTMATH, cache=True)
def _component_constants(k, Q, R, logw, logpi, tdiag, s, delta, cq, cp):
    """Sample-independent parts of the logits of rho and r for samples of component k:
    ``log w_j + (Q_kj - Q_jj/2)/s`` and ``log pi_a + (R_ka - T_aa/2)/Delta``."""
    for j in range(cq.shape[0]):
        cq[j] = logw[j] + (Q[k, j] - 0.5 * Q[j, j]) / s
    for a in range(cp.shape[0]):
        cp[a] = logpi[a] + (R[k, a] - 0.5 * tdiag[a]) / delta


@njit(fastmath=FASTMATH, cache=True)
def _sample_terms(k, em, emu, sq, cq, cp, Qkk, ss, s, delta, beta, gamma, sigma0_sq, d,
                  train_w, rho, r):
    """Responsibilities and phi at one sample ``x = m_k + sqrt(s) eps`` of component k.

    em (M,) = eps . m_j, emu (K,) = eps . mu_a, sq = |eps|^2 (used only when train_w);
    cq, cp from :func:`_component_constants`.  Writes rho (M,) = softmax_j(log w_j +
    (x.m_j - Q_jj/2)/s) and r (K,) = softmax_a(log pi_a + (x.mu_a - T_aa/2)/Delta), using
    x.m_j = Q_kj + sqrt(s) eps.m_j and x.mu_a = R_ka + sqrt(s) eps.mu_a.  Returns
    phi(x) = log q(x) - beta log p(x) - gamma log p0(x) when train_w (else 0), with
    |x|^2 = Q_kk + 2 sqrt(s) eps.m_k + s |eps|^2 and all normalising constants.
    """
    aq = ss / s
    ap = ss / delta
    for j in range(rho.shape[0]):
        rho[j] = cq[j] + aq * em[j]
    for a in range(r.shape[0]):
        r[a] = cp[a] + ap * emu[a]
    lse_q = _softmax_inplace(rho, train_w)
    lse_p = _softmax_inplace(r, train_w)
    if not train_w:
        return 0.0
    x2 = Qkk + 2.0 * ss * em[k] + s * sq
    logq = lse_q - 0.5 * x2 / s - 0.5 * d * math.log(2.0 * math.pi * s)
    logp = lse_p - 0.5 * x2 / delta - 0.5 * d * math.log(2.0 * math.pi * delta)
    phi = logq - beta * logp
    if gamma != 0.0:
        logp0 = -0.5 * x2 / sigma0_sq - 0.5 * d * math.log(2.0 * math.pi * sigma0_sq)
        phi -= gamma * logp0
    return phi


@njit(fastmath=FASTMATH, cache=True)
def _assemble(m, mu, w, rhobar, rbar, fbar, ebar, V, ss, s, delta, beta, gamma, sigma0_sq,
              reparam, train_w, g, galpha):
    """g (M, d) and galpha (M,) from the per-component sample means (module docstring)."""
    M = m.shape[0]
    K = mu.shape[0]
    inv_s = 1.0 / s
    c = -inv_s + beta / delta + (gamma / sigma0_sq if gamma != 0.0 else 0.0)
    for k in range(M):
        gk = g[k]
        wk = w[k]
        mk = m[k]
        ek = ebar[k]
        cm = wk * c
        ce = wk * c * ss
        for i in range(gk.shape[0]):
            gk[i] = cm * mk[i] + ce * ek[i]
        for j in range(M):
            _axpy(wk * inv_s * rhobar[k, j], m[j], gk)
        for a in range(K):
            _axpy(-wk * beta / delta * rbar[k, a], mu[a], gk)
        if reparam:
            for j in range(M):
                coef = w[j] * inv_s * rhobar[j, k]
                _axpy(coef, m[j], gk)
                _axpy(-coef, mk, gk)
                _axpy(w[j] * ss * inv_s, V[j, k], gk)
    if train_w:
        fmean = 0.0
        for j in range(M):
            fmean += w[j] * fbar[j]
        for k in range(M):
            galpha[k] = w[k] * (fbar[k] - fmean)
            if reparam:
                extra = -w[k]
                for j in range(M):
                    extra += w[j] * rhobar[j, k]
                galpha[k] += extra
    else:
        for k in range(M):
            galpha[k] = 0.0


#: Rows of the small work array of :func:`grad_from_noise` (shape (WORK_ROWS, M + K)).
WORK_ROWS = 7


@njit(fastmath=FASTMATH, cache=True)
def grad_from_noise(m, alpha, mu, tdiag, logpi, beta, gamma, s, delta, sigma0_sq, eps, n,
                    reparam, train_w, g, galpha, Q, R, ebar, V, rhobar, rbar, fbar, work, B):
    """One stochastic gradient of F from given noise.

    m (M, d), alpha (M,), mu (K, d), tdiag (K,) = |mu_a|^2, logpi (K,);
    eps (M n, d): row ``k n + i`` is the standard-normal noise of sample i of component k;
    outputs g (M, d) ~ grad_m F and galpha (M,) ~ dF/dalpha (zeros unless train_w);
    work: Q (M, M), R (M, K), ebar (M, d), V (M, M, d) (used only if reparam), rhobar (M, M),
    rbar (M, K), fbar (M,), work (WORK_ROWS, M + K), B (M + K, d).  On return Q, R hold the
    statistics of m, and rhobar, rbar, fbar, ebar (and V / n) the per-component sample means of
    rho, r, phi, eps (and rho_j eps).
    """
    M, d = m.shape
    K = mu.shape[0]
    qr_stats(m, mu, Q, R)
    for j in range(M):
        B[j, :] = m[j]
    for a in range(K):
        B[M + a, :] = mu[a]
    w = work[0, :M]
    logw = work[1, :M]
    proj = work[2]
    em = proj[:M]
    emu = proj[M:]
    cq = work[3, :M]
    cp = work[4, :K]
    rho = work[5, :M]
    r = work[6, :K]
    _softmax_logits(alpha, w, logw)
    ss = math.sqrt(s)
    for k in range(M):
        fbar[k] = 0.0
        for j in range(M):
            rhobar[k, j] = 0.0
        for a in range(K):
            rbar[k, a] = 0.0
        ek = ebar[k]
        for i in range(d):
            ek[i] = 0.0
        if reparam:
            for j in range(M):
                vkj = V[k, j]
                for i in range(d):
                    vkj[i] = 0.0
    for k in range(M):
        _component_constants(k, Q, R, logw, logpi, tdiag, s, delta, cq, cp)
        ek = ebar[k]
        for i in range(n):
            e = eps[k * n + i]
            _project(e, B, proj, ek)
            sq = _dot(e, e) if train_w else 0.0
            fbar[k] += _sample_terms(k, em, emu, sq, cq, cp, Q[k, k], ss, s, delta, beta,
                                     gamma, sigma0_sq, d, train_w, rho, r)
            for j in range(M):
                rhobar[k, j] += rho[j]
            for a in range(K):
                rbar[k, a] += r[a]
            if reparam:
                for j in range(M):
                    _axpy(rho[j], e, V[k, j])
    inv_n = 1.0 / n
    for k in range(M):
        fbar[k] *= inv_n
        for j in range(M):
            rhobar[k, j] *= inv_n
        for a in range(K):
            rbar[k, a] *= inv_n
        ek = ebar[k]
        for t in range(d):
            ek[t] *= inv_n
        if reparam:
            for j in range(M):
                vkj = V[k, j]
                for t in range(d):
                    vkj[t] *= inv_n
    _assemble(m, mu, w, rhobar, rbar, fbar, ebar, V, ss, s, delta, beta, gamma, sigma0_sq,
              reparam, train_w, g, galpha)


# ----------------------------------------------------------------------------------------
# SGD / Adam over many runs
# ----------------------------------------------------------------------------------------

@njit(parallel=True, fastmath=FASTMATH, cache=True)
def sgd_block(m, alpha, mom1, mom2, amom1, amom2, rng_state, active, mu, tdiag, logpi, betas,
              gammas, step0, eta, n, s, delta, sigma0_sq, reparam, train_w, adam, b1, b2,
              adam_eps, Q_out, R_out):
    """Advance S independent runs by ``len(betas)`` optimiser steps (in place).

    m (S, M, d), alpha (S, M): parameters; mom1, mom2 (S, M, d), amom1, amom2 (S, M): Adam moments
    (ignored for SGD); rng_state (S, 2, LANES) uint64; active (S,) bool: runs that are still
    finite (a run whose parameters stop being finite is frozen and marked inactive);
    betas, gammas (nsteps,): beta and gamma at the *start* of each step (t = eta * step);
    step0: number of steps already taken (Adam bias correction).  SGD: ``theta -= eta g``.
    Adam (Kingma & Ba): ``theta -= eta mhat / (sqrt(vhat) + adam_eps)``.
    On return Q_out (S, M, M), R_out (S, M, K) hold the statistics of the new m.
    """
    S, M, d = m.shape
    K = mu.shape[0]
    nsteps = betas.shape[0]
    L = rng_state.shape[2]
    for run in prange(S):
        if active[run]:
            eps = np.empty((M * n, d))
            flat = eps.reshape(M * n * d)
            tmp = np.empty(2 * L)
            g = np.empty((M, d))
            galpha = np.empty(M)
            Q = np.empty((M, M))
            R = np.empty((M, K))
            ebar = np.empty((M, d))
            V = np.empty((M, M, d)) if reparam else np.empty((M, M, 1))
            rhobar = np.empty((M, M))
            rbar = np.empty((M, K))
            fbar = np.empty(M)
            work = np.empty((WORK_ROWS, M + K))
            Bw = np.empty((M + K, d))
            mr = m[run]
            ar = alpha[run]
            s0 = rng_state[run, 0]
            s1 = rng_state[run, 1]
            for st in range(nsteps):
                draw_normals(s0, s1, flat, tmp)
                grad_from_noise(mr, ar, mu, tdiag, logpi, betas[st], gammas[st], s, delta,
                                sigma0_sq, eps, n, reparam, train_w, g, galpha, Q, R, ebar, V,
                                rhobar, rbar, fbar, work, Bw)
                if adam:
                    tstep = step0 + st + 1
                    c1 = 1.0 / (1.0 - b1 ** tstep)
                    c2 = 1.0 / (1.0 - b2 ** tstep)
                    for k in range(M):
                        for i in range(d):
                            gi = g[k, i]
                            v1 = b1 * mom1[run, k, i] + (1.0 - b1) * gi
                            v2 = b2 * mom2[run, k, i] + (1.0 - b2) * gi * gi
                            mom1[run, k, i] = v1
                            mom2[run, k, i] = v2
                            mr[k, i] -= eta * (v1 * c1) / (math.sqrt(v2 * c2) + adam_eps)
                    if train_w:
                        for k in range(M):
                            gi = galpha[k]
                            v1 = b1 * amom1[run, k] + (1.0 - b1) * gi
                            v2 = b2 * amom2[run, k] + (1.0 - b2) * gi * gi
                            amom1[run, k] = v1
                            amom2[run, k] = v2
                            ar[k] -= eta * (v1 * c1) / (math.sqrt(v2 * c2) + adam_eps)
                else:
                    for k in range(M):
                        _axpy(-eta, g[k], mr[k])
                    if train_w:
                        for k in range(M):
                            ar[k] -= eta * galpha[k]
            ok = True
            for k in range(M):
                if not math.isfinite(ar[k]):
                    ok = False
                for i in range(d):
                    if not math.isfinite(mr[k, i]):
                        ok = False
            if not ok:
                active[run] = False
        qr_stats(m[run], mu, Q_out[run], R_out[run])
