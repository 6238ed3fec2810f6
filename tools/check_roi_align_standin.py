"""Compares the test suite's `roi_align` stand-in, and `keras_sam3.ops.roi_align`,
with the real `torchvision.ops.roi_align` (aligned=False, sampling_ratio=-1).

torchvision has no CPU build for the development machines, so the parity
tests give the reference model a transcription of torchvision's kernel
(`tests/parity/roi_align_reference.py`). Run this where torchvision exists
(a GPU machine, or any machine with a torchvision wheel):

    KERAS_BACKEND=jax python tools/check_roi_align_standin.py

Exit status 1 when either differs from torchvision by more than 1e-5.
"""

import os
import sys

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)


def main():
    import torch
    import torchvision

    import keras

    from keras_sam3.ops.roi_align import roi_align
    from tests.parity.roi_align_reference import roi_align_torch

    # Full float32 products, as in the tests (tests/conftest.py): with JAX's
    # default precision on an H200, keras_sam3's einsums were off by 1.7e-3.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if keras.backend.backend() == "jax":
        import jax

        jax.config.update("jax_default_matmul_precision", "highest")

    rng = np.random.default_rng(0)
    worst = {"stand-in": 0.0, "keras_sam3": 0.0}
    for h, w in [(9, 9), (24, 24), (72, 72), (13, 40)]:
        features = rng.normal(size=(2, 8, h, w)).astype("float32")
        corners = rng.uniform(-0.2, 1.2, size=(2, 6, 2, 2)) * np.array([w, h])
        boxes = np.concatenate([corners.min(2), corners.max(2)], axis=-1).astype("float32")
        boxes[1, -1] = -720.0  # a padded box
        boxes[0, -1] = [2.0, 2.0, 2.3, 2.2]  # smaller than a pixel
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        for device in devices:
            f = torch.from_numpy(features).to(device)
            b = [torch.from_numpy(x).to(device) for x in boxes]
            real = torchvision.ops.roi_align(f, b, 7, 1.0, -1, False).cpu().numpy()
            standin = roi_align_torch(f.cpu(), [x.cpu() for x in b], 7).numpy()
            ours = keras.ops.convert_to_numpy(roi_align(features.transpose(0, 2, 3, 1), boxes, 7))
            ours = ours.reshape(-1, 7, 7, 8).transpose(0, 3, 1, 2)
            worst["stand-in"] = max(worst["stand-in"], float(np.abs(standin - real).max()))
            worst["keras_sam3"] = max(worst["keras_sam3"], float(np.abs(ours - real).max()))
            print(f"{h}x{w} {device}: stand-in {np.abs(standin - real).max():.2e}, "
                  f"keras_sam3 ({keras.backend.backend()}) {np.abs(ours - real).max():.2e}")
    print(f"torchvision {torchvision.__version__}: worst {worst}")
    return 0 if max(worst.values()) <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
