"""Methods that work on several faces at once (FSAP's batched search, issue 22 point 2): the stage hands
them the faces of several images together without changing what any image gets, one image's failure
stays its own, the run's units keep each worker's batch full, and the exact bicubic enlargement that
FSAP differentiates through equals torch's."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from anoncli.faces.detection import Detection
from anoncli.faces.stage import anonymize_faces, anonymize_images
from anoncli.io.images import LoadedImage
from anoncli.methods.base import AnonymizedFace, FaceMethod
from anoncli.models.bicubic import enlarge_bicubic
from anoncli.run import work_units


class Darken(FaceMethod):
    """Each crop scaled by 0.5 (a deterministic stand-in); records how faces were handed over."""

    resolution, margin = 32, 0.3

    def __init__(self, fail_on_mean_above=None):
        super().__init__()
        self.calls, self.fail_on_mean_above = [], fail_on_mean_above

    def blend_mask(self, landmarks_in_crop):
        return np.ones((self.resolution, self.resolution), np.float32)

    def anonymize_face(self, crop, landmarks_in_crop, key=None):
        if self.fail_on_mean_above is not None and crop.mean() > self.fail_on_mean_above:
            raise RuntimeError("this face cannot be done")
        return AnonymizedFace(crop * 0.5, outcome={"mean": float(crop.mean())})

    def anonymize_many(self, requests):
        self.calls.append(len(requests))
        return super().anonymize_many(requests)


def _image(seed: int, faces: int, brightness: int = 200):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(brightness - 40, brightness, (120, 240, 3), dtype=np.uint8)
    dets = []
    for i in range(faces):   # two faces side by side, overlapping crops
        x = 60 + 70 * i
        eyes = [[x - 12, 50], [x + 12, 50], [x, 62], [x - 9, 74], [x + 9, 74]]
        dets.append(Detection(np.array([x - 30, 25, x + 30, 95], np.float64), 0.99, np.array(eyes, np.float64)))
    return LoadedImage(pixels, "RGB", "PNG"), dets


def test_images_done_together_get_what_each_gets_alone_and_faces_of_one_image_stay_in_order():
    alone, together = [], []
    for seed, faces in ((1, 2), (2, 1), (3, 2)):
        img, dets = _image(seed, faces)
        records, _ = anonymize_faces(img, dets, Darken())
        alone.append((img.pixels, [r.outcome for r in records]))
        together.append(_image(seed, faces))
    method = Darken()
    results = anonymize_images([(img, dets, None) for img, dets in together], method)
    assert method.calls == [3, 2]    # the first faces of all three images, then the second faces of two
    for (pixels, outcomes), (img, _), (records, _) in zip(alone, together, results):
        assert np.array_equal(img.pixels, pixels) and [r.outcome for r in records] == outcomes


def test_one_image_that_fails_does_not_stop_the_others():
    good, bad = _image(1, 2, brightness=100), _image(2, 1, brightness=250)
    method = Darken(fail_on_mean_above=150)
    results = anonymize_images([(good[0], good[1], None), (bad[0], bad[1], None)], method)
    assert isinstance(results[1], RuntimeError)
    records, _ = results[0]
    assert len(records) == 2 and all(r.outcome is not None for r in records)


@pytest.mark.parametrize("todo, batch, workers, together, sizes", [
    (40, 8, 2, 1, [8] * 5),              # a method that takes one face at a time: --batch-size units
    (40, 8, 2, 8, [20, 20]),             # split evenly between the workers
    (300, 8, 2, 8, [30] * 10),           # at most four of the method's batches per unit, as many per worker
    (300, 8, 2, 16, [50] * 6),
    (5, 8, 2, 8, [5]),                   # never below --batch-size
    (0, 8, 2, 8, []),
])
def test_work_units_keep_a_batched_method_busy(todo, batch, workers, together, sizes):
    units = work_units(list(range(todo)), batch, workers, together)
    assert [len(u) for u in units] == sizes and sum(units, []) == list(range(todo))


@pytest.mark.parametrize("factor", [1, 2, 3, 4, 5])
def test_the_convolutional_bicubic_enlargement_equals_torchs(factor):
    x = torch.randn(2, 3, 9, 7, dtype=torch.float64, requires_grad=True)
    ours, theirs = enlarge_bicubic(x, factor), F.interpolate(x, scale_factor=factor, mode="bicubic", align_corners=False)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=0)
    cotangent = torch.randn_like(ours)
    g_ours, = torch.autograd.grad(ours, x, cotangent)
    g_theirs, = torch.autograd.grad(theirs, x, cotangent)
    torch.testing.assert_close(g_ours, g_theirs, atol=1e-12, rtol=0)


def test_the_glows_invertible_convolutions_stay_float32_under_autocast():
    """In bfloat16 the 1 x 1 mixing of 32 steps lost a decode (NaN on a CelebA face); autocast leaves it in
    float32, so a bfloat16 decode stays close to the float32 one."""
    from anoncli.models.glow import Glow, GlowConfig

    torch.manual_seed(0)
    glow = Glow(GlowConfig(resolution=16, levels=2, steps=2, hidden=8)).eval()
    x = torch.rand(2, 3, 16, 16) - 0.5
    with torch.no_grad():
        eps, _ = glow.encode(x)   # also actnorm's data-dependent initialisation
        exact = glow.decode(eps, 1.0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = glow.decode(eps, 1.0)
            mixed = glow.levels[0][0].invconv.reverse(torch.randn(1, 12, 8, 8))
    assert mixed.dtype == torch.float32
    assert torch.isfinite(low).all() and (low.float() - exact).abs().max() < 0.05


class DarkenOrRefuse(Darken):
    """``anonymize_many`` that gives back an exception for a bright face instead of raising for all."""

    def anonymize_many(self, requests):
        self.calls.append(len(requests))
        return [RuntimeError("refused") if r.crop.mean() > 150 else AnonymizedFace(r.crop * 0.5) for r in requests]


def test_a_face_the_method_gives_back_as_an_exception_fails_its_image_alone_without_redoing_the_others():
    good, bad = _image(1, 1, brightness=100), _image(2, 1, brightness=250)
    method = DarkenOrRefuse()
    results = anonymize_images([(good[0], good[1], None), (bad[0], bad[1], None)], method)
    assert method.calls == [2] and isinstance(results[1], RuntimeError) and len(results[0][0]) == 1


def test_a_composited_method_is_handed_the_region_the_compositing_will_replace():
    from anoncli.faces.compositing import Compositor
    from anoncli.faces.compositing_config import CompositingConfig

    class Regions(Darken):
        region_feather = 0.05

        def __init__(self):
            super().__init__()
            self.compositor = Compositor(CompositingConfig(shape="ellipse"))
            self.regions = []

        def anonymize_many(self, requests):
            self.regions += [r.region_in_crop for r in requests]
            return super().anonymize_many(requests)

    img, dets = _image(4, 1)
    method = Regions()
    anonymize_faces(img, dets, method)
    region = method.regions[0]
    assert region.shape == (32, 32) and 0.1 < region.mean() < 0.9       # a region, not the whole crop
    assert region.max() > 0.95 and ((region > 0.05) & (region < 0.95)).sum() > 20   # feathered inside its edge
    seen = []
    method = Darken()
    original = method.anonymize_many
    method.anonymize_many = lambda requests: seen.extend(r.region_in_crop for r in requests) or original(requests)
    anonymize_faces(*_image(4, 1), method)
    assert seen == [None]   # a method without a compositor puts its crop back with its own blend_mask
