"""Off-policy IN-RIL (SAC in the RLPD recipe, IDQL): the TD target's episode ends, RLPD's demo mix, the IL schedule's
exact count of actor steps, the tanh-Gaussian actor's BC start, and tiny end-to-end runs on reach (mechanics only)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from inril_robot.config import load_config
from inril_robot.data import Dataset
from inril_robot.learning.inril.finetune import finetune
from inril_robot.learning.inril.offpolicy import demo_replay, trace_transitions
from inril_robot.learning.inril.offpolicy_learner import OffPolicyLearner, make_algo
from inril_robot.learning.policies import checkpoint as ckpt
from inril_robot.learning.policies.residual import ResidualPolicy
from inril_robot.learning.pretrain import DemoWindows, pretrain
from inril_robot.learning.rl import sac
from inril_robot.learning.rl.replay import ReplayBuffer, episode_transitions, sample_mixed
from inril_robot.learning.rl.rollouts import EpisodeTrace
from tests.test_pretrain import reach_cfg, record_demos

FAST = [
    "finetune.eval_episodes=2",
    "finetune.num_envs=2",
    "finetune.subprocess_envs=false",
    "finetune.inril.il_batch_size=16",
    "finetune.offpolicy.batch_size=32",
    "finetune.offpolicy.learning_starts=20",
    "finetune.offpolicy.critic_warmup_updates=10",
    "finetune.offpolicy.critic_hidden=[32,32]",
    "finetune.offpolicy.eval_every_env_steps=100",
    "finetune.offpolicy.idql_candidates=4",
    "task.max_steps=20",
]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Dataset]:
    root = tmp_path_factory.mktemp("offpolicy")
    demos = record_demos(root / "demos", "reach", 3)
    gaussian = pretrain(reach_cfg(overrides=["train.steps=40", "train.eval_every=0"]), demos, root / "g", resume=False)
    diffusion = pretrain(
        reach_cfg("diffusion", ["train.steps=20", "train.eval_every=0", "policy.horizon=4", "policy.act_steps=2"]),
        demos,
        root / "d",
        resume=False,
    )
    return Path(gaussian.last_checkpoint), Path(diffusion.last_checkpoint), demos


def _transition(reward: float, terminal: bool, truncated: bool, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "obs": {"x": rng.normal(size=(1, 3)).astype(np.float32)},
        "action": rng.uniform(-1, 1, size=(1, 2)).astype(np.float32),
        "reward": reward,
        "terminal": terminal,
        "truncated": truncated,
        "next_obs": {"x": rng.normal(size=(1, 3)).astype(np.float32)},
    }


# ------------------------------------------------------------------------------------------------ the target
@pytest.mark.timeout(30)
def test_td_target_bootstraps_a_time_limit_but_not_a_terminal() -> None:
    buffer = ReplayBuffer(8)
    buffer.add(_transition(0.0, terminal=True, truncated=False))  # a safety stop: the return ends
    buffer.add(_transition(0.0, terminal=False, truncated=True))  # the time limit: the state still has its value
    buffer.add(_transition(1.0, terminal=True, truncated=False))  # a success
    batch = buffer.gather(torch.arange(3))
    next_value = torch.tensor([0.8, 0.8, 0.8])
    y = sac.td_target(batch.reward, batch.terminal, next_value, gamma=0.9)
    assert torch.allclose(y, torch.tensor([0.0, 0.72, 1.0]))
    assert batch.truncated.tolist() == [0.0, 1.0, 0.0]
    # offpolicy.time_limit_bootstrap=false: the time limit ends the return too
    assert torch.allclose(
        sac.td_target(batch.reward, batch.ends(False), next_value, 0.9), torch.tensor([0.0, 0.0, 1.0])
    )
    assert torch.equal(batch.ends(True), batch.terminal)
    clamped = sac.td_target(batch.reward, batch.terminal, torch.full((3,), 5.0), 0.9, value_range=(0.0, 1.0))
    assert clamped.max() <= 1.0


@pytest.mark.timeout(30)
def test_episode_ends_become_terminal_or_truncated() -> None:
    def trace(terminated: bool, stopped: bool) -> EpisodeTrace:
        t = EpisodeTrace(seed=0, terminated=terminated, stopped=stopped, steps=3)
        t.obs = [{"x": np.full((1, 2), i, np.float32)} for i in range(3)]
        t.kept = [{"action": torch.zeros(1, 2)} for _ in range(3)]
        t.rewards = [0.0, 0.0, float(terminated)]
        t.final_obs = {"x": np.full((1, 2), 9, np.float32)}
        return t

    for terminated, stopped, expect in ((True, False, (1, 0)), (False, True, (1, 0)), (False, False, (0, 1))):
        rows = list(trace_transitions(trace(terminated, stopped)))
        assert [(r["terminal"], r["truncated"]) for r in rows[:-1]] == [(False, False)] * 2
        assert (int(rows[-1]["terminal"]), int(rows[-1]["truncated"])) == expect
        assert rows[-1]["next_obs"]["x"][0, 0] == 9 and rows[0]["next_obs"]["x"][0, 0] == 1


@pytest.mark.timeout(30)
def test_demo_chunks_sum_rewards_and_end_terminal() -> None:
    obs = {"x": np.arange(5, dtype=np.float32)[:, None]}  # (T=5, 1)
    rows = list(episode_transitions(obs, np.zeros((5, 2)), np.array([0, 0, 0, 0, 1.0]), True, False, 2, 3, 2))
    assert len(rows) == 5
    assert rows[0]["obs"]["x"][:, 0].tolist() == [0, 0]  # the first frame repeats before the start
    assert rows[3]["reward"] == 1.0 and rows[3]["terminal"] and rows[2]["reward"] == 0.0
    assert rows[1]["next_obs"]["x"][:, 0].tolist() == [2, 3]
    assert rows[0]["action"].shape == (3, 2)


def _episode(e: int, n: int = 3) -> list[dict]:
    """n chunks of episode e; history i holds 10 e + i everywhere (a state and a uint8 image), the reward too."""
    hist = [
        {"x": np.full((1, 3), 10 * e + i, np.float32), "img": np.full((1, 2, 2, 3), 10 * e + i, np.uint8)}
        for i in range(n + 1)
    ]
    return [
        {
            "obs": hist[i],
            "action": np.full((1, 2), i, np.float32),
            "reward": float(10 * e + i),
            "terminal": i == n - 1,
            "truncated": False,
            "next_obs": hist[i + 1],  # the last one: the episode's final history, no transition's obs
        }
        for i in range(n)
    ]


@pytest.mark.timeout(30)
def test_histories_are_stored_once_and_next_obs_is_exact_across_episode_ends_and_the_ring_wrap() -> None:
    buffer = ReplayBuffer(5)
    added = [t for e in range(4) for t in _episode(e)]  # 12 transitions into 5 slots: the ring wraps twice
    buffer.extend(added)
    by_reward = {t["reward"]: t for t in added[-5:]}  # the 5 held: episode 2's last two, all of episode 3
    batch = buffer.sample(64, torch.Generator().manual_seed(0))
    for b in range(64):
        t = by_reward[float(batch.reward[b])]
        for k in ("x", "img"):
            assert np.array_equal(batch.obs[k][b].numpy(), t["obs"][k])
            assert np.array_equal(batch.next_obs[k][b].numpy(), t["next_obs"][k])
        assert bool(batch.terminal[b]) == t["terminal"]
    assert {float(r) for r in batch.reward} == set(by_reward)  # every held transition was drawn
    assert batch.obs["img"].dtype == torch.uint8 and batch.obs["x"].dtype == torch.float32
    # episode 2: histories 1, 2, 3 (final); episode 3: 0, 1, 2, 3: 7 stored for 5 transitions, not 10 as pairs
    assert buffer.nbytes()["stored_histories"] == 7
    rows = list(buffer.transitions())  # oldest first, across the wrap
    assert [float(r["reward"]) for r in rows] == [21.0, 22.0, 30.0, 31.0, 32.0]
    assert np.array_equal(rows[1]["next_obs/x"], added[8]["next_obs"]["x"])  # episode 2's final history

    restored = ReplayBuffer(5)
    restored.load_state_dict(buffer.state_dict())
    for b in (buffer, restored):  # the same continuation: one more episode, then the same draws
        b.extend(_episode(4))
    one, two = (b.sample(32, torch.Generator().manual_seed(1)) for b in (buffer, restored))
    assert all(torch.equal(getattr(one, f), getattr(two, f)) for f in ("action", "reward", "terminal"))
    assert all(torch.equal(one.obs[k], two.obs[k]) and torch.equal(one.next_obs[k], two.next_obs[k]) for k in one.obs)
    assert restored.nbytes()["stored_histories"] == buffer.nbytes()["stored_histories"] == 7


# ------------------------------------------------------------------------------------------------ demo mix
@pytest.mark.timeout(30)
def test_rlpd_batches_are_half_demonstrations() -> None:
    online, demos = ReplayBuffer(100), ReplayBuffer(100)
    for i in range(40):
        online.add(_transition(0.0, False, False, seed=i))
        demos.add(_transition(1.0, False, False, seed=1000 + i))
    g = torch.Generator().manual_seed(0)
    batch = sample_mixed(online, demos, 256, 0.5, g)
    assert batch.is_demo.sum().item() == 128 and batch.reward.sum().item() == 128  # demo rewards: 1
    assert batch.action.shape == (256, 1, 2) and batch.obs["x"].shape == (256, 1, 3)
    assert sample_mixed(online, demos, 256, 0.0, g).is_demo.sum().item() == 0  # demos only on the IL side
    assert sample_mixed(ReplayBuffer(4), demos, 16, 0.5, g).is_demo.sum().item() == 16  # nothing online yet


# ------------------------------------------------------------------------------------------------ actor and schedule
@pytest.mark.timeout(600)  # builds the module's checkpoints first (75 s on a loaded machine, measured)
def test_sac_actor_starts_at_the_bc_action(pretrained: tuple[Path, Path, Dataset]) -> None:
    gaussian, _, demos = pretrained
    cfg = load_config(robot="sim", task="reach", overrides=[*FAST, "finetune.algo=sac"]).finetune
    policy = ckpt.load_checkpoint(gaussian).policy
    algo = make_algo(policy, cfg, (0.0, 1.0))
    obs, _ = DemoWindows(demos, list(policy.obs_shapes), 1, 1).sample(64, np.random.default_rng(0))
    obs_t = {k: torch.from_numpy(v) for k, v in obs.items()}
    with torch.no_grad():
        bc = policy.predict_normalized(obs_t)  # (B, H, A)
        assert (algo.actor.deterministic(obs_t) - bc).abs().max() <= 1.0 - sac.SQUASH_LIMIT + 1e-5
        a, log_prob = algo.actor.sample(obs_t, torch.Generator().manual_seed(0))
    assert a.abs().max() < 1.0 and torch.isfinite(log_prob).all()
    assert float(policy.log_std.detach().max()) == cfg.exploration_log_std


class _OneWay(torch.nn.Module):
    """A critic whose action gradient points one way in every state (what SAC's critic learnt on lift: dQ/da_z > 0
    wherever the gripper closes, docs/inril.md): Q = slope * a_0 of the executed chunk, one ensemble member."""

    ensemble = 1

    def __init__(self, slope: float) -> None:
        super().__init__()
        self.slope = slope

    def forward(self, obs: dict[str, torch.Tensor], actions: torch.Tensor) -> torch.Tensor:
        return self.slope * actions[:, :1].T  # (1, B)


@pytest.mark.timeout(600)  # builds the module's checkpoints when run alone
def test_sac_bc_anchor_holds_the_actor_against_a_one_way_critic(pretrained: tuple[Path, Path, Dataset]) -> None:
    """Without the BC term the actor follows such a critic wherever it points (lift: up off the cube, 0% success at
    actor lr 1e-6); with `offpolicy.sac_bc_coef` (default 0.1) it moves as it would with a flat critic (BC alone)."""
    gaussian, _, demos = pretrained

    def drift(coef: float, slope: float) -> float:
        cfg = load_config(
            robot="sim",
            task="reach",
            overrides=[
                *FAST,
                "finetune.algo=sac",
                "finetune.inril.il_every=0",
                "finetune.offpolicy.actor_lr=1e-3",
                f"finetune.offpolicy.sac_bc_coef={coef}",
            ],
        ).finetune
        policy = ckpt.load_checkpoint(gaussian).policy
        algo = make_algo(policy, cfg, (0.0, 1.0))
        algo.critic = _OneWay(slope)
        pc = policy.cfg
        replay = demo_replay(demos, policy)
        windows = DemoWindows(demos, list(policy.obs_shapes), pc.n_obs_steps, pc.horizon)
        learner = OffPolicyLearner(algo, cfg, replay, replay, windows.sample)
        obs_np, _ = windows.sample(256, np.random.default_rng(1))
        obs = {k: torch.from_numpy(v) for k, v in obs_np.items()}
        with torch.no_grad():
            before = policy.predict_normalized(obs)[..., 0]
        for _ in range(40):
            loss, extra = learner._rl_loss(learner._rl_batch())
            learner._step("rl", loss)
        assert ("bc_loss" in extra) == (coef > 0)
        with torch.no_grad():
            return float((policy.predict_normalized(obs)[..., 0] - before).mean())

    free, anchored, bc_only = drift(0.0, 5.0), drift(0.1, 5.0), drift(0.1, 0.0)
    assert free > 0.3  # the one-way critic drags the unanchored actor
    assert abs(anchored - bc_only) < free / 4, (free, anchored, bc_only)


@pytest.mark.timeout(30)
def test_sac_bc_anchor_needs_demonstrations() -> None:
    from inril_robot.learning.inril.offpolicy_learner import SACAlgo

    cfg = load_config(robot="sim", task="reach", overrides=[*FAST, "finetune.algo=sac", "finetune.inril.il_every=0"])
    algo = SACAlgo.__new__(SACAlgo)  # only its type and kind matter before the learner refuses
    algo.residual = False
    with pytest.raises(ValueError, match="sac_bc_coef"):
        OffPolicyLearner(algo, cfg.finetune, ReplayBuffer(10), None, None)


# ------------------------------------------------------------------------------------------------ residual SAC
def _residual_learner(gaussian: Path, demos: Dataset, *extra: str) -> tuple[OffPolicyLearner, dict[str, torch.Tensor]]:
    cfg = load_config(
        robot="sim",
        task="reach",
        overrides=[*FAST, "finetune.algo=residual-sac", "finetune.offpolicy.residual_actor_lr=1e-2", *extra],
    ).finetune
    policy = ckpt.load_checkpoint(gaussian).policy
    algo = make_algo(policy, cfg, (0.0, 1.0))
    pc = policy.cfg
    windows = DemoWindows(demos, list(policy.obs_shapes), pc.n_obs_steps, pc.horizon)
    replay = demo_replay(demos, policy)
    obs_np, _ = windows.sample(128, np.random.default_rng(1))
    return OffPolicyLearner(algo, cfg, replay, replay, windows.sample), {
        k: torch.from_numpy(v) for k, v in obs_np.items()
    }


@pytest.mark.timeout(600)  # builds the module's checkpoints when run alone
def test_residual_sac_starts_at_the_base_and_stays_within_its_bound(pretrained: tuple[Path, Path, Dataset]) -> None:
    """A critic that pulls one way drags the residual to its bound and no further: every executed action stays
    within +-scale of the frozen base's (the bound is residual SAC's anchor), and the base does not move."""
    gaussian, _, demos = pretrained
    learner, obs = _residual_learner(gaussian, demos, "finetune.inril.il_every=0")
    algo = learner.algo
    policy = algo.policy
    scale = policy.scale
    base_before = {k: v.clone() for k, v in policy.base.state_dict().items()}
    with torch.no_grad():
        base = policy.base.predict_normalized(obs)  # (B, H, A)
        assert torch.equal(algo.actor.deterministic(obs), base)  # the head starts at 0
        a, log_prob = algo.actor.sample(obs, torch.Generator().manual_seed(0))
    assert ((a - base).abs() <= scale + 1e-6).all() and torch.isfinite(log_prob).all()
    algo.critic = _OneWay(5.0)
    for _ in range(60):
        loss, _ = learner._rl_loss(learner._rl_batch())
        learner._step("rl", loss)
    with torch.no_grad():
        moved = algo.actor.deterministic(obs)[..., 0] - base[..., 0]
        a, _ = algo.actor.sample(obs, torch.Generator().manual_seed(1))
    assert float(moved.mean()) > 0.5 * scale  # it follows the critic ...
    assert ((a - base).abs() <= scale + 1e-6).all()  # ... only as far as the bound
    assert all(torch.equal(base_before[k], v) for k, v in policy.base.state_dict().items())


@pytest.mark.timeout(600)
def test_residual_sac_squashed_entropy_is_the_density_of_the_executed_residual(
    pretrained: tuple[Path, Path, Dataset],
) -> None:
    """With `residual_squashed_entropy`, log pi is the density of tanh(u) (change of variables), so a residual near
    its bound has a higher log pi (a lower entropy, which the temperature's bonus resists); without it, the
    pre-squash Gaussian's, blind to saturation. Both sample the same actions."""
    gaussian, _, demos = pretrained
    policy = ckpt.load_checkpoint(gaussian).policy
    residual = ResidualPolicy(policy, (32,), 0.1, -1.0, squash=True)
    with torch.no_grad():
        residual.head[-1].bias.fill_(2.0)  # tanh(2) = 0.96: near the bound
    obs_np, _ = DemoWindows(demos, list(policy.obs_shapes), 1, 1).sample(64, np.random.default_rng(0))
    obs = {k: torch.from_numpy(v) for k, v in obs_np.items()}
    with torch.no_grad():
        a_plain, lp_plain = sac.ResidualSACActor(residual).sample(obs, torch.Generator().manual_seed(3))
        a_sq, lp_sq = sac.ResidualSACActor(residual, squashed_entropy=True).sample(
            obs, torch.Generator().manual_seed(3)
        )
        dist = residual.distribution(obs, residual.base_action(obs))
        u = dist.mean + dist.stddev * torch.randn(dist.mean.shape, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a_plain, a_sq)
    reference = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(dist.mean, dist.stddev), [torch.distributions.TanhTransform()]
    )
    expected = sac.executed(residual, reference.log_prob(torch.tanh(u).clamp(-1 + 1e-6, 1 - 1e-6))).sum(-1)
    assert torch.allclose(lp_sq, expected, atol=1e-2)
    assert (lp_sq > lp_plain + 5.0).all()  # 7 dims at tanh ~ 0.96: ~ +2.6 each


