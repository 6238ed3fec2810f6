from keras_sam3.metrics.cgf1 import ConceptSegmentationEvaluator
from keras_sam3.metrics.cgf1 import mask_iou
