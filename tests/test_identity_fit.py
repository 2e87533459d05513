"""The identity methods' fit of the generator's identity inputs (``anoncli.identity.generator``):
faces fitted together as one by one, the compositing seen in crop space, the rate schedules, and
what idrotate fits by default."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from anoncli.identity.generator import Refinement, learning_rate, paste, refine_identity_inputs, refine_identity_inputs_many
from anoncli.models.aei import AEIConfig, AEINet

TINY = dict(resolution=32, base_channels=4, max_channels=8, generator_channels=(8, 8, 4, 4), disc_channels=4, disc_layers=2)


def _stand_in_representation():
    projection = torch.randn(192, 128, generator=torch.Generator().manual_seed(5))

    def representation(crops):   # any differentiable map of crops to unit vectors
        return torch.nn.functional.normalize(torch.nn.functional.avg_pool2d(crops, 4).flatten(1) @ projection, dim=1)

    return representation


def test_learning_rate_schedules_closed_form():
    assert learning_rate(0.02, 7, 40, "constant") == 0.02
    assert learning_rate(0.02, 0, 40, "cosine") == pytest.approx(0.02)
    assert learning_rate(0.02, 20, 40, "cosine") == pytest.approx(0.01)
    assert learning_rate(0.02, 10, 40, "cosine") == pytest.approx(0.01 * (1 + math.cos(math.pi / 4)))
    with pytest.raises(ValueError, match="schedule"):
        learning_rate(0.02, 0, 40, "linear")


def test_paste_is_the_plain_blend_without_compositing_and_adds_what_it_models():
    g = torch.Generator().manual_seed(0)
    faces, crops = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1, torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    masks = torch.rand(2, 1, 16, 16, generator=g)
    torch.testing.assert_close(paste(faces, crops, masks, 0.0), masks * faces + (1 - masks) * crops)
    shift = torch.full((2, 3, 16, 16), 0.1)
    torch.testing.assert_close(paste(faces, crops, masks, 0.0, shift), masks * (faces + 0.1) + (1 - masks) * crops)
    flat = crops + 0.3                                          # a change with no detail passes the low-pass whole
    torch.testing.assert_close(paste(flat, crops, masks, 1.0), crops + masks * 0.3)
    checker = crops + 0.3 * (torch.arange(16)[:, None] + torch.arange(16)[None]).remainder(2).float() * 2 - 0.3
    kept = (paste(checker, crops, torch.ones_like(masks), 1.0) - crops)[..., 4:12, 4:12]
    assert kept.abs().max() < 0.03                              # the finest detail is the photo's own


def test_faces_fitted_together_follow_their_own_fits():
    torch.manual_seed(0)
    net = AEINet(AEIConfig(**TINY)).eval().requires_grad_(False)
    representation = _stand_in_representation()
    rng = np.random.default_rng(1)
    crops = rng.uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    from anoncli.faces.blend import face_mask
    from anoncli.models.tensors import to_tensor

    mask = face_mask(32, "ellipse", 0.02, 0.2)
    targets = torch.nn.functional.normalize(torch.randn(3, 128), dim=1)
    starts = torch.nn.functional.normalize(torch.randn(3, 128), dim=1)
    turn = torch.linalg.qr(torch.randn(128, 128))[0]
    refinements = [Refinement(crops[0], mask, 6, 0.05, schedule="cosine", detail_sigma=0.5),
                   Refinement(crops[1], mask, 6, 0.05, schedule="cosine", detail_sigma=0.5,
                              readout=lambda s: s @ turn.T, goal=starts[1].numpy()),
                   Refinement(crops[2], mask * 0.5, 6, 0.05, schedule="cosine", detail_sigma=0.5,
                              colour=lambda face: face * 0.9 + 10)]
    with torch.no_grad():
        attributes = net.encoder(to_tensor(crops))
    together = refine_identity_inputs_many(net.generator, representation, targets, attributes, refinements, starts)
    for i, refinement in enumerate(refinements):
        alone = refine_identity_inputs(net.generator, representation, targets[i:i + 1], [a[i:i + 1] for a in attributes],
                                       refinement, starts[i:i + 1])
        torch.testing.assert_close(together[i:i + 1], alone, atol=2e-5, rtol=0)
    assert not torch.allclose(together[0], starts[0].expand_as(together[0]))   # it moved
    with pytest.raises(ValueError, match="same steps"):
        refine_identity_inputs_many(net.generator, representation, targets[:2], [a[:2] for a in attributes],
                                    [refinements[0], Refinement(crops[1], mask, 7, 0.05)], starts[:2])


def test_the_fit_reads_what_read_back_finds_in_the_written_photo():
    """A refinement's ``read_back`` (the written photo's crop: here ``paste``'s plus a fixed pattern,
    as a lossy encoding adds one) is where the fit reads the face: through it the fitted face shows
    the target better than after a fit that reads ``paste``'s model only. The representation bends
    (as dlib's network does), so where it reads matters."""
    from anoncli.faces.blend import face_mask
    from anoncli.models.tensors import to_images, to_tensor

    torch.manual_seed(0)
    net = AEINet(AEIConfig(**TINY)).eval().requires_grad_(False)
    projection = torch.randn(192, 128, generator=torch.Generator().manual_seed(5))

    def representation(crops):
        return torch.nn.functional.normalize(torch.relu(3 * torch.nn.functional.avg_pool2d(crops, 4).flatten(1)) @ projection, dim=1)

    rng = np.random.default_rng(4)
    crop = rng.uniform(0, 255, (32, 32, 3)).astype(np.float32)
    mask = face_mask(32, "ellipse", 0.02, 0.2)
    pattern = rng.normal(0, 40, (32, 32, 3)).astype(np.float32)

    def read_back(face):
        modelled = paste(to_tensor(face[None]), to_tensor(crop[None]), torch.as_tensor(mask)[None, None], 0.0)
        return to_images(modelled)[0] + pattern

    target = torch.nn.functional.normalize(torch.randn(1, 128), dim=1)
    with torch.no_grad():
        attributes = net.encoder(to_tensor(crop[None]))

    def shown_through_read_back(refinement):
        w = refine_identity_inputs(net.generator, representation, target, attributes, refinement)
        with torch.no_grad():
            face = to_images(net.generator(w, attributes))[0]
            return float(representation(to_tensor(read_back(face)[None]))[0] @ target[0])

    modelled_only = shown_through_read_back(Refinement(crop, mask, 100, 0.01))
    through = shown_through_read_back(Refinement(crop, mask, 100, 0.01, read_back=read_back))
    assert through > modelled_only + 0.04, (through, modelled_only)


@pytest.mark.parametrize("blend", ["multiband", "alpha"])
def test_the_fit_sees_the_change_as_the_compositor_blends_it(blend):
    """With the photo at the crop's scale (identity warp), ``paste`` with the stage's ``CropBlend``
    gives what ``Compositor.composite`` writes, band by band at the region's edge; the plain
    feathered mask (what the fit saw before) does not."""
    from anoncli.faces.compositing import Compositor, FaceRegion
    from anoncli.faces.compositing_config import CompositingConfig
    from anoncli.faces.outline import MEAN_OUTLINE_112
    from anoncli.models.tensors import to_images, to_tensor

    res = 128
    rng = np.random.default_rng(2)
    y, x = np.mgrid[0:res, 0:res].astype(np.float32)
    photo = np.clip(np.stack([90 + 60 * np.sin(x / 30), 110 + 50 * np.cos(y / 25), 100 + 0.3 * (x + y)], 2)
                    + rng.normal(0, 6, (res, res, 3)), 0, 255).astype(np.float32)
    new = np.clip(rng.normal(120, 40, (res, res, 3)), 0, 255).astype(np.float32)
    outline = np.asarray(MEAN_OUTLINE_112, np.float64) * 0.9 + 8.0
    region = FaceRegion.from_landmarks(np.vstack([outline, np.repeat(outline[-1:], 68 - len(outline), 0)]), 0.25)
    identity, roi = np.array([[1.0, 0, 0], [0, 1.0, 0]]), (0, 0, res, res)
    compositor = Compositor(CompositingConfig(shape="landmarks", blend=blend, colour="lab", detail_sigma=0.5))
    written, _ = compositor.composite(photo, new, identity, roi, region)

    crop_blend = compositor.crop_blend(region, identity, res)
    coloured = compositor.colour_in_crop(new, photo, crop_blend.region, crop_blend.width, crop_blend.transition)
    shift = to_tensor(coloured[None]) - to_tensor(new[None])
    twin = to_images(paste(to_tensor(new[None]), to_tensor(photo[None]), None, 0.5, shift, [crop_blend]))[0]
    feathered = torch.as_tensor(region.crop_mask(identity, res, 0.02))[None, None]
    plain = to_images(paste(to_tensor(new[None]), to_tensor(photo[None]), feathered, 0.5, shift))[0]

    inner = (slice(8, -8), slice(8, -8))   # the blurs' borders differ (OpenCV's reflect and torch's)
    twin_error = np.abs(twin - written)[inner].mean()
    plain_error = np.abs(plain - written)[inner].mean()
    assert len(crop_blend.band_masks) == (len(crop_blend.band_sigmas) + 1 if blend == "multiband" else 1)
    assert twin_error < 0.3, twin_error
    assert plain_error > 3 * twin_error, (plain_error, twin_error)


@pytest.mark.parametrize("scale, closer", [(2.5, 0.7), (1.6, 0.6), (0.4, 0.9)])
def test_the_fit_sees_the_change_as_a_reader_finds_it_in_the_photo(scale, closer):
    """A face smaller (``scale`` 2.5 or 1.6 crop px per photo px) or larger (0.4) in the photo than in
    the crop: the change the compositor writes into the photo, resampled back into the crop as restore
    and the recognizers read it, is nearer what ``paste`` gives with the ``CropBlend``'s scale than what
    it gives without the trip into the photo (scale 1): mean error below ``closer`` times. The change
    has detail down to the crop's pixel, which a coarser photo cannot hold."""
    from anoncli.faces.compositing import Compositor, FaceRegion, resample_into_crop
    from anoncli.faces.compositing_config import CompositingConfig
    from anoncli.faces.outline import MEAN_OUTLINE_112
    from anoncli.models.tensors import to_images, to_tensor

    res = 128
    size = round(res / scale)
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) * scale
    photo = np.clip(np.stack([90 + 60 * np.sin(x / 30), 110 + 50 * np.cos(y / 25), 100 + 0.3 * (x + y)], 2)
                    + rng.normal(0, 6, (size, size, 3)), 0, 255).astype(np.float32)
    new = np.clip(rng.normal(120, 40, (res, res, 3)), 0, 255).astype(np.float32)   # detail down to the crop's pixel
    outline = (np.asarray(MEAN_OUTLINE_112, np.float64) * 0.9 + 8.0) / scale
    region = FaceRegion.from_landmarks(np.vstack([outline, np.repeat(outline[-1:], 68 - len(outline), 0)]), 0.25)
    warp, roi = np.array([[scale, 0, 0], [0, scale, 0]]), (0, 0, size, size)
    compositor = Compositor(CompositingConfig(shape="landmarks", blend="multiband", colour="none", detail_sigma=0.5))
    written, _ = compositor.composite(photo, new, warp, roi, region)
    read = resample_into_crop(written, warp, roi, res)
    crop = resample_into_crop(photo, warp, roi, res)

    crop_blend = compositor.crop_blend(region, warp, res)
    assert crop_blend.scale == pytest.approx(scale)

    def twin(trip_scale):
        blend = dataclasses.replace(crop_blend, scale=trip_scale)
        return to_images(paste(to_tensor(new[None]), to_tensor(crop[None]), None, 0.5, None, [blend]))[0]

    inner = (slice(12, -12), slice(12, -12))
    with_trip = np.abs(twin(scale) - read)[inner].mean()
    without = np.abs(twin(1.0) - read)[inner].mean()
    assert with_trip < closer * without, (with_trip, without)
