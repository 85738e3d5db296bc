"""The deployed policy is the measured one (issue 18): an IDQL run's `last.pt` holds IDQL's implicit policy (the
diffusion actor, its critics, the number of candidates, their eta and the selection rule), and the in-run policy,
the checkpoint loaded through the evaluation path, `eval` and the bench act identically; a diffusion policy's acting
eta is a checkpoint setting `eval --set policy.diffusion.eta=...` changes. Tiny runs on reach (mechanics only)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from inril_robot.cli import app
from inril_robot.config import load_config
from inril_robot.core.seeds import EVAL_SEED_BASE
from inril_robot.data import Dataset
from inril_robot.learning.inril.common import evaluate_checkpoint, value_range
from inril_robot.learning.inril.finetune import finetune
from inril_robot.learning.inril.offpolicy_learner import make_algo
from inril_robot.learning.policies import checkpoint as ckpt
from inril_robot.learning.policies.idql import IDQLPolicy
from inril_robot.learning.policies.runner import PolicyRunner
from inril_robot.learning.pretrain import pretrain
from tests.test_offpolicy import FAST
from tests.test_pretrain import reach_cfg, record_demos


@pytest.fixture(scope="module")
def idql_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Dataset]:
    """(diffusion BC checkpoint, IDQL run folder, demos): 3 demos, 20 BC steps, 100 env steps of IDQL."""
    root = tmp_path_factory.mktemp("idql_deploy")
    demos = record_demos(root / "demos", "reach", 3)
    bc = pretrain(
        reach_cfg("diffusion", ["train.steps=20", "train.eval_every=0", "policy.horizon=4", "policy.act_steps=2"]),
        demos,
        root / "bc",
        resume=False,
    )
    cfg = _idql_cfg()
    finetune(cfg, Path(bc.last_checkpoint), demos, root / "idql")
    return Path(bc.last_checkpoint), root / "idql", demos


def _idql_cfg():
    overrides = [*FAST, "finetune.algo=idql", "finetune.inril.il_every=2", "finetune.offpolicy.demo_fraction=0.0"]
    return load_config(robot="sim", task="reach", overrides=[*overrides, "finetune.env_steps=100"])


def _obs(policy, batch: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        k: torch.randn((batch, policy.cfg.n_obs_steps, *shape), generator=g) for k, shape in policy.obs_shapes.items()
    }


def _gen(seed: int = 7) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.timeout(600)  # the module fixture (demos, BC, a 100-step IDQL run) is built by whichever test runs first
def test_idql_checkpoint_acts_as_the_run_did(idql_run: tuple[Path, Path, Dataset]) -> None:
    bc, run, _ = idql_run
    cfg = _idql_cfg()
    loaded = ckpt.load_checkpoint(run / "last.pt")
    policy = loaded.policy
    assert isinstance(policy, IDQLPolicy)
    o = cfg.finetune.offpolicy
    act = policy.cfg.idql
    assert act is not None
    assert (act.candidates, act.eta, act.rule) == (o.idql_candidates, o.idql_act_eta, o.idql_act_rule)
    assert len(policy.critic.state_dict()) > 0 and loaded.extra["algo"] == "idql"

    # the in-run policy at the end of the run, rebuilt from last.train.pt, acts exactly as the loaded checkpoint
    state = ckpt.safe_torch_load(run / "last.train.pt")["learner"]
    algo = make_algo(ckpt.load_checkpoint(bc).policy, cfg.finetune, value_range(cfg))
    algo.policy.load_state_dict(state["policy"])
    algo.load_state_dict(state["algo"])
    obs = _obs(policy)
    in_run = algo.act(obs, explore=False, generator=_gen())
    deployed = policy.predict_normalized(obs, deterministic=True, generator=_gen())
    assert torch.equal(in_run, deployed)
    # the exploring rule differs from a plain eta-1 sample of the actor (the critics choose), and acting is seeded
    assert torch.equal(policy.predict_normalized(obs, True, _gen(3)), policy.predict_normalized(obs, True, _gen(3)))
    assert not torch.equal(policy.predict_normalized(obs, True, _gen(3)), policy.predict_normalized(obs, True, _gen(4)))

    # `eval`'s runner (and the server, which calls the same `predict`): the same first action for the same seed
    runner = PolicyRunner(policy, loaded.contract)
    runner.reset(seed=11)
    frame = {k: v[0, -1].numpy() for k, v in obs.items()}  # one observation; the history repeats it
    stacked = {k: torch.from_numpy(v)[None, None].expand(1, policy.cfg.n_obs_steps, *v.shape) for k, v in frame.items()}
    chunk = policy.normalizer.unnormalize_action(algo.act(stacked, explore=False, generator=_gen(11)))  # (1, H, A)
    expected = chunk[0, 0].double().numpy()
    expected[-1] = min(max(expected[-1], 0.0), 1.0)
    assert runner.act(frame) == pytest.approx(expected, abs=1e-6)


@pytest.mark.timeout(600)  # the module fixture (demos, BC, a 100-step IDQL run) is built by whichever test runs first
def test_heldout_evaluation_reproduces_the_in_run_evaluation(idql_run: tuple[Path, Path, Dataset]) -> None:
    _, run, _ = idql_run
    cfg = _idql_cfg()
    with open(run / "metrics.csv") as f:
        last = [r for r in csv.DictReader(f) if r["eval_success"]][-1]
    again = evaluate_checkpoint(cfg, run / "last.pt", cfg.finetune.eval_episodes, seed=EVAL_SEED_BASE)
    assert float(last["eval_mean_length"]) == pytest.approx(again["mean_length"])
    assert float(last["eval_success"]) == pytest.approx(again["success"]["rate"])


@pytest.mark.timeout(600)  # the module fixture (demos, BC, a 100-step IDQL run) is built by whichever test runs first
def test_diffusion_acting_eta_is_a_setting(idql_run: tuple[Path, Path, Dataset]) -> None:
    bc, run, _ = idql_run
    policy = ckpt.load_checkpoint(bc).policy
    obs = _obs(policy)
    eta0 = policy.predict_normalized(obs, deterministic=True, generator=_gen())
    assert torch.equal(eta0, policy.sample_normalized(obs, 0.0, _gen()))
    ckpt.set_acting(policy, {"diffusion.eta": 1.0})
    eta1 = policy.predict_normalized(obs, deterministic=True, generator=_gen())
    assert torch.equal(eta1, policy.sample_normalized(obs, 1.0, _gen())) and not torch.equal(eta0, eta1)

    idql = ckpt.load_checkpoint(run / "last.pt").policy
    ckpt.set_acting(idql, {"idql.rule": "argmax", "idql.eta": 0.0})
    assert idql.cfg.idql is not None and (idql.cfg.idql.rule, idql.cfg.idql.eta) == ("argmax", 0.0)
    with pytest.raises(ckpt.CheckpointError, match=r"policy\.hidden is fixed by the checkpoint"):
        ckpt.set_acting(policy, {"hidden": [8]})
    with pytest.raises(ckpt.CheckpointError, match=r"has no policy\.idql\.rule"):
        ckpt.set_acting(policy, {"idql.rule": "argmax"})
    with pytest.raises(ckpt.CheckpointError, match=r"policy\.diffusion\.eta: Input should be less than or equal"):
        ckpt.set_acting(policy, {"diffusion.eta": 3})


@pytest.mark.timeout(600)  # the module fixture (demos, BC, a 100-step IDQL run) is built by whichever test runs first
def test_eval_cli_honours_acting_settings(idql_run: tuple[Path, Path, Dataset], tmp_path: Path) -> None:
    bc, run, _ = idql_run
    runner = CliRunner()

    def evaluate(checkpoint: Path, *sets: str) -> dict:
        args = ["eval", "--checkpoint", str(checkpoint), "--episodes", "1", "--out", str(tmp_path), "--json"]
        result = runner.invoke(app, [*args, *[a for s in sets for a in ("--set", s)]])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout.strip().splitlines()[-1])

    assert evaluate(run / "last.pt")["success"]["trials"] == 1
    assert evaluate(bc, "policy.diffusion.eta=1", "task.max_steps=5")["mean_length"] <= 5
    bad = runner.invoke(app, ["eval", "--checkpoint", str(bc), "--episodes", "1", "--set", "policy.idql.rule=argmax"])
    assert bad.exit_code != 0 and "has no policy.idql.rule" in bad.output


@pytest.mark.timeout(600)  # the module fixture (demos, BC, a 100-step IDQL run) is built by whichever test runs first
def test_policy_server_serves_the_idql_policy(idql_run: tuple[Path, Path, Dataset], tmp_path: Path) -> None:
    """`serve --no-learn` of an IDQL last.pt answers with the checkpoint's deployed rule (critics included)."""
    import numpy as np

    from inril_robot.bridge.learning import ServerLearner
    from inril_robot.learning.rl.rollouts import raw_actions

    _, run, _ = idql_run
    learner = ServerLearner(_idql_cfg(), run / "last.pt", None, tmp_path / "srv", mode="off")
    try:
        policy = ckpt.load_checkpoint(run / "last.pt").policy
        assert isinstance(learner.policy, IDQLPolicy)
        obs = _obs(policy, batch=1)
        history = {k: v[0].numpy() for k, v in obs.items()}  # (To, *shape)
        torch.manual_seed(5)
        _, served_actions, _ = learner.infer([history])
        torch.manual_seed(5)
        expected = raw_actions(policy, policy.predict_normalized(obs, deterministic=True), policy.cfg.act_steps)
        assert np.allclose(served_actions, expected, atol=1e-6)
    finally:
        learner.close()
