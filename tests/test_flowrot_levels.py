"""flowrot's --keep-levels (issue 20): only the coarser levels are rotated, the finest keep the
original's ε at temperature 1; restore stays exact with the key, and the fake face goes back into
the photo through the compositor, not as a square. Tiny random Glow, as tests/test_flowrot.py."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from anoncli.flow.model import FlowModel  # noqa: E402
from anoncli.keys.derive import FaceKey  # noqa: E402
from anoncli.methods import get_method_spec  # noqa: E402
from anoncli.methods.flowrot import (FlowRotation, check_keep_levels, decrypt_latent, encrypt_latent,  # noqa: E402
                                     face_rotation, latent_from_image, level_temperatures)
from anoncli.models.glow import Glow, GlowConfig  # noqa: E402

R = 16


def _flow(levels=3):
    torch.manual_seed(0)
    net = Glow(GlowConfig(resolution=R, levels=levels, steps=2, hidden=8))
    with torch.no_grad():
        net.encode(torch.rand(8, 3, R, R) - 0.5)
        for p in net.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return FlowModel.from_network(net, margin=0.2)


def _face(seed=1):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:R, 0:R]
    base = 60 + np.stack([x * 8.0, y * 8.0, (x + y) * 4.0], -1)
    return np.clip(base + rng.normal(0, 15, (R, R, 3)), 40, 215)


def _key(i):
    return FaceKey(f"face{i}", bytes([i]) * 32)


def _method(flow, **given):
    """flowrot whose fake face is the flow's decode, enlarged plainly (no crosshatch removal, no sharpening),
    so that the tests can compare it with the flow's own levels."""
    return FlowRotation(flow=flow, **get_method_spec("flowrot").resolve_params({"crosshatch_sigma": 0.0, "sharpen": 0.0, "upsampler": "bicubic",
                                                                                   **given}))


def test_kept_levels_are_untouched_and_the_rotated_ones_come_back():
    rng = np.random.default_rng(0)
    shapes = [(6, 8, 8), (12, 4, 4), (48, 2, 2)]        # 384 + 192 + 192 numbers of a 16 px face
    eps = [rng.standard_normal(s) for s in shapes]
    a = face_rotation(b"\x03" * 32, R)
    enc = encrypt_latent(eps, a, keep_levels=1)
    np.testing.assert_array_equal(enc[0], eps[0])
    assert np.abs(enc[1] - eps[1]).max() > 0.5
    # the turn keeps the norm of what it turns
    assert np.isclose(sum((e ** 2).sum() for e in enc[1:]), sum((e ** 2).sum() for e in eps[1:]))
    for got, want in zip(decrypt_latent(enc, a, keep_levels=1), eps):
        np.testing.assert_allclose(got, want, atol=1e-12)
    # keep_levels 0 is FFEM's whole-latent turn, as before
    np.testing.assert_allclose(np.concatenate([e.ravel() for e in encrypt_latent(eps, a)]),
                               np.concatenate([e.ravel() for e in encrypt_latent(eps, a, 0)]))


def test_level_temperatures_and_the_levels_a_rotation_cannot_turn():
    assert level_temperatures(4, 0, 0.5) == [0.5] * 4
    assert level_temperatures(4, 2, 0.7) == [1.0, 1.0, 0.7, 0.7]
    shapes = [(6, 8, 8), (12, 4, 4), (48, 2, 2)]
    check_keep_levels(shapes, 2, 16)
    with pytest.raises(ValueError, match="below the flow's 3 levels"):
        check_keep_levels(shapes, 3, 16)
    with pytest.raises(ValueError, match="not rows of 7"):
        check_keep_levels(shapes, 1, 7)
    with pytest.raises(ValueError, match="--keep-levels"):
        get_method_spec("flowrot").resolve_params({"keep_levels": "-1"})