@pytest.mark.timeout(600)
def test_residual_sac_in_ril_separates_the_networks(pretrained: tuple[Path, Path, Dataset]) -> None:
    """IN-RIL's network separation off-policy: RL steps move only the residual, IL steps only the base."""
    gaussian, _, demos = pretrained
    learner, _ = _residual_learner(gaussian, demos, "finetune.inril.il_every=1", "finetune.inril.separation=residual")
    policy = learner.algo.policy

    def snapshot() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        state = {k: v.clone() for k, v in policy.state_dict().items()}
        return {k: v for k, v in state.items() if k.startswith("base.")}, {
            k: v for k, v in state.items() if not k.startswith("base.")
        }

    def changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
        return any(not torch.equal(a[k], b[k]) for k in a)

    base0, res0 = snapshot()
    loss, _ = learner._rl_loss(learner._rl_batch())
    learner._step("rl", loss)
    base1, res1 = snapshot()
    assert changed(res0, res1) and not changed(base0, base1)
    learner._step("il", learner._il_loss())
    base2, res2 = snapshot()
    assert changed(base1, base2) and not changed(res1, res2)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("algo", ["sac", "idql"])
def test_il_schedule_counts_actor_steps_exactly(algo: str, pretrained: tuple[Path, Path, Dataset]) -> None:
    gaussian, diffusion, demos = pretrained
    cfg = load_config(
        robot="sim",
        task="reach",
        overrides=[
            *FAST,
            f"finetune.algo={algo}",
            "finetune.inril.il_every=3",
            "finetune.inril.separation=pcgrad",
            "finetune.offpolicy.actor_every=2",
            "finetune.offpolicy.critic_warmup_updates=4",
        ],
    ).finetune
    policy = ckpt.load_checkpoint(gaussian if algo == "sac" else diffusion).policy
    learner_algo = make_algo(policy, cfg, (0.0, 1.0))
    pc = policy.cfg
    source = DemoWindows(demos, list(policy.obs_shapes), pc.n_obs_steps, pc.horizon).sample
    replay = demo_replay(demos, policy)
    learner = OffPolicyLearner(learner_algo, cfg, replay, replay, source)
    stepped = {"rl": 0, "il": 0}
    for objective, opt in learner.optimizers.items():
        opt.register_step_post_hook(lambda *_, o=objective: stepped.__setitem__(o, stepped[o] + 1))
    stats = learner.update(28)  # 4 warm-up critic updates, then an actor step every 2nd: 12 actor steps
    assert learner.critic_updates == 28 and learner.actor_steps == 12
    assert (stats["rl_steps"], stats["il_steps"]) == (9, 3) == (stepped["rl"], stepped["il"])
    learner.update(8)  # 4 more actor steps continue the cycle: rl rl il rl -> 12 rl, 4 il
    assert (learner.schedule.n_rl, learner.schedule.n_il) == (12, 4) == (stepped["rl"], stepped["il"])


