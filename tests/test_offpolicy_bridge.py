"""The policy server's asynchronous off-policy learner: real ZMQ sockets, real simulated robots, a real learner
process, real replay-log files and a real `kill -9` of the server.

The algorithm here is a test learner that follows `bridge.offpolicy.OffPolicyAlgo` (max-likelihood steps of the
served Gaussian policy on its replay, with an Adam optimiser and a generator): real gradient steps on the real
policy, cheap enough for CI. It stands in for SAC/IDQL (their own tests live with them); what is tested here is the
actor-learner machinery around any algorithm: transitions, the log, publication, metrics, resume.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from inril_robot.bridge.agent import AgentResult
from inril_robot.bridge.episodes import InterventionDemos
from inril_robot.bridge.learner_process import LearnerSpec
from inril_robot.bridge.offpolicy import OffPolicyServerLearner, TransitionAssembler
from inril_robot.bridge.offpolicy_learner import OffPolicyTrainer
from inril_robot.config import RunConfig
from inril_robot.core.safety import SafetyLimits
from inril_robot.data.replay import ReplayLog
from inril_robot.learning.policies import checkpoint as ckpt
from inril_robot.learning.policies.base import Policy
from inril_robot.learning.pretrain import run_contract
from inril_robot.learning.rl.actor import Actor
from inril_robot.learning.rl.ppo import GaussianActor
from inril_robot.learning.runs import read_metrics
from tests.test_bridge import cfg_for, run_agent, served
from tests.test_pretrain import make_gaussian, reach_cfg

THIS = "tests.test_offpolicy_bridge"
OFF = [
    "task.max_steps=40",
    "finetune.algo=sac",
    "finetune.async_learner.publish_every=5",
    "finetune.async_learner.checkpoint_every=2",
]


# ------------------------------------------------------------------------------------------ the test learner
class ReplayMLE:
    def __init__(self, policy: Policy, seed: int) -> None:
        self.actor = GaussianActor(policy)
        self.opt = torch.optim.Adam(policy.parameters(), lr=1e-3)
        self.generator = torch.Generator().manual_seed(seed)
        self.parts: list[dict[str, np.ndarray]] = []
        self.size = 0
        self.interventions = 0

    def modules(self) -> list[torch.nn.Module]:
        return [self.actor]

    def add(self, transitions: dict[str, np.ndarray]) -> None:
        self.parts.append({k: v for k, v in transitions.items() if k.startswith("obs/") or k == "action"})
        self.size += len(transitions["action"])

    def add_intervention(self, history: dict[str, np.ndarray], actions: np.ndarray) -> None:
        self.interventions += 1

    def buffer_size(self) -> int:
        return self.size

    def can_update(self) -> bool:
        return self.size >= 16

    def update(self) -> dict[str, Any]:
        if len(self.parts) > 1:
            self.parts = [{k: np.concatenate([p[k] for p in self.parts]) for k in self.parts[0]}]
        data = self.parts[0]
        idx = torch.randint(0, self.size, (32,), generator=self.generator).numpy()
        obs = {k[4:]: torch.from_numpy(v[idx]) for k, v in data.items() if k.startswith("obs/")}
        actions = torch.from_numpy(data["action"][idx]).reshape(32, -1)
        loss = -self.actor.policy.distribution(obs).log_prob(actions).sum(-1).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"actor_loss": float(loss.detach())}

    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.actor.state_dict(), "opt": self.opt.state_dict(), "gen": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actor.load_state_dict(state["policy"])
        self.opt.load_state_dict(state["opt"])
        self.generator.set_state(state["gen"])


def make_server_algo(cfg: RunConfig, policy: Policy, demos: Any, contract: Any, device: Any) -> ReplayMLE:
    return ReplayMLE(policy, cfg.seed)


def make_serving_actor(cfg: RunConfig, policy: Policy) -> Actor:
    return GaussianActor(policy)


# ------------------------------------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained reach Gaussian policy (made-up normaliser statistics): the test learner needs no good one."""
    contract = run_contract(reach_cfg())
    policy, cfg = make_gaussian(contract)
    path = tmp_path_factory.mktemp("offpolicy") / "policy.pt"
    return ckpt.save_checkpoint(path, policy, contract=contract, run_cfg=cfg, step=0)


