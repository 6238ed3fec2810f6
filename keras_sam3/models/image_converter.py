"""`SAM3ImageConverter`: raw images -> the model's square, [-1, 1] input."""

import warnings

import numpy as np
from PIL import Image


def to_rgb_uint8(image):
    """One image as an `(H, W, 3)` uint8 array.

    Accepts a PIL image, or an array `(H, W)`, `(H, W, 1)`, `(H, W, 3)` or
    `(H, W, 4)` of uint8 or of floats holding pixel values in [0, 255]
    (not [0, 1]: such an image gets a warning, as in the reference
    processor, which reads floats the same way). Grayscale is repeated to
    RGB. Transparency is composited onto white, as the reference processor
    does: PIL images with PIL's `alpha_composite`, RGBA arrays with its
    array path's float arithmetic.
    """
    if isinstance(image, Image.Image):
        if "A" in image.getbands() or image.info.get("transparency") is not None:
            white = Image.new("RGBA", image.size, (255, 255, 255, 255))
            return np.asarray(Image.alpha_composite(white, image.convert("RGBA")).convert("RGB"))
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise ValueError(
            f"An image must be (H, W), (H, W, C) or a PIL image; got shape {array.shape}."
        )
    if array.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"An image must have 1, 3 or 4 channels (channels last); got shape {array.shape}."
        )
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"An image must not be empty; got shape {array.shape}.")
    if array.dtype == np.uint8:
        pass
    elif np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)):
            raise ValueError("Image values must be finite.")
        if array.min() < 0 or array.max() > 255:
            raise ValueError(
                "Image values must be pixel values in [0, 255]; got the range "
                f"[{array.min()}, {array.max()}]."
            )
        if np.issubdtype(array.dtype, np.floating) and 0 < array.max() <= 1:
            warnings.warn(
                "A float image has all its values in [0, 1]; they are read as pixel "
                "values in [0, 255] (as the reference processor reads them), so it "
                "is nearly black. Multiply it by 255 if it is a [0, 1] image.",
                stacklevel=3,
            )
        array = np.round(array).astype(np.uint8)
    else:
        raise ValueError(f"Unsupported image dtype {array.dtype}; use uint8 or floats in [0, 255].")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    if array.shape[-1] == 4:
        array = _over_white(array)
    return array


def _over_white(rgba):
    """An RGBA uint8 array composited onto white, with the reference's array
    arithmetic: torchvision's `to_dtype` to float32 (times `1 / 255`),
    `rgb * a + (1 - a)`, and `to_dtype` back to uint8 (times 255.999,
    truncated)."""
    x = rgba.astype(np.float32) * np.float32(1.0 / 255)
    alpha = x[..., 3:]
    rgb = x[..., :3] * alpha + (np.float32(1) - alpha)
    return (rgb * np.float32(255.999)).astype(np.uint8)


def as_image_list(images):
    """A batch `(B, H, W, C)`, one image, or a list of images -> a list."""
    if isinstance(images, Image.Image):
        return [images]
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("No images given.")
        return list(images)
    array = np.asarray(images)
    if array.ndim == 4:
        return list(array)
    if array.ndim in (2, 3):
        return [array]
    raise ValueError(
        f"Images must be one image (H, W[, C]), a batch (B, H, W, C) or a list; got shape {array.shape}."
    )


class SAM3ImageConverter:
    """Resizes images to the model's square input and scales them to [-1, 1].

    As the reference processor: the RGB uint8 image is resized to
    `image_size x image_size`, ignoring the aspect ratio, with antialiased
    bilinear filtering on uint8 (PIL's, which torchvision's uint8 path
    reproduces; expect at most one grey level of difference), then mapped
    with `(x - 127.5) / 127.5`.

    Args:
        image_size: int. Side of the model input. Defaults to `1008`.

    Call arguments:
        images: one image, a batch array or a list (see `to_rgb_uint8`).

    Returns:
        `(pixels, original_sizes)`: float32 `(B, S, S, 3)` and a list of
        `(height, width)`.
    """

    def __init__(self, image_size=1008):
        self.image_size = int(image_size)

    def resize(self, image):
        size = self.image_size
        if image.shape[:2] == (size, size):
            return image
        return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))

    def __call__(self, images):
        images = [to_rgb_uint8(image) for image in as_image_list(images)]
        sizes = [tuple(image.shape[:2]) for image in images]
        pixels = np.stack([self.resize(image) for image in images]).astype("float32")
        return (pixels - 127.5) / 127.5, sizes

    def get_config(self):
        return {"image_size": self.image_size}
