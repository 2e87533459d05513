"""FFEM's flow-latent rotation on a tiny random Glow: exact restore with the key, none without it,
and a leaked (original, fake) pair gives that face's matrix and no other's (issue 7 point 3)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from anoncli.flow.model import FlowModel  # noqa: E402
from anoncli.flow.rotation import latent_matrix, procrustes_rotation  # noqa: E402
from anoncli.keys.derive import FaceKey  # noqa: E402
from anoncli.methods import get_method_spec  # noqa: E402
from anoncli.methods.flowrot import FlowRotation, decrypt_latent, encrypt_latent, face_rotation  # noqa: E402
from anoncli.models.glow import Glow, GlowConfig  # noqa: E402

R = 16


def _flow():
    torch.manual_seed(0)
    net = Glow(GlowConfig(resolution=R, levels=2, steps=2, hidden=8))
    with torch.no_grad():
        net.encode(torch.rand(8, 3, R, R) - 0.5)    # actnorm's data-dependent start
        for p in net.parameters():                  # couplings that do something (zero-initialised otherwise)
            p.add_(0.02 * torch.randn_like(p))
    return FlowModel.from_network(net, margin=0.2)


def _faces(n, seed=1):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:R, 0:R]
    base = 60 + np.stack([x * 8.0, y * 8.0, (x + y) * 4.0], -1)
    return [np.clip(base + rng.normal(0, 15, (R, R, 3)), 40, 215) for _ in range(n)]


def _key(i):
    return FaceKey(f"face{i}", bytes([i]) * 32)


PLAIN = {"crosshatch_sigma": 0.0, "sharpen": 0.0, "upsampler": "bicubic"}   # the fake face as the flow decodes it (enlarged, bicubic)


@pytest.fixture(scope="module")
def method():
    """Defaults, less the enlargement's crosshatch removal and sharpening, so that re-encoding the fake
    face (FFEM's model-only restore) sees the flow's own decode."""
    spec = get_method_spec("flowrot")
    return FlowRotation(flow=_flow(), **spec.resolve_params(PLAIN))


def test_the_default_fake_face_is_the_decode_without_crosshatch_upsampled_and_its_latent_image_restores_exactly():
    from anoncli.flow.enlarge import enlarge_fake
    from anoncli.methods.flow_specs import CROSSHATCH_SIGMA, SHARPEN, SHARPEN_SIGMA

    flow = _flow()
    spec = get_method_spec("flowrot")
    default = FlowRotation(flow=flow, **spec.resolve_params({"output_latent": "true"}))
    plain = FlowRotation(flow=flow, **spec.resolve_params({**PLAIN, "output_latent": "true"}))
    face = _faces(1)[0]
    out, plain_out = default.anonymize_face(face, None, _key(1)), plain.anonymize_face(face, None, _key(1))
    decode = plain._decode(encrypt_latent(flow.encode(plain._to_flow(face)), plain._rotation(_key(1)), 0))
    assert default.upsample.learned
    np.testing.assert_allclose(out.crop, enlarge_fake(decode, R, CROSSHATCH_SIGMA, SHARPEN, SHARPEN_SIGMA, default.upsample), atol=1e-3)
    assert np.abs(out.crop - plain_out.crop).mean() > 0.5
    restored = default.restore_crop(out.crop, None, _key(1), {"side_images": out.side_images})
    np.testing.assert_allclose(restored, plain.restore_crop(plain_out.crop, None, _key(1), {"side_images": plain_out.side_images}))
    assert np.abs(restored - face).mean() < 1.0


def test_rotation_is_orthogonal_per_face_and_the_latent_round_trips():
    a, b = face_rotation(b"\x01" * 32, 24), face_rotation(b"\x02" * 32, 24)
    np.testing.assert_allclose(a @ a.T, np.eye(24), atol=1e-12)
    np.testing.assert_array_equal(a, face_rotation(b"\x01" * 32, 24))
    assert np.abs(a - b).max() > 0.1
    rng = np.random.default_rng(0)
    eps = [rng.standard_normal((6, 8, 8)), rng.standard_normal((12, 4, 4))]   # 576 = 24 x 24
    enc = encrypt_latent(eps, a)
    assert [e.shape for e in enc] == [e.shape for e in eps]
    for got, want in zip(decrypt_latent(enc, a), eps):
        np.testing.assert_allclose(got, want, atol=1e-12)
    # an orthogonal turn keeps the latent's norm, so the fake face is as likely a sample as the original
    assert np.isclose(sum((e ** 2).sum() for e in enc), sum((e ** 2).sum() for e in eps))


def test_restore_with_the_key_returns_the_face_and_a_wrong_key_does_not(method):
    assert method.params["temperature"] == 0.5 and method.params["keep_levels"] == 0 and method.params["shape"] == "landmarks"
    face = _faces(1)[0]
    fake = method.anonymize_crop(face, None, _key(1))
    assert np.abs(fake - face).mean() > 5
    restored = method.restore_crop(fake, None, _key(1), {})
    assert np.abs(restored - face).max() < 0.05        # float32 flow, 0..255 scale
    wrong = method.restore_crop(fake, None, _key(2), {})
    assert np.abs(wrong - face).mean() > 5 * np.abs(restored - face).mean() + 1


def test_a_leaked_pair_gives_its_own_matrix_and_restores_no_other_face(method):
    flow, t = method.flow, method.params["temperature"]
    faces = _faces(4, seed=3)
    fakes = [method.anonymize_crop(f, None, _key(i)) for i, f in enumerate(faces)]
    # the attacker knows face 0 and its fake, and the flow: Procrustes on the two latents
    z0 = latent_matrix(flow.encode(faces[0]), R)
    z0_enc = latent_matrix(flow.encode(fakes[0]), R) / t
    leaked = procrustes_rotation(z0, z0_enc)
    np.testing.assert_allclose(leaked, face_rotation(_key(0).secret, R), atol=1e-4)
    errors = []
    for face, fake in zip(faces, fakes):
        enc = [e / t for e in flow.encode(fake)]
        errors.append(np.abs(flow.decode(decrypt_latent(enc, leaked), 1.0) - face).mean())
    assert errors[0] < 0.05
    assert min(errors[1:]) > 5


def test_flowrot_needs_a_key_and_names_the_command_that_gets_its_flow(method):
    with pytest.raises(ValueError, match="keyfile"):
        method.anonymize_crop(_faces(1)[0], None, None)
    spec = get_method_spec("ffem")
    assert spec.name == "flowrot" and spec.reversible and spec.weights == ("glow-celeba-utk-64",)
    from anoncli.weights import REGISTRY, WeightsMissing, fetch, missing_message

    assert "anoncli train glow" in missing_message(REGISTRY["glow-celeba-utk-64"], [])
    with pytest.raises(WeightsMissing, match="anoncli train glow"):
        fetch("glow-celeba-utk-64")


def test_the_encrypted_latent_image_holds_z_enc_to_its_quantisation():
    from anoncli.methods.flowrot import latent_from_image, latent_image

    rng = np.random.default_rng(2)
    shapes = [(6, 8, 8), (24, 4, 4)]            # 768 = 16 x 48
    eps = [rng.standard_normal(s) for s in shapes]
    img = latent_image(eps, 16)
    assert img.shape == (16, 16, 3) and img.dtype == np.uint8
    back = latent_from_image(img, shapes)
    for got, want in zip(back, eps):
        inside = np.abs(want) < 3.9
        assert np.abs(got - want)[inside].max() <= 1 / 64 + 1e-12


def test_output_latent_writes_one_png_per_face_beside_the_output(method, tmp_path):
    from PIL import Image

    from anoncli.pipeline import Worker
    from anoncli.records import FaceResult, ImageRecord

    face = _faces(1)[0]
    fake, none = _crop_and_side(method.anonymize_face(face, None, _key(1)))
    assert none == {}
    with_latent = FlowRotation(flow=method.flow, **get_method_spec("flowrot").resolve_params({**PLAIN, "output_latent": "true"}))
    same_fake, side = _crop_and_side(with_latent.anonymize_face(face, None, _key(1)))
    np.testing.assert_array_equal(same_fake, fake)
    assert list(side) == ["latent"] and side["latent"].shape == (R, R, 3)
    rec = ImageRecord("sub/a.jpg", "flowrot", {}, "retinaface-onnx", "h",
                      faces=[FaceResult([0, 0, 1, 1], 0.9, []), FaceResult([1, 1, 2, 2], 0.9, [], side_image_pixels=side)])
    Worker._write_side_images(rec, tmp_path / "sub" / "a.jpg")
    written = rec.faces[1].side_images["latent"]
    assert written["path"] == "latents/sub/a.face1.png" and rec.faces[0].side_images is None
    import hashlib

    assert written["sha256"] == hashlib.sha256((tmp_path / written["path"]).read_bytes()).hexdigest()
    assert rec.faces[1].side_image_pixels is None and "side_image_pixels" not in rec.to_dict()["faces"][1]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "latents" / "sub" / "a.face1.png")), side["latent"])


def _student_flow():
    from anoncli.flow.student import FlowStudentModel
    from anoncli.models.flow_student import FlowStudent, StudentConfig

    torch.manual_seed(3)
    return FlowStudentModel.from_network(FlowStudent(StudentConfig.for_teacher(_flow().net, (8, 8))), margin=0.2, gamma=2.0)


def test_the_student_has_the_teachers_interface_and_its_latent_image_restores_its_round_trip():
    student = _student_flow()
    teacher = _flow()
    assert student.shapes == teacher.shapes and student.resolution == R
    face = _faces(1)[0]
    eps = student.encode(face)
    with torch.no_grad():
        raw = student.net.encoder(torch.from_numpy(np.float32(face)).permute(2, 0, 1)[None] / 255.0 - 0.5)
    np.testing.assert_allclose(eps[0], raw[0][0].double().numpy() / 2.0, rtol=1e-6)   # E_s(x)/γ
    np.testing.assert_allclose(student.decode(eps, 0.5), student.decode([0.5 * e for e in eps], 1.0), atol=1e-4)

    method = FlowRotation(flow=student, **get_method_spec("flowrot").resolve_params({"model": "student", "output_latent": "true"}))
    fake, side = _crop_and_side(method.anonymize_face(face, None, _key(4)))
    restored = method.restore_crop(fake, None, _key(4), {"side_images": side})
    round_trip = student.decode(eps, 1.0)
    assert np.abs(restored - round_trip).mean() < 0.5            # the latent image's 1/32 steps, nothing else
    wrong = method.restore_crop(fake, None, _key(5), {"side_images": side})
    assert np.abs(wrong - round_trip).mean() > 5 * np.abs(restored - round_trip).mean()


def test_model_student_needs_the_students_weights_and_names_the_command_that_trains_them():
    from anoncli.weights import REGISTRY, missing_message

    spec = get_method_spec("flowrot")
    predictor = "dlib-shape-predictor-68"   # the compositing's 68-point region (--shape landmarks, the default)
    upsampler = "realesrgan-x4plus-ncnn"    # the learned upsampler (--upsampler realesrgan-x4plus, the default)
    assert spec.weights_needed(spec.resolve_params({})) == ("glow-celeba-utk-64", upsampler, predictor)
    assert spec.weights_needed(spec.resolve_params({"model": "student"})) == (
        "glow-celeba-utk-64", "flow-student-celeba-utk-64", upsampler, predictor)
    assert spec.weights_needed(spec.resolve_params({"shape": "ellipse", "upsampler": "bicubic"})) == ("glow-celeba-utk-64",)
    assert "anoncli train student" in missing_message(REGISTRY["flow-student-celeba-utk-64"], [])
    with pytest.raises(ValueError, match="--model"):
        spec.resolve_params({"model": "tiny"})


def _crop_and_side(face):
    return face.crop, face.side_images
