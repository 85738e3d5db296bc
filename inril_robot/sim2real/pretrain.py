"""Sim pre-training for the real robot, and the sim-to-sim gap that stands in for sim-to-real on this machine.

`sim_pretrain`: randomised scripted demonstrations (`inril_robot.runtime.collect.collect`) -> behaviour cloning
(`learning.pretrain.pretrain`) -> an exported checkpoint whose contract is checked against ``--robot franka``'s.
The simulation runs under the real robot's safety envelope (configs/robots/franka.yaml: 1 cm / 0.06 rad per step,
its smaller workspace), so the demonstrated and learned actions are ones the real arm will execute unclipped.
Calibrated cameras (``cameras.<name>.calibration``) place the sim cameras at the real viewpoints; the dataset's
``calibration`` field and the checkpoint's ``extra.calibration`` name the files (path and digest).

IN-RIL fine-tuning in sim is another command (`finetune`); `sim_pretrain(..., finetune=fn)` calls ``fn(checkpoint)``
with the exported checkpoint and records what it returns: the hook a pipeline uses to chain it.

`sim2sim_gap`: trains once on nominal and once on randomised demonstrations and evaluates each policy in both
conditions (same held-out seeds), success rates with Wilson 95% intervals.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inril_robot.config import RunConfig, load_config
from inril_robot.data.provenance import calibration_refs
from inril_robot.reporting.rates import wilson_interval
from inril_robot.sim2real.randomization import preset

Stage = Callable[[str], None]
REAL_ROBOT = "franka"


def sim_config(task: str, cameras: str | None, randomization: str, overrides: list[str]) -> RunConfig:
    """The simulated robot under the real robot's safety limits, with a randomisation preset; then --set."""
    real = load_config(robot=REAL_ROBOT)
    cfg = load_config(robot="sim", task=task, cameras=cameras, algo="bc_gaussian")
    cfg = cfg.model_copy(update={"safety": real.safety, "randomization": preset(randomization)})
    data = cfg.model_dump(mode="json")
    from inril_robot.config import apply_override, parse_override, validate_config

    for text in overrides:
        path, value = parse_override(text)
        apply_override(data, path, value)
    return validate_config(data)


def real_robot_contract_issues(cfg: RunConfig, checkpoint_contract: dict[str, Any]) -> list[str]:
    """Why the checkpoint would not run on `--robot franka` with the same task and cameras (empty: it would)."""
    from inril_robot.core.contract import Contract
    from inril_robot.learning.pretrain import run_contract

    real = cfg.model_copy(update={"robot": load_config(robot=REAL_ROBOT).robot})
    theirs = Contract.from_json_dict(checkpoint_contract)
    issues = [f"{f}: checkpoint {a!r}, franka {b!r}" for f, a, b in theirs.mismatches(run_contract(real))]
    if cfg.task.observation == "state":
        issues.append(
            "task.observation=state: the policy reads object poses only the simulator knows; train with "
            "task.observation=image and cameras for the real robot"
        )
    return issues


def collect_demos(cfg: RunConfig, out: Path, episodes: int) -> Any:
    """Scripted demonstrations in `cfg`'s (randomised) simulation; the dataset records the calibration files."""
    from inril_robot.data.store import Dataset
    from inril_robot.runtime.collect import collect
    from inril_robot.runtime.env import RobotEnv
    from inril_robot.runtime.registry import make_teleop

    with RobotEnv(cfg) as env:  # collect records the calibration references in dataset.json
        collect(
            cfg,
            out,
            episodes,
            env,
            make_teleop(cfg, env),
            extra_info={"randomization": cfg.randomization.model_dump(mode="json")},
        )
    return Dataset(out)


def evaluate(cfg: RunConfig, checkpoint: Path, episodes: int, seed: int) -> dict[str, Any]:
    from inril_robot.learning.policies.checkpoint import load_checkpoint
    from inril_robot.learning.policies.runner import PolicyRunner
    from inril_robot.learning.pretrain import run_contract
    from inril_robot.runtime.env import RobotEnv
    from inril_robot.runtime.rollout import run_policy

    contract = run_contract(cfg)
    with RobotEnv(cfg) as env:
        loaded = load_checkpoint(checkpoint, expect_contract=contract)
        runner = PolicyRunner(loaded.policy, contract, "cpu")
        return run_policy(
            env, runner, episodes, seed=seed, on_reset=runner.reset, policy_name=cfg.policy.kind
        ).to_dict()


