"""The default (facebook/sam3) architecture: exact parameter counts.

Builds both full-size encoders (about 807M parameters, ~4 GB of float32,
10-20 s per backend) and compares with the reference counted on torch's
meta device.
"""

import pytest

from keras_sam3 import SAM3TextEncoder
from keras_sam3 import SAM3VisionEncoder

# From the spec (section 16), cross-checked below against the reference.
VISION_PARAMS = 446_236_672 + 7_802_112  # ViT + detector FPN neck
TEXT_PARAMS = 352_937_984 + 262_400  # CLIP text model + 1024->256 resizer
# CLIP's own text_projection (512 x 1024) is never used by SAM 3 and is not built.
UNUSED_CLIP_PROJECTION = 524_288


@pytest.mark.full_size
def test_default_parameter_counts_equal_the_reference():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    with torch.device("meta"):
        reference = transformers.Sam3Model(transformers.Sam3Config())

    def count(module):
        return sum(p.numel() for p in module.parameters())

    assert count(reference.vision_encoder) == VISION_PARAMS
    assert count(reference.text_encoder) + count(reference.text_projection) == (
        TEXT_PARAMS + UNUSED_CLIP_PROJECTION
    )
    assert count(reference.text_encoder.text_projection) == UNUSED_CLIP_PROJECTION
    del reference

    vision = SAM3VisionEncoder()
    vision.build((None, 1008, 1008, 3))
    assert vision.count_params() == VISION_PARAMS
    assert not vision.non_trainable_weights
    del vision

    text = SAM3TextEncoder()
    text.build((None, 32))
    assert text.count_params() == TEXT_PARAMS
    assert not text.non_trainable_weights
