"""The trainers' resident faces give the batches the per-step CPU path gives."""
import numpy as np
import pytest

from conftest import gradient_crop_set


@pytest.mark.parametrize("resolution", [32, 16])
def test_resident_batches_equal_the_cpu_path(resolution):
    import torch

    from anoncli.train.training_faces import ResidentFaces, face_batch

    crops = gradient_crop_set(23)
    resident = ResidentFaces(crops, resolution, "cpu", chunk=5)   # chunks that do not divide the set
    indices = np.array([0, 22, 7, 7, 13, 4])
    flips = np.array([True, False, True, False, False, True])
    assert len(resident) == 23
    for f in (None, flips):
        got, want = resident.batch(indices, f), face_batch(crops, indices, resolution, "cpu", f)
        assert got.shape == (6, 3, resolution, resolution) and got.dtype == torch.float32
        assert torch.equal(got, want)
    mirrored = resident.batch(indices[:1], flips[:1])
    assert torch.equal(mirrored, resident.batch(indices[:1]).flip(3))
    assert not torch.equal(mirrored, resident.batch(indices[:1]))
