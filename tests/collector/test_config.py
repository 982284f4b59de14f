"""Session configs: the shipped examples load; bad files are refused with every field named."""

import pathlib

import pytest

from collector.config import ConfigError, load_session_config, parse_session_config

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", ["sim_reach_joint.yaml", "sim_cube_tip.yaml"])
def test_shipped_simulation_configs_load(name):
    config = load_session_config(CONFIGS / name)
    assert config.simulated and not config.resolved_realtime


def test_episode_length_defaults_follow_the_action_space():
    assert parse_session_config({}).resolved_episode_steps == 1000  # seed 001
    assert parse_session_config({"action_space": "tip_delta"}).resolved_episode_steps == 200  # seed 003


@pytest.mark.parametrize("name", ["hardware_panda.yaml", "hardware_fr3.yaml"])
def test_hardware_examples_are_accepted_as_bridge_sessions(name):
    config = load_session_config(CONFIGS / name)
    assert config.robot.backend == "bridge" and not config.simulated and config.resolved_realtime


def test_every_bad_field_is_named():
    with pytest.raises(ConfigError) as info:
        parse_session_config(
            {
                "episode_stpes": 3,
                "control_rate_hz": 0,
                "stop": {"episodes": -1},
                "robot": {"backend": "pybullet", "options": {"cameras": [{"name": "wrist"}]}},
                "explorer": {"name": "gep", "parameters": {"bootstrap": 1}},
            }
        )
    message = str(info.value)
    for field in (
        "episode_stpes",
        "control_rate_hz",
        "stop.episodes",
        "robot.options.cameras.0.name",
        "explorer.parameters.bootstrap",
    ):
        assert field in message


def test_stop_transitions_is_refused_with_its_new_name_and_stop_steps_counts_recorded_steps():
    given = {"stop": {"transitions": 100, "episodes": 2}}
    with pytest.raises(ConfigError) as info:
        parse_session_config(given, source="old.yaml")
    assert str(info.value) == "old.yaml: stop.transitions: renamed to stop.steps (it counts recorded control steps)"
    assert given == {"stop": {"transitions": 100, "episodes": 2}}  # the caller's mapping is left alone
    assert parse_session_config({"stop": {"steps": 100}}).stop.steps == 100


def test_backend_and_explorer_options_are_checked_before_starting():
    with pytest.raises(ConfigError, match=r"robot\.options\.cameras\.0\.width"):
        parse_session_config({"robot": {"backend": "pybullet", "options": {"cameras": [{"width": -1}]}}})
    with pytest.raises(ConfigError, match=r"explorer\.parameters\.weight_scal"):
        parse_session_config({"explorer": {"name": "random_linear", "parameters": {"weight_scal": 2}}})
    with pytest.raises(ConfigError, match=r"explorer\.name"):
        parse_session_config({"explorer": {"name": "curiosity"}})


def test_session_fields_cannot_be_overridden_in_backend_options():
    with pytest.raises(ConfigError, match=r"robot\.options"):
        parse_session_config({"robot": {"backend": "pybullet", "options": {"control_rate_hz": 100}}})


def test_unreadable_file_and_bad_yaml_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_session_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("robot: [unclosed")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_session_config(bad)


def test_every_example_config_is_accepted():
    """configs/: session configs by the collector, bridge_*.yaml by the bridge server."""
    from robot_drivers.bridge.config import load_bridge_config

    for path in sorted(CONFIGS.glob("*.yaml")):
        if path.name.startswith("bridge_"):
            load_bridge_config(path)
        else:
            load_session_config(path)
