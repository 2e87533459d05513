"""Where an identity encoder's vectors are centred before a cosine is taken (FSAP's identity loss,
thesis eq. 5.3). dlib's 128-d descriptors share a large common part: two strangers' raw vectors
have cosine 0.83, so 1 − cos stays near 0.1 for any two faces and the thesis' τ = 0.8 (set for
ArcFace, whose strangers sit near cosine 0) is never reached. Centred on the mean descriptor of
training faces, strangers' mean cosine is −0.007. ArcFace's unit vectors are used as they are.

``DLIB_DESCRIPTOR_MEAN``: 1,000 CelebA crops of 291 training identities (identity mod 10 != 0),
``python benchmarks/fit_descriptor_mean.py`` (2026-12-04).
"""
from __future__ import annotations

DLIB_DESCRIPTOR_MEAN = (
    -0.10333, 0.08079, 0.06396, -0.07055, -0.11579, -0.01510, -0.02657, -0.09802, 0.17297, -0.08105,
    0.17935, -0.03799, -0.24701, -0.01391, -0.04930, 0.14137, -0.16071, -0.15198, -0.07894, -0.05860,
    0.03386, 0.03472, 0.02524, 0.07372, -0.14612, -0.32512, -0.06679, -0.08116, 0.00914, -0.09148,
    0.02575, 0.07997, -0.18413, -0.02006, 0.03010, 0.10098, -0.04748, -0.09650, 0.19201, 0.01100,
    -0.21373, -0.01878, 0.06246, 0.25862, 0.20148, -0.00615, 0.02342, -0.06997, 0.13533, -0.28429,
    0.04408, 0.15697, 0.07909, 0.06361, 0.08444, -0.16463, 0.02598, 0.14161, -0.18803, 0.05874,
    0.06030, -0.09086, -0.01805, -0.06839, 0.18554, 0.10142, -0.11966, -0.14196, 0.16842, -0.15975,
    -0.03882, 0.10145, -0.11293, -0.19038, -0.25412, 0.02384, 0.38617, 0.14432, -0.15143, 0.03464,
    -0.06620, -0.00658, 0.01485, 0.08986, -0.05052, -0.00624, -0.10232, 0.03320, 0.20325, -0.01655,
    -0.01789, 0.24843, 0.00209, -0.00879, 0.03026, 0.05332, -0.12284, 0.00238, -0.12969, -0.01692,
    0.02137, -0.06491, -0.00025, 0.08928, -0.17357, 0.15523, -0.02916, -0.01651, -0.02536, -0.02594,
    -0.08867, -0.01609, 0.16397, -0.26406, 0.18373, 0.15376, 0.03034, 0.14727, 0.05809, 0.06121,
    0.01166, -0.04220, -0.13376, -0.07383, 0.04590, -0.04257, 0.02513, 0.02624,
)

_CENTRES = {"dlib-resnet": DLIB_DESCRIPTOR_MEAN}


def descriptor_centre(encoder: str) -> tuple[float, ...] | None:
    """The vector the encoder's descriptors are centred on before a cosine, or None."""
    return _CENTRES.get(encoder)
