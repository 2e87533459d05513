"""The runs an export came from (anoncli.train.lineage): a second --init-from adds its run after the first's."""
from anoncli.train.lineage import continued_from, run_lines


def test_each_export_appends_its_own_run_to_the_history():
    first = {"steps": 100, "train_seconds": 36.0, "settings": {"batch_size": 64}, "machine": "gpu", "command": "a"}
    steps, seconds, history = continued_from(first)
    assert (steps, seconds) == (100, 36.0)
    assert history == [{"steps": 100, "batch_size": 64, "train_seconds": 36, "machine": "gpu", "command": "a"}]
    second = {"steps": 250, "train_seconds": 90.0, "settings": {"batch_size": 16}, "machine": "cpu", "command": "b",
              "history": history}
    steps, seconds, history = continued_from(second)
    assert steps == 250 and [run["steps"] for run in history] == [100, 150]
    assert [run["train_seconds"] for run in history] == [36, 54]
    assert "history" not in first or first["history"] == []   # the card read is not changed
    third = {**second, "steps": 300, "history": history}
    lines = run_lines(third, {"batch_size": 8})
    assert len(lines) == 3 and lines[0].startswith("  - 100 steps at batch 64") and lines[2].startswith("  - 50 steps at batch 8")
