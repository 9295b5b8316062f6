"""The lifetime-value models recover the parameters of customers simulated from known ones."""

import numpy as np
import pytest

from app.services.value import lifetime_value
from app.services.value.lifetime_value import BgNbd, GammaGamma, fit_bgnbd, fit_gamma_gamma


def _simulate_bgnbd(model: BgNbd, customers: int, horizon: float, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """The BG/NBD story: purchases at a gamma-distributed Poisson rate until a beta-distributed
    dropout after some purchase."""
    lam = rng.gamma(model.r, 1 / model.alpha, customers)
    dropout = rng.beta(model.a, model.b, customers)
    x = np.zeros(customers)
    t_x = np.zeros(customers)
    for i in range(customers):
        t = 0.0
        while True:
            t += rng.exponential(1 / lam[i])
            if t > horizon:
                break
            x[i] += 1
            t_x[i] = t
            if rng.random() < dropout[i]:
                break
    return x, t_x, np.full(customers, horizon)


def test_bgnbd_recovers_known_parameters() -> None:
    # The CDNOW estimates of the paper (per week), simulated over 39 weeks.
    truth = BgNbd(r=0.243, alpha=4.414, a=0.793, b=2.426)
    x, t_x, T = _simulate_bgnbd(truth, 20_000, 39.0, np.random.default_rng(11))
    fitted = fit_bgnbd(x, t_x, T)
    assert abs(fitted.r - truth.r) / truth.r < 0.15
    assert abs(fitted.alpha - truth.alpha) / truth.alpha < 0.2
    assert abs(fitted.a - truth.a) / truth.a < 0.3
    assert abs(fitted.b - truth.b) / truth.b < 0.35


def test_bgnbd_expectations_behave() -> None:
    model = BgNbd(r=0.243, alpha=4.414, a=0.793, b=2.426)
    frequent = model.expected_purchases(39.0, np.array([10.0]), np.array([38.0]), np.array([39.0]))
    gone_quiet = model.expected_purchases(39.0, np.array([10.0]), np.array([5.0]), np.array([39.0]))
    newcomer = model.expected_purchases(39.0, np.array([0.0]), np.array([0.0]), np.array([39.0]))
    # A frequent, recent buyer is expected to buy more than the same buyer silent for months.
    assert frequent[0] > gone_quiet[0] > 0
    assert 0 < newcomer[0] < frequent[0]


def test_gamma_gamma_recovers_known_parameters() -> None:
    truth = GammaGamma(p=6.25, q=3.74, v=15.44)  # the paper's CDNOW estimates
    rng = np.random.default_rng(5)
    customers = 20_000
    x = rng.integers(1, 8, customers).astype(float)
    nu = rng.gamma(truth.q, 1 / truth.v, customers)
    m = np.array([rng.gamma(truth.p, 1 / nu[i], int(x[i])).mean() for i in range(customers)])
    fitted = fit_gamma_gamma(x, m)
    implied_mean = truth.p * truth.v / (truth.q - 1)
    fitted_mean = fitted.p * fitted.v / (fitted.q - 1)
    assert abs(fitted.p - truth.p) / truth.p < 0.15
    assert abs(fitted_mean - implied_mean) / implied_mean < 0.1
    expected = fitted.expected_value(np.array([0.0, 5.0]), np.array([0.0, 40.0]), population_mean=fitted_mean)
    assert expected[0] == fitted_mean
    assert min(40.0, fitted_mean) <= expected[1] <= max(40.0, fitted_mean)


def test_fit_sample_is_bounded_aligned_and_reproducible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lifetime_value, "FIT_SAMPLE", 1_000)
    x = np.arange(5_000, dtype=np.float64)
    first = lifetime_value._sample(x, 2 * x)
    again = lifetime_value._sample(x, 2 * x)
    assert len(first[0]) == 1_000
    assert np.array_equal(first[1], 2 * first[0])  # the same rows from every column
    assert np.array_equal(first[0], again[0])
    assert len(np.unique(first[0])) == 1_000
    small = np.arange(10, dtype=np.float64)
    assert lifetime_value._sample(small)[0] is small


def test_bgnbd_fitted_on_a_sample_still_recovers_the_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lifetime_value, "FIT_SAMPLE", 8_000)
    truth = BgNbd(r=0.243, alpha=4.414, a=0.793, b=2.426)
    x, t_x, T = _simulate_bgnbd(truth, 20_000, 39.0, np.random.default_rng(11))
    fitted = fit_bgnbd(x, t_x, T)
    assert abs(fitted.r - truth.r) / truth.r < 0.2
    assert abs(fitted.alpha - truth.alpha) / truth.alpha < 0.3
