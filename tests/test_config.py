"""Tests for inril_robot.config: presets, overrides, files, and the error messages a user sees."""

from __future__ import annotations

from pathlib import Path

import pytest

from inril_robot.config import RunConfig, list_presets, load_config, parse_override, preset_path
from inril_robot.core.errors import ConfigError
from inril_robot.core.models import describe_allowed

PRESET_ARG = {"robots": "robot", "cameras": "cameras", "tasks": "task"}


def _error(**kwargs: object) -> str:
    with pytest.raises(ConfigError) as exc:
        load_config(**kwargs)  # type: ignore[arg-type]
    return str(exc.value)


# ------------------------------------------------------------------------------------------------------ presets
def test_list_presets_finds_the_shipped_presets() -> None:
    assert {"sim", "franka"} <= set(list_presets("robots"))
    assert {"none", "sim_front", "sim_front_wrist"} <= set(list_presets("cameras"))
    assert {"reach", "lift", "push", "peg"} <= set(list_presets("tasks"))
    assert list_presets("robots") == sorted(list_presets("robots"))


@pytest.mark.parametrize(("kind", "name"), [(kind, name) for kind in PRESET_ARG for name in list_presets(kind)])
def test_every_preset_validates(kind: str, name: str) -> None:
    cfg = load_config(**{PRESET_ARG[kind]: name})
    assert isinstance(cfg, RunConfig)
    if kind == "robots" and name in {"sim", "franka"}:
        assert cfg.robot.kind == name
    if kind == "tasks":
        assert cfg.task.name == name


def test_sim_with_each_task_and_camera_preset_validates() -> None:
    for task in list_presets("tasks"):
        for cameras in list_presets("cameras"):
            cfg = load_config(robot="sim", task=task, cameras=cameras)
            assert cfg.task.name == task
            assert all(c.kind == "sim" for c in cfg.cameras)


def test_defaults_without_presets() -> None:
    cfg = load_config()
    assert cfg == RunConfig()
    assert cfg.cameras == []


def test_unknown_preset_lists_available() -> None:
    with pytest.raises(ConfigError) as exc:
        preset_path("tasks", "stack")
    msg = str(exc.value)
    assert "'stack'" in msg and "lift" in msg and "peg" in msg
    with pytest.raises(ConfigError, match="unknown preset kind"):
        preset_path("grippers", "x")
    with pytest.raises(ConfigError, match="stack"):
        load_config(task="stack")


# ---------------------------------------------------------------------------------------------------- overrides
def test_override_applies() -> None:
    cfg = load_config(robot="sim", task="lift", overrides=["safety.max_step=0.01"])
    assert cfg.safety.max_step == pytest.approx(0.01)
    assert load_config(robot="sim", task="lift").safety.max_step == pytest.approx(0.02)


def test_override_parses_yaml_values() -> None:
    cfg = load_config(
        robot="sim",
        overrides=["safety.workspace_min=[0.3, -0.3, 0.05]", "robot.sim.shadows=true", "task.max_steps=7", "seed=3"],
    )
    assert cfg.safety.workspace_min == (0.3, -0.3, 0.05)
    assert cfg.robot.sim.shadows is True
    assert cfg.task.max_steps == 7
    assert cfg.seed == 3


def test_later_override_wins() -> None:
    cfg = load_config(overrides=["task.max_steps=5", "task.max_steps=9"])
    assert cfg.task.max_steps == 9


def test_out_of_range_value_names_field_and_range() -> None:
    msg = _error(robot="sim", task="lift", overrides=["safety.max_step=0.5"])
    assert "safety.max_step" in msg
    assert "0.05" in msg
    assert "0.5" in msg  # what was given


def test_unknown_key_names_it_and_lists_known_ones() -> None:
    msg = _error(robot="sim", overrides=["safety.max_stp=1"])
    assert "safety.max_stp" in msg
    for known in ("max_step", "max_rot_step", "workspace_min", "workspace_max"):
        assert known in msg


def test_unknown_top_level_key() -> None:
    msg = _error(overrides=["robott.kind=sim"])
    assert "robott" in msg
    for known in ("robot", "cameras", "task", "safety"):
        assert known in msg


def test_wrong_type_names_field() -> None:
    msg = _error(robot="sim", overrides=["robot.control_hz=fast"])
    assert "robot.control_hz" in msg
    assert "fast" in msg


def test_literal_lists_choices() -> None:
    msg = _error(robot="sim", overrides=["robot.kind=ur5"])
    assert "robot.kind" in msg
    assert "'sim'" in msg and "'franka'" in msg
    assert "one of" in msg


def test_literal_in_camera_list_lists_choices() -> None:
    msg = _error(robot="sim", cameras="sim_front", overrides=["cameras.front.mount=ceiling"])
    assert "cameras.0.mount" in msg
    assert "'world'" in msg and "'wrist'" in msg


def test_describe_allowed() -> None:
    assert describe_allowed(RunConfig, ("robot", "kind")) == "one of 'sim', 'franka'"
    assert describe_allowed(RunConfig, ("task", "name")) == "one of 'reach', 'lift', 'push', 'peg'"
    assert describe_allowed(RunConfig, ("cameras", 0, "mount")) == "one of 'world', 'wrist'"
    assert describe_allowed(RunConfig, ("safety", "max_step")).startswith("0.0 < x <= 0.05")
    assert describe_allowed(RunConfig, ("seed",)) == "0 <= x"
    assert describe_allowed(RunConfig, ("no_such_field",)) == ""


