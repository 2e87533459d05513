"""`anoncli train glow`: a tiny flow trains, resumes exactly from its checkpoint, and exports."""
from __future__ import annotations

import pytest
from conftest import gradient_crop_set

torch = pytest.importorskip("torch")

from anoncli.train.glow import GlowTrainer, GlowTrainSettings, evaluate_flow  # noqa: E402

TINY = {"resolution": 16, "levels": 2, "steps": 2, "hidden": 8, "n_bits": 5}



def _settings(steps):
    return GlowTrainSettings(steps=steps, batch_size=4, warmup_steps=2, checkpoint_every=2, evaluate_every=20, threads=1, config=TINY)


def _flat(t):
    return torch.cat([p.detach().flatten() for p in t.model.parameters()])


def test_glow_training_lowers_bpd_resumes_exactly_and_exports(tmp_path):
    crops = gradient_crop_set()
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    straight = GlowTrainer(crops, _settings(6), tmp_path / "a", log=lambda m: None)
    before = straight.evaluate()["bits_per_dim"]
    straight.run(progress=False)
    first = GlowTrainer(crops, _settings(3), tmp_path / "b", log=lambda m: None)
    first.run(progress=False)
    resumed = GlowTrainer(crops, _settings(6), tmp_path / "b", log=lambda m: None)
    assert resumed.step == 3
    resumed.run(progress=False)
    torch.testing.assert_close(_flat(resumed), _flat(straight), rtol=1e-5, atol=1e-6)
    after = straight.evaluate()
    assert after["bits_per_dim"] < before
    assert after["round_trip_max_abs"] < 1e-4
    assert list(tmp_path.glob("a/glow-samples-*-t0.5.png"))
    straight.export(tmp_path / "glow.safetensors", {"data": ["synthetic"]})
    from safetensors import safe_open

    with safe_open(str(tmp_path / "glow.safetensors"), framework="pt") as fh:
        assert fh.metadata()["format"] == "anoncli-glow/1"


def test_evaluate_flow_of_nothing_is_empty():
    from anoncli.models.glow import Glow, GlowConfig

    assert evaluate_flow(Glow(GlowConfig(**TINY)), torch.zeros(0, 3, 16, 16)) == {}


def test_the_log_averages_over_the_steps_it_saw_also_right_after_a_resume(tmp_path):
    import json

    from anoncli.train.loop import run_resumable

    class Counting:
        def __init__(self, step):
            self.step, self.elapsed = step, 0.0

        def train_step(self):
            self.step += 1
            return {"loss": 2.0}

        def evaluate(self):
            return {}

        def save_checkpoint(self):
            pass

    run_resumable(Counting(18), 40, tmp_path / "log.jsonl", checkpoint_every=100, evaluate_every=1000, progress=False)
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [20, 40] and all(line["loss"] == 2.0 for line in lines)

    # an evaluation step that is no multiple of log_every still evaluates, on a line of its own
    run_resumable(Counting(40), 60, tmp_path / "log2.jsonl", checkpoint_every=100, evaluate_every=25, progress=False)
    lines = [json.loads(line) for line in (tmp_path / "log2.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [50, 60] and "eval" in lines[0] and "eval" not in lines[1]


def test_the_card_command_leaves_out_the_card_notes():
    from anoncli.cli_train import _without_card_notes

    args = ["--data", "d", "--card-note", "a long paragraph", "--steps", "9", "--card-note=another", "--card-note", "x"]
    assert _without_card_notes(args) == ["--data", "d", "--steps", "9"]


def test_init_from_an_export_keeps_weights_steps_history_and_warms_up_again(tmp_path):
    from dataclasses import replace

    crops = gradient_crop_set()
    for d in ("a", "b", "c"):
        (tmp_path / d).mkdir()
    first = GlowTrainer(crops, _settings(3), tmp_path / "a", log=lambda m: None)
    first.run(progress=False)
    first.export(tmp_path / "a.safetensors", {"machine": "cpu", "command": "first"})
    second = GlowTrainer(crops, replace(_settings(5), init_from=str(tmp_path / "a.safetensors")), tmp_path / "b", log=lambda m: None)
    assert second.step == 3 and second.warmup_from == 3
    assert second.history == [{"steps": 3, "batch_size": 4, "train_seconds": round(first.elapsed), "machine": "cpu",
                                "command": "first"}]
    torch.testing.assert_close(_flat(second), _flat(first))
    second.train_step()
    assert second.opt.param_groups[0]["lr"] == pytest.approx(second.settings.lr / 2), "fresh Adam moments: the warm-up starts over"
    second.run(progress=False)
    resumed = GlowTrainer(crops, replace(_settings(5), init_from=str(tmp_path / "a.safetensors")), tmp_path / "b", log=lambda m: None)
    assert resumed.step == 5 and resumed.warmup_from == 3 and resumed.history == second.history
    with pytest.raises(ValueError, match="another network"):
        GlowTrainer(crops, replace(_settings(5), init_from=str(tmp_path / "a.safetensors"), margin=0.3), tmp_path / "c",
                    log=lambda m: None)


def test_bfloat16_couplings_train_and_evaluate_in_float32(tmp_path):
    """The same first steps in both precisions (the couplings' last layers start at zero, so the third
    step's loss is the first that their outputs reach): close, not equal, since the couplings did run in
    bfloat16; afterwards the model computes in float32 again and still inverts exactly."""
    crops = gradient_crop_set()
    losses = {}
    for precision in ("float32", "bfloat16"):
        settings = GlowTrainSettings(steps=4, batch_size=4, warmup_steps=2, checkpoint_every=2, evaluate_every=20,
                                     threads=1, config=TINY, precision=precision)
        trainer = GlowTrainer(crops, settings, tmp_path / precision, log=lambda m: None)
        losses[precision] = [trainer.train_step()["bpd"] for _ in range(3)][-1]
    assert losses["bfloat16"] != losses["float32"]
    assert abs(losses["bfloat16"] - losses["float32"]) < 0.01 * losses["float32"]
    before = _flat(trainer).clone()
    trainer.run(progress=False)
    assert not torch.equal(_flat(trainer), before)
    assert all(m.net_dtype is None for m in trainer.model.modules() if hasattr(m, "net_dtype"))
    assert trainer.evaluate()["round_trip_max_abs"] < 1e-4
