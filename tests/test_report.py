"""Reporting helpers (experiments/report.py) that reproductions read their verdicts from."""
import pytest

from experiments.report import paired


def test_paired_gives_the_mean_difference_its_standard_error_and_t():
    # differences 2, 3, 4: mean 3, sample sd 1, se 1/sqrt(3), t = 3 sqrt(3) = 5.2
    assert paired([3.0, 5.0, 7.0], [1.0, 2.0, 3.0], 3) == "+3 ± 0.577 (t = +5.2, 3 seeds)"
    # differences -1, +1: a tie, t = 0
    assert paired([1.0, 2.0], [2.0, 1.0]) == "+0 ± 1 (t = +0.0, 2 seeds)"


@pytest.mark.parametrize("a, b", [([1.0], [2.0]), ([1.0, 2.0], [1.0, 2.0, 3.0])])
def test_paired_rejects_unpaired_or_single_seed_lists(a, b):
    with pytest.raises(ValueError, match="equal-length"):
        paired(a, b)


def test_a_result_notes_paired_differences_and_skips_a_single_seed():
    from experiments.reproduce.result import Result

    res = Result("t")
    res.paired("A minus B", {"mse": ([3.0, 5.0, 7.0], [1.0, 2.0, 3.0])}, unit="system")
    assert res.notes == ["paired by system, A minus B: mse +3 ± 0.58 (t = +5.2, 3 seeds)"]
    res.paired("A minus B", {"mse": ([3.0], [1.0])})  # one seed: no standard error, no note
    assert len(res.notes) == 1
