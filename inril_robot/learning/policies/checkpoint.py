"""Self-describing policy checkpoints: one file, loadable with `torch.load(weights_only=True)` (no pickle of code).

A checkpoint is a dict of tensors and plain Python values only:

    format_version, package_version, step
    state_dict          the policy's weights, normaliser statistics included (registered buffers)
    ema_state_dict      the exponential moving average of the weights (optional; what evaluation uses)
    weights_sha256      {"raw": ..., "ema": ...}: digests of the stored weights (checked on load)
    contract            the action/observation contract, horizon/act_steps = the policy's action chunking
    policy_config       PolicyConfig (JSON mode), run_config: the whole RunConfig (JSON mode)
    normalizer          the statistics the normaliser was built from (rebuilds it with the right shapes)
    obs_shapes          observation key -> shape the policy reads; action_dim
    extra               anything the caller adds (dataset path, eval results), plain values only

Writes are atomic: a temporary file in the same directory, fsync, `os.replace`, fsync of the directory, so a reader
(or a crash) never sees half a checkpoint. Non-finite weights (NaN, inf) are never written and never loaded: every
save and every load (`safe_torch_load`, under all the loaders) refuses a payload holding one, naming the tensor.
"""

from __future__ import annotations

import hashlib
import pickle
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import ValidationError

from inril_robot.config import PolicyConfig, RunConfig
from inril_robot.core.atomic import atomic_open
from inril_robot.core.contract import Contract
from inril_robot.core.errors import InrilError
from inril_robot.core.version import package_version
from inril_robot.learning.policies.base import Policy
from inril_robot.learning.policies.normalizer import Normalizer, _safe

FORMAT_VERSION = 1
# How a loaded policy acts, changeable without touching its weights (`eval --set policy.diffusion.eta=1`)
ACTING_SETTINGS = ("diffusion.eta", "idql.candidates", "idql.eta", "idql.rule")


class CheckpointError(RuntimeError, InrilError):
    """The checkpoint is missing, corrupt, of an unknown format, or its weights do not fit its description."""


@dataclass
class LoadedCheckpoint:
    policy: Policy
    contract: Contract
    run_cfg: RunConfig
    step: int
    weights: Literal["ema", "raw"]
    path: Path
    weights_sha256: str
    extra: dict[str, Any]


def build_policy(
    cfg: PolicyConfig, normalizer: Normalizer, obs_shapes: dict[str, tuple[int, ...]], action_dim: int
) -> Policy:
    """The policy class named by `cfg.kind` (imported lazily: the factory pulls in every policy module)."""
    from inril_robot.learning.policies.factory import make_policy

    return make_policy(cfg, normalizer, obs_shapes, action_dim)


