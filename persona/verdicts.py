"""Verdicts on the paper's ordering claims from paired comparisons over identities.

A claim "A beats B on metric m" is checked on the per-identity values of both methods (each the
mean over that identity's scored frames), paired by identity. The paired differences
``d_i = A_i - B_i`` (``B_i - A_i`` when lower is better, so that d > 0 always favours the claim)
are resampled with replacement (:data:`RESAMPLES` times, seed :data:`SEED`: deterministic) and
the percentile interval of their mean gives the verdict:

- ``reproduced``: the interval lies above 0 (the claimed direction);
- ``not reproduced``: the interval lies below 0 (the opposite direction);
- ``inconclusive``: the interval contains 0, or there are fewer than :data:`MIN_PAIRS`
  identities (one or two differences have no spread worth an interval: with two, every
  resample mean is one of three values and the "interval" is just [min, max]).

The percentile bootstrap is narrow for few identities (with 3, it reads "reproduced" as soon as
all three differences agree in sign); the verdict says how many identities it rests on, and two
columns say how much that is: ``favour`` (how many identities' differences favour the claim, e.g.
``3 of 3``) and ``sign-flip p`` (:func:`sign_flip_p`: the one-sided paired permutation test of
the mean difference, exact up to :data:`EXACT_FLIPS_MAX` identities). With n identities that p
cannot fall below 2^-n: 0.125 at 3, 0.031 at 5, so three identities never make a claim
significant at 5 %, whatever the interval says.

:func:`claims_table` is the drop-in counterpart of :func:`persona.report.claims_table` (same
``claim``/``ours``/``verdict`` columns plus ``difference [95% CI]``, ``identities``, ``favour``,
``sign-flip p`` and ``strict means``, the old verdict from comparing the two means strictly).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

RESAMPLES = 10_000
SEED = 0
LEVEL = 0.95
MIN_PAIRS = 3
EXACT_FLIPS_MAX = 16  # identities up to which sign_flip_p enumerates every sign pattern (2^16 means); beyond, RESAMPLES random ones
REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_MEASURED = "reproduced", "not reproduced", "inconclusive", "not measured"


@dataclass(frozen=True)
class PairedVerdict:
    """A paired comparison: ``n`` pairs, mean difference (positive = the claim's direction),
    its bootstrap interval ``[low, high]`` (NaN when not computed), the verdict and why; ``favour``:
    pairs whose difference is > 0; ``p``: :func:`sign_flip_p` (NaN with no pair)."""

    n: int
    mean: float
    low: float
    high: float
    verdict: str
    reason: str
    favour: int = 0
    p: float = math.nan

    def interval(self, digits: int = 2) -> str:
        """The difference and interval as the claims table prints them, e.g. ``+1.23 [+0.40, +2.10]``
        (``+0.50 (n=2: no interval)`` when there is none)."""
        if self.n == 0:
            return "n/a"
        if math.isnan(self.low):
            return f"{self.mean:+.{digits}f} ({self.reason})"
        return f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def bootstrap_interval(differences: Sequence[float], resamples: int = RESAMPLES, level: float = LEVEL,
                       seed: int = SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``differences`` [n] (deterministic: numpy
    generator seeded with ``seed``). Returns (low, high)."""
    d = np.asarray(differences, dtype=np.float64)
    if d.ndim != 1 or len(d) == 0 or not np.isfinite(d).all():
        raise ValueError(f"bootstrap_interval: a non-empty 1-D series of finite numbers expected, got {d!r}")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def sign_flip_p(differences: Sequence[float], resamples: int = RESAMPLES, seed: int = SEED) -> float:
    """One-sided p of a paired permutation test that the mean of ``differences`` [n] is > 0: the share
    of the 2^n sign patterns (each identity's difference kept or negated) whose mean is at least the
    observed one, the observed pattern included. Exact for n <= :data:`EXACT_FLIPS_MAX`; beyond,
    ``resamples`` random patterns plus the observed one (deterministic: seeded). Its floor is 2^-n
    (exact) or 1 / (``resamples`` + 1) (random patterns)."""
    d = np.asarray(differences, dtype=np.float64)
    if d.ndim != 1 or len(d) == 0 or not np.isfinite(d).all():
        raise ValueError(f"sign_flip_p: a non-empty 1-D series of finite numbers expected, got {d!r}")
    n = len(d)
    if n <= EXACT_FLIPS_MAX:
        bits = (np.arange(2 ** n)[:, None] >> np.arange(n)[None, :]) & 1  # [2^n, n]: every sign pattern
        signs = 1.0 - 2.0 * bits
        extra = 0
    else:
        signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(resamples, n))
        extra = 1  # the observed pattern
    means = (signs * d).mean(axis=1)
    observed = float(d.mean())
    hits = int(np.count_nonzero(means >= observed - 1e-12 * max(1.0, abs(observed)))) + extra
    return hits / (len(means) + extra)


