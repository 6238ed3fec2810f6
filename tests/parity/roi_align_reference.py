"""A faithful stand-in for `torchvision.ops.roi_align`, for tests only.

torchvision has no CPU build for these machines, and the reference SAM 3
model calls `torchvision.ops.roi_align(features, boxes, output_size)` with
`spatial_scale=1`, `sampling_ratio=-1` and `aligned=False`. This module
transcribes torchvision's CPU kernel (`roi_align_kernel.cpp`:
`pre_calc_for_bilinear_interpolate` and `roi_align_forward_kernel_impl`)
for exactly those arguments, one sample at a time in float64, so that it can
serve both as the reference our `keras_sam3.ops.roi_align` is tested against
and as the `torchvision` module the reference model is given.
`tools/check_roi_align_standin.py` compares it with the real torchvision on
a machine that has it.
"""

import math
import types

import numpy as np


def _bilinear(feature, height, width, y, x):
    """One bilinear sample of `feature` `(C, H, W)` at `(y, x)` (torchvision rules)."""
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return np.zeros(feature.shape[0])
    y = max(y, 0.0)
    x = max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_high = y_low = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_high = x_low = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return (
        hy * hx * feature[:, y_low, x_low]
        + hy * lx * feature[:, y_low, x_high]
        + ly * hx * feature[:, y_high, x_low]
        + ly * lx * feature[:, y_high, x_high]
    )


def roi_align_numpy(features, rois, output_size, spatial_scale=1.0, sampling_ratio=-1):
    """`features` `(N, C, H, W)`, `rois` `(K, 5)` as `(batch index, x1, y1, x2, y2)`
    -> `(K, C, P, P)`, aligned=False."""
    features = np.asarray(features, np.float64)
    _, channels, height, width = features.shape
    p = output_size
    out = np.zeros((len(rois), channels, p, p))
    for k, (index, x1, y1, x2, y2) in enumerate(np.asarray(rois, np.float64)):
        start_w, start_h = x1 * spatial_scale, y1 * spatial_scale
        roi_w = max(x2 * spatial_scale - start_w, 1.0)
        roi_h = max(y2 * spatial_scale - start_h, 1.0)
        bin_h, bin_w = roi_h / p, roi_w / p
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / p)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / p)
        count = max(grid_h * grid_w, 1)
        feature = features[int(index)]
        for ph in range(p):
            for pw in range(p):
                total = np.zeros(channels)
                for iy in range(grid_h):
                    y = start_h + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                    for ix in range(grid_w):
                        x = start_w + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                        total += _bilinear(feature, height, width, y, x)
                out[k, :, ph, pw] = total / count
    return out


def roi_align_torch(features, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    """torchvision's signature: `boxes` a list of `(K_i, 4)` tensors, one per image."""
    import torch

    if aligned:
        raise NotImplementedError("the stand-in covers aligned=False only (SAM 3's use)")
    if isinstance(output_size, (tuple, list)):
        assert output_size[0] == output_size[1]
        output_size = output_size[0]
    rois = [
        np.concatenate([np.full((len(b), 1), i), b.detach().double().cpu().numpy()], axis=1)
        for i, b in enumerate(boxes)
    ]
    rois = np.concatenate(rois, axis=0) if rois else np.zeros((0, 5))
    out = roi_align_numpy(features.detach().double().cpu().numpy(), rois, output_size, spatial_scale, sampling_ratio)
    return torch.from_numpy(out).to(features.dtype)


def install_in_reference():
    """Makes the reference SAM 3 module call the stand-in as `torchvision.ops.roi_align`."""
    import sys

    import transformers

    # The module object itself: `from transformers.models.sam3 import
    # modeling_sam3` returns a lazy placeholder that refuses without torchvision.
    modeling_sam3 = sys.modules[transformers.Sam3Model.__module__]
    if getattr(modeling_sam3, "torchvision", None) is None:
        modeling_sam3.torchvision = types.SimpleNamespace(
            ops=types.SimpleNamespace(roi_align=roi_align_torch)
        )
    return modeling_sam3.torchvision.ops.roi_align