def state_dict_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """Digest of the exact weights: names, dtypes, shapes and bytes, in sorted name order."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def normalizer_spec(normalizer: Normalizer) -> dict[str, Any]:
    """Plain-value description of a normaliser, enough to rebuild one with buffers of the same shapes."""
    obs_stats = {}
    for key in normalizer.obs_keys:
        offset = normalizer.get_buffer(f"obs_offset__{_safe(key)}")
        scale = normalizer.get_buffer(f"obs_scale__{_safe(key)}")
        if normalizer.obs_mode == "mean_std":
            obs_stats[key] = {"mean": offset.tolist(), "std": scale.tolist()}
        else:
            obs_stats[key] = {"min": (offset - scale).tolist(), "max": (offset + scale).tolist()}
    return {
        "obs_mode": normalizer.obs_mode,
        "obs_stats": obs_stats,
        "action_stats": {"min": normalizer.action_min.tolist(), "max": normalizer.action_max.tolist()},
    }


def _cpu(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in state_dict.items()}


def non_finite_tensors(payload: Any, prefix: str = "") -> list[str]:
    """Names (dotted paths) of the floating-point tensors in a nested payload holding NaN or inf."""
    if isinstance(payload, torch.Tensor):
        return [prefix] if payload.is_floating_point() and not bool(torch.isfinite(payload).all()) else []
    if isinstance(payload, dict):
        return [n for k, v in payload.items() for n in non_finite_tensors(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(payload, list | tuple):
        return [n for i, v in enumerate(payload) for n in non_finite_tensors(v, f"{prefix}[{i}]")]
    return []


def _non_finite_text(names: list[str]) -> str:
    return (
        f"{len(names)} tensor{'s' if len(names) > 1 else ''} with NaN/inf values ({', '.join(names[:3])}"
        + (", ..." if len(names) > 3 else "")
        + ")"
    )


def atomic_torch_save(payload: dict[str, Any], path: Path) -> None:
    """torch.save, replacing `path` atomically (see `inril_robot.core.atomic`); refuses non-finite weights."""
    bad = non_finite_tensors(payload)
    if bad:
        raise CheckpointError(f"refusing to write {path}: {_non_finite_text(bad)}")
    with atomic_open(path, "wb") as f:
        torch.save(payload, f)


def _load_failure(e: BaseException) -> str:
    """Why torch.load refused a file, in a few words: never torch's advice to load it with weights_only=False,
    which would run whatever code the file holds."""
    if isinstance(e, pickle.UnpicklingError) or "Weights only load failed" in str(e):
        return "weights-only loading refuses the Python objects it holds"
    if isinstance(e, zipfile.BadZipFile) or "zip archive" in str(e) or isinstance(e, (KeyError, EOFError)):
        return "not a torch zip archive"
    return f"{type(e).__name__}: {str(e).splitlines()[0][:120]}" if str(e) else type(e).__name__


def safe_torch_load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """`torch.load(weights_only=True)` with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says it all
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # garbage input can raise anything (KeyError from the unpickler, ...): one line
        raise CheckpointError(
            f"{path} is not an inril-robot checkpoint (corrupt, truncated or another kind of file: "
            f"{_load_failure(e)}); pass a .pt written by pretrain, finetune or serve"
        ) from e
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(payload).__name__}, not a checkpoint dict")
    bad = non_finite_tensors(payload)
    if bad:
        raise CheckpointError(f"checkpoint {path} is unusable: {_non_finite_text(bad)}")
    return payload


def save_checkpoint(
    path: str | Path,
    policy: Policy,
    *,
    contract: Contract,
    run_cfg: RunConfig,
    step: int,
    extra: dict[str, Any] | None = None,
    ema_state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write one self-describing checkpoint atomically. `extra` must hold plain values (str, numbers, lists, dicts)."""
    path = Path(path)
    state_dict = _cpu(policy.state_dict())
    digests = {"raw": state_dict_sha256(state_dict)}
    payload: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "package_version": package_version(),
        "step": int(step),
        "state_dict": state_dict,
        "contract": contract.model_copy(
            update={"horizon": policy.cfg.horizon, "act_steps": policy.cfg.act_steps}
        ).to_json_dict(),
        "policy_config": policy.cfg.model_dump(mode="json"),
        "run_config": run_cfg.model_dump(mode="json"),
        "normalizer": normalizer_spec(policy.normalizer),
        "obs_shapes": {k: list(v) for k, v in policy.obs_shapes.items()},
        "action_dim": int(policy.action_dim),
        "extra": dict(extra or {}),
    }
    if ema_state_dict is not None:
        payload["ema_state_dict"] = _cpu(ema_state_dict)
        digests["ema"] = state_dict_sha256(payload["ema_state_dict"])
    payload["weights_sha256"] = digests
    atomic_torch_save(payload, path)
    return path


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The stored payload, format-checked, without building the policy (e.g. to read its run config)."""
    payload = safe_torch_load(Path(path), map_location)
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path}: format_version {version!r}, this version reads {FORMAT_VERSION}")
    missing = [
        k
        for k in (
            "state_dict",
            "contract",
            "policy_config",
            "run_config",
            "normalizer",
            "obs_shapes",
            "action_dim",
            "step",
        )
        if k not in payload
    ]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}")
    return payload


