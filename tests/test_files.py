"""Atomic file helpers: a reader or a second writer never sees or breaks a half-written file."""

import json

from rcfd.files import publish_dir, write_json


def test_write_json_leaves_another_writers_temp_file_alone(tmp_path):
    target = tmp_path / "meta.json"
    other = tmp_path / ".meta.json.tmp"  # what another process writing the same file had in flight
    other.write_text("another writer's half")
    write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert other.read_text() == "another writer's half"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".meta.json.tmp", "meta.json"]


def test_publish_dir_keeps_a_concurrent_winner_and_drops_the_loser(tmp_path):
    final = tmp_path / "model"
    first, second = tmp_path / ".a", tmp_path / ".b"
    for d, text in ((first, "first"), (second, "second")):
        d.mkdir()
        (d / "meta.json").write_text(text)
    publish_dir(first, final, marker="meta.json")
    publish_dir(second, final, marker="meta.json")
    assert (final / "meta.json").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