# ------------------------------------------------------------------------------------------------ end to end
def _cfg(algo: str, *extra: str):
    return load_config(robot="sim", task="reach", overrides=[*FAST, f"finetune.algo={algo}", *extra])


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("algo", "extra"),
    [
        ("sac", ("finetune.inril.il_every=2", "finetune.offpolicy.demo_fraction=0.5")),
        ("idql", ("finetune.inril.il_every=2", "finetune.offpolicy.demo_fraction=0.0")),
        (
            "residual-sac",
            ("finetune.inril.il_every=2", "finetune.inril.separation=residual", "finetune.offpolicy.demo_fraction=0.5"),
        ),
    ],
)
def test_offpolicy_finetune_runs_on_reach(
    algo: str, extra: tuple[str, ...], pretrained: tuple[Path, Path, Dataset], tmp_path: Path
) -> None:
    gaussian, diffusion, demos = pretrained
    cfg = _cfg(algo, *extra, "finetune.env_steps=160")
    result = finetune(cfg, diffusion if algo == "idql" else gaussian, demos, tmp_path / algo)
    assert result.env_steps >= 160 and result.final is not None and result.pretrained is not None
    for name in ("last.pt", "last.train.pt", "best.pt", "metrics.csv", "curves.png", "run.yaml"):
        assert (tmp_path / algo / name).is_file(), name
    with open(tmp_path / algo / "metrics.csv") as f:
        last = list(csv.DictReader(f))[-1]
    assert int(float(last["critic_updates"])) > 0 and int(float(last["il_steps"])) > 0
    assert abs(float(last["utd_achieved"]) - cfg.finetune.offpolicy.utd) < 0.05
    loaded = ckpt.load_checkpoint(result.last_checkpoint)
    assert loaded.extra["algo"] == algo
    if algo == "residual-sac":  # last.pt acts as the run evaluated it: the squashed residual on its base
        assert isinstance(loaded.policy, ResidualPolicy) and loaded.policy.squash


