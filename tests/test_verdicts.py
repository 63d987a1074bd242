"""persona.verdicts: paired bootstrap verdicts over identities on known cases."""

import math

import numpy as np
import pandas as pd
import pytest

from persona import report, verdicts


def test_clear_win_is_reproduced():
    v = verdicts.paired_verdict([31.0, 32.5, 30.2, 33.1, 31.7], [29.0, 30.1, 28.9, 30.8, 29.5])
    assert v.verdict == verdicts.REPRODUCED and v.low > 0 and v.n == 5
    assert v.interval(2).startswith("+") and "[" in v.interval(2)


def test_clear_loss_is_not_reproduced_and_lower_is_better_flips_the_sign():
    assert verdicts.paired_verdict([1.0, 2.0, 1.5, 1.2], [3.0, 3.5, 3.1, 2.9]).verdict == verdicts.NOT_REPRODUCED
    # LPIPS-like: lower is better, A lower -> the claim holds
    v = verdicts.paired_verdict([0.10, 0.12, 0.11], [0.20, 0.22, 0.25], higher_is_better=False)
    assert v.verdict == verdicts.REPRODUCED and v.mean > 0


def test_tie_and_mixed_signs_are_inconclusive():
    assert verdicts.paired_verdict([30.0, 31.0, 29.0], [30.0, 31.0, 29.0]).verdict == verdicts.INCONCLUSIVE
    # the case the strict comparison of means called "reproduced": +0.04 dB on average, signs disagree
    v = verdicts.paired_verdict([30.50, 28.00, 31.00], [30.00, 28.38, 31.00])
    assert v.mean == pytest.approx(0.04) and v.verdict == verdicts.INCONCLUSIVE and v.low < 0 < v.high


def test_one_and_two_identities_are_inconclusive_with_a_reason():
    for a, b in (([30.0], [20.0]), ([30.0, 31.0], [20.0, 21.0])):
        v = verdicts.paired_verdict(a, b)
        assert v.verdict == verdicts.INCONCLUSIVE and "too few identities" in v.reason
        assert math.isnan(v.low) and "too few" in v.interval()


def test_bootstrap_is_deterministic_and_nan_pairs_dropped():
    d = [0.3, -0.1, 0.5, 0.2, 0.0]
    assert verdicts.bootstrap_interval(d) == verdicts.bootstrap_interval(d)
    v = verdicts.paired_verdict([1.0, np.nan, 2.0, 3.0], [0.0, 5.0, 1.0, 2.0])
    assert v.n == 3
    assert verdicts.paired_verdict([np.nan], [1.0]).verdict == verdicts.NOT_MEASURED


def per_frame(values_a, values_b):
    rows = []
    for i, (a, b) in enumerate(zip(values_a, values_b)):
        for method, value in (("A", a), ("B", b)):
            for j in range(2):  # two frames per identity, mean = value
                rows.append({"method": method, "identity": f"id{i:02d}", "view": "gt", "psnr": value + (j - 0.5), "lpips": math.nan})
    return pd.DataFrame(rows)


def test_claims_table_shows_where_the_strict_comparison_disagrees():
    frames = per_frame([30.50, 28.00, 31.00], [30.00, 28.38, 31.00])
    table = verdicts.claims_table(frames, [("A", "psnr", "B"), ("A", "lpips", "B")])
    row = table.iloc[0]
    assert row["verdict"] == verdicts.INCONCLUSIVE and row["strict means"] == verdicts.REPRODUCED
    assert row["identities"] == 3 and row["difference [95% CI]"].startswith("+0.04 [")
    assert table.iloc[1]["verdict"] == verdicts.NOT_MEASURED
    # report's own claims table still says "reproduced" for the same data
    assert report.claims_table(frames, [("A", "psnr", "B")]).iloc[0]["verdict"] == "reproduced"
    clear = verdicts.claims_table(per_frame([31, 32, 33, 34], [29, 30, 31, 31]), [("A", "psnr", "B")])
    assert clear.iloc[0]["verdict"] == verdicts.REPRODUCED


def test_sign_flip_p_has_a_floor_of_two_to_the_minus_n_and_counts_the_favouring_identities():
    assert verdicts.sign_flip_p([1.0, 2.0, 3.0]) == pytest.approx(1 / 8)  # three agreeing identities: never < 0.125
    assert verdicts.sign_flip_p([1.0, 2.0, 3.0, 0.5, 1.5]) == pytest.approx(1 / 32)
    # one against: patterns with mean >= (3 + 2 - 1) / 3 are (+,+,-) observed and (+,+,+): 2 of 8
    assert verdicts.sign_flip_p([3.0, 2.0, -1.0]) == pytest.approx(2 / 8)
    assert verdicts.sign_flip_p([-1.0, -2.0, -3.0]) == pytest.approx(1.0)  # the claim's direction is the other one
    big = [1.0] * 20  # beyond the exact limit: random patterns plus the observed one, deterministic
    p = verdicts.sign_flip_p(big)
    assert p == verdicts.sign_flip_p(big) and 0 < p < 1e-3
    with pytest.raises(ValueError):
        verdicts.sign_flip_p([])
    v = verdicts.paired_verdict([31.0, 32.5, 30.2], [29.0, 30.1, 31.0])
    assert (v.favour, v.n) == (2, 3) and v.p == pytest.approx(verdicts.sign_flip_p([2.0, 2.4, -0.8]))
    table = verdicts.claims_table(per_frame([31, 32, 33, 34, 35], [29, 30, 31, 31, 36]), [("A", "psnr", "B")])
    assert table.iloc[0]["favour"] == "4 of 5" and float(table.iloc[0]["sign-flip p"]) == pytest.approx(2 / 32)
    assert "2^-n" in verdicts.claims_note()
