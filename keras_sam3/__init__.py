"""keras_sam3: SAM 3 in Keras 3, the same numbers on JAX, TensorFlow and PyTorch."""

from keras_sam3.allocator import tune_cpu_allocator
from keras_sam3.convert import convert_backbone
from keras_sam3.convert import convert_tracker
from keras_sam3.models import SAM3Backbone
from keras_sam3.models import SAM3DetrDecoder
from keras_sam3.models import SAM3DetrEncoder
from keras_sam3.models import SAM3DotProductScoring
from keras_sam3.models import SAM3FPNNeck
from keras_sam3.models import SAM3GeometryEncoder
from keras_sam3.models import SAM3MaskDecoder
from keras_sam3.models import SAM3TextEncoder
from keras_sam3.models import SAM3Tracker
from keras_sam3.models import SAM3TrackerMaskDecoder
from keras_sam3.models import SAM3TrackerPromptEncoder
from keras_sam3.models import SAM3VisionEncoder
from keras_sam3.models import SAM3ViT
from keras_sam3.models.image_converter import SAM3ImageConverter
from keras_sam3.models.preprocessor import SAM3PromptableConceptImageSegmenterPreprocessor
from keras_sam3.models.segmenter import SAM3PromptableConceptImageSegmenter
from keras_sam3.models.tokenizer import SAM3Tokenizer
from keras_sam3.models.visual_segmenter import SAM3PromptableVisualImageSegmenter

__version__ = "0.1.0"

__all__ = [
    "SAM3Backbone",
    "SAM3DetrDecoder",
    "SAM3DetrEncoder",
    "SAM3DotProductScoring",
    "SAM3FPNNeck",
    "SAM3GeometryEncoder",
    "SAM3MaskDecoder",
    "SAM3TextEncoder",
    "SAM3VisionEncoder",
    "SAM3ImageConverter",
    "SAM3PromptableConceptImageSegmenter",
    "SAM3PromptableConceptImageSegmenterPreprocessor",
    "SAM3PromptableVisualImageSegmenter",
    "SAM3Tokenizer",
    "SAM3Tracker",
    "SAM3TrackerMaskDecoder",
    "SAM3TrackerPromptEncoder",
    "SAM3ViT",
    "convert_backbone",
    "convert_tracker",
    "tune_cpu_allocator",
]
