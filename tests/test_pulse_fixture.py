"""The virtual PulseAudio microphone delivers non-silent audio at real-time pace."""

from __future__ import annotations

import pytest

from tests.fixtures.pulse import PulseMicrophone, record

pytestmark = pytest.mark.pulseaudio


def test_records_one_second_of_sine(pulse_microphone: PulseMicrophone) -> None:
    """1 s from the default input device is a non-silent sine and takes about 1 s of wall time."""
    import sounddevice as sd

    assert any(d["max_input_channels"] > 0 for d in sd.query_devices())
    data, elapsed = record(1.0, device=pulse_microphone.device)
    rms = float((data**2).mean() ** 0.5)
    assert data.shape == (pulse_microphone.samplerate, 1)
    assert rms > 0.01
    assert elapsed >= 0.9
    assert elapsed < 3.0
