"""A learnable rational activation (a Padé activation unit, Molina et al., 2020), as IAPT uses.

    R(x) = P(x) / Q(x),   P(x) = a_0 + a_1 x + … + a_6 x^6,   Q(x) = 1 + |b_1 x + … + b_5 x^5|

The absolute value keeps Q ≥ 1, so R has no poles. The coefficients start at a least-squares fit of
GELU on [-3, 3] (``fit_rational(gelu)``; max error 7.5e-5 there) and are then learned, one set per layer.
Outside the interval the start leaves GELU: R(x) − GELU(x) is 0.22 at x = ±6 and 1.83 at x = ±10 (the
numerator's x^6 over the denominator's x^3). The forward pass always runs in fp32.
"""
from __future__ import annotations

import functools

import torch
from torch import nn


def full_precision(fn):
    """Run ``fn`` in fp32 even inside autocast: floating tensor arguments are cast up and autocast is
    switched off for the body (powers of x and a softmax lose too much in bf16)."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        args = [a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args]
        device = next((a.device.type for a in args if torch.is_tensor(a)), "cpu")
        with torch.autocast(device, enabled=False):
            return fn(*args, **kwargs)
    return wrapped

# fit_rational(torch.nn.functional.gelu, 6, 5, (-3, 3)), rounded to 6 significant digits
GELU_NUMERATOR = (7.50875e-05, 0.5, 0.397992, 0.177116, 0.0767293, 0.0218827, 0.00243028)
GELU_DENOMINATOR = (0.0, 0.354231, 0.0, 0.0437654, 0.0)


def rational(a: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """R(x) = P(x) / (1 + |B(x)|) with P = Σ a_j x^j and B = Σ_{k≥1} b_k x^k (Horner's rule for both)."""
    P = torch.zeros_like(x)
    for coef in a.flip(0):  # ((a_M x + a_{M-1}) x + …) x + a_0
        P = P * x + coef
    B = torch.zeros_like(x)
    for coef in b.flip(0):  # B = x (b_1 + x (b_2 + …))
        B = (B + coef) * x
    return P / (1 + B.abs())


def fit_rational(fn, num_degree: int = 6, den_degree: int = 5, interval=(-3.0, 3.0), points: int = 4001):
    """Coefficients (a, b) of R = P / (1 + |B|) fitted to ``fn`` on ``interval``.

    First linearised least squares, min Σ (P(x) − fn(x)·B(x) − fn(x))², which assumes Q = 1 + B; then,
    because the forward uses 1 + |B|, a refinement of the squared error of the true form (L-BFGS in
    float64). The start with the smaller maximum error on the interval is returned: for (6, 5) the
    linear fit is already exact to 7.5e-5, for (4, 4) the refinement takes the error from 0.052 to 0.0035.
    """
    x = torch.linspace(*interval, points, dtype=torch.float64)
    y = fn(x)
    powers_p = torch.stack([x ** j for j in range(num_degree + 1)], dim=1)
    powers_q = torch.stack([x ** k for k in range(1, den_degree + 1)], dim=1)
    A = torch.cat([powers_p, -y[:, None] * powers_q], dim=1)
    sol = torch.linalg.lstsq(A, y[:, None]).solution.squeeze(1)
    a, b = sol[: num_degree + 1].clone(), sol[num_degree + 1:].clone()
    a_r, b_r = a.clone().requires_grad_(), b.clone().requires_grad_()
    opt = torch.optim.LBFGS([a_r, b_r], lr=1, max_iter=500, tolerance_grad=1e-14, tolerance_change=1e-16,
                            history_size=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (rational(a_r, b_r, x) - y).pow(2).mean()
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    with torch.no_grad():
        if (rational(a_r, b_r, x) - y).abs().max() < (rational(a, b, x) - y).abs().max():
            a, b = a_r.detach(), b_r.detach()
    return a, b


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
        dtype = x.dtype
        return self._fp32(x).to(dtype)

    @full_precision
    def _fp32(self, x: torch.Tensor) -> torch.Tensor:
        """In fp32 whatever autocast says: in bf16 the powers of x lose the fit (max error 0.026 on [-3, 3],
        against 7.5e-5)."""
        return rational(self.numerator.float(), self.denominator.float(), x)

    def extra_repr(self) -> str:
        return f"num_degree={len(self.numerator) - 1}, den_degree={len(self.denominator)}"
