"""Files from others are data, never code: a copied run's optimizer.pt and demonstration-reward cache
are loaded without unpickling objects, and files a run writes are readable as the umask allows."""

import os
import stat

import pytest
import torch

from rcfd.cli import main


class _Payload:
    """Unpickling this creates ``marker``: the proof that loading ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _train(out, *extra):
    return main(["train", "--task", "tiny", "--out", str(out), "--quiet", "--no-eval", *extra])


def test_a_pickle_payload_in_a_copied_runs_optimizer_state_does_not_run_on_resume(tmp_path, capsys):
    run, marker = tmp_path / "run", tmp_path / "ran-code"
    assert _train(run, "--steps", "2", "--set", "train.save_every=2") == 0
    checkpoint = run / "checkpoints" / "step-000002"
    blob = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    blob["extra"] = _Payload(marker)
    torch.save(blob, checkpoint / "optimizer.pt")
    import hashlib
    import json

    manifest = json.loads((checkpoint / "manifest.json").read_text())  # whoever edits the file rewrites this
    manifest["files"]["optimizer.pt"] = hashlib.sha256((checkpoint / "optimizer.pt").read_bytes()).hexdigest()
    (checkpoint / "manifest.json").write_text(json.dumps(manifest, sort_keys=True))
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--quiet", "--no-eval", "--set", "train.steps=4"]) == 2
    err = capsys.readouterr().err.strip()
    assert not marker.exists()
    assert "optimizer.pt" in err and "not loaded" in err and len(err.splitlines()) == 1


def test_a_pickle_payload_in_the_demonstration_reward_cache_does_not_run(tmp_path, tiny_config, monkeypatch):
    from rcfd.train.components import build_components

    marker = tmp_path / "ran-code"
    torch.save(_Payload(marker), tmp_path / "demo_rewards.pt")
    with pytest.raises(Exception):
        build_components(tiny_config(), progress=False, demo_rewards_from=tmp_path / "demo_rewards.pt")
    assert not marker.exists()


def test_files_a_run_writes_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        run = tmp_path / "run"
        assert _train(run, "--steps", "2", "--set", "train.save_every=2") == 0
    finally:
        os.umask(old)
    for path in [run / "config.yaml", run / "summary.json" if (run / "summary.json").exists() else run / "config.yaml",
                 run / "checkpoints" / "step-000002" / "state.json"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert stat.S_IMODE((run / "checkpoints" / "step-000002").stat().st_mode) == 0o755


def test_a_classifier_directory_is_read_as_data_and_an_old_pickle_is_refused(tmp_path, some_reviews):
    from rcfd.errors import RcfdError
    from rcfd.rewards.sentiment import SentimentReward, train_sentiment_classifier

    train_sentiment_classifier(tmp_path / "clf", list(some_reviews["text"]), list(some_reviews["label"]))
    assert sorted(p.name for p in (tmp_path / "clf").iterdir()) == ["meta.json", "vocabulary.json", "weights.safetensors"]
    old, marker = tmp_path / "old", tmp_path / "ran-code"
    old.mkdir()
    (old / "meta.json").write_text("{}")
    import pickle

    (old / "model.joblib").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(RcfdError, match="a pickle, which rcfd no longer loads"):
        SentimentReward(old)
    assert not marker.exists()


def test_a_config_naming_python_code_runs_it_only_with_trust_code(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RCFD_TRUST_CODE")
    reward = ["--set", "reward.names=[reward_fixtures:word_count]", "--set", "objective.name=reward", "--steps", "1"]
    assert _train(tmp_path / "refused", *reward) == 2
    err = capsys.readouterr().err.strip()
    assert "pass --trust-code" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "refused").exists()  # refused by validation, before any model loads
    assert _train(tmp_path / "trusted", *reward, "--trust-code") == 0
    monkeypatch.delenv("RCFD_TRUST_CODE")  # --trust-code set it for this process
    assert main(["eval", str(tmp_path / "trusted"), "--quiet"]) == 2  # a copied run's config is no different
    assert "pass --trust-code" in capsys.readouterr().err


def test_the_how_tos_custom_reward_imports_from_the_working_directory(tmp_path, monkeypatch):
    """docs/how-to/own-data-and-rewards.md: my_rewards.py beside the user, `rcfd train ... --trust-code`."""
    (tmp_path / "my_rewards_howto.py").write_text(
        "def politeness(prompts, completions, **kwargs):\n    return [float(c.count('please')) for c in completions]\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p not in ("", str(tmp_path))])
    assert _train(tmp_path / "polite", "--steps", "1", "--set", "reward.names=[my_rewards_howto:politeness]",
                  "--set", "objective.name=reward", "--trust-code") == 0


def test_a_corrupt_checkpoint_is_said_aloud_and_all_corrupt_is_an_error(tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(run, "--steps", "4", "--set", "train.save_every=2") == 0
    (run / "summary.json").unlink()
    (run / "final").rename(tmp_path / "final")
    newest, older = run / "checkpoints" / "step-000004", run / "checkpoints" / "step-000002"

    def flip(checkpoint):
        weights = checkpoint / "trainable.safetensors"
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF  # one flipped byte
        weights.write_bytes(bytes(data))

    flip(newest)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--quiet", "--no-eval"]) == 0
    err = capsys.readouterr().err
    assert "checkpoint step-000004 fails its checksums" in err and "using step-000002" in err
    (run / "summary.json").unlink()
    flip(newest)  # the resumed run wrote step-000004 again: corrupt both
    flip(older)
    assert main(["train", "--resume", str(run), "--quiet", "--no-eval"]) == 2
    err = capsys.readouterr().err.strip()
    assert "every checkpoint" in err and len(err.splitlines()) == 1
    assert (run / "metrics.jsonl").exists()  # the logs are kept, not restarted from step 0


def test_a_torn_line_in_the_cache_file_is_skipped_and_scored_again(tmp_path, capsys):
    """A killed writer's torn last line stopped `rcfd serve --cache-file` with a bare JSONDecodeError."""
    from rcfd.integrations.trl import RCfDReward

    def n_words(prompts, completions, **kwargs):
        return [float(len(c.split())) for c in completions]

    cache = tmp_path / "cache.jsonl"
    RCfDReward(n_words, cache_file=cache).demo_rewards(["p1", "p2"], ["a b", "a b c"])
    with open(cache, "a") as f:
        f.write('{"key": "0123", "val')  # torn mid-write
    capsys.readouterr()
    again = RCfDReward(n_words, cache_file=cache)
    assert "skipped 1 unreadable line" in capsys.readouterr().err
    assert again.uncached(["p1", "p2", "p3"], ["a b", "a b c", "x"]) == [2]
    assert again.demo_rewards(["p3"], ["x y z w"]).flatten().tolist() == [4.0]
    assert len(RCfDReward(n_words, cache_file=cache).uncached(["p3"], ["x y z w"])) == 0  # appended on a new line