def wait_unlocked(path: Path, timeout_s: float = 30.0) -> None:
    """Until no process holds the replay log's writer lock (the learner process of a killed server exits)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with open(path / ".lock", "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(f, fcntl.LOCK_UN)
                return
            except BlockingIOError:
                assert time.monotonic() < deadline, "the replay log stayed locked"
        time.sleep(0.1)


# --------------------------------------------------------------------------------------------------- tests
@pytest.mark.timeout(240)
def test_learner_publishes_versions_while_the_robot_acts_and_resumes_exactly(
    pretrained: Path,
    tmp_path: Path,
) -> None:
    checkpoint = pretrained
    cfg = cfg_for(*OFF)
    out = tmp_path / "srv"
    learner = OffPolicyServerLearner(cfg, checkpoint, None, out, algo=THIS)
    assert learner.mode == "async" and learner.version == 0
    first: list[AgentResult] = []
    paced: list[AgentResult] = []
    with served(learner) as server:
        run_agent(cfg, server.endpoint, first, episodes=3, speed=0).join(120)
        deadline = time.monotonic() + 60
        while learner.version < 1:  # the learner trains on what the first robot sent
            assert time.monotonic() < deadline, "no version was published"
            time.sleep(0.05)
        status: list[dict] = []
        run_agent(cfg, server.endpoint, paced, status, episodes=1, speed=1.0, robot_id="paced").join(120)
        stats = server.stats()
    assert first and paced, "an agent did not finish"
    assert first[0].watchdog_holds == 0 and paced[0].watchdog_holds == 0
    versions = [s["policy_version"] for s in status if "policy_version" in s]
    assert 1 <= versions[0] < versions[-1], f"no new weights while the paced robot acted: {versions}"
    assert stats["updates_per_s"] > 0 and stats["updates"] >= 10 and stats["utd"] > 0
    log = ReplayLog(out / "replay").summary()
    assert log.transitions == first[0].env_steps + paced[0].env_steps and log.episodes == 4 and log.torn_tail is None
    rows = read_metrics(out / "metrics.csv")
    assert rows and all(r["updates_per_s"] and r["utd"] is not None for r in rows)
    assert [int(r["step"]) for r in rows] == list(range(1, len(rows) + 1))
    final = learner.version
    state = torch.load(out / "last.train.pt", weights_only=False)
    assert state["version"] == final and state["replay_transitions"] == log.transitions

    resumed = OffPolicyServerLearner(cfg, checkpoint, None, out, resume=True, algo=THIS)
    try:
        restored = resumed.last_stats["restored"]
        assert restored == {"records": log.records, "transitions": log.transitions, "checksum": log.checksum}
        assert resumed.version == final and resumed.last_stats["updates"] == state["updates"]
        served_now = resumed._serving[1].state_dict()
        assert all(torch.equal(served_now[k], v) for k, v in state["algo"]["policy"].items())
    finally:
        resumed.close()


SERVER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from inril_robot.bridge.offpolicy import OffPolicyServerLearner
    from inril_robot.bridge.server import PolicyServer, ServeOptions
    from inril_robot.config import load_config
    from tests.test_bridge import FT
    checkpoint, out, endpoint, resume = sys.argv[1:5]
    cfg = load_config(robot="sim", task="reach", overrides=[*FT, *{off!r}])
    learner = OffPolicyServerLearner(cfg, Path(checkpoint), None, Path(out), resume=resume == "1",
                                     algo={this!r})
    server = PolicyServer(learner, ServeOptions(bind=endpoint, robot_timeout_s=30.0))
    server.start()
    print("serving", flush=True)
    try:
        server.serve(lambda: False)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        learner.close()
    """
)


