"""keras_sam3: SAM 3 in Keras 3, the same numbers on JAX, TensorFlow and PyTorch."""

from keras_sam3.models.fpn_neck import SAM3FPNNeck
from keras_sam3.models.text_encoder import SAM3TextEncoder
from keras_sam3.models.vision_encoder import SAM3VisionEncoder
from keras_sam3.models.vit import SAM3ViT

__version__ = "0.1.0"

__all__ = [
    "SAM3FPNNeck",
    "SAM3TextEncoder",
    "SAM3VisionEncoder",
    "SAM3ViT",
]
