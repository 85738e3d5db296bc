"""Several `RobotEnv`s stepped in lockstep, each in its own process, one action chunk per step.

A fine-tuning "step" for the learner is one executed chunk: the env runs up to `act_steps` actions (each through the
safety envelope inside `RobotEnv.step`), stopping early when the episode ends, and returns the summed reward. Each env
keeps the policy's observation history (To frames; at a reset the first frame fills it), so the learner receives
ready-made (To, ...) arrays. There is no auto-reset: the caller resets an env with the seed of the episode it wants,
which keeps episode seeds independent of which process ran them (and a resumed run on the same seeds).

`subprocess=False` runs the envs in this process (tests, one-env debugging); otherwise each lives in a spawned
process (MuJoCo and torch do not survive fork well) limited to one thread, talking over a pipe.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from inril_robot.config import RunConfig
from inril_robot.runtime.obs_history import ObsHistory

History = dict[str, np.ndarray]  # key -> (To, *shape)


@dataclass
class ChunkResult:
    obs: History  # after the chunk (the final observation if the episode ended)
    reward: float  # summed over the executed steps
    steps: int  # control steps executed (<= len(chunk))
    terminated: bool  # success
    truncated: bool  # time limit or a safety stop
    success: bool
    safety_events: int  # envelope interventions during the chunk
    stopped: bool = False  # the env stopped the arm (contact force): a failure, not a time limit


class HistoryEnv:
    """One `RobotEnv` with the policy's observation history."""

    def __init__(self, cfg: RunConfig, obs_keys: list[str], n_obs_steps: int) -> None:
        from inril_robot.runtime.env import RobotEnv

        self.env = RobotEnv(cfg)  # reward and termination from reward.source (the simulator, operator or detector)
        self.history = ObsHistory(obs_keys, n_obs_steps)
        self.judge_by_truth = False

    def set_judge(self, truth: bool) -> None:
        """`truth`: episodes end on the simulator's success (evaluation in simulation), not on `reward.source`'s: a
        success detector that fires a step early would otherwise end a succeeding episode as a failure."""
        self.judge_by_truth = truth

    def _push(self, obs: dict[str, np.ndarray]) -> History:
        self.history.push(obs)
        return self.history.stacked()

    def reset(self, seed: int) -> History:
        obs, _ = self.env.reset(seed=seed)
        self.history.clear()
        return self._push(obs)

    def step(self, chunk: np.ndarray) -> ChunkResult:
        reward, steps, events = 0.0, 0, 0
        terminated = truncated = success = stopped = False
        history: History = {}
        for action in chunk:
            obs, r, terminated, truncated, info = self.env.step(action)
            reward, steps, events = reward + r, steps + 1, events + len(info["safety_events"])
            # the simulator's verdict where it has one: evaluations measure the truth whatever gives the reward
            truth = info.get("sim_success")
            success, stopped = bool(info["success"] if truth is None else truth), info["stopped"] is not None
            if self.judge_by_truth and truth is not None:
                terminated = truth
                truncated = not truth and (stopped or self.env.steps >= self.env.cfg.task.max_steps)
            history = self._push(obs)
            if terminated or truncated:
                break
        return ChunkResult(history, reward, steps, terminated, truncated, success, events, stopped)

    def close(self) -> None:
        self.env.close()


def _worker(conn: Connection, cfg_json: dict[str, Any], obs_keys: list[str], n_obs_steps: int) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    env = None
    try:
        env = HistoryEnv(RunConfig.model_validate(cfg_json), obs_keys, n_obs_steps)
        conn.send(("ok", None))
        while True:
            command, arg = conn.recv()
            if command == "reset":
                conn.send(("ok", env.reset(arg)))
            elif command == "step":
                conn.send(("ok", env.step(arg)))
            elif command == "set_judge":
                conn.send(("ok", env.set_judge(arg)))
            elif command == "close":
                break
    except (EOFError, KeyboardInterrupt):
        pass
    except Exception:  # report to the parent, which raises it with the traceback
        conn.send(("error", traceback.format_exc()))
    finally:
        if env is not None:
            env.close()
        conn.close()


class EnvWorkerError(RuntimeError):
    """An environment process failed; the message carries its traceback."""


class VecEnv:
    def __init__(
        self, cfg: RunConfig, num_envs: int, obs_keys: list[str], n_obs_steps: int, subprocess: bool = True
    ) -> None:
        self.num_envs = num_envs
        self._local: list[HistoryEnv] = []
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        if not subprocess:
            self._local = [HistoryEnv(cfg, obs_keys, n_obs_steps) for _ in range(num_envs)]
            return
        ctx = mp.get_context("spawn")
        cfg_json = cfg.model_dump(mode="json")
        for i in range(num_envs):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_worker, args=(child, cfg_json, obs_keys, n_obs_steps), daemon=True, name=f"inril-env-{i}"
            )
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        for i in range(num_envs):
            self._receive(i)

    def _receive(self, i: int) -> Any:
        try:
            status, payload = self._conns[i].recv()
        except EOFError as e:
            raise EnvWorkerError(f"environment process {i} died (exit code {self._procs[i].exitcode})") from e
        if status == "error":
            raise EnvWorkerError(f"environment process {i} failed:\n{payload}")
        return payload

    def _call(self, command: str, args: dict[int, Any]) -> dict[int, Any]:
        if self._local:
            return {i: getattr(self._local[i], command)(arg) for i, arg in args.items()}
        for i, arg in args.items():
            self._conns[i].send((command, arg))
        return {i: self._receive(i) for i in args}

    def reset(self, seeds: dict[int, int]) -> dict[int, History]:
        """Reset env i with seed seeds[i] (the others are left as they are)."""
        return self._call("reset", seeds)

    def step(self, chunks: dict[int, np.ndarray]) -> dict[int, ChunkResult]:
        """Run chunk (k, A) of raw actions in env i, all envs at once."""
        return self._call("step", chunks)

    def judge_by_truth(self, truth: bool) -> None:
        """Every env: episodes end on the simulator's success (`HistoryEnv.set_judge`) or on `reward.source`'s."""
        self._call("set_judge", dict.fromkeys(range(self.num_envs), truth))

    def close(self) -> None:
        for env in self._local:
            env.close()
        for conn in self._conns:
            with contextlib.suppress(BrokenPipeError, OSError):
                conn.send(("close", None))
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
        self._local, self._conns, self._procs = [], [], []

    def __enter__(self) -> VecEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
