"""``--revision`` on every command (``RunConfig.revision``): passed to the local and the remote
loader, refused for local folders, compared when a run is resumed; neurons keeps its repeatable
``--revision`` (``analysis_command(multi_model=True)`` hands it over as ``revisions``)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from hubclient.cli import app
from hubclient.errors import HubError
from hubclient.runner import RunConfig, run_analysis

from test_neurons import _files


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("command", [
    ["analyze", "logit-lens", "-p", "the cat sat"],
    ["analyze", "similarity", "--n", 3],
])
def test_revision_with_a_local_folder_is_one_line(command, tiny_dir, tmp_path):
    """--revision with a local model folder: exit 2, one ``error:`` line naming the fix, no run."""
    if command[1] == "similarity":
        command = [*command, *_files(tmp_path)]
    out = tmp_path / "out"
    result = _cli(*command, "--model", tiny_dir("llama"), "--revision", "global_step1", "--out", out, "--no-progress")
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "pass each local checkpoint folder as --model" in errors[0], result.output
    assert not out.exists() or not any(out.iterdir())


def test_local_executor_passes_the_revision(monkeypatch):
    """RunConfig.revision reaches hubclient.models.load_model(revision=)."""
    from hubclient.exec.local import LocalExecutor
    from hubclient.models import loading

    seen = {}

    def fake(name, device="auto", dtype="auto", revision=None, **kwargs):
        seen.update(name=name, revision=revision)
        return "model"

    monkeypatch.setattr(loading, "load_model", fake)
    config = RunConfig(model="org/m", revision="global_step5")
    assert LocalExecutor(config).load_model(config) == "model"
    assert seen == {"name": "org/m", "revision": "global_step5"}


def test_remote_model_reads_config_and_tokenizer_at_the_revision(monkeypatch, tiny_dir):
    """load_remote_model: the revision goes to AutoConfig.from_pretrained; a local folder with a
    revision is refused."""
    import transformers

    from hubclient.models.remote import load_remote_model

    seen = []

    def fake(path, *args, **kwargs):
        seen.append(kwargs.get("revision"))
        raise OSError("offline")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", fake)
    with pytest.raises(HubError):
        load_remote_model("org/m", revision="global_step7")
    assert seen == ["global_step7"]
    with pytest.raises(HubError, match="pass each local checkpoint folder as --model"):
        load_remote_model(str(tiny_dir("llama")), revision="main")


def test_remote_model_key_carries_the_revision(tiny_dir):
    """nnsight's model key of a remote model names the revision it was built with."""
    import json

    from nnsight.modeling import huggingface

    from hubclient.exec.remote.config import model_key
    from hubclient.models.remote import load_remote_model

    model = load_remote_model(str(tiny_dir("llama")))
    model.lm.revision = "global_step9"  # what load_remote_model sets for a repo id with --revision
    huggingface._ID_CACHE[model.lm.repo_id] = model.lm.repo_id
    assert json.loads(model_key(model).split(":", 1)[1])["revision"] == "global_step9"


def test_resume_with_another_revision_is_refused(tiny_hub_model, tmp_path):
    """check_resumed_model compares the manifest's revision with the loaded model's."""
    from analyses.logit_lens import LensOptions, LogitLens
    from hubclient.run.folder import RunDir
    from hubclient.run.lifecycle import check_resumed_model

    model = tiny_hub_model("llama")
    run = run_analysis(LogitLens(LensOptions()), ["the cat sat"], RunConfig(out=tmp_path, name="r", progress=False, plots=False), model=model)
    folder = RunDir.open(run.path)
    folder.update_manifest(model={**folder.manifest["model"], "revision": "global_step1"})

    class Other:
        def describe(self):
            return {**model.describe(), "revision": "global_step2"}

    with pytest.raises(HubError, match="revision 'global_step1'.*'global_step2'.*--revision"):
        check_resumed_model(RunDir.open(run.path), Other())
    same = {**model.describe(), "revision": "global_step1"}

    class Same:
        def describe(self):
            return same

    check_resumed_model(RunDir.open(run.path), Same())


def test_neurons_gets_its_revisions_as_a_list(monkeypatch, tmp_path):
    """hub analyze neurons --revision a --revision b: the command gets revisions=[a, b] and
    config.revision None."""
    import analyses.cli.neurons as cli

    seen = {}

    def fake_run_models(options, texts, languages, sentences, config, models, revisions=None):
        seen.update(models=models, revisions=revisions, config_revision=config.revision)
        raise HubError("stop")

    monkeypatch.setattr(cli, "run_models", fake_run_models)
    files = _files(tmp_path)
    result = _cli("analyze", "neurons", "--langs", ",".join(files), "--n", 4, "--model", "org/m", "--revision", "s1", "--revision", "s2",
                  "--out", tmp_path, "--no-progress")
    assert result.exit_code == 2 and "stop" in result.output
    assert seen == {"models": ["org/m"], "revisions": ["s1", "s2"], "config_revision": None}
