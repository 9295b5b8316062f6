"""Predictive lifetime value: BG/NBD (Fader, Hardie & Lee 2005) for how many purchases a customer
will make, and Gamma-Gamma (Fader, Hardie & Lee 2005b) for what they will spend per purchase.

Inputs per customer are the usual RFM summary in days: `x` repeat purchases, `t_x` the age at the
last purchase (last − first), `T` the age now (now − first), and `m` the average order value.
Parameters are fitted by maximum likelihood with scipy; the formulas follow the papers. The fit
uses at most FIT_SAMPLE customers, drawn with a fixed seed: the likelihood is a sum over customers
and Nelder-Mead evaluates it thousands of times, so fitting a million rows took half an hour of CPU
for parameters that 50,000 rows already pin down. Predictions still cover every customer. The
objectives are mean log-likelihoods, so the optimiser's tolerance does not shrink as rows grow."""

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import optimize, special

Array = NDArray[np.float64]

FIT_SAMPLE = 50_000


def _sample(*columns: Array) -> tuple[Array, ...]:
    """The same random rows of every column, at most FIT_SAMPLE of them; reproducible run to run."""
    size = len(columns[0])
    if size <= FIT_SAMPLE:
        return columns
    rows = np.sort(np.random.default_rng(0).choice(size, FIT_SAMPLE, replace=False))
    return tuple(column[rows] for column in columns)


@dataclass(frozen=True)
class BgNbd:
    r: float
    alpha: float
    a: float
    b: float

    def expected_purchases(self, t: float, x: Array, t_x: Array, T: Array) -> Array:
        """E[purchases in the next t days | x, t_x, T] (paper, equation 10)."""
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        hyp = special.hyp2f1(r + x, b + x, a + b + x - 1, t / (alpha + T + t))
        first = (a + b + x - 1) / (a - 1)
        second = 1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp
        denominator = 1 + (x > 0) * (a / (b + x - 1)) * ((alpha + T) / (alpha + t_x)) ** (r + x)
        return np.asarray(first * second / denominator, dtype=np.float64)


@dataclass(frozen=True)
class GammaGamma:
    p: float
    q: float
    v: float

    def expected_value(self, x: Array, m: Array, population_mean: float) -> Array:
        """E[average order value | x, m]; the population mean for customers with no repeat yet."""
        p, q, v = self.p, self.q, self.v
        conditional = (p * (v + x * m)) / (p * x + q - 1)
        return np.where(x > 0, conditional, population_mean)


def _bgnbd_negative_log_likelihood(params: Array, x: Array, t_x: Array, T: Array) -> float:
    r, alpha, a, b = np.exp(params)
    ln_a1 = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
    ln_a2 = special.gammaln(a + b) + special.gammaln(b + x) - special.gammaln(b) - special.gammaln(a + b + x)
    ln_a3 = -(r + x) * np.log(alpha + T)
    ln_a4 = np.where(
        x > 0,
        np.log(a) - np.log(np.maximum(b + x - 1, 1e-12)) - (r + x) * np.log(alpha + t_x),
        -np.inf,
    )
    combined = np.logaddexp(ln_a3, ln_a4)
    return float(-np.mean(ln_a1 + ln_a2 + combined))


def fit_bgnbd(x: Array, t_x: Array, T: Array) -> BgNbd:
    result = optimize.minimize(
        _bgnbd_negative_log_likelihood,
        x0=np.log([1.0, 1.0, 1.0, 1.0]),
        args=_sample(x, t_x, T),
        method="Nelder-Mead",
        options={"maxiter": 4000, "xatol": 1e-6, "fatol": 1e-6},
    )
    r, alpha, a, b = np.exp(result.x)
    return BgNbd(float(r), float(alpha), float(a), float(b))


def _gamma_gamma_negative_log_likelihood(params: Array, x: Array, m: Array) -> float:
    p, q, v = np.exp(params)
    ll = (
        special.gammaln(p * x + q)
        - special.gammaln(p * x)
        - special.gammaln(q)
        + q * np.log(v)
        + (p * x - 1) * np.log(m)
        + (p * x) * np.log(x)
        - (p * x + q) * np.log(x * m + v)
    )
    return float(-np.mean(ll))


def fit_gamma_gamma(x: Array, m: Array) -> GammaGamma:
    """Fitted on customers with at least one repeat purchase and a positive average."""
    keep = (x > 0) & (m > 0)
    result = optimize.minimize(
        _gamma_gamma_negative_log_likelihood,
        x0=np.log([1.0, 1.0, 1.0]),
        args=_sample(x[keep], m[keep]),
        method="Nelder-Mead",
        options={"maxiter": 4000, "xatol": 1e-6, "fatol": 1e-6},
    )
    p, q, v = np.exp(result.x)
    return GammaGamma(float(p), float(q), float(v))
