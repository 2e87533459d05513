"""The tiny distilled student (seed 000, MCKD) on a tiny Glow teacher: shapes that mirror the
teacher's latent, the offline perceptual distance, and `train student`'s losses, resume and export."""
from __future__ import annotations

from dataclasses import replace

import pytest
from conftest import gradient_crop_set

torch = pytest.importorskip("torch")

from anoncli.models.flow_student import FlowStudent, StudentConfig  # noqa: E402
from anoncli.models.glow import Glow, GlowConfig  # noqa: E402

TINY_TEACHER = GlowConfig(resolution=16, levels=2, steps=2, hidden=8)


def _teacher():
    torch.manual_seed(0)
    net = Glow(TINY_TEACHER)
    with torch.no_grad():
        net.encode(torch.rand(8, 3, 16, 16) - 0.5)
    return net.eval()


def _need_dlib():
    from anoncli.weights import weights_available

    ok, why = weights_available(["dlib-face-recognition-resnet"])
    if not ok:
        pytest.skip(why)


def test_the_student_mirrors_the_teachers_latent_shapes():
    teacher = _teacher()
    config = StudentConfig.for_teacher(teacher)
    assert config.latent_channels == tuple(c for c, _, _ in teacher.latent_shapes()) and config.widths == (32, 48)
    assert StudentConfig.from_dict(config.to_dict()) == config
    student = FlowStudent(config)
    x = torch.rand(3, 3, 16, 16) - 0.5
    eps = student.encoder(x)
    assert [tuple(e.shape[1:]) for e in eps] == teacher.latent_shapes()
    y = student.decoder(eps)
    assert y.shape == x.shape and float(y.detach().abs().max()) <= 0.5
    with pytest.raises(ValueError):
        StudentConfig(16, (6, 12), (32,)).check()


def test_offline_perceptual_distance_is_zero_on_itself_grows_with_change_and_has_gradients():
    _need_dlib()
    from anoncli.identity.encoders import load_identity_encoder
    from anoncli.models.perceptual import DlibPerceptual

    p = DlibPerceptual(load_identity_encoder("dlib-resnet"), 64, 0.2, blocks=2)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 64, 64, generator=g) - 0.5
    small = (x + 0.02 * torch.randn(x.shape, generator=g)).clamp(-0.5, 0.5)
    large = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(-0.5, 0.5).requires_grad_(True)
    assert torch.allclose(p(x, x), torch.zeros(2), atol=1e-6)
    d_small, d_large = p(x, small), p(x, large)
    assert bool((d_small > 0).all()) and bool((d_large > d_small).all())
    d_large.sum().backward()
    assert large.grad is not None and float(large.grad.abs().sum()) > 0


def _settings(steps, **kw):
    from anoncli.train.flow_student import StudentTrainSettings

    return StudentTrainSettings(steps=steps, batch_size=4, lr=1e-3, checkpoint_every=2, evaluate_every=20, threads=1,
                                teacher_sha256="t", widths=[8, 8], **kw)


def test_distillation_improves_both_halves_resumes_exactly_and_exports(tmp_path):
    _need_dlib()
    from anoncli.train.flow_student import FORMAT, StudentTrainer

    crops = gradient_crop_set()
    for d in ("a", "b", "c"):
        (tmp_path / d).mkdir()
    teacher = _teacher()
    straight = StudentTrainer(crops, teacher, _settings(8, lambda_percept=0.1), tmp_path / "a", 0.2, log=lambda m: None)
    g = torch.Generator().manual_seed(1)
    z = [torch.randn(8, *shape, generator=g) for shape in teacher.latent_shapes()]
    with torch.no_grad():
        samples = teacher.decode(z).clamp(-0.5, 0.5)

    def encoder_loss():   # L_enc on fixed teacher samples
        with torch.no_grad():
            return sum(float(((a - b) ** 2).sum()) for a, b in zip(z, straight.student.encoder(samples)))

    before, enc_before = straight.evaluate(), encoder_loss()
    straight.run(progress=False)
    after, enc_after = straight.evaluate(), encoder_loss()
    assert after["psnr_decoder_on_teacher_latent"] > before["psnr_decoder_on_teacher_latent"]
    assert enc_after < enc_before
    assert after["psnr_teacher_round_trip"] > 60 and 0 < after["encoder_relative_error"]

    first = StudentTrainer(crops, teacher, _settings(3, lambda_percept=0.1), tmp_path / "b", 0.2, log=lambda m: None)
    first.run(progress=False)
    resumed = StudentTrainer(crops, teacher, _settings(6, lambda_percept=0.1), tmp_path / "b", 0.2, log=lambda m: None)
    assert resumed.step == 3
    resumed.run(progress=False)
    replay = StudentTrainer(crops, teacher, _settings(6, lambda_percept=0.1), tmp_path / "c", 0.2, log=lambda m: None)
    replay.run(progress=False)
    for a, b in zip(resumed.student.parameters(), replay.student.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)

    straight.export(tmp_path / "student.safetensors", {"data": ["synthetic"]})
    from safetensors import safe_open

    with safe_open(str(tmp_path / "student.safetensors"), framework="pt") as fh:
        meta = fh.metadata()
    assert meta["format"] == FORMAT and meta["teacher_sha256"] == "t" and float(meta["gamma"]) == 1.0

    # --init-from: a new work folder continues the export's weights and step count, and refuses another shape.
    export = str(tmp_path / "student.safetensors")
    (tmp_path / "d").mkdir()
    continued = StudentTrainer(crops, teacher, _settings(10, lambda_percept=0.1, init_from=export), tmp_path / "d", 0.2,
                               log=lambda m: None)
    assert continued.step == straight.step == 8
    for a, b in zip(continued.student.parameters(), straight.student.parameters()):
        torch.testing.assert_close(a, b)
    continued.run(progress=False)
    assert continued.step == 10
    (tmp_path / "e").mkdir()
    for wrong in ({"widths": [8, 12]}, {"teacher_sha256": "other"}):
        with pytest.raises(ValueError, match="--init-from"):
            StudentTrainer(crops, teacher, replace(_settings(10, lambda_percept=0.1, init_from=export), **wrong),
                           tmp_path / "e", 0.2, log=lambda m: None)
