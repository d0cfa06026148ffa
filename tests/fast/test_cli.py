"""The command line in-process (fast): every subcommand's help, and start-up errors as one line."""

from __future__ import annotations

import inspect

import pytest

from adae_stream import errors
from adae_stream.cli import SUBCOMMANDS, build_parser, main


def subcommand_names() -> list[str]:
    return sorted(build_parser()._subparsers._group_actions[0].choices)


def test_each_subcommand_module_registers_exactly_its_own_name():
    assert subcommand_names() == sorted(module.__name__.rsplit(".", 1)[1] for module in SUBCOMMANDS)


@pytest.mark.parametrize("name", ["run", "train", "repository", "acls", "produce", "tail", "demo"])
def test_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: adae-stream {name}")


def test_run_reports_a_config_error_in_one_line(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text("kafka:\n  partitons: 3\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--config", str(config)])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("adae-stream: config key 'kafka.partitons' is unknown")


def test_run_reports_a_missing_detector_in_one_line(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(f"detector:\n  path: {tmp_path / 'none'}\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--config", str(config)])
    assert exit_info.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("adae-stream: ") and "detector.json is missing" in line


def test_every_exception_is_a_project_error_and_the_start_up_ones_are_named():
    classes = [obj for _, obj in inspect.getmembers(errors, inspect.isclass) if issubclass(obj, BaseException)]
    assert len(classes) >= 9 and all(issubclass(cls, errors.AdaeError) for cls in classes)
    assert {cls.__name__ for cls in errors.STARTUP_ERRORS} == {
        "ConfigError",
        "BrokerError",
        "DetectorLoadError",
        "ThresholdNotSetError",
    }
    with pytest.raises(ValueError, match="unknown DecodeError label"):
        errors.DecodeError("no_such_reason", "x")
    exc = errors.NotARequest("json_response", "an answer")
    assert (exc.kind, exc.message, str(exc)) == ("json_response", "an answer", "json_response: an answer")


def test_acls_prints_the_least_privileges_of_the_config(tmp_path, capsys, monkeypatch):
    config = tmp_path / "config.yaml"
    config.write_text("delivery: exactly_once\nkafka:\n  create_topics: false\n  transactional_id: adae-0\n")
    monkeypatch.delenv("ADAE_KAFKA__CREATE_TOPICS", raising=False)
    assert main(["acls", "--config", str(config), "--principal", "User:svc"]) == 0
    commands = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    assert all(
        c.startswith("kafka-acls.sh --bootstrap-server $BOOTSTRAP --add --allow-principal 'User:svc'") for c in commands
    )
    assert "--operation Read --topic 'adae-requests'" in "\n".join(commands)
    assert "--operation Read --group 'adae-stream'" in "\n".join(commands)
    assert "--operation DescribeConfigs --topic 'adae-predictions'" in "\n".join(commands)
    assert "--operation IdempotentWrite --cluster" in "\n".join(commands)
    assert "--operation Write --transactional-id 'adae-0' --resource-pattern-type literal" in "\n".join(commands)
    assert not any("--operation Create" in c for c in commands)  # create_topics: false
