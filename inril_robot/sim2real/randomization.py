"""Named domain-randomisation presets: ``none`` (the default, off), ``light``, ``medium`` and ``strong``.

Each is a validated `RandomizationConfig`; use it as ``cfg.randomization`` or spell it out with ``--set
randomization.<field>=...``. `preset` hands out a copy, so changing it never changes the preset.
Calibrated cameras are jittered by ``camera_calibration_sigmas`` times their file's uncertainty (off in the
presets: set it with --set when the sim cameras come from calibration files).
"""

from __future__ import annotations

from inril_robot.config import RandomizationConfig

PRESETS: dict[str, RandomizationConfig] = {
    "none": RandomizationConfig(),
    "light": RandomizationConfig(
        object_pos=0.01,
        friction_scale=0.1,
        mass_scale=0.1,
        camera_pos=0.01,
        camera_rot=0.02,
        lighting=0.1,
        colors=0.05,
        obs_noise=0.001,
        action_latency_steps=0,
        gain_scale=0.05,
        control_rate_jitter=0.05,
    ),
    "medium": RandomizationConfig(
        object_pos=0.02,
        friction_scale=0.25,
        mass_scale=0.25,
        camera_pos=0.02,
        camera_rot=0.05,
        lighting=0.3,
        colors=0.1,
        obs_noise=0.002,
        action_latency_steps=1,
        gain_scale=0.15,
        control_rate_jitter=0.1,
    ),
    "strong": RandomizationConfig(
        object_pos=0.04,
        friction_scale=0.5,
        mass_scale=0.5,
        camera_pos=0.04,
        camera_rot=0.1,
        lighting=0.5,
        colors=0.2,
        obs_noise=0.005,
        action_latency_steps=2,
        gain_scale=0.3,
        control_rate_jitter=0.2,
    ),
}


def preset(name: str) -> RandomizationConfig:
    """A copy of the preset called `name`; ValueError naming the available presets if there is none."""
    if name not in PRESETS:
        raise ValueError(f"no randomization preset named {name!r}; available: {', '.join(PRESETS)}")
    return PRESETS[name].model_copy(deep=True)