@pytest.mark.timeout(300)
def test_sac_resume_continues_exactly(pretrained: tuple[Path, Path, Dataset], tmp_path: Path) -> None:
    gaussian, _, demos = pretrained
    cfg = _cfg("sac", "finetune.inril.il_every=2", "finetune.env_steps=120")
    whole = finetune(cfg, gaussian, demos, tmp_path / "whole")
    first = finetune(cfg, gaussian, demos, tmp_path / "split", max_iterations=2)
    assert first.iterations == 2
    resumed = finetune(cfg, gaussian, demos, tmp_path / "split", resume=True)
    assert resumed.start_iteration == 2 and resumed.iterations == whole.iterations
    a = ckpt.load_checkpoint(whole.last_checkpoint).policy.state_dict()
    b = ckpt.load_checkpoint(resumed.last_checkpoint).policy.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.timeout(30)
def test_bench_off_policy_arms_configure() -> None:
    from inril_robot.bench.sample_efficiency import DIFFUSION_ARMS, OFF_POLICY_ARMS, arm_config, kind_of

    for arm in OFF_POLICY_ARMS:
        f = arm_config("lift", arm, 3, 10_000, []).finetune
        assert f.algo in ("sac", "residual-sac", "idql") and f.env_steps == 10_000
        assert kind_of(arm) == ("diffusion" if arm in DIFFUSION_ARMS else "gaussian")
    assert arm_config("lift", "rlpd", 0, 10, []).finetune.offpolicy.demo_fraction == 0.5
    assert arm_config("lift", "sac in-ril m=5", 0, 10, []).finetune.offpolicy.demo_fraction == 0.0


@pytest.mark.timeout(30)
def test_bench_table_states_robot_minutes() -> None:
    from inril_robot.bench.sample_efficiency import markdown_table

    text = markdown_table([], [], 10_000, 50, 100)
    assert "16.7 supervised robot minutes at 10 Hz" in text and "on 50 episodes" in text and "{" not in text
