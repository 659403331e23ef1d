"""``--no-preflight``: skip the check of the host's ``/status`` before a ``--remote`` run.

The test server lists its model as WARM (fault ``deployment_level``) while still running
requests, as when ``/status`` disagrees with what a host serves. What would make these fail:
preflight not consulted (the refused run would be sent), the flag not reaching the executor
(the run would be refused), the skip being silent, the ``/env`` Python check skipped with it,
or a command that lacks the option.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hubclient.errors import HubError
from hubclient.runner import RunConfig, run_analysis

sys.path.insert(0, str(Path(__file__).parent))
from test_remote import PROMPTS, _hub, assert_same_tables, client, lens, local_run, remote_config  # noqa: E402,F401  (fixtures; server: conftest)


def test_warm_model_is_refused_before_sending_and_no_preflight_sends_it(tiny_dir, server, tmp_path, local_run, capsys):  # noqa: F811
    server.set_faults(deployment_level="WARM")
    before = len(server.jobs())
    with pytest.raises(HubError, match=r"is not served by NDIF at .* \(it is WARM/not running there.*--no-preflight") as err:
        run_analysis(lens(), PROMPTS, remote_config(tiny_dir, server, tmp_path, name="refused"))
    assert "models running there: none" in str(err.value)
    assert len(server.jobs()) == before and not (tmp_path / "refused").exists()  # nothing sent, nothing written

    capsys.readouterr()
    run = run_analysis(lens(), PROMPTS, remote_config(tiny_dir, server, tmp_path, name="sent", preflight=False))
    err_text = capsys.readouterr().err
    assert err_text.count("preflight skipped (--no-preflight)") == 1 and str(tiny_dir("llama")) in err_text
    assert len(server.jobs()) == before + 2  # two batches of 2 prompts were sent
    assert_same_tables(run, local_run)


def test_no_preflight_still_checks_the_python_version(tiny_dir, server, tmp_path):  # noqa: F811
    """NDIF refuses another Python anyway (HTTP 400): /env is still read with --no-preflight."""
    server.set_faults(deployment_level="COLD", python_version="3.1")
    before = len(server.jobs())
    with pytest.raises(HubError, match=r"runs Python 3\.1 and refuses requests from Python"):
        run_analysis(lens(), PROMPTS, remote_config(tiny_dir, server, tmp_path, name="py", preflight=False))
    assert len(server.jobs()) == before and not (tmp_path / "py").exists()


def test_no_preflight_through_the_cli(tiny_dir, server, tmp_path):  # noqa: F811
    server.set_faults(deployment_level="WARM")
    args = ["analyze", "logit-lens", "--model", str(tiny_dir("llama")), "-p", PROMPTS[0], "--top-k", "3",
            "--out", str(tmp_path), "--no-progress", "--no-plots", "--remote", "--ndif-host", server.url]
    refused = _hub(*args, "--name", "a")
    assert refused.returncode == 2 and "WARM" in refused.stderr and "--no-preflight" in refused.stderr, refused.stderr
    sent = _hub(*args, "--name", "b", "--no-preflight")
    assert sent.returncode == 0, sent.stderr
    assert sent.stderr.count("preflight skipped (--no-preflight)") == 1
    assert (tmp_path / "b" / "logit_lens.parquet").is_file()
    local = _hub(*args[:-3], "--name", "c", "--no-preflight")
    assert local.returncode == 2 and "--no-preflight skips the check of NDIF's /status" in local.stderr


def test_every_remote_command_takes_no_preflight():
    """Every `hub analyze …` and `hub intervene …` command (all take --remote) lists the option."""
    from typer.testing import CliRunner

    from hubclient.cli import app

    runner = CliRunner()
    groups = {}
    for group in ("analyze", "intervene"):
        listing = runner.invoke(app, [group, "--help"], env={"COLUMNS": "200"}).output
        groups[group] = [line.split("│")[1].split()[0] for line in listing.splitlines()
                         if line.startswith("│ ") and line.split("│")[1].strip() and not line.split("│")[1].strip().startswith("-")
                         and line.split("│")[1][1] != " "]
    assert {"logit-lens", "similarity", "arithmetic-lens", "media-lens", "code-lens"} <= set(groups["analyze"])
    assert {"patch", "steer", "arithmetic", "ablate"} <= set(groups["intervene"])
    for group, commands in groups.items():
        for name in commands:
            text = runner.invoke(app, [group, name, "--help"], env={"COLUMNS": "240"}).output
            assert "--remote" in text and "--no-preflight" in text, (group, name)


def test_config_default_is_preflight():
    assert RunConfig().preflight is True
