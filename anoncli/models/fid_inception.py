"""The Inception-v3 of the reference FID (Heusel et al. 2017, TTUR code: TensorFlow's
``inception-2015-12-05`` graph), in the PyTorch port of pytorch-fid (github.com/mseitzer/pytorch-fid,
0.3.0 on PyPI, ``pytorch_fid/inception.py``), whose checkpoint
``pt_inception-2015-12-05-6726825d.pth`` loads here with ``strict=True``.

It is torchvision's ``Inception3`` (1008 classes, no auxiliary head) with the blocks patched
where the TensorFlow graph differs:

* Mixed_5b-5d (A), Mixed_6b-6e (C), Mixed_7b (E): the pooling branch averages without counting
  the zero padding (TensorFlow's ``SAME`` average pool), ``count_include_pad=False``;
* Mixed_7c (E): the pooling branch is a 3x3 max pool.

``pool3_features`` runs the layers up to the final average pool as pytorch-fid's
``InceptionV3(output_blocks=[3])`` does. Definitions only: no file access.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.models.inception import BasicConv2d, Inception3, InceptionA, InceptionAux, InceptionB, InceptionC, \
    InceptionD, InceptionE

NUM_CLASSES = 1008
FEATURE_DIM = 2048
INPUT_SIZE = 299


def tf_average_pool(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def max_pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class FIDInceptionA(InceptionA):
    def _forward(self, x):
        return [
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(tf_average_pool(x)),
        ]


class FIDInceptionC(InceptionC):
    def _forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        b7dbl = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            b7dbl = conv(b7dbl)
        return [self.branch1x1(x), b7, b7dbl, self.branch_pool(tf_average_pool(x))]


class FIDInceptionE(InceptionE):
    """Mixed_7b; Mixed_7c is the same with ``pool = max_pool``."""

    pool = staticmethod(tf_average_pool)

    def _forward(self, x):
        b3 = self.branch3x3_1(x)
        b3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return [
            self.branch1x1(x),
            torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1),
            torch.cat([self.branch3x3dbl_3a(b3dbl), self.branch3x3dbl_3b(b3dbl)], 1),
            self.branch_pool(self.pool(x)),
        ]


class FIDInceptionEMaxPool(FIDInceptionE):
    pool = staticmethod(max_pool)


def fid_inception_v3() -> Inception3:
    """The network with torchvision's default initialisation; load the checkpoint into it."""
    blocks = [BasicConv2d, FIDInceptionA, InceptionB, FIDInceptionC, InceptionD, FIDInceptionE, InceptionAux]
    net = Inception3(num_classes=NUM_CLASSES, aux_logits=False, inception_blocks=blocks, init_weights=False)
    net.Mixed_7c = FIDInceptionEMaxPool(2048)
    return net


def pool3_features(net: Inception3, x: torch.Tensor) -> torch.Tensor:
    """N x 3 x 299 x 299 in [-1, 1] -> N x 2048 (the final average pool; ``fc`` is not used)."""
    for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                 "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                 "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool"):
        x = getattr(net, name)(x)
    return x.flatten(1)