@dataclass
class SimPretrainResult:
    out: str
    checkpoint: str
    demos: int
    steps: int
    eval: dict[str, Any]
    calibration: dict[str, str]
    real_robot_issues: list[str]
    finetune: Any = None
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def sim_pretrain(
    cfg: RunConfig,
    out: Path,
    *,
    demos: int,
    eval_episodes: int,
    on_stage: Stage | None = None,
    finetune: Callable[[Path], Any] | None = None,
) -> SimPretrainResult:
    from inril_robot.core.seeds import EVAL_SEED_BASE
    from inril_robot.learning.policies.checkpoint import atomic_torch_save, read_checkpoint
    from inril_robot.learning.pretrain import pretrain

    say = on_stage or (lambda _: None)
    out = Path(out)
    times: dict[str, float] = {}
    started = time.perf_counter()
    say(f"1/4 {demos} randomised scripted demonstrations -> {out / 'demos'}")
    dataset = collect_demos(cfg, out / "demos", demos)
    times["collect"] = time.perf_counter() - started

    started = time.perf_counter()
    say(f"2/4 pre-training {cfg.policy.kind} for {cfg.train.steps} steps -> {out / 'pretrain'}")
    result = pretrain(cfg, dataset, out / "pretrain", resume=(out / "pretrain" / "run.yaml").exists())
    times["pretrain"] = time.perf_counter() - started

    started = time.perf_counter()
    say(f"3/4 evaluating on {eval_episodes} held-out randomised episodes")
    summary = evaluate(cfg, Path(result.last_checkpoint), eval_episodes, EVAL_SEED_BASE)
    times["eval"] = time.perf_counter() - started

    say(f"4/4 exporting for --robot {REAL_ROBOT}")
    payload = read_checkpoint(result.last_checkpoint)
    refs = calibration_refs(cfg)
    issues = real_robot_contract_issues(cfg, payload["contract"])
    payload["extra"] = {
        **payload.get("extra", {}),
        "calibration": refs,
        "target_robot": REAL_ROBOT,
        "sim_pretrain": {
            "randomization": cfg.randomization.model_dump(mode="json"),
            "eval_success": summary["success"],
        },
        "real_robot_issues": issues,
    }
    export = out / "export" / "policy.pt"
    export.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(payload, export)
    hooked = finetune(export) if finetune is not None else None
    return SimPretrainResult(str(out), str(export), len(dataset), result.step, summary, refs, issues, hooked, times)


# ------------------------------------------------------------------------------------------------ sim-to-sim gap
@dataclass
class GapResult:
    task: str
    randomization: str
    demos: int
    steps: int
    episodes: int
    cells: list[dict[str, Any]]  # one per (trained on, evaluated on)
    wall_s: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def markdown(self) -> str:
        lines = [
            f"sim-to-sim gap · {self.task} · randomisation preset {self.randomization!r} · {self.demos} demos, "
            f"{self.steps} BC steps, {self.episodes} evaluation episodes per cell",
            "",
            "| trained on | evaluated on | success | 95% CI (Wilson) | n |",
            "|---|---|---|---|---|",
        ]
        for c in self.cells:
            lines.append(
                f"| {c['trained_on']} | {c['evaluated_on']} | {c['rate']:.0%} | "
                f"[{c['ci95_low']:.0%}, {c['ci95_high']:.0%}] | {c['successes']}/{c['trials']} |"
            )
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        rows = ["trained_on,evaluated_on,successes,trials,rate,ci95_low,ci95_high"]
        rows += [
            f"{c['trained_on']},{c['evaluated_on']},{c['successes']},{c['trials']},{c['rate']:.4f},"
            f"{c['ci95_low']:.4f},{c['ci95_high']:.4f}"
            for c in self.cells
        ]
        return "\n".join(rows) + "\n"


def sim2sim_gap(
    task: str,
    out: Path,
    *,
    randomization: str = "medium",
    demos: int = 20,
    steps: int = 800,
    episodes: int = 20,
    overrides: list[str] | None = None,
    on_stage: Stage | None = None,
) -> GapResult:
    """Train on nominal and on randomised demos; evaluate both in both conditions."""
    from inril_robot.core.atomic import atomic_open
    from inril_robot.core.seeds import EVAL_SEED_BASE
    from inril_robot.learning.pretrain import pretrain

    say = on_stage or (lambda _: None)
    started = time.perf_counter()
    base = [f"train.steps={steps}", "train.eval_every=0", f"train.checkpoint_every={steps}", *(overrides or [])]
    conditions = {
        "nominal": sim_config(task, None, "none", base),
        "randomised": sim_config(task, None, randomization, base),
    }
    checkpoints = {}
    for name, cfg in conditions.items():
        say(f"train on {name}: {demos} demos, {steps} BC steps")
        dataset = collect_demos(cfg, out / name / "demos", demos)
        result = pretrain(cfg, dataset, out / name / "pretrain", resume=(out / name / "pretrain" / "run.yaml").exists())
        checkpoints[name] = Path(result.last_checkpoint)
    cells = []
    for trained_on, ckpt in checkpoints.items():
        for evaluated_on, cfg in conditions.items():
            say(f"evaluate trained-on-{trained_on} in {evaluated_on}: {episodes} episodes")
            summary = evaluate(cfg, ckpt, episodes, EVAL_SEED_BASE)
            rate = wilson_interval(summary["success"]["successes"], summary["success"]["trials"])
            cells.append({"trained_on": trained_on, "evaluated_on": evaluated_on, **rate.to_dict()})
    gap = GapResult(task, randomization, demos, steps, episodes, cells, time.perf_counter() - started)
    for name, text in (("sim2sim.md", gap.markdown()), ("sim2sim.csv", gap.csv())):
        with atomic_open(out / name) as f:
            f.write(text)
    return gap