@pytest.mark.parametrize("text", ["safety.max_step", "=0.01", "safety..max_step=1", ".max_step=1", "  =3"])
def test_malformed_override(text: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(overrides=[text])
    assert "dotted.key=value" in str(exc.value)
    assert text in str(exc.value)


def test_parse_override() -> None:
    assert parse_override("safety.max_step=0.01") == (["safety", "max_step"], 0.01)
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    assert parse_override("a=") == (["a"], "")
    assert parse_override("a=x=y") == (["a"], "x=y")


def test_override_into_a_value_is_rejected() -> None:
    with pytest.raises(ConfigError, match="not a section"):
        load_config(overrides=["seed=1", "seed.x=2"])


# ----------------------------------------------------------------------------------------------------- files
def test_config_file_merges_over_presets(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("task:\n  max_steps: 7\nsafety:\n  max_step: 0.01\nseed: 4\n")
    cfg = load_config(robot="sim", task="peg", config_file=path)
    assert cfg.task.max_steps == 7  # from the file
    assert cfg.task.name == "peg"  # the task preset's other keys survive the merge
    assert cfg.task.object_range == pytest.approx(0.05)
    assert cfg.safety.max_step == pytest.approx(0.01)
    assert cfg.safety.max_rot_step == pytest.approx(0.1)
    assert cfg.seed == 4
    # overrides come last
    cfg = load_config(robot="sim", task="peg", config_file=path, overrides=["task.max_steps=9"])
    assert cfg.task.max_steps == 9


def test_empty_config_file_is_no_op(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(robot="sim", task="lift", config_file=path) == load_config(robot="sim", task="lift")


def test_malformed_yaml_file_names_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("task: {name: lift\nsafety: [\n")
    msg = _error(robot="sim", config_file=path)
    assert str(path) in msg
    assert "YAML" in msg


def test_non_mapping_yaml_file_names_file(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    msg = _error(robot="sim", config_file=path)
    assert str(path) in msg
    assert "mapping" in msg


def test_missing_config_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    msg = _error(config_file=path)
    assert str(path) in msg


def test_invalid_value_in_config_file_names_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("robot:\n  sim:\n    timestep: 0.5\n")
    msg = _error(robot="sim", config_file=path)
    assert "robot.sim.timestep" in msg and "0.01" in msg


# --------------------------------------------------------------------------------------------------- cameras
def test_camera_override_by_name() -> None:
    cfg = load_config(robot="sim", cameras="sim_front", overrides=["cameras.front.width=64"])
    assert len(cfg.cameras) == 1
    assert cfg.cameras[0].name == "front"
    assert cfg.cameras[0].width == 64
    assert cfg.cameras[0].height == 128


def test_camera_override_by_index_and_second_camera() -> None:
    cfg = load_config(robot="sim", cameras="sim_front_wrist", overrides=["cameras.1.height=32", "cameras.0.fps=15"])
    assert cfg.cameras[1].name == "wrist" and cfg.cameras[1].height == 32
    assert cfg.cameras[0].fps == 15


def test_camera_override_unknown_name() -> None:
    msg = _error(robot="sim", cameras="sim_front", overrides=["cameras.side.width=64"])
    assert "'side'" in msg and "cameras" in msg


def test_camera_width_out_of_range() -> None:
    msg = _error(robot="sim", cameras="sim_front", overrides=["cameras.front.width=8"])
    assert "cameras.0.width" in msg and "16" in msg


def test_duplicate_camera_names_rejected() -> None:
    msg = _error(robot="sim", cameras="sim_front_wrist", overrides=["cameras.wrist.name=front"])
    assert "unique" in msg
    assert "front" in msg


def test_duplicate_camera_names_in_file(tmp_path: Path) -> None:
    path = tmp_path / "cams.yaml"
    path.write_text("cameras:\n  - {name: top}\n  - {name: top, mount: wrist}\n")
    msg = _error(config_file=path)
    assert "unique" in msg and "top" in msg


# -------------------------------------------------------------------------------------------------- workspace
@pytest.mark.parametrize(
    "override",
    [
        "safety.workspace_min=[0.8, -0.35, 0.02]",  # x: min above max
        "safety.workspace_min=[0.25, 0.35, 0.02]",  # y: min equal to max
        "safety.workspace_max=[0.75, 0.35, 0.0]",  # z: max below min
    ],
)
def test_workspace_min_must_be_below_max(override: str) -> None:
    msg = _error(robot="sim", overrides=[override])
    assert "workspace" in msg
    assert "safety" in msg


def test_franka_preset_is_tighter_than_sim() -> None:
    franka, sim = load_config(robot="franka"), load_config(robot="sim")
    assert franka.robot.kind == "franka"
    assert franka.safety.max_step <= sim.safety.max_step
    assert franka.safety.max_contact_force <= sim.safety.max_contact_force


def test_yaml_aliases_are_refused_before_they_expand(tmp_path: Path) -> None:
    """A 'billion laughs' file of about a kilobyte: refused at its first alias, not expanded for half a minute."""
    import time

    from inril_robot.config import read_yaml
    from inril_robot.core.errors import ConfigError

    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        lines.append(f"{chr(97 + i)}: &{chr(97 + i)} [{','.join([f'*{chr(96 + i)}'] * 9)}]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"aliases \(\*a\) are not allowed"):
        read_yaml(bomb)
    assert time.perf_counter() - started < 1.0
