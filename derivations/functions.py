"""The Gaussian-expectation special functions, as SymPy functions with their own derivatives.

One family covers every expectation the objective needs.  For n >= 1, a multi-index
``alpha`` in N^n, a mean vector ``a`` in R^n and a covariance matrix C (n x n, positive
semi-definite):

    L_alpha(a; C) = E[ d^alpha LSE(0, v) ],   v ~ N(a, C),   LSE(0, v) = log(1 + sum_i e^{v_i}).

For n = 1 this is ``E softplus^{(k)}(a + sqrt(c) xi)``, xi ~ N(0, 1): k = 0 is
``S(a, c) = E softplus``, k = 1 is ``Lambda(a, c) = E sigmoid``, and so on.

The family is closed under differentiation, which is what lets SymPy produce gradients,
Jacobians and Hessians symbolically:

* ``d L_alpha / d a_i = L_{alpha + e_i}`` (differentiate under the expectation);
* ``d L_alpha / d C_ii = 1/2 L_{alpha + 2 e_i}`` and, for i < j with C_ij = C_ji moved together,
  ``d L_alpha / d C_ij = L_{alpha + e_i + e_j}`` (the heat equation: the Gaussian density
  satisfies ``d rho / d C_ij = (1 - delta_ij / 2) d^2 rho / (d a_i d a_j)`` in this
  parameterisation).

The covariance is an argument (not its square root), so the functions stay smooth where C
degenerates (two variational means that coincide).

Arguments, in order: ``n``, the n orders ``alpha_1..alpha_n``, the n means ``a_1..a_n``, and
the n(n+1)/2 upper-triangle covariance entries ``C_11, C_12, .., C_1n, C_22, .., C_nn``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sympy as sp

__all__ = ["GaussLSE", "gauss_lse", "upper_index"]


def upper_index(n: int, i: int, j: int) -> int:
    """Position of C_ij (0-based, i <= j) in the row-major upper triangle of an n x n matrix."""
    if i > j:
        i, j = j, i
    return i * n - i * (i - 1) // 2 + (j - i)


class GaussLSE(sp.Function):
    r"""``L_alpha(a; C) = E[d^alpha LSE(0, v)]``, ``v ~ N(a, C)`` (see the module docstring)."""

    @classmethod
    def eval(cls, *args):  # noqa: D401 - SymPy hook
        if len(args) < 1 or not args[0].is_Integer or args[0] < 1:
            raise ValueError("GaussLSE: first argument must be the dimension n >= 1")
        n = int(args[0])
        if len(args) != 1 + 2 * n + n * (n + 1) // 2:
            raise ValueError(f"GaussLSE: expected {1 + 2 * n + n * (n + 1) // 2} arguments "
                             f"for n = {n}, got {len(args)}")
        for o in args[1:1 + n]:
            if not (o.is_Integer and o >= 0):
                raise ValueError("GaussLSE: derivative orders must be non-negative integers")
        return None

    # -- structure ---------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return int(self.args[0])

    @property
    def orders(self) -> tuple[int, ...]:
        return tuple(int(o) for o in self.args[1:1 + self.n])

    @property
    def means(self) -> tuple[sp.Expr, ...]:
        n = self.n
        return tuple(self.args[1 + n:1 + 2 * n])

    @property
    def cov(self) -> tuple[sp.Expr, ...]:
        """Upper-triangle covariance entries, row-major."""
        return tuple(self.args[1 + 2 * self.n:])

    @property
    def point(self) -> tuple[sp.Expr, ...]:
        """(a, C) arguments: the atoms sharing them can be evaluated in one quadrature."""
        return tuple(self.args[1 + self.n:])

    def with_orders(self, orders: Sequence[int]) -> GaussLSE:
        return GaussLSE(self.args[0], *[sp.Integer(o) for o in orders], *self.point)

    # -- calculus ----------------------------------------------------------------------------
    def fdiff(self, argindex: int = 1) -> sp.Expr:
        n = self.n
        pos = argindex - 1
        if pos < 1 + n:
            raise sp.ArgumentIndexError(self, argindex)
        orders = list(self.orders)
        if pos < 1 + 2 * n:
            orders[pos - 1 - n] += 1
            return self.with_orders(orders)
        c = pos - 1 - 2 * n
        for i in range(n):
            for j in range(i, n):
                if upper_index(n, i, j) == c:
                    if i == j:
                        orders[i] += 2
                        return sp.Rational(1, 2) * self.with_orders(orders)
                    orders[i] += 1
                    orders[j] += 1
                    return self.with_orders(orders)
        raise sp.ArgumentIndexError(self, argindex)  # pragma: no cover

    # -- printing ----------------------------------------------------------------------------
    def _latex(self, printer) -> str:
        n = self.n
        a = ", ".join(printer._print(x) for x in self.means)
        c = ", ".join(printer._print(x) for x in self.cov)
        if n == 1:
            k = self.orders[0]
            sup = "" if k == 0 else "^{(" + str(k) + ")}"
            return r"\mathcal{L}" + sup + r"\left(" + a + r";\, " + c + r"\right)"
        sub = "_{" + ",".join(str(o) for o in self.orders) + "}"
        return r"\mathcal{L}" + sub + r"\left(" + a + r";\, " + c + r"\right)"


def gauss_lse(means: Sequence[sp.Expr], cov: sp.Matrix, orders: Sequence[int] | None = None
              ) -> GaussLSE:
    """Build ``L_alpha(a; C)`` from a mean vector and a symmetric covariance matrix."""
    n = len(means)
    if cov.shape != (n, n):
        raise ValueError(f"gauss_lse: covariance must be {n}x{n}, got {cov.shape}")
    orders = [0] * n if orders is None else list(orders)
    upper = [cov[i, j] for i in range(n) for j in range(i, n)]
    return GaussLSE(sp.Integer(n), *[sp.Integer(o) for o in orders], *means, *upper)
