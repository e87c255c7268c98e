"""Task presets: every one loads and is listed; unknown names get a one-line error."""

import pytest

from rcfd.config import load_config
from rcfd.errors import RcfdError
from rcfd.tasks import TASKS, get_task


def test_every_task_preset_loads_and_is_listed():
    from rcfd.cli import main

    for name, task in TASKS.items():
        assert load_config(task.config_path).reward.names
    with pytest.raises(RcfdError, match="unknown task"):
        get_task("nope")
    assert main(["tasks"]) == 0
