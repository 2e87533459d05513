"""Putting a method's face back into the photograph at the photo's resolution (issue 20 §2).

A method works on an aligned crop (64-256 px); the photo's face may be 300 px or more. For one
face, ``Compositor`` does, in the image region the crop covers:

1. region: where the face is. ``shape="landmarks"``: dlib's 68-point predictor (iBUG 300-W
   markup) run on an upright crop resampled from the photo around the five detector landmarks;
   the region is the polygon of the jaw (points 0-16) and the brows (17-26) moved up by
   ``brow_raise`` x the brow-to-chin distance, rasterised at the photo's resolution.
   ``ellipse``/``hull``: the five-landmark shapes of ``blend.face_mask`` mapped into the photo.
2. colour: the method's crop gets the original region's mean and standard deviation per CIE Lab
   channel, measured in the crop (the photo resampled into it) after a low-pass at the detail
   scale; ``lab-chroma``/``lab-local`` then also take the photo's chroma / all Lab channels below
   ``colour_scale`` x face width.
3. detail: the change D = new - original is computed at the crop's resolution (the photo is
   resampled into the crop, area-averaged) and low-passed there at ``detail_sigma`` crop pixels:
   finer than that, the photo keeps its own texture (skin, grain, noise), which an enlarged
   128 px face does not have. Equivalent to the new face's low band plus the original's fine band.
4. blend: D is split into octave bands (Gaussian stack, in the crop); band k is enlarged to the
   photo (bicubic) and added with a mask that rises from 0 at the region's edge to 1 over three
   of its sigmas, the lowest band over ``blend_width`` x face width (multi-band blending, Burt &
   Adelson, ACM ToG 2(4), 1983). Every band mask is 0 outside the region, so every pixel outside
   it is returned bit-identical. The work is O(crop size) plus a few operations per photo pixel
   of the region's box.

A face method opts in by listing ``methods.compositing_specs.compositing_params()`` among its
spec's params and setting ``self.compositor = Compositor(config_from_params(self.params),
weights_dir)``: the face stage (``faces.stage``) then locates the region in the photo before the
method runs, composites its crop, keeps the 68 points in the keyfile, and composites a restored
crop into the same region. Used directly (coordinates are image pixels unless named ``_in_crop``)::

    compositor = Compositor(CompositingConfig(...), weights_dir)   # loads dlib's predictor once
    region = compositor.locate(rgb_roi, roi, landmarks5, m_image_to_crop, resolution, margin)
    out_rgb, support = compositor.composite(base_rgb_roi, crop_rgb, m_image_to_crop, roi, region)
    # out_rgb: float RGB of the roi; support: float mask, > 0 exactly where out_rgb may differ
    region.crop_mask(m_image_to_crop, resolution, feather)  # the same region in crop space

``locate`` needs the photo (the original for anonymizing); ``FaceRegion.from_landmarks`` rebuilds
the same region from stored dense landmarks (restore). ``compositor.crop_blend(region, m, res)`` is
what ``composite`` does to a change, in crop space (its bands and their ramps), for a method that
fits its face to how the photo will show it (the identity methods' fit; the stage hands it over as
``FaceRequest.blend_in_crop``). The crop-space shape for a method's own use when it has only the
crop (restore's fit) is ``blend.face_mask(res, "landmarks")``, the mean 68-point outline.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import cv2
import numpy as np

from .align import alignment_matrix, apply_affine, invert_affine
from .blend import face_mask, warp_crop_to_roi
from .compositing_config import CompositingConfig
from .forehead import forehead_reach
from .landmarks68 import CropLandmarks68
from .occlusion import feature_core, nearer_zones
from .outline import mean_outline_at, outline_polygon

PREDICTOR_CROP = 240      # the upright crop the 68-point predictor runs on (landmarks68.CropLandmarks68's box)
PREDICTOR_MARGIN = 0.25

CROP_FINEST_SIGMA = 0.5   # crop pixels: the finest band edge of the multiband stack
BAND_TRANSITIONS = 3.0   # a band's transition width, in its own sigmas
STD_RATIO_LIMITS = (0.5, 2.0)
LANDMARK_DISAGREEMENT = 0.12
"""Largest mean distance, in eye distances, between the detector's five landmarks and the same
points of the 68 (eye centres, nose tip 30, mouth corners 48 and 54) for the 68 to be used; beyond
it the predictor has failed (extreme pose or expression) and the region is the mean outline placed
by the five landmarks. Over 200 CelebA faces (crops and wild): median 0.06, 95th percentile 0.11,
4 % above 0.12 (a face looking up past 45°: 0.17)."""
LOCAL_COLOUR = {"lab-chroma": (1, 2), "lab-local": (0, 1, 2)}   # Lab channels whose low frequencies come from the photo


@lru_cache(maxsize=2)
def _predictor(weights_dir) -> CropLandmarks68:
    """dlib's 68-point predictor for the upright crops, loaded once per process (raises
    ``LandmarksUnavailable`` naming the command that installs what is missing)."""
    return CropLandmarks68(PREDICTOR_CROP, PREDICTOR_MARGIN, weights_dir, min_side=PREDICTOR_CROP)


def predict_landmarks68(rgb: np.ndarray, landmarks5: np.ndarray, weights_dir=None, origin=(0, 0)) -> np.ndarray:
    """dlib's 68 points (image pixels, (68, 2)) of the face with these five landmarks.

    ``rgb``: uint8 RGB holding the face (the whole photo, or a part of it starting at ``origin``
    (x, y) in the photo). The face is resampled upright at 240 px from the photo (antialiased when
    the photo's face is larger) and the predictor runs on the box dlib's detector would have drawn
    there (``landmarks68.HOG_BOX_IN_ARCFACE_112``)."""
    predictor = _predictor(weights_dir)
    crop, m = upright_crop(rgb, landmarks5, origin)
    return apply_affine(invert_affine(m), predictor(crop)) + np.asarray(origin, np.float64)


def upright_crop(rgb: np.ndarray, landmarks5: np.ndarray, origin=(0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """The face resampled upright at ``PREDICTOR_CROP`` px (float RGB) and the matrix from ``rgb``'s
    pixels into it (``predict_landmarks68``'s crop)."""
    m = alignment_matrix(np.asarray(landmarks5, np.float64) - np.asarray(origin, np.float64), PREDICTOR_CROP, PREDICTOR_MARGIN)
    return resample_into_crop(np.asarray(rgb[..., :3], np.float32), m, (0, 0, rgb.shape[1], rgb.shape[0]), PREDICTOR_CROP), m


def forehead_raises(rgb: np.ndarray, landmarks5: np.ndarray, landmarks68: np.ndarray, low: float, high: float,
                    origin=(0, 0)) -> np.ndarray:
    """Per brow point, how far the region may rise (``forehead.forehead_reach``), read in the upright crop."""
    crop, m = upright_crop(rgb, landmarks5, origin)
    return forehead_reach(_lab(crop), apply_affine(m, np.asarray(landmarks68, np.float64) - np.asarray(origin, np.float64)),
                          low, high)


def landmark_disagreement(landmarks68: np.ndarray, landmarks5: np.ndarray) -> float:
    """Mean distance between the five detector landmarks and the same points of the 68, in eye distances."""
    pts = np.asarray(landmarks68, np.float64)
    five = np.array([pts[36:42].mean(0), pts[42:48].mean(0), pts[30], pts[48], pts[54]])
    ref = np.asarray(landmarks5, np.float64)
    return float(np.linalg.norm(five - ref, axis=1).mean() / max(np.linalg.norm(ref[1] - ref[0]), 1e-6))


@dataclass(frozen=True)
class FaceRegion:
    """Where one face is replaced: a polygon in image pixels (and the dense landmarks it came from,
    which a keyfile keeps so that restore composes with the same region)."""

    polygon: np.ndarray                  # (N, 2) image pixels
    landmarks68: np.ndarray | None       # (68, 2) image pixels, when the outline is the face's own
    width: float                         # the face's width in image pixels (the unit of blend widths)
    source: str = "landmarks68"          # landmarks68, mean-outline (the 68 failed), ellipse or hull
    brow_raises: np.ndarray | None = None   # (10,) per brow point, when read from the photo (--forehead-raise)
    occluders: tuple[np.ndarray, ...] = ()  # polygons (image pixels) of nearer faces' zones, left out of the region...
    core: np.ndarray | None = None          # ...except inside this polygon (the face's own features)

    def behind(self, zones: tuple[np.ndarray, ...], core: np.ndarray) -> "FaceRegion":
        """The region less the zones of nearer faces (``occlusion.nearer_zones``), but for its
        ``core`` (``occlusion.feature_core``)."""
        if not zones:
            return self
        return replace(self, occluders=tuple(np.asarray(z, np.float64) for z in zones), core=np.asarray(core, np.float64))

    def _less_occluders(self, mask: np.ndarray, to_pixels, fill: int, line: int) -> np.ndarray:
        """``mask`` (the polygon filled with ``fill``) less the occluders outside the core."""
        if not self.occluders:
            return mask
        covered = np.zeros_like(mask)
        for zone in self.occluders:
            cv2.fillPoly(covered, [to_pixels(zone)], fill, line, 4)
        cv2.fillPoly(covered, [to_pixels(self.core)], 0, line, 4)
        scale = float(fill)
        return (mask.astype(np.float32) * (1.0 - covered.astype(np.float32) / scale)).round().astype(mask.dtype)

    @classmethod
    def from_landmarks(cls, landmarks68, brow_raise, jaw_inset: float = 0.0) -> "FaceRegion":
        """``brow_raise``: one fraction, or ten (per brow point, kept as ``brow_raises``)."""
        pts = np.asarray(landmarks68, np.float64)
        raises = np.asarray(brow_raise, np.float64)
        return cls(outline_polygon(pts, raises, jaw_inset), pts, float(np.linalg.norm(pts[16] - pts[0])),
                   brow_raises=raises if raises.ndim else None)

    @classmethod
    def from_mean_outline(cls, landmarks5, brow_raise: float, jaw_inset: float = 0.0, pose: bool = True) -> "FaceRegion":
        """The mean 68-point outline placed by the five detector landmarks (``pose``: bent by the
        face's pose, ``outline.posed_mean_outline``)."""
        pts = mean_outline_at(landmarks5, pose)
        return cls(outline_polygon(pts, brow_raise, jaw_inset), None, float(np.linalg.norm(pts[16] - pts[0])), "mean-outline")

    @classmethod
    def from_crop_shape(cls, shape: str, m_image_to_crop: np.ndarray, resolution: int, margin: float,
                        landmarks5_in_crop: np.ndarray | None = None) -> "FaceRegion":
        """The fixed five-landmark shapes (``blend.face_mask``'s ellipse or hull) as an image polygon."""
        hard = (face_mask(resolution, shape, 0.0, margin, landmarks5_in_crop) > 0.5).astype(np.uint8)
        contours, _ = cv2.findContours(hard, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        poly_crop = max(contours, key=cv2.contourArea)[:, 0, :].astype(np.float64)
        poly = apply_affine(invert_affine(m_image_to_crop), poly_crop)
        width = float(np.ptp(poly_crop[:, 0]) / np.sqrt(abs(np.linalg.det(np.asarray(m_image_to_crop)[:, :2]))))
        return cls(poly, None, width, shape)

    def hard_mask(self, roi: tuple[int, int, int, int]) -> np.ndarray:
        """uint8 {0, 1} of the polygon over ``roi`` (x0, y0, x1, y1), rasterised at 1/16 px."""
        x0, y0, x1, y1 = roi
        out = np.zeros((y1 - y0, x1 - x0), np.uint8)
        def to_pixels(polygon):
            return np.round((polygon - [x0, y0]) * 16).astype(np.int32)

        cv2.fillPoly(out, [to_pixels(self.polygon)], 1, cv2.LINE_8, 4)
        return self._less_occluders(out, to_pixels, 1, cv2.LINE_8)

    def crop_mask(self, m_image_to_crop: np.ndarray, resolution: int, feather: float = 0.0) -> np.ndarray:
        """The region in crop space, float32 in [0, 1], with an inward Gaussian edge of ``feather``
        x resolution (as ``blend.face_mask``)."""
        poly = apply_affine(m_image_to_crop, self.polygon)
        hard = np.zeros((resolution, resolution), np.uint8)
        cv2.fillPoly(hard, [np.round(poly * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
        hard = self._less_occluders(hard, lambda p: np.round(apply_affine(m_image_to_crop, p) * 16).astype(np.int32),
                                    255, cv2.LINE_AA)
        mask = hard.astype(np.float32) / 255.0
        sigma = feather * resolution
        if sigma > 0:
            mask = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * round(2 * sigma) + 1,) * 2))
            mask = cv2.GaussianBlur(mask, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
            mask[mask < 1.0 / 512.0] = 0.0
        return np.clip(mask, 0.0, 1.0)


@dataclass(frozen=True)
class CropBlend:
    """``Compositor.composite``'s weighing of a crop-space change D, modelled in crop space: D is
    low-passed at ``detail_sigma``, split into the Gaussian-stack bands of ``band_sigmas`` (finest
    first; none: one band) and band k is added with ``band_masks[k]`` (its ramp from the region's
    edge). ``region`` (bool R x R), ``width`` (the face's width) and ``transition`` (the widest band's
    ramp, crop px) are what the colour match measures in. ``scale`` (crop px per photo px) is what
    the change goes through on its way into the photo and back into a crop, where a reader (restore,
    a recognizer) finds it: enlarged to the photo's pixels (bicubic), then resampled into the crop
    (``resample_into_crop``); ``identity.generator.photo_round_trip`` models it."""

    band_sigmas: tuple[float, ...]
    band_masks: np.ndarray    # (len(band_sigmas) + 1) x R x R, float32 in [0, 1]
    region: np.ndarray
    width: float
    transition: float
    scale: float = 1.0


def ramp(distance: np.ndarray, width: float) -> np.ndarray:
    """0 at distance 0 (the region's edge and outside), 1 from ``width`` inwards, smooth (C1) between."""
    t = np.clip(distance / max(width, 1e-6), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def band_sigmas(widest_transition: float, finest: float = 1.0) -> list[float]:
    """Octave band edges from ``finest`` up to the one whose transition (three sigmas) is the widest."""
    sigmas = [finest]
    while BAND_TRANSITIONS * sigmas[-1] * 2.0 <= widest_transition:
        sigmas.append(sigmas[-1] * 2.0)
    return sigmas


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(x, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def _lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.clip(rgb, 0.0, 255.0).astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)


def _rgb(lab: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_Lab2RGB) * 255.0


def match_colour(new: np.ndarray, reference: np.ndarray, inside: np.ndarray, smooth_sigma: float) -> np.ndarray:
    """``new`` (float RGB) with the mean and standard deviation of each Lab channel of ``reference``
    inside ``inside`` (bool); both are measured after a Gaussian low-pass of ``smooth_sigma`` px, the
    std ratio is limited to [0.5, 2]."""
    if not inside.any():
        return new
    lab_new = _lab(new)
    smooth_new = _lab(_blur(new, smooth_sigma)) if smooth_sigma > 0 else lab_new
    smooth_ref = _lab(_blur(reference, smooth_sigma)) if smooth_sigma > 0 else _lab(reference)
    a, b = smooth_new[inside], smooth_ref[inside]
    mu_a, mu_b = a.mean(0), b.mean(0)
    ratio = np.clip(b.std(0) / np.maximum(a.std(0), 1e-3), *STD_RATIO_LIMITS)
    return _rgb((lab_new - mu_a) * ratio + mu_b)


def transfer_low_frequencies(new: np.ndarray, reference: np.ndarray, sigma: float, channels: tuple[int, ...]) -> np.ndarray:
    """``new`` with the Lab ``channels`` of ``reference`` below spatial scale ``sigma`` px, over the
    whole crop: so that the change, which the blend's low bands spread across the region's edge,
    carries no colour from outside the face."""
    lab_new, lab_ref = _lab(new), _lab(reference)
    for c in channels:
        lab_new[..., c] += _blur(lab_ref[..., c] - lab_new[..., c], sigma)
    return _rgb(lab_new)


class Compositor:
    """Composites faces with one ``CompositingConfig``; loads dlib's 68-point predictor (once per
    process) when the region comes from landmarks, so a missing dlib fails at start, not per face."""

    def __init__(self, config: CompositingConfig, weights_dir=None):
        self.config = config
        self.weights_dir = weights_dir
        if config.shape == "landmarks":
            _predictor(weights_dir)

    def locate(self, rgb_roi: np.ndarray, roi: tuple[int, int, int, int], landmarks5: np.ndarray,
               m_image_to_crop: np.ndarray, resolution: int, margin: float) -> FaceRegion:
        """The face's region; ``rgb_roi``: the photo's uint8 RGB over ``roi`` (the crop's bounds)."""
        if self.config.shape == "landmarks":
            cfg = self.config
            pts = predict_landmarks68(rgb_roi, landmarks5, self.weights_dir, origin=roi[:2])
            if landmark_disagreement(pts, landmarks5) > LANDMARK_DISAGREEMENT:
                return FaceRegion.from_mean_outline(landmarks5, cfg.brow_raise, cfg.jaw_inset, cfg.outline_pose)
            raise_by = cfg.brow_raise
            if cfg.forehead_raise > cfg.brow_raise:
                raise_by = forehead_raises(rgb_roi, landmarks5, pts, cfg.brow_raise, cfg.forehead_raise, origin=roi[:2])
            return FaceRegion.from_landmarks(pts, raise_by, cfg.jaw_inset)
        return FaceRegion.from_crop_shape(self.config.shape, m_image_to_crop, resolution, margin,
                                          apply_affine(m_image_to_crop, landmarks5))

    def less_nearer_faces(self, region: FaceRegion, landmarks5, others: list) -> FaceRegion:
        """The region of the face with these five landmarks less the zones of the faces in front of it
        (``--occluder-ratio``); ``others``: the five landmarks of the photo's other composited faces."""
        return region.behind(nearer_zones(landmarks5, others, self.config.occluder_ratio), feature_core(landmarks5))

    def region_from_record(self, landmarks68, landmarks5, m_image_to_crop, resolution: int, margin: float,
                           brow_raises=None) -> FaceRegion:
        """The region a run used, from what its keyfile kept (dense landmarks for shape landmarks,
        and the per-point brow raises where they were read from the photo)."""
        if self.config.shape == "landmarks":
            if landmarks68 is None:   # the run used the mean outline (its 68 points had failed)
                return FaceRegion.from_mean_outline(landmarks5, self.config.brow_raise, self.config.jaw_inset,
                                                    self.config.outline_pose)
            raise_by = self.config.brow_raise if brow_raises is None else brow_raises
            return FaceRegion.from_landmarks(landmarks68, raise_by, self.config.jaw_inset)
        return FaceRegion.from_crop_shape(self.config.shape, m_image_to_crop, resolution, margin,
                                          apply_affine(m_image_to_crop, landmarks5))

    def colour_in_crop(self, new: np.ndarray, base_crop: np.ndarray, region_crop: np.ndarray, width: float,
                       transition: float | None = None) -> np.ndarray:
        """The method's crop ``new`` with the colour of ``base_crop`` (the photo resampled into the
        crop) as ``--colour`` asks, all in crop pixels: ``region_crop`` the face region (bool),
        ``width`` its width, ``transition`` the blend's widest transition (default ``blend_width``
        of the width); the statistics are taken inside the region deeper than the transition."""
        cfg = self.config
        if cfg.colour == "none":
            return new
        transition = cfg.blend_width * width if transition is None else transition
        inside = cv2.distanceTransform(region_crop.astype(np.uint8), cv2.DIST_L2, 3) >= transition
        if not inside.any():
            inside = region_crop
        new = match_colour(new, base_crop, inside, cfg.detail_sigma)
        if cfg.colour in LOCAL_COLOUR:
            new = transfer_low_frequencies(new, base_crop, cfg.colour_scale * width, LOCAL_COLOUR[cfg.colour])
        return new

    def widest_transition(self, region: FaceRegion) -> float:
        """The blend's widest transition (its lowest band's), in photo px."""
        return max(self.config.blend_width * region.width, 2.0)

    def crop_blend(self, region: FaceRegion, m_image_to_crop: np.ndarray, resolution: int) -> CropBlend:
        """What ``composite`` will do with a crop-space change, in crop space, for a method that fits
        its face to how it will look in the photo (``CropBlend``)."""
        m = np.asarray(m_image_to_crop, np.float64)
        scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
        inside = region.crop_mask(m, resolution) > 0.5
        distance = cv2.distanceTransform(inside.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        widest = self.widest_transition(region) * scale
        if self.config.blend == "multiband":
            sigmas, widths = band_layout(widest, scale)
        else:
            sigmas, widths = [], [self.widest_transition(region)]
        masks = np.stack([ramp(distance, width * scale) for width in widths])
        return CropBlend(tuple(sigmas), masks, inside, region.width * scale, widest, scale)

    def composite(self, base_rgb: np.ndarray, crop_rgb: np.ndarray, m_image_to_crop: np.ndarray,
                  roi: tuple[int, int, int, int], region: FaceRegion, match_colour: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """The roi with the method's crop put in: float RGB (0-255 scale), and the support mask
        (float32, 0 exactly where the result equals ``base_rgb`` bit for bit).

        ``match_colour`` False: no colour matching, for a method's exact inverse of the anonymized face
        put back into the anonymized photo (the restored face has the original's colour, the photo
        around it the fake's); a rendered restore (idrotate's) is matched as the anonymized face was,
        to the region's colour, which the compositing kept from the original. Either way a restore's
        change is low-passed at ``detail_sigma``: the
        anonymized photo kept the original's detail finer than that, so restore changes only what
        anonymizing changed, and a model's restored face (a generator's, smoother than a photograph)
        does not replace the original's finest detail with its own (idrotate on 87 faces in CelebA
        photos in the wild: 53 restored nearer the original, as many within dlib 0.5 as before: README).

        The change is computed at the crop's resolution, where the method has information: the
        photo is resampled into the crop (antialiased), colour matched there, the difference
        low-passed at ``detail_sigma`` and split into bands; each band is enlarged to the photo and
        added with its mask. Finer than the crop, the photo keeps its own pixels (with
        ``detail_sigma`` 0 they are replaced by the enlarged crop's)."""
        cfg = self.config
        base = np.asarray(base_rgb, np.float32)
        out = base.copy()
        support = np.zeros(base.shape[:2], np.float32)
        hard = region.hard_mask(roi)
        if not hard.any():
            return out, support
        ys, xs = np.nonzero(hard)
        x0, y0 = roi[0] + int(xs.min()), roi[1] + int(ys.min())
        sub = (x0, y0, roi[0] + int(xs.max()) + 1, roi[1] + int(ys.max()) + 1)   # the region's box in the image
        in_roi = (slice(sub[1] - roi[1], sub[3] - roi[1]), slice(sub[0] - roi[0], sub[2] - roi[0]))
        distance = cv2.distanceTransform(hard[in_roi], cv2.DIST_L2, cv2.DIST_MASK_PRECISE)

        m = np.asarray(m_image_to_crop, np.float64)
        res = crop_rgb.shape[0]
        scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))   # crop px per photo px
        base_crop = resample_into_crop(base, m, roi, res)
        widest = self.widest_transition(region)
        new = np.asarray(crop_rgb, np.float32)
        if match_colour:
            new = self.colour_in_crop(new, base_crop, region.crop_mask(m, res) > 0.5, region.width * scale, widest * scale)
        diff = new - base_crop
        if cfg.detail_sigma > 0:
            diff = _blur(diff, cfg.detail_sigma)

        def enlarged(a):
            return warp_crop_to_roi(np.ascontiguousarray(a), m, sub, cv2.INTER_CUBIC, border=cv2.BORDER_REPLICATE)

        if cfg.blend == "multiband":
            bands, transitions = crop_bands(diff, widest * scale, scale)
        else:
            bands, transitions = [diff], [widest]
        change = np.zeros(distance.shape + (3,), np.float32)
        sub_support = np.zeros(distance.shape, np.float32)
        for band, width in zip(bands, transitions):
            mk = ramp(distance, width)
            change += mk[..., None] * enlarged(band)
            sub_support = np.maximum(sub_support, mk)
        if cfg.detail_sigma == 0:   # the photo's own detail finer than the crop goes too
            mk = ramp(distance, 2.0 if cfg.blend == "multiband" else widest)
            change += mk[..., None] * (enlarged(base_crop) - base[in_roi])
            sub_support = np.maximum(sub_support, mk)
        sub_support[hard[in_roi] == 0] = 0.0
        change[sub_support == 0] = 0.0
        out[in_roi] += change
        support[in_roi] = sub_support
        return out, support


def resample_into_crop(image: np.ndarray, m_image_to_crop: np.ndarray, roi: tuple[int, int, int, int], res: int) -> np.ndarray:
    """The roi's pixels (float RGB) resampled into the crop, area-averaged first where the crop is coarser."""
    m = np.asarray(m_image_to_crop, np.float64)
    x0, y0 = roi[:2]
    m = np.hstack([m[:, :2], (m[:, :2] @ np.array([x0, y0], np.float64) + m[:, 2])[:, None]])   # roi px -> crop px
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    h, w = image.shape[:2]
    if scale < 0.5:   # shrink by area to about twice the crop's resolution, then interpolate
        sw, sh = max(1, round(w * 2 * scale)), max(1, round(h * 2 * scale))
        fx, fy = sw / w, sh / h
        image = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA)
        # small px (i) is roi px (i + 0.5) / f - 0.5
        lin = m[:, :2] / np.array([fx, fy])
        m = np.hstack([lin, (m[:, 2] + m[:, :2] @ np.array([0.5 / fx - 0.5, 0.5 / fy - 0.5]))[:, None]])
    return cv2.warpAffine(np.ascontiguousarray(image, np.float32), m, (res, res), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def band_layout(widest_in_crop: float, scale: float) -> tuple[list[float], list[float]]:
    """The multi-band split of a crop-space change: its Gaussian-stack sigmas (crop px, finest first)
    and the width in photo px over which each of the len(sigmas) + 1 bands is faded in at the region's
    edge: three of its sigmas (at least 2 px), the lowest band over ``widest_in_crop`` / ``scale``."""
    sigmas = band_sigmas(widest_in_crop, CROP_FINEST_SIGMA)
    widths = [max(BAND_TRANSITIONS * sigma / scale, 2.0) for sigma in sigmas] + [max(widest_in_crop / scale, 2.0)]
    return sigmas, widths


def crop_bands(diff: np.ndarray, widest_in_crop: float, scale: float) -> tuple[list[np.ndarray], list[float]]:
    """The Gaussian-stack bands of a crop-space change (they sum to it), finest first, and the width
    in photo px over which each is faded in at the region's edge (``band_layout``)."""
    sigmas, widths = band_layout(widest_in_crop, scale)
    bands = []
    previous = diff
    for sigma in sigmas:
        low = _blur(diff, sigma)
        bands.append(previous - low)
        previous = low
    bands.append(previous)
    return bands, widths
