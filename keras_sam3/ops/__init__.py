from keras_sam3.ops.boxes import box_cxcywh_to_xyxy
from keras_sam3.ops.boxes import box_xyxy_to_cxcywh
from keras_sam3.ops.boxes import inverse_sigmoid
from keras_sam3.ops.conv import conv2d
from keras_sam3.ops.conv import conv2d_transpose
from keras_sam3.ops.linear import linear
from keras_sam3.ops.normalization import group_norm
from keras_sam3.ops.roi_align import roi_align
