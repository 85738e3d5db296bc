"""Policies: normaliser, encoders, Gaussian, diffusion (DDPM/DDIM), residual, factory, save/load, latency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from inril_robot.config import ImageEncoderConfig, PolicyConfig
from inril_robot.learning.policies.base import Obs, Policy
from inril_robot.learning.policies.diffusion import DiffusionPolicy, UNet1DDenoiser
from inril_robot.learning.policies.encoders import ImageEncoder, ObsEncoder, random_shift
from inril_robot.learning.policies.factory import make_policy
from inril_robot.learning.policies.gaussian import GaussianPolicy
from inril_robot.learning.policies.latency import measure_latency, random_obs
from inril_robot.learning.policies.normalizer import Normalizer
from inril_robot.learning.policies.residual import ResidualPolicy

A = 7
ACTION_MIN = torch.tensor([-0.02, -0.02, -0.02, -0.1, -0.1, -0.1, 0.0])
ACTION_MAX = torch.tensor([0.02, 0.02, 0.02, 0.1, 0.1, 0.1, 1.0])
OBS_STATS = {
    "ee_pos": {"mean": [0.5, 0.0, 0.2], "std": [0.1, 0.1, 0.1]},
    "cube_pos": {"mean": [0.5, 0.0, 0.02], "std": [0.05, 0.05, 0.01]},
}
STATE_SHAPES: dict[str, tuple[int, ...]] = {"ee_pos": (3,), "cube_pos": (3,)}
CAMERA_SHAPES: dict[str, tuple[int, ...]] = {**STATE_SHAPES, "front_rgb": (64, 64, 3), "wrist_rgb": (64, 64, 3)}

# Small networks keep the suite fast; the architecture is the production one.
KINDS: dict[str, dict[str, Any]] = {
    "gaussian": {"kind": "gaussian", "horizon": 1},
    "gaussian_state_std": {"kind": "gaussian", "horizon": 4, "gaussian": {"log_std": "state"}},
    "diffusion_mlp": {"kind": "diffusion", "horizon": 8, "diffusion": {"denoiser": "mlp"}},
    "diffusion_unet": {"kind": "diffusion", "horizon": 8, "diffusion": {"denoiser": "unet", "unet_channels": [32, 64]}},
}


def make_normalizer() -> Normalizer:
    return Normalizer(OBS_STATS, {"min": ACTION_MIN.tolist(), "max": ACTION_MAX.tolist()})


def make_cfg(name: str, **extra: Any) -> PolicyConfig:
    return PolicyConfig.model_validate({**KINDS[name], **extra})


def make_policy_named(name: str, obs_shapes: dict[str, tuple[int, ...]] = STATE_SHAPES, **extra: Any) -> Policy:
    return make_policy(make_cfg(name, **extra), make_normalizer(), obs_shapes, A)


def make_obs(batch: int, obs_shapes: dict[str, tuple[int, ...]] = STATE_SHAPES, n_obs_steps: int = 1) -> Obs:
    """Observations distributed like the statistics say (so normalised values are ~N(0, 1)); random images."""
    obs = random_obs(obs_shapes, n_obs_steps, batch)
    for key, stats in OBS_STATS.items():
        if key in obs:
            obs[key] = torch.tensor(stats["mean"]) + torch.tensor(stats["std"]) * obs[key]
    return obs


def make_actions(batch: int, horizon: int) -> Tensor:
    u = torch.rand(batch, horizon, A) * 1.8 - 0.9  # (B, H, A) inside the bounds
    return ACTION_MIN + (u + 1) / 2 * (ACTION_MAX - ACTION_MIN)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ------------------------------------------------------------------------------------------------------ normaliser
def test_normalizer_round_trips_actions_and_clips_out_of_bounds() -> None:
    norm = make_normalizer()
    actions = make_actions(16, 3)
    normalized = norm.normalize_action(actions)
    assert normalized.abs().max() <= 1.0
    torch.testing.assert_close(norm.unnormalize_action(normalized), actions, atol=1e-6, rtol=0)

    outside = torch.stack([ACTION_MIN - 1.0, ACTION_MAX + 1.0])  # (2, A)
    n = norm.normalize_action(outside)
    assert torch.equal(n, torch.tensor([[-1.0] * A, [1.0] * A]))
    torch.testing.assert_close(norm.unnormalize_action(torch.full((2, A), 5.0)), torch.stack([ACTION_MAX] * 2))
    torch.testing.assert_close(norm.unnormalize_action(torch.full((A,), -5.0)), ACTION_MIN)

    constant = Normalizer(OBS_STATS, {"min": [0.3, -1.0], "max": [0.3, 1.0]})  # a dimension never moved
    assert constant.normalize_action(torch.tensor([0.3, 0.5])).tolist() == [0.0, 0.5]
    assert constant.unnormalize_action(torch.tensor([0.7, 0.5])).tolist() == pytest.approx([0.3, 0.5])

    obs = make_obs(4096)
    z = norm.normalize_obs("cube_pos", obs["cube_pos"])
    assert z.mean().abs() < 0.1 and (z.std() - 1).abs() < 0.1


# -------------------------------------------------------------------------------------------------------- encoders
def test_obs_encoder_shapes_and_errors() -> None:
    cfg = PolicyConfig(n_obs_steps=2, image=ImageEncoderConfig(channels=(8, 16), feature_dim=32))
    enc = ObsEncoder(make_normalizer(), CAMERA_SHAPES, cfg)
    assert enc.out_dim == 2 * (3 + 3 + 32 + 32)
    assert enc(make_obs(5, CAMERA_SHAPES, n_obs_steps=2)).shape == (5, enc.out_dim)
    with pytest.raises(ValueError, match="cube_pos"):
        enc(make_obs(5, CAMERA_SHAPES, n_obs_steps=1))  # wrong history length names the key
    with pytest.raises(KeyError, match="gripper"):
        ObsEncoder(make_normalizer(), {**STATE_SHAPES, "gripper": (1,)}, cfg)  # no statistics for a key


def test_random_shift_is_a_translation_and_only_applies_in_train_mode() -> None:
    images = torch.rand(6, 3, 20, 20)
    shifted = random_shift(images, 2)
    assert shifted.shape == images.shape
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2), mode="replicate")
    for i in range(6):  # every output is one of the 25 crops of the replicate-padded input
        crops = [padded[i, :, dy : dy + 20, dx : dx + 20] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(shifted[i], c) for c in crops)

    enc = ImageEncoder(ImageEncoderConfig(channels=(8, 16), feature_dim=16, random_shift=4))
    frames = torch.randint(0, 256, (4, 64, 64, 3), dtype=torch.uint8)
    enc.eval()
    assert torch.equal(enc(frames), enc(frames))
    enc.train()
    assert not torch.allclose(enc(frames), enc(frames))  # fresh random shifts each call

    no_shift = ImageEncoder(ImageEncoderConfig(channels=(8, 16), feature_dim=16, random_shift=0))
    eval_out = no_shift.eval()(frames)
    torch.testing.assert_close(no_shift.train()(frames), eval_out)  # nothing else depends on the mode


def test_random_shift_per_camera() -> None:
    image = ImageEncoderConfig(channels=(8, 16), feature_dim=16, random_shift=4, camera_shift={"wrist": 0})
    enc = ObsEncoder(make_normalizer(), CAMERA_SHAPES, PolicyConfig(image=image))
    assert enc.image_encoders["front_rgb"].random_shift == 4 and enc.image_encoders["wrist_rgb"].random_shift == 0
    with pytest.raises(ValueError, match=r"camera_shift names cameras \['side'\]"):
        side = image.model_copy(update={"camera_shift": {"side": 2}})
        ObsEncoder(make_normalizer(), CAMERA_SHAPES, PolicyConfig(image=side))


# --------------------------------------------------------------------------------------------- training behaviour
@pytest.mark.parametrize("name", list(KINDS))
def test_loss_is_finite_and_overfits_a_tiny_batch(name: str) -> None:
    policy = make_policy_named(name)
    obs, actions = make_obs(8), make_actions(8, policy.cfg.horizon)
    target = policy.normalizer.normalize_action(actions)  # (8, H, A)

    def eval_loss() -> float:  # the diffusion loss samples t and noise: average it over fixed draws
        torch.manual_seed(123)
        with torch.no_grad():
            return sum(policy.loss(obs, actions).item() for _ in range(10)) / 10

    def mean_error() -> float:
        with torch.no_grad():
            return (policy.predict_normalized(obs, deterministic=True) - target).abs().mean().item()

    loss0, err0 = eval_loss(), mean_error()
    assert torch.isfinite(torch.tensor(loss0))
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-3)
    for _ in range(200):
        loss = policy.loss(obs, actions)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    loss1, err1 = eval_loss(), mean_error()
    assert loss1 < loss0
    if name == "gaussian":
        assert err1 < 1e-3, f"the mean did not fit the 8 samples: error {err1:.4f}"
    elif name == "gaussian_state_std":  # state-dependent variance fits means more slowly under NLL (beta-NLL paper)
        assert err1 < 0.5 * err0
    else:
        assert loss1 < 0.5 * loss0, f"denoising loss {loss0:.3f} -> {loss1:.3f}"


@pytest.mark.parametrize("name", list(KINDS))
def test_predict_returns_chunks_within_action_bounds(name: str) -> None:
    policy = make_policy_named(name)
    obs = make_obs(16)
    for deterministic in (True, False):
        actions = policy.predict(obs, deterministic=deterministic)
        assert actions.shape == (16, policy.cfg.horizon, A)
        assert (actions >= ACTION_MIN).all() and (actions <= ACTION_MAX).all()


@pytest.mark.parametrize("name", list(KINDS))
def test_predict_is_reproducible_with_the_same_generator_seed(name: str) -> None:
    policy = make_policy_named(name)
    obs = make_obs(4)
    for deterministic in (True, False):
        first = policy.predict(obs, deterministic, torch.Generator().manual_seed(7))
        second = policy.predict(obs, deterministic, torch.Generator().manual_seed(7))
        assert torch.equal(first, second)
    if isinstance(policy, DiffusionPolicy):  # deterministic DDIM still starts from generator-drawn noise
        other = policy.predict(obs, True, torch.Generator().manual_seed(8))
        assert not torch.equal(first, other)


# ------------------------------------------------------------------------------------------------------ gaussian
def test_gaussian_distribution_and_log_prob_shapes() -> None:
    policy = make_policy_named("gaussian", horizon=4)
    assert isinstance(policy, GaussianPolicy)
    obs = make_obs(5)
    dist = policy.distribution(obs)
    assert dist.mean.shape == dist.stddev.shape == (5, 4 * A)
    torch.testing.assert_close(dist.stddev, torch.full((5, 4 * A), torch.tensor(-1.0).exp().item()))
    a = policy.predict_normalized(obs, deterministic=False)  # (5, 4, A)
    log_prob = policy.log_prob(obs, a)
    assert log_prob.shape == (5,)
    torch.testing.assert_close(log_prob, dist.log_prob(a.reshape(5, -1)).sum(-1))


# ----------------------------------------------------------------------------------------------------- diffusion
@pytest.mark.parametrize("denoiser", ["diffusion_mlp", "diffusion_unet"])
@pytest.mark.parametrize("ddim_steps", [5, 10])
def test_ddim_chain_and_predict_shapes(denoiser: str, ddim_steps: int) -> None:
    policy = make_policy_named(denoiser, diffusion={**KINDS[denoiser]["diffusion"], "ddim_steps": ddim_steps})
    assert isinstance(policy, DiffusionPolicy)
    obs = make_obs(3)
    ts = policy.ddim_timesteps(ddim_steps)
    assert len(ts) == ddim_steps and ts[0] == 19 and ts == sorted(ts, reverse=True) and ts[-1] >= 0
    chain = policy.ddim_chain(obs, ddim_steps, eta=0.0)
    assert len(chain) == ddim_steps + 1 and all(x.shape == (3, 8, A) for x in chain)
    assert policy.predict(obs).shape == (3, 8, A)


def test_ddim_timesteps_spacing() -> None:
    policy = make_policy_named("diffusion_mlp")
    assert isinstance(policy, DiffusionPolicy)
    assert policy.ddim_timesteps(5) == [19, 15, 11, 7, 3]
    assert policy.ddim_timesteps(20) == list(range(19, -1, -1))  # all K steps: plain DDPM timesteps
    with pytest.raises(ValueError):
        policy.ddim_timesteps(21)


def test_denoise_step_matches_the_chain_and_floors_the_std() -> None:
    policy = make_policy_named("diffusion_mlp")
    assert isinstance(policy, DiffusionPolicy)
    obs = make_obs(4)
    chain = policy.ddim_chain(obs, 5, eta=0.0, generator=torch.Generator().manual_seed(1))
    ts = policy.ddim_timesteps(5)
    features = policy.encoder(obs)
    for i, (t, t_prev) in enumerate(zip(ts, [*ts[1:], -1], strict=True)):  # eta 0: each x_{t_prev} is the mean
        mean, std = policy.denoise_step(chain[i], t, t_prev, features, eta=0.0)
        torch.testing.assert_close(mean, chain[i + 1])
        assert torch.equal(std, torch.zeros_like(std))
    # DPPO's exploration floor, and a minibatch that mixes denoising steps (tensor t)
    t = torch.tensor([19, 15, 11, 3])
    t_prev = torch.tensor([15, 11, 7, -1])
    mean, std = policy.denoise_step(chain[0], t, t_prev, features, eta=1.0, min_sampling_std=0.1)
    assert mean.shape == std.shape == (4, 8, A)
    assert (std >= 0.1).all()
    assert std[3].max() == pytest.approx(0.1)  # last step to the clean end: sigma = 0, only the floor remains
    # eta = 1 over consecutive steps is DDPM's posterior std: sqrt((1 - abar_{t-1}) / (1 - abar_t) * beta_t)
    abar = policy.alphas_cumprod
    _, std = policy.denoise_step(chain[0], 10, 9, features, eta=1.0)
    beta = 1 - abar[10] / abar[9]
    assert std[0, 0, 0].item() == pytest.approx(((1 - abar[9]) / (1 - abar[10]) * beta).sqrt().item(), rel=1e-5)


@pytest.mark.parametrize("horizon", [1, 4, 5, 8, 16])
def test_unet_handles_horizons_by_padding(horizon: int) -> None:
    cfg = make_cfg("diffusion_unet", horizon=horizon, diffusion={"denoiser": "unet", "unet_channels": [16, 32, 32]})
    unet = UNet1DDenoiser(A, 6, cfg.diffusion)  # 2 halvings: H padded to a multiple of 4
    x = torch.randn(2, horizon, A)
    assert unet(x, torch.tensor([0, 19]), torch.randn(2, 6)).shape == (2, horizon, A)


# -------------------------------------------------------------------------------------------------------- images
@pytest.mark.parametrize("name", ["gaussian", "diffusion_mlp"])
def test_image_conditioned_policy_forward_backward(name: str) -> None:
    policy = make_policy_named(name, CAMERA_SHAPES, image={"channels": [8, 16], "feature_dim": 16})
    obs = make_obs(4, CAMERA_SHAPES)
    assert obs["front_rgb"].dtype == torch.uint8 and obs["front_rgb"].shape == (4, 1, 64, 64, 3)
    policy.train()
    policy.loss(obs, make_actions(4, policy.cfg.horizon)).backward()
    for camera in ("front_rgb", "wrist_rgb"):
        grad = policy.encoder.image_encoders[camera].conv[0].weight.grad
        assert grad is not None and grad.abs().sum() > 0
    policy.eval()
    assert policy.predict(obs).shape == (4, policy.cfg.horizon, A)


# ------------------------------------------------------------------------------------------------------ residual
@pytest.mark.parametrize("name", ["gaussian", "diffusion_mlp"])
def test_residual_policy_starts_as_its_base(name: str) -> None:
    base = make_policy_named(name)
    residual = ResidualPolicy(base)
    obs = make_obs(6)
    expected = base.predict(obs, True, torch.Generator().manual_seed(3))
    assert torch.equal(residual.predict(obs, True, torch.Generator().manual_seed(3)), expected)
    assert all(not p.requires_grad for p in base.parameters())  # frozen by default
    residual.train()
    assert not base.training  # a frozen base stays in eval mode
    assert residual.log_std.detach().eq(-1.5).all()


def test_residual_policy_separates_il_and_rl_gradients() -> None:
    residual = ResidualPolicy(make_policy_named("diffusion_mlp"), freeze_base=False)
    base_ids = {id(p) for p in residual.base_parameters()}
    residual_ids = {id(p) for p in residual.residual_parameters()}
    assert not base_ids & residual_ids and base_ids | residual_ids == {id(p) for p in residual.parameters()}
    obs, actions = make_obs(4), make_actions(4, 8)

    residual.loss(obs, actions).backward()  # IL: the base only
    assert all(p.grad is None for p in residual.residual_parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in residual.base_parameters())

    residual.zero_grad(set_to_none=True)
    base_action = residual.base_action(obs)  # RL: the residual only
    r = residual.distribution(obs, base_action).sample()
    residual.log_prob(obs, base_action, r).sum().backward()
    assert all(p.grad is None for p in residual.base_parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in residual.residual_parameters())
    torch.testing.assert_close(residual.combine(base_action, torch.zeros_like(r)), base_action)


# --------------------------------------------------------------------------------------------------- save / load
@pytest.mark.parametrize("name", [*KINDS, "residual"])
def test_state_dict_round_trip_reproduces_predictions(name: str, tmp_path: Path) -> None:
    def build() -> Policy:
        if name == "residual":
            return ResidualPolicy(make_policy_named("diffusion_mlp"))
        return make_policy_named(name)

    policy = build()
    if isinstance(policy, ResidualPolicy):  # give the residual something to reproduce
        torch.nn.init.normal_(policy.head[-1].weight)
    policy.eval()
    obs = make_obs(3)
    expected = policy.predict(obs, True, torch.Generator().manual_seed(5))
    torch.save(policy.state_dict(), tmp_path / "policy.pt")

    torch.manual_seed(99)
    fresh = build().eval()
    assert not torch.equal(fresh.predict(obs, True, torch.Generator().manual_seed(5)), expected)
    fresh.load_state_dict(torch.load(tmp_path / "policy.pt", weights_only=True))
    assert torch.equal(fresh.predict(obs, True, torch.Generator().manual_seed(5)), expected)


# ------------------------------------------------------------------------------------------------------- latency
@pytest.mark.slow
def test_print_batch1_cpu_latency() -> None:
    cameras = {**STATE_SHAPES, "front_rgb": (96, 96, 3), "wrist_rgb": (96, 96, 3)}
    configs = {
        "gaussian H=1": PolicyConfig(kind="gaussian"),
        "diffusion mlp H=8 DDIM 5": PolicyConfig(kind="diffusion", horizon=8, act_steps=4),
        "diffusion unet H=8 DDIM 5": PolicyConfig.model_validate(
            {"kind": "diffusion", "horizon": 8, "act_steps": 4, "diffusion": {"denoiser": "unet"}}
        ),
    }
    default_threads = torch.get_num_threads()
    print("\nbatch-1 CPU latency of predict (deterministic, eval mode, inference_mode)")
    try:
        for threads in sorted({1, default_threads}):
            torch.set_num_threads(threads)
            for label, cfg in configs.items():
                for obs_label, shapes in (("state", STATE_SHAPES), ("2 cams 96px", cameras)):
                    policy = make_policy(cfg, make_normalizer(), shapes, A)
                    n_params = sum(p.numel() for p in policy.parameters())
                    stats = measure_latency(policy, shapes)
                    print(
                        f"  {threads} thr  {label:26s} {obs_label:12s} {n_params / 1e6:5.2f} M params  "
                        f"median {stats['median_ms']:6.2f} ms  p99 {stats['p99_ms']:6.2f} ms  "
                        f"mean {stats['mean_ms']:6.2f} ms"
                    )
                    assert stats["median_ms"] > 0
    finally:
        torch.set_num_threads(default_threads)


def test_bench_policy_cli_reports_every_default_policy() -> None:
    import json

    from typer.testing import CliRunner

    from inril_robot.cli import app

    result = CliRunner().invoke(
        app,
        [
            "bench",
            "policy",
            "--repeats",
            "10",
            "--set",
            "cameras.front.width=32",
            "--set",
            "cameras.front.height=32",
            "--set",
            "cameras.wrist.width=32",
            "--set",
            "cameras.wrist.height=32",
            "--json",
            "--report-only",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    rows = payload["policies"]
    assert {r["policy"] for r in rows} == {"gaussian", "diffusion/mlp"} and len(rows) == 4
    assert all(0 < r["median_ms"] <= r["p99_ms"] for r in rows)