@pytest.mark.slow  # about 75 s: two server processes with their learner processes, a robot through the outage
@pytest.mark.timeout(300)
def test_kill_9_of_the_server_then_resume_keeps_the_replay_log_intact(
    pretrained: Path,
    tmp_path: Path,
) -> None:
    checkpoint = pretrained
    out = tmp_path / "srv"
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        endpoint = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    script = SERVER.format(off=OFF, this=THIS)

    def start(resume: bool) -> subprocess.Popen:
        args = [str(checkpoint), str(out), endpoint, "1" if resume else "0"]
        proc = subprocess.Popen(
            [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None and "serving" in proc.stdout.readline()
        return proc

    cfg = cfg_for(*OFF)
    server = start(resume=False)
    results: list[AgentResult] = []
    agent = run_agent(cfg, endpoint, results, episodes=12, speed=0)
    deadline = time.monotonic() + 120
    while not (out / "replay" / "seg_000000.log").is_file() or ReplayLog(out / "replay").summary().episodes < 3:
        assert time.monotonic() < deadline and agent.is_alive()
        time.sleep(0.2)
    os.kill(server.pid, signal.SIGKILL)  # mid-run: the robot is mid-episode, the learner mid-update
    server.wait(10)
    wait_unlocked(out / "replay")  # its learner process saw the pipe close and exited
    before = ReplayLog(out / "replay").summary()
    assert before.transitions > 0 and before.torn_tail is None

    resumed = start(resume=True)
    try:
        agent.join(200)  # the agent held through the outage, reconnected and finished its episodes
        assert results and results[0].episodes == 12 and results[0].reconnects >= 1
        time.sleep(1.0)
    finally:
        resumed.send_signal(signal.SIGINT)
        try:
            resumed.wait(30)
        except subprocess.TimeoutExpired:
            resumed.kill()
            resumed.wait()
    wait_unlocked(out / "replay")
    after = ReplayLog(out / "replay").summary()
    assert after.transitions > before.transitions
    assert ReplayLog(out / "replay").checksum(records=before.records) == before.checksum  # the old log, bit-exact


@pytest.mark.timeout(30)
def test_transitions_pair_each_chunk_with_the_next_observation_and_keep_the_flags() -> None:
    """The serving loop's calls for one episode of three chunks (the second a human intervention, the last the time
    limit), then one whose next chunk was never served: what goes to the learner process."""
    sent: list[tuple] = []
    demos = InterventionDemos()
    a = TransitionAssembler("arm1", horizon=2, act_steps=2, forward=sent.append, interventions=demos)
    obs = [{"x": np.full((1, 3), i, np.float32)} for i in range(5)]
    sampled = [torch.full((2, 7), 0.1 * c) for c in range(3)]  # the chunks the serving actor drew (normalised)
    for c in range(3):
        a.served_chunk(0, c, obs[c], {"chunk": sampled[c]})
        executed = np.full((2 if c < 2 else 1, 7), c, np.float64)  # the last chunk ran one step, then time ran out
        end = "time_limit" if c == 2 else "none"
        a.transition(0, c, executed, np.ones(len(executed), np.float32), c == 1, 0, end=end, policy_version=c)
    a.episode_end(0, False, "time_limit", obs[3])
    a.served_chunk(1, 0, obs[4], {})
    a.transition(1, 0, np.zeros((2, 7)), np.zeros(2, np.float32), False, 0)
    a.served_chunk(1, 2, obs[0], {})  # chunk 1 never served: transition 0 has no next observation
    a.episode_end(1, False, "time_limit", None)
    transitions = [m for m in sent if m[0] == "transition"]
    assert [m[0] for m in sent] == ["transition", "transition", "transition", "episode_end", "episode_end"]
    for c, (_, robot, episode, history, t) in enumerate(transitions):
        assert (robot, episode) == ("arm1", 0) and history is obs[c] and t["next_obs"] is obs[c + 1]
        assert t["intervention"] == (c == 1) and t["truncated"] == (c == 2) and not t["terminated"]
        assert t["policy_version"] == c and t["step"] == 2 * c
        assert (t["sampled"] is None) if c == 1 else np.array_equal(t["sampled"], sampled[c].numpy())  # human: none
    last = transitions[2][4]
    assert last["steps"] == 1 and last["reward"] == 1.0 and last["executed"].shape == (2, 7)
    np.testing.assert_array_equal(last["executed"][1], last["executed"][0])  # padded with the executed step
    assert demos.total == 1 and demos.pairs[0][1].shape == (2, 7)  # the intervention also went to the IL side


def _stopping(cfg: RunConfig) -> RunConfig:
    """`cfg` whose contact-force limit is below any reading (the sim reports 0 N without contact): the env stops
    the arm at an episode's first step, a real safety stop. A tighter limit, never a looser one; model_construct
    bypasses the validation that keeps the limit positive (as tests/test_franka.py does)."""
    safety = SafetyLimits.model_construct(**{**cfg.safety.model_dump(), "max_contact_force": -1.0})
    return cfg.model_copy(update={"safety": safety})


@pytest.mark.timeout(240)
def test_safety_stops_are_terminal_time_limits_truncated_and_the_budget_ends_the_run(
    pretrained: Path, tmp_path: Path
) -> None:
    """Real agents (simulated arms) through a real server over ZMQ to the learner process and its replay log:

    - an episode the safety envelope stopped ends in a terminal transition (no bootstrap, as in-process), one the
      time limit ended in a truncated one;
    - `finetune.env_steps` is the budget: once the log holds that many env steps the learner stops training,
      publishes its last updates as the final version, checkpoints, and the robot is told the run is over (it would
      otherwise go on: its own step budget here is far larger)."""
    budget = 40
    cfg = cfg_for(*OFF, "task.max_steps=6", f"finetune.env_steps={budget}")
    out = tmp_path / "srv"
    log: list[str] = []
    stopped: list[AgentResult] = []
    timed: list[AgentResult] = []
    learner = OffPolicyServerLearner(cfg, pretrained, None, out, algo=THIS)
    with served(learner, log) as server:
        run_agent(_stopping(cfg), server.endpoint, stopped, episodes=2, speed=0, robot_id="stopper").join(120)
        # paced (10 Hz): the learner trains while the budget fills, so there are updates to publish at its end
        run_agent(cfg, server.endpoint, timed, speed=1.0, env_steps=100 * budget, robot_id="timer").join(150)
        assert learner.finished and not learner.learning
        updates = learner.last_stats["updates"]
        time.sleep(1.0)  # the learner process idles: its state written at close still has these updates
        stats = server.stats()
    (stopper,), (timer,) = stopped, timed
    assert stopper.stopped is None and stopper.env_steps == 2  # each episode stopped at its first step

    ends: dict[str, list[tuple[bool, ...]]] = {}  # robot -> (terminated, truncated, succeeded) of each episode's end
    for r in ReplayLog(out / "replay").records():
        flags = [(bool(a), bool(b)) for a, b in zip(r.arrays["terminated"], r.arrays["truncated"], strict=True)]
        assert not any(a or b for a, b in flags[:-1]), "only an episode's last transition ends it"
        if r.closed:  # sparse reward: 1 on the step that succeeded
            ends.setdefault(r.robot, []).append((*flags[-1], bool(r.arrays["reward"][-1] > 0)))
    assert ends["stopper"] == [(True, False, False)] * 2
    assert (False, True, False) in ends["timer"]
    assert set(ends["timer"]) <= {(False, True, False), (True, False, True)}  # the time limit, or a success

    assert timer.run_over is not None and timer.stopped is None
    assert budget <= stopper.env_steps + timer.env_steps < 10 * budget  # it stopped on the server's word
    assert stats["run_over"] and stats["env_steps"] >= budget
    assert any("learning budget reached" in line for line in log), log
    rows = read_metrics(out / "metrics.csv")
    assert rows[-1]["step"] == learner.version and rows[-1]["updates"] == updates
    assert ckpt.read_checkpoint(out / "last.pt")["extra"]["policy_version"] == learner.version
    state = torch.load(out / "last.train.pt", weights_only=False)
    assert state["updates"] == updates and state["version"] == learner.version  # nothing trained after the budget
    assert (out / "run.yaml").is_file() and list(out.glob("events.out.tfevents.*"))  # a RunFolder, TensorBoard too


@pytest.mark.timeout(120)
def test_a_chunk_longer_than_its_executed_steps_is_learned_with_the_rest_of_the_sampled_chunk(tmp_path: Path) -> None:
    """Horizon 4, 2 steps executed: the replay holds whole chunks (what the critics and a diffusion actor read): the
    executed steps normalised, then the sampled chunk's unexecuted steps (the policy's plan, as in-process); a human
    chunk repeats its last executed step."""
    contract = run_contract(reach_cfg())
    policy, pcfg = make_gaussian(contract, horizon=4, act_steps=2)
    checkpoint = ckpt.save_checkpoint(tmp_path / "h4.pt", policy, contract=contract, run_cfg=pcfg, step=0)
    trainer = OffPolicyTrainer(LearnerSpec(cfg_for(*OFF), checkpoint, None, tmp_path / "srv", False, THIS))

    def forward(message: tuple) -> None:
        (trainer.transition if message[0] == "transition" else trainer.episode_end)(*message[1:])

    a = TransitionAssembler("arm1", horizon=4, act_steps=2, forward=forward)
    obs = [{k: np.full((1, *s), i, np.float32) for k, s in policy.obs_shapes.items()} for i in range(3)]
    sampled = torch.linspace(-0.9, 0.9, 28).reshape(4, 7)
    executed = np.full((2, 7), 0.01)
    for c in range(2):
        a.served_chunk(0, c, obs[c], {"chunk": sampled})
        a.transition(0, c, executed, np.zeros(2, np.float32), c == 1, 0, end="time_limit" if c else "none")
    a.episode_end(0, False, "time_limit", obs[2])
    trainer.close()
    (record,) = ReplayLog(tmp_path / "srv" / "replay").records()
    action = record.arrays["action"]  # (2, H, A)
    normalised = policy.normalizer.normalize_action(torch.from_numpy(executed).float()).numpy()
    np.testing.assert_allclose(action[0, :2], normalised, rtol=1e-6)
    np.testing.assert_array_equal(action[0, 2:], sampled[2:].numpy())  # the policy's unexecuted plan
    np.testing.assert_allclose(action[1], np.repeat(normalised[-1:], 4, axis=0), rtol=1e-6)  # the human's last step
    assert record.arrays["steps"].tolist() == [2, 2] and record.arrays["executed"].shape == (2, 4, 7)
