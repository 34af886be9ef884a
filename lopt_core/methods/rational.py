"""A learnable rational activation (a Padé activation unit, Molina et al., 2020), as IAPT uses.

    R(x) = P(x) / Q(x),   P(x) = a_0 + a_1 x + … + a_6 x^6,   Q(x) = 1 + |b_1 x + … + b_5 x^5|

The absolute value keeps Q ≥ 1, so R has no poles. The coefficients start at a least-squares fit of
GELU on [-3, 3] (``fit_rational(gelu)``; max error 8e-5 there) and are then learned, one set per layer.
"""
from __future__ import annotations

import torch
from torch import nn

# fit_rational(torch.nn.functional.gelu, 6, 5, (-3, 3)), rounded to 6 significant digits
GELU_NUMERATOR = (7.50875e-05, 0.5, 0.397992, 0.177116, 0.0767293, 0.0218827, 0.00243028)
GELU_DENOMINATOR = (0.0, 0.354231, 0.0, 0.0437654, 0.0)


def fit_rational(fn, num_degree: int = 6, den_degree: int = 5, interval=(-3.0, 3.0), points: int = 4001):
    """Coefficients (a, b) of P/Q fitted to ``fn`` on ``interval`` by linearised least squares:
    minimise Σ (P(x) − fn(x)·B(x) − fn(x))² over a and b, where Q = 1 + B (B > −1 there)."""
    x = torch.linspace(*interval, points, dtype=torch.float64)
    y = fn(x)
    powers_p = torch.stack([x ** j for j in range(num_degree + 1)], dim=1)
    powers_q = torch.stack([x ** k for k in range(1, den_degree + 1)], dim=1)
    A = torch.cat([powers_p, -y[:, None] * powers_q], dim=1)
    sol = torch.linalg.lstsq(A, y[:, None]).solution.squeeze(1)
    return sol[: num_degree + 1], sol[num_degree + 1:]


class RationalActivation(nn.Module):
    """R(x) = P(x) / (1 + |Σ_k b_k x^k|), element-wise, with learnable coefficients."""

    def __init__(self, num_degree: int = 6, den_degree: int = 5):
        super().__init__()
        if (num_degree, den_degree) == (6, 5):
            a, b = torch.tensor(GELU_NUMERATOR), torch.tensor(GELU_DENOMINATOR)
        else:
            a, b = fit_rational(torch.nn.functional.gelu, num_degree, den_degree)
        self.numerator = nn.Parameter(a.float().clone())  # a_0 … a_M
        self.denominator = nn.Parameter(b.float().clone())  # b_1 … b_N

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        P = torch.zeros_like(x)
        for coef in self.numerator.flip(0):  # Horner: ((a_M x + a_{M-1}) x + …) x + a_0
            P = P * x + coef
        B = torch.zeros_like(x)
        for coef in self.denominator.flip(0):  # B = x (b_1 + x (b_2 + …))
            B = (B + coef) * x
        return P / (1 + B.abs())

    def extra_repr(self) -> str:
        return f"num_degree={len(self.numerator) - 1}, den_degree={len(self.denominator)}"
