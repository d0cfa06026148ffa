"""``adae-stream decide`` refusing what it cannot do, in one line from the real process (exit status 2)."""

from __future__ import annotations

from adae_stream.decisions.service import hold_lock
from adae_stream.stream.broker import free_port
from tests.process_helpers import cli


def config(tmp_path, body: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(body)
    return str(path)


def refusal(tmp_path, body: str) -> str:
    out = cli(f"decide --once --config {config(tmp_path, body)}", timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    return out.stderr.strip().splitlines()[-1]


def test_decide_needs_a_broker_of_its_own_a_repository_and_labels(tmp_path):
    unused = f"127.0.0.1:{free_port()}"
    assert "'embedded' is the demo's own" in refusal(tmp_path, "kafka: {bootstrap_servers: embedded}\n")
    no_repo = f"kafka: {{bootstrap_servers: '{unused}', feedback_topic: fb}}\n"
    assert "config key 'detector.repository'" in refusal(tmp_path, no_repo)
    (tmp_path / "repo").mkdir()
    repo = f"detector: {{path: null, repository: '{tmp_path / 'repo'}'}}\n"
    no_labels = f"kafka: {{bootstrap_servers: '{unused}'}}\nmonitoring: {{enabled: false}}\n"
    assert "decisions need labels" in refusal(tmp_path, no_labels + repo)


def test_a_second_decision_maker_for_the_same_repository_is_refused(tmp_path):
    (tmp_path / "repo").mkdir()
    body = (
        f"kafka: {{bootstrap_servers: '127.0.0.1:{free_port()}', feedback_topic: fb}}\n"
        f"detector: {{path: null, repository: '{tmp_path / 'repo'}'}}\n"
    )
    held = hold_lock(tmp_path / "repo")  # the first one
    try:
        assert "another decision-maker already runs" in refusal(tmp_path, body)
    finally:
        held.close()
