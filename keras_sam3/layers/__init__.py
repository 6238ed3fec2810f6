from keras_sam3.layers.attention import Attention
from keras_sam3.layers.mlp import MLP
from keras_sam3.layers.rope import apply_rope
from keras_sam3.layers.rope import axial_rope_tables
from keras_sam3.layers.position_encoding import sine_encode
from keras_sam3.layers.position_encoding import sine_position_encoding_2d
from keras_sam3.layers.windows import window_partition
from keras_sam3.layers.windows import window_unpartition
