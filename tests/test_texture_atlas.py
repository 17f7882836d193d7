"""The atlas packer: patches land whole, apart, and where their windows say."""

import numpy as np
import pytest

from exporters.texture_atlas import pack_atlas


def _patches(rng, count):
    return [
        rng.integers(0, 256, size=(int(rng.integers(3, 90)), int(rng.integers(3, 120)), 3), dtype=np.uint8)
        for _ in range(count)
    ]


def _sample(atlas, index, uv):
    """The atlas pixel under a patch's texture coordinate (nearest)."""
    height, width = atlas.image.shape[:2]
    u, v = atlas.to_atlas(index, np.array([uv]))[0]
    return atlas.image[int(round((1.0 - v) * height - 0.5)), int(round(u * width - 0.5))]


def test_patches_are_found_at_their_windows():
    rng = np.random.default_rng(1)
    patches = _patches(rng, 40)
    atlas = pack_atlas(patches)
    assert atlas.image.shape[0] % 4 == 0 and atlas.image.shape[1] % 4 == 0
    for index, patch in enumerate(patches):
        # The patch's corner pixel centres map onto the same pixels in the atlas.
        h, w = patch.shape[:2]
        assert np.array_equal(_sample(atlas, index, (0.0, 1.0)), patch[0, 0])
        assert np.array_equal(_sample(atlas, index, (1.0, 0.0)), patch[h - 1, w - 1])
        assert np.array_equal(_sample(atlas, index, (0.0, 0.0)), patch[h - 1, 0])


def test_windows_do_not_overlap_and_fill_is_reasonable():
    rng = np.random.default_rng(2)
    patches = _patches(rng, 60)
    atlas = pack_atlas(patches)
    height, width = atlas.image.shape[:2]
    boxes = [(u0 * width, (1 - v1) * height, u1 * width, (1 - v0) * height) for u0, v0, u1, v1 in atlas.uv_windows]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
    patch_area = sum(p.shape[0] * p.shape[1] for p in patches)
    assert patch_area / (height * width) > 0.6


def test_patches_shrink_to_fit_the_size_budget_and_packing_is_deterministic():
    rng = np.random.default_rng(3)
    patches = [rng.integers(0, 256, size=(200, 300, 3), dtype=np.uint8) for _ in range(30)]
    atlas = pack_atlas(patches, max_side=512)
    assert max(atlas.image.shape[:2]) <= 512
    again = pack_atlas(patches, max_side=512)
    assert np.array_equal(atlas.image, again.image) and atlas.uv_windows == again.uv_windows


def test_no_patch_is_refused():
    with pytest.raises(ValueError):
        pack_atlas([])


def test_patches_that_cannot_fit_even_at_the_smallest_size_are_refused_not_looped_on():
    patches = [np.zeros((10, 10, 3), np.uint8)] * 200
    with pytest.raises(ValueError, match="do not fit a 64 x 64 atlas"):
        pack_atlas(patches, max_side=64)
