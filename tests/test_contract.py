"""Tests for inril_robot.core.contract: comparing contracts and checking values against one."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from inril_robot.core.contract import SCHEMA_VERSION, Contract, ContractMismatch, ObsSpec, image_key


def make_contract(**kwargs: object) -> Contract:
    observations = {
        "ee_pos": ObsSpec(shape=(3,), dtype="float32"),
        "ee_quat": ObsSpec(shape=(4,), dtype="float32"),
        "front_rgb": ObsSpec(shape=(64, 96, 3), dtype="uint8"),
    }
    fields: dict[str, object] = {"control_hz": 10.0, "observations": observations, "cameras": {"front": (64, 96)}}
    fields.update(kwargs)
    return Contract(**fields)  # type: ignore[arg-type]


def good_obs() -> dict[str, np.ndarray]:
    return {
        "ee_pos": np.zeros(3, np.float32),
        "ee_quat": np.array([0, 0, 0, 1], np.float32),
        "front_rgb": np.zeros((64, 96, 3), np.uint8),
    }


def mismatch(a: Contract, b: Contract, **kwargs: object) -> ContractMismatch:
    with pytest.raises(ContractMismatch) as exc:
        a.require_match(b, **kwargs)  # type: ignore[arg-type]
    return exc.value


# ---------------------------------------------------------------------------------------------------- matching
def test_identical_contracts_match() -> None:
    a, b = make_contract(), make_contract()
    assert a == b
    assert a.mismatches(b) == []
    a.require_match(b)
    Contract().require_match(Contract())


def test_control_hz_mismatch_names_field() -> None:
    err = mismatch(make_contract(), make_contract(control_hz=20.0), context="checkpoint")
    assert err.field == "control_hz"
    assert err.expected == 10.0 and err.got == 20.0
    assert "control_hz" in str(err)
    assert "checkpoint" in str(err)
    assert isinstance(err, ValueError)


def test_every_difference_is_listed() -> None:
    other = make_contract(control_hz=20.0, horizon=8)
    diffs = make_contract().mismatches(other)
    assert [d[0] for d in diffs] == ["control_hz", "horizon"]
    err = mismatch(make_contract(), other)
    assert err.field == "control_hz"
    assert "horizon" in str(err)


def test_missing_observation_key() -> None:
    ours = make_contract()
    obs = dict(ours.observations)
    del obs["ee_quat"]
    err = mismatch(ours, make_contract(observations=obs))
    assert err.field == "observations.ee_quat"
    assert err.got == "absent"
    assert "observations.ee_quat" in str(err)
    # and the other way round
    err = mismatch(make_contract(observations=obs), ours)
    assert err.field == "observations.ee_quat" and err.expected == "absent"


def test_observation_shape_mismatch() -> None:
    obs = dict(make_contract().observations)
    obs["front_rgb"] = ObsSpec(shape=(128, 128, 3), dtype="uint8")
    err = mismatch(make_contract(), make_contract(observations=obs, cameras={"front": (64, 96)}))
    assert err.field == "observations.front_rgb.shape"
    assert err.expected == (64, 96, 3) and err.got == (128, 128, 3)
    assert "observations.front_rgb.shape" in str(err)


def test_observation_dtype_mismatch() -> None:
    obs = dict(make_contract().observations)
    obs["ee_pos"] = ObsSpec(shape=(3,), dtype="float64")
    err = mismatch(make_contract(), make_contract(observations=obs))
    assert err.field == "observations.ee_pos.dtype"
    assert (err.expected, err.got) == ("float32", "float64")
    assert "observations.ee_pos.dtype" in str(err)


def test_shape_and_dtype_both_reported() -> None:
    obs = dict(make_contract().observations)
    obs["ee_pos"] = ObsSpec(shape=(6,), dtype="float64")
    fields = [d[0] for d in make_contract().mismatches(make_contract(observations=obs))]
    assert fields == ["observations.ee_pos.shape", "observations.ee_pos.dtype"]


def test_ignore() -> None:
    a, b = make_contract(), make_contract(control_hz=20.0)
    a.require_match(b, ignore=("control_hz",))
    assert a.mismatches(b, ignore=("control_hz",)) == []
    c = make_contract(control_hz=20.0, horizon=4)
    err = mismatch(a, c, ignore=("control_hz",))
    assert err.field == "horizon"
    obs = dict(a.observations)
    del obs["front_rgb"]
    a.require_match(make_contract(observations=obs), ignore=("observations",))


# ------------------------------------------------------------------------------------------------ value checks
def test_check_observation_accepts_good_obs() -> None:
    obs = good_obs()
    obs["extra_key"] = np.zeros(2)  # extra keys are allowed
    make_contract().check_observation(obs)


def test_check_observation_missing_key() -> None:
    obs = good_obs()
    del obs["front_rgb"]
    with pytest.raises(ContractMismatch) as exc:
        make_contract().check_observation(obs)
    assert exc.value.field == "observations.front_rgb"
    assert exc.value.got == "missing"


def test_check_observation_wrong_shape() -> None:
    obs = good_obs()
    obs["front_rgb"] = np.zeros((96, 64, 3), np.uint8)
    with pytest.raises(ContractMismatch) as exc:
        make_contract().check_observation(obs)
    assert exc.value.field == "observations.front_rgb.shape"
    assert exc.value.got == (96, 64, 3)


def test_check_observation_wrong_dtype() -> None:
    obs = good_obs()
    obs["ee_pos"] = np.zeros(3, np.float64)
    with pytest.raises(ContractMismatch) as exc:
        make_contract().check_observation(obs)
    assert exc.value.field == "observations.ee_pos.dtype"
    assert exc.value.got == "float64"
    obs = good_obs()
    obs["front_rgb"] = np.zeros((64, 96, 3), np.float32)
    with pytest.raises(ContractMismatch, match=r"observations\.front_rgb\.dtype"):
        make_contract().check_observation(obs)


def test_check_action() -> None:
    c = make_contract()
    out = c.check_action([0.01, 0, 0, 0, 0, 0, 1])
    assert out.dtype == np.float64 and out.shape == (7,)
    for bad in (np.zeros(6), np.zeros(8), np.zeros((1, 7)), 0.0):
        with pytest.raises(ContractMismatch) as exc:
            c.check_action(bad)
        assert exc.value.field == "action_dim"
        assert "action_dim" in str(exc.value)


# -------------------------------------------------------------------------------------------------- round trip
def test_json_round_trip() -> None:
    c = make_contract(horizon=8, act_steps=4)
    text = json.dumps(c.to_json_dict())
    back = Contract.from_json_dict(json.loads(text))
    assert back == c
    back.require_match(c)
    assert back.observations["front_rgb"].shape == (64, 96, 3)
    assert back.cameras["front"] == (64, 96)


def test_from_json_dict_wrong_schema_version() -> None:
    data = make_contract().to_json_dict()
    data["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(ContractMismatch) as exc:
        Contract.from_json_dict(data)
    assert exc.value.field == "schema_version"
    assert "schema_version" in str(exc.value)


def test_contract_is_frozen_and_strict() -> None:
    c = make_contract()
    with pytest.raises(ValidationError):
        c.control_hz = 5.0  # type: ignore[misc]
    with pytest.raises(ValidationError):
        Contract(unknown_field=1)  # type: ignore[call-arg]


def test_image_key() -> None:
    assert image_key("front") == "front_rgb"