def test_an_empty_or_torn_demonstration_reward_cache_is_computed_again(tmp_path, tiny_config, monkeypatch, capsys):
    """A zero-length cache file failed every later run with EOFError."""
    from rcfd.train.components import build_components

    monkeypatch.setenv("RCFD_CACHE", str(tmp_path / "cache"))
    first = build_components(tiny_config(), progress=False).demo_train
    path = next((tmp_path / "cache" / "demo_rewards").glob("*.pt"))
    for damage in (b"", path.read_bytes()[:40]):
        path.write_bytes(damage)
        capsys.readouterr()
        again = build_components(tiny_config(), progress=False).demo_train
        assert "is unreadable" in capsys.readouterr().err and torch.equal(again, first)


def test_stale_temporary_checkpoints_go_and_a_full_disk_is_one_line_keeping_the_good_ones(tmp_path, monkeypatch):
    """A kill mid-write left .tmp-step-* folders; a full disk surfaced as torch's RuntimeError."""
    import shutil
    from collections import namedtuple

    from rcfd.errors import RcfdError
    from rcfd.train import checkpoint as ckpt

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    root = tmp_path / "checkpoints"
    good = ckpt.save_checkpoint(root, 1, model, optimizer, {"step": 1})
    (root / ".tmp-step-000002-killed").mkdir()
    ckpt.save_checkpoint(root, 2, model, optimizer, {"step": 2})
    assert sorted(p.name for p in root.iterdir()) == ["step-000001", "step-000002"]

    def torch_save_on_a_full_disk(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file")

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(ckpt.torch, "save", torch_save_on_a_full_disk)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 << 30, 10 << 30, 1 << 20))
    with pytest.raises(RcfdError, match="no space left on the device .* earlier checkpoints are intact"):
        ckpt.save_checkpoint(root, 3, model, optimizer, {"step": 3})
    monkeypatch.undo()
    assert sorted(p.name for p in root.iterdir()) == ["step-000001", "step-000002"]
    assert ckpt.is_complete(good) and ckpt.is_complete(root / "step-000002")


def test_a_model_from_elsewhere_is_read_as_data_its_code_and_pickles_never_run(tmp_path, tiny_path, capsys):
    """A model outside the packaged ones: a config's auto_map (remote code) is not imported and a
    pytorch_model.bin holding a pickle payload is refused in one line, with nothing run."""
    import json
    import shutil

    marker = tmp_path / "ran-code"
    remote = tmp_path / "remote-code"
    shutil.copytree(tiny_path, remote)
    config = json.loads((remote / "config.json").read_text())
    (remote / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModelForCausalLM": "evil.Model"}}))
    (remote / "evil.py").write_text(f"open({str(marker)!r}, 'w')\nfrom transformers import LlamaForCausalLM as Model\n")
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_path, pickled)
    (pickled / "model.safetensors").unlink()
    torch.save({"model.embed_tokens.weight": _Payload(marker)}, pickled / "pytorch_model.bin")

    assert _train(tmp_path / "a", "--steps", "1", "--set", f"model.name={remote}") == 0  # loaded as a plain Llama
    capsys.readouterr()
    assert _train(tmp_path / "b", "--steps", "1", "--set", f"model.name={pickled}") == 2
    err = capsys.readouterr().err.strip()
    assert "objects beyond tensors" in err and "model.name" in err and len(err.splitlines()) == 1
    assert not marker.exists()
