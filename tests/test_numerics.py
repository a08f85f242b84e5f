"""NumericsMonitor: deferred checks raise the same named error as immediate ones, once, with no host sync."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from diffrl.numerics import NumericalError, NumericsMonitor


def batch_with_nan_at(index: int, size: int = 6) -> TensorDict:
    observation = torch.arange(size * 2, dtype=torch.float32).reshape(size, 2)
    observation[index, 1] = float("nan")
    return TensorDict({"observation": observation, "reward": torch.full((size, 1), -3.5)}, batch_size=[size])


def test_immediate_check_raises_at_once_naming_quantity_count_index_and_inputs():
    data = batch_with_nan_at(4)
    with pytest.raises(NumericalError) as error:
        NumericsMonitor("immediate").require_finite(data["observation"], "observation", data, "observation")
    message = str(error.value)
    assert "observation is not finite for 1 of 6 samples; first at index 4 (stored sample 'observation')" in message
    assert "observation: max|·|=nan" in message and "reward: max|·|=3.5" in message


def test_deferred_checks_raise_only_on_inspection_and_report_the_first_failing_call():
    monitor = NumericsMonitor("deferred")
    clean, first_bad, second_bad = batch_with_nan_at(0), batch_with_nan_at(2), batch_with_nan_at(5)
    clean["observation"][0, 1] = 0.0
    for data in (clean, first_bad, second_bad):
        monitor.require_finite(data["observation"], "observation", data)  # records, never raises
    with pytest.raises(NumericalError, match=r"for 2 of 18 samples; first at index 2 of check 2 of 3 this iteration"):
        monitor.raise_if_failed()
    monitor.raise_if_failed()  # inspection forgets what it reported


def test_deferred_condition_reports_the_values_of_its_first_failure():
    monitor = NumericsMonitor("deferred")
    for value in (0.1, 0.7, 0.9):
        tensor = torch.tensor(value)
        monitor.require(tensor > 0.5, "ratio", tensor, lambda values: f"{values[0]:.2f} > 0.5")
    with pytest.raises(NumericalError, match=r"ratio: 0\.70 > 0\.5"):
        monitor.raise_if_failed()


def test_off_checks_nothing_and_a_clean_deferred_run_passes():
    data = batch_with_nan_at(1)
    NumericsMonitor("off").require_finite(data["observation"], "observation", data)
    monitor = NumericsMonitor("deferred")
    monitor.require_finite(data["reward"], "reward", data)
    monitor.raise_if_failed()
    with pytest.raises(ValueError, match="numerics mode"):
        NumericsMonitor("sometimes")


def test_index_names_unravel_the_first_failure_into_its_batch_dimensions():
    value = torch.zeros(3, 5, 2)
    value[2, 4, 1] = float("nan")  # the later one in flat order
    value[1, 3, 0] = float("inf")  # flat sample 1 * 5 + 3 = 8: the first
    monitor = NumericsMonitor("deferred")
    monitor.require_finite(value, "action", index_names=("env", "step"))
    with pytest.raises(NumericalError, match=r"action is not finite for 2 of 15 samples; first at env 1, step 3;"):
        monitor.raise_if_failed()


def test_a_deferred_failure_is_kept_when_a_later_check_of_the_quantity_has_other_inputs():
    monitor = NumericsMonitor("deferred")
    bad = TensorDict({"observation": torch.tensor([[1.0], [float("nan")]])}, batch_size=[2])
    monitor.require_finite(bad["observation"], "observation", bad)
    good = TensorDict({"observation": torch.ones(2, 1), "action": torch.zeros(2, 1)}, batch_size=[2])
    monitor.require_finite(good["observation"], "observation", good)
    with pytest.raises(NumericalError, match=r"observation is not finite for 1 of 2 samples; first at index 1"):
        monitor.raise_if_failed()
