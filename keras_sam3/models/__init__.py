from keras_sam3.models.fpn_neck import SAM3FPNNeck
from keras_sam3.models.text_encoder import SAM3TextEncoder
from keras_sam3.models.vision_encoder import SAM3VisionEncoder
from keras_sam3.models.vit import SAM3ViT