def load_checkpoint(
    path: str | Path,
    *,
    expect_contract: Contract | None = None,
    use_ema: bool = True,
    map_location: str | torch.device = "cpu",
    payload: dict[str, Any] | None = None,
) -> LoadedCheckpoint:
    """Rebuild the policy a checkpoint describes and load its weights (EMA ones when present and `use_ema`).

    With `expect_contract` (the contract of the robot/task it is about to run on), a mismatch raises
    `ContractMismatch` naming the field; the action chunking (horizon, act_steps) is the policy's own.
    """
    path = Path(path)
    payload = payload if payload is not None else read_checkpoint(path, map_location)
    try:
        stored = Contract.from_json_dict(payload["contract"])
        run_cfg = RunConfig.model_validate(payload["run_config"])
        policy_cfg = PolicyConfig.model_validate(payload["policy_config"])
    except ValueError as e:
        raise CheckpointError(f"checkpoint {path} has an invalid description: {e}") from e
    if expect_contract is not None:
        stored.require_match(expect_contract, context=f"checkpoint {path}", ignore=("horizon", "act_steps"))
    spec = payload["normalizer"]
    normalizer = Normalizer(spec["obs_stats"], spec["action_stats"], spec["obs_mode"])
    obs_shapes = {k: tuple(int(d) for d in v) for k, v in payload["obs_shapes"].items()}
    policy = build_policy(policy_cfg, normalizer, obs_shapes, int(payload["action_dim"]))
    weights: Literal["ema", "raw"] = "ema" if use_ema and payload.get("ema_state_dict") is not None else "raw"
    state_dict = payload["ema_state_dict" if weights == "ema" else "state_dict"]
    stored_digest = payload.get("weights_sha256", {}).get(weights)
    digest = state_dict_sha256(state_dict)
    if stored_digest is not None and stored_digest != digest:
        raise CheckpointError(f"checkpoint {path}: the {weights} weights do not match their stored sha256 (corrupt)")
    try:
        policy.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise CheckpointError(
            f"checkpoint {path}: weights do not fit the {policy_cfg.kind} policy it describes: {e}"
        ) from e
    policy.to(map_location).eval()
    return LoadedCheckpoint(
        policy=policy,
        contract=stored,
        run_cfg=run_cfg,
        step=int(payload["step"]),
        weights=weights,
        path=path,
        weights_sha256=digest,
        extra=dict(payload.get("extra", {})),
    )


def set_acting(policy: Policy, settings: dict[str, Any]) -> None:
    """Change how a loaded policy acts: `settings` maps `ACTING_SETTINGS` paths (without `policy.`) to values, applied
    to the policy and the policies it wraps (an IDQL or residual policy's diffusion base) where they have the section.
    Raises `CheckpointError` for another path, for a setting this policy does not have, or for an invalid value."""
    from inril_robot.config import apply_override

    for path in settings:
        if path not in ACTING_SETTINGS:
            raise CheckpointError(
                f"policy.{path} is fixed by the checkpoint; only {', '.join('policy.' + a for a in ACTING_SETTINGS)} "
                "change how it acts"
            )
    applied = set()
    for module in policy.modules():
        if not isinstance(module, Policy):
            continue
        data = module.cfg.model_dump(mode="json")
        mine = {p: v for p, v in settings.items() if isinstance(data.get(p.split(".")[0]), dict)}
        for path, value in mine.items():
            apply_override(data, path.split("."), value)
        try:
            module.cfg = PolicyConfig.model_validate(data)
        except ValidationError as e:
            why = "; ".join(f"policy.{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
            raise CheckpointError(f"invalid acting setting: {why}") from e
        applied.update(mine)
    missing = sorted(set(settings) - applied)
    if missing:
        raise CheckpointError(f"this {policy.cfg.kind} policy has no {', '.join('policy.' + m for m in missing)}")