def test_the_fake_keeps_the_originals_finest_level_and_restores_exactly():
    flow = _flow()
    face = _face()
    method = _method(flow, keep_levels=1, output_latent="true")
    assert method.temperatures == [1.0, 0.5, 0.5]
    fake, side = _crop_and_side(method.anonymize_face(face, None, _key(1)))
    assert np.abs(fake - face).mean() > 3
    eps, eps_fake = flow.encode(face), flow.encode(fake)
    # level 0 of the fake is the original's ε (decoded at temperature 1), but where the fake's pixels
    # were clipped to 0..255
    assert np.median(np.abs(eps_fake[0] - eps[0])) < 1e-4 and np.abs(eps_fake[0] - eps[0]).mean() < 0.01
    assert np.abs(eps_fake[2] - eps[2]).mean() > 0.2
    # restore from the 8-bit latent image
    from_image = method.restore_crop(fake, None, _key(1), {"side_images": side})
    assert np.abs(from_image - face).mean() < 1.0
    wrong = method.restore_crop(fake, None, _key(2), {"side_images": side})
    assert np.abs(wrong - face).mean() > 5 * np.abs(from_image - face).mean() + 1
    # the latent image holds the kept level as it is and the rotated ones turned
    back = latent_from_image(side["latent"], flow.shapes)
    inside = np.abs(eps[0]) < 3.9
    assert np.abs(back[0] - eps[0])[inside].max() <= 1 / 64 + 1e-9


def test_more_kept_levels_leave_the_fake_nearer_the_original():
    """What --keep-levels trades: every kept level brings the fake face nearer the original
    (the real flow's cost in protection is measured in the README)."""
    flow = _flow()
    face = _face(4)
    distances = [float(np.abs(_method(flow, keep_levels=k).anonymize_crop(face, None, _key(3)) - face).mean()) for k in (0, 1, 2)]
    assert distances[0] > distances[1] > distances[2]


def test_flowrot_composites_through_the_face_region_not_the_square():
    from anoncli.faces.compositing import Compositor
    from anoncli.methods.flow_specs import CROP_SIZE, DETAIL_SIGMA

    method = _method(_flow())
    assert isinstance(method.compositor, Compositor) and method.resolution == CROP_SIZE
    assert method.compositor.config.shape == "landmarks" and method.compositor.config.detail_sigma == DETAIL_SIGMA
    mask = method.blend_mask(None)
    assert mask.shape == (CROP_SIZE, CROP_SIZE) and mask[0, 0] == 0 and mask[CROP_SIZE // 2, CROP_SIZE // 2] == 1
    with pytest.raises(ValueError, match="--shape"):
        get_method_spec("flowrot").resolve_params({"shape": "crop"})


def test_the_working_crop_is_area_averaged_for_the_flow_and_the_fake_enlarged_back():
    import cv2

    flow = _flow()
    method = _method(flow, crop_size="64", output_latent="true")
    big = cv2.resize(np.float32(_face(5)), (64, 64), interpolation=cv2.INTER_CUBIC)
    fake, side = _crop_and_side(method.anonymize_face(big, None, _key(6)))
    assert fake.shape == (64, 64, 3) and side["latent"].shape == (R, R, 3)
    small = cv2.resize(big, (R, R), interpolation=cv2.INTER_AREA)
    fake_small = method._decode(encrypt_latent(flow.encode(small), face_rotation(_key(6).secret, R)))
    np.testing.assert_allclose(fake, cv2.resize(np.float32(fake_small), (64, 64), interpolation=cv2.INTER_CUBIC).clip(0, 255), atol=1e-3)
    restored = method.restore_crop(fake, None, _key(6), {"side_images": side})
    assert restored.shape == (64, 64, 3)
    # back to the original as far as the flow's 16 px hold it, far nearer than the fake
    assert np.abs(restored - big).mean() < 0.5 * np.abs(fake - big).mean()
    with pytest.raises(ValueError, match="--crop-size must be at least the flow's 128 px"):
        _method(_flow_of(128), crop_size="64")


def _flow_of(resolution):
    net = Glow(GlowConfig(resolution=resolution, levels=2, steps=1, hidden=4))
    with torch.no_grad():
        net.encode(torch.rand(2, 3, resolution, resolution) - 0.5)
    return FlowModel.from_network(net, margin=0.2)


def _crop_and_side(face):
    return face.crop, face.side_images
