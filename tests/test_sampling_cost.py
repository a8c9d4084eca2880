"""What a sampling will cost before it runs (ddpm_core/sampling_cost.py): its network calls, and one call's time
measured on this machine."""

from __future__ import annotations

import pytest

from ddpm_core.runs import load_checkpoint
from ddpm_core.sample import SamplingConfig
from ddpm_core.sampling_cost import CallTime, call_time, expected_seconds, network_calls, seconds_per_call
from tests.conftest import ROOT

DIGITS = ROOT / "assets" / "checkpoints" / "digits.safetensors"


@pytest.mark.parametrize(
    ("config", "calls"),
    [
        (SamplingConfig(sampler="ddim", steps=50), (50, 1)),
        (SamplingConfig(sampler="ddpm"), (1000, 1)),  # all T steps, whatever steps says
        (SamplingConfig(sampler="ddim", steps=20, class_label=3, guidance=3.0), (20, 2)),  # y and ∅ in one pass
        (SamplingConfig(sampler="ddim", steps=20, class_label=3, guidance=1.0), (20, 1)),  # plain conditional
        (SamplingConfig(sampler="ddim", steps=20, guidance=3.0), (20, 1)),  # no class asked for: unconditional
    ],
)
def test_network_calls_follow_the_sampler(config, calls):
    assert tuple(network_calls(config, T=1000)) == calls


def test_expected_seconds_are_calls_times_one_call():
    per_call = CallTime(fixed=0.002, per_sample=0.001)
    assert per_call(64) == pytest.approx(0.066)
    assert expected_seconds(network_calls(SamplingConfig(sampler="ddim", steps=50), 1000), per_call(64)) == (
        pytest.approx(3.3)
    )


def test_a_call_is_measured_on_the_real_network():
    model = load_checkpoint(DIGITS).model.eval()
    one = seconds_per_call(model, (1, 8, 8), 1)
    fitted = call_time(model, (1, 8, 8), 64)
    assert 0 < one < 10 and fitted.fixed >= 0 and fitted.per_sample >= 0
    assert fitted(64) >= fitted(1) > 0  # more samples never cost less