def paired_verdict(a: Sequence[float], b: Sequence[float], higher_is_better: bool = True, resamples: int = RESAMPLES,
                   level: float = LEVEL, seed: int = SEED) -> PairedVerdict:
    """Does A beat B? ``a``, ``b``: per-identity values [n], paired by position (a pair with a
    NaN is dropped). See the module docstring for the verdict."""
    a_arr, b_arr = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a_arr.shape != b_arr.shape or a_arr.ndim != 1:
        raise ValueError(f"paired_verdict: two series of equal length expected, got {a_arr.shape} and {b_arr.shape}")
    keep = np.isfinite(a_arr) & np.isfinite(b_arr)
    d = (a_arr - b_arr)[keep] if higher_is_better else (b_arr - a_arr)[keep]
    n = int(len(d))
    if n == 0:
        return PairedVerdict(0, math.nan, math.nan, math.nan, NOT_MEASURED, "no identity has both values")
    mean = float(d.mean())
    favour, p = int(np.count_nonzero(d > 0)), sign_flip_p(d, resamples, seed)
    if n < MIN_PAIRS:
        return PairedVerdict(n, mean, math.nan, math.nan, INCONCLUSIVE,
                             f"n={n}: too few identities for an interval (>= {MIN_PAIRS} needed)", favour, p)
    low, high = bootstrap_interval(d, resamples, level, seed)
    if low > 0:
        verdict, reason = REPRODUCED, f"{level:.0%} interval above 0 over {n} identities"
    elif high < 0:
        verdict, reason = NOT_REPRODUCED, f"{level:.0%} interval below 0 over {n} identities"
    else:
        verdict, reason = INCONCLUSIVE, f"{level:.0%} interval contains 0 over {n} identities"
    return PairedVerdict(n, mean, low, high, verdict, reason, favour, p)


def identity_values(per_frame: pd.DataFrame, method: str, metric: str, view: str = "gt") -> pd.Series:
    """Per-identity means of ``metric`` for ``method`` at view group ``view`` ('gt' or 'novel'),
    indexed by identity (see :func:`persona.report.per_identity_means`)."""
    from persona.report import per_identity_means

    ident = per_identity_means(per_frame, [metric])
    if metric not in ident.columns:
        return pd.Series(dtype=float)
    hit = ident[(ident["method"] == method) & (ident["view_group"] == view)]
    return hit.set_index("identity")[metric].astype(float)


def claim_verdict(per_frame: pd.DataFrame, better: str, metric: str, worse: str, view: str = "gt") -> PairedVerdict:
    """The paired verdict of "``better`` beats ``worse`` on ``metric``" over the identities both have."""
    from persona.report import LOWER_IS_BETTER

    a, b = identity_values(per_frame, better, metric, view), identity_values(per_frame, worse, metric, view)
    shared = sorted(set(a.index) & set(b.index))
    return paired_verdict(a.reindex(shared).to_numpy(), b.reindex(shared).to_numpy(), metric not in LOWER_IS_BETTER)


def claims_table(per_frame: pd.DataFrame, claims: Sequence[tuple[str, str, str]], view: str = "gt") -> pd.DataFrame:
    """:func:`persona.report.claims_table` with paired verdicts: columns ``claim``, ``ours``
    (the two means over identities), ``difference [95% CI]`` (mean paired difference, positive
    = the claim's direction, and its bootstrap interval), ``identities``, ``verdict``
    (reproduced / not reproduced / inconclusive / not measured), ``favour`` (identities favouring
    the claim, ``k of n``), ``sign-flip p`` (:func:`sign_flip_p`) and ``strict means`` (what
    comparing the two means strictly says: the old verdict)."""
    from persona.report import LOWER_IS_BETTER, METRIC_DIGITS

    out = []
    for better, metric, worse in claims:
        higher = metric not in LOWER_IS_BETTER
        claim = f"{better} {'>' if higher else '<'} {worse} ({metric}, {view} view)"
        result = claim_verdict(per_frame, better, metric, worse, view)
        if result.n == 0:
            out.append({"claim": claim, "ours": "n/a", "difference [95% CI]": "n/a", "identities": 0,
                        "verdict": NOT_MEASURED, "favour": "n/a", "sign-flip p": "n/a", "strict means": NOT_MEASURED})
            continue
        digits = METRIC_DIGITS.get(metric, 3)
        mean_a = float(identity_values(per_frame, better, metric, view).mean())
        mean_b = float(identity_values(per_frame, worse, metric, view).mean())
        strict = (mean_a > mean_b) if higher else (mean_a < mean_b)
        out.append({"claim": claim, "ours": f"{mean_a:.{digits}f} vs {mean_b:.{digits}f}",
                    "difference [95% CI]": result.interval(digits), "identities": result.n, "verdict": result.verdict,
                    "favour": f"{result.favour} of {result.n}", "sign-flip p": f"{result.p:.3g}",
                    "strict means": REPRODUCED if strict else NOT_REPRODUCED})
    return pd.DataFrame(out)


def claims_note(resamples: int = RESAMPLES, level: float = LEVEL) -> str:
    """The note under a claims table that uses :func:`claims_table`."""
    return (f"Verdicts: paired over identities; difference = mean over identities of (claimed better − other), "
            f"sign flipped for lower-is-better metrics, so > 0 favours the claim; [{level:.0%} percentile bootstrap "
            f"interval, {resamples} resamples, seed {SEED}]. reproduced: interval above 0; not reproduced: below 0; "
            f"inconclusive: contains 0, or fewer than {MIN_PAIRS} identities. favour: identities whose difference "
            f"favours the claim. sign-flip p: one-sided paired permutation test of the mean difference (every "
            f"identity's sign flipped, exact up to {EXACT_FLIPS_MAX} identities); with n identities it cannot fall "
            f"below 2^-n (0.125 at 3, 0.031 at 5), so with 3 identities 'reproduced' means the identities agree, "
            f"not significance at 5 %. 'strict means': the verdict from comparing the two means alone.")
