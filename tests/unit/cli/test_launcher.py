"""Which serve_config.yaml ``lineguard serve`` and ``lineguard demo`` use, and the copy they hand to ``serve run``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from lineguard.cli import launcher
from lineguard.errors import ConfigError


def test_the_working_folders_config_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "serve_config.yaml").write_text(launcher.CHECKOUT_CONFIG.read_text())
    monkeypatch.chdir(tmp_path)
    assert launcher.config_path() == Path("serve_config.yaml")


def test_from_any_other_folder_the_checkouts_config_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert launcher.config_path() == launcher.CHECKOUT_CONFIG
    with launcher.prepared_config(launcher.config_path(), store=str(tmp_path / "store"), port=8123) as copy:
        data = yaml.safe_load(copy.read_text())
        assert data["http_options"]["port"] == 8123
        assert data["applications"][0]["args"]["store"] == str(tmp_path / "store")
    assert not copy.parent.exists()


def test_a_missing_config_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pass --config"):
        launcher.config_path(tmp_path / "nope.yaml")


def test_haproxys_admin_socket_lives_where_only_this_user_can_reach_it(tmp_path: Path) -> None:
    env = launcher.serve_environment()
    socket = Path(env["RAY_SERVE_HAPROXY_SOCKET_PATH"])
    folder = socket.parent
    assert folder.stat().st_mode & 0o777 == 0o700 and folder.stat().st_uid == os.getuid()
    assert all(Path(env[key]).is_relative_to(folder) for key in launcher.HAPROXY_FILES)
    assert len(str(socket)) < 100  # a Unix socket's path has at most 107 bytes


def test_a_private_folder_someone_else_planted_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    planted = Path("/tmp") / f"lg-test-planted-{os.getpid()}"
    planted.symlink_to(target)
    try:
        with pytest.raises(ConfigError, match="someone else or is a link"):
            launcher.private_folder(planted.name)
    finally:
        planted.unlink()


def test_serves_proxy_must_not_give_up_before_the_ingress_answers(tmp_path: Path) -> None:
    data = yaml.safe_load(launcher.CHECKOUT_CONFIG.read_text())
    data["http_options"]["request_timeout_s"] = 40  # under 30 s of scoring + 20 s of body
    config = tmp_path / "serve_config.yaml"
    config.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"http_options\.request_timeout_s"), launcher.prepared_config(config):
        pass


def test_the_history_url_can_come_from_the_command_line(tmp_path: Path) -> None:
    with launcher.prepared_config(launcher.CHECKOUT_CONFIG, history_url="env:LINEGUARD_HISTORY_URL") as copy:
        history = yaml.safe_load(copy.read_text())["applications"][0]["args"]["history"]
    assert history["url"] == "env:LINEGUARD_HISTORY_URL" and history["batch_rows"] == 2000  # the rest kept
