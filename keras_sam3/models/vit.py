"""The SAM 3 image trunk: a ViT with 2-D RoPE, windowed and global layers."""

import keras
from keras import ops

from keras_sam3.layers.attention import Attention
from keras_sam3.layers.conv import Conv2D
from keras_sam3.layers.layer_norm import LayerNormalization
from keras_sam3.layers.mlp import MLP
from keras_sam3.layers.rope import axial_rope_tables
from keras_sam3.layers.windows import window_partition
from keras_sam3.layers.windows import window_unpartition


@keras.saving.register_keras_serializable(package="keras_sam3")
class ViTBlock(keras.layers.Layer):
    """Pre-norm ViT block with RoPE attention, windowed or global.

    `x = x + Attn(LN1(x))`, then `x = x + MLP(LN2(x))`, on `(B, H, W, D)`.
    A windowed block (`window_size > 0`) pads the grid to a multiple of the
    window, attends inside each window and crops the padding again.

    Args:
        hidden_dim: int. Token width `D`.
        intermediate_dim: int. MLP hidden width.
        num_heads: int. Attention heads.
        window_size: int. Window side in tokens; 0 means global attention.
        layer_norm_epsilon: float. Defaults to `1e-6`.
        activation: str. MLP activation. Defaults to `"gelu"` (exact).

    Call arguments:
        x: `(B, H, W, D)`.
        rope: `(cos, sin)`, each `(ws * ws, d)` for windowed blocks or
            `(H * W, d)` for global ones.
    """

    def __init__(
        self,
        hidden_dim,
        intermediate_dim,
        num_heads,
        window_size=0,
        layer_norm_epsilon=1e-6,
        activation="gelu",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.num_heads = num_heads
        self.window_size = window_size
        self.layer_norm_epsilon = layer_norm_epsilon
        self.activation = activation
        self.layer_norm1 = LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="layer_norm1"
        )
        self.attention = Attention(
            hidden_dim, num_heads, dtype=self.dtype_policy, name="attention"
        )
        self.layer_norm2 = LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="layer_norm2"
        )
        self.mlp = MLP(
            hidden_dim,
            intermediate_dim,
            activation=activation,
            dtype=self.dtype_policy,
            name="mlp",
        )

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        tokens = (None, None, self.hidden_dim)
        self.layer_norm1.build(input_shape)
        self.attention.build(tokens)
        self.layer_norm2.build(input_shape)
        self.mlp.build(input_shape)
        self.built = True

    def call(self, x, rope):
        _, height, width, channels = x.shape
        y = self.layer_norm1(x)
        if self.window_size > 0:
            windows, padded = window_partition(y, self.window_size)
            windows = self.attention(windows, rope=rope)
            y = window_unpartition(windows, self.window_size, padded, (height, width))
        else:
            # (B, H, W, D) -> (B, N, D) -> (B, H, W, D)
            y = ops.reshape(y, (-1, height * width, channels))
            y = self.attention(y, rope=rope)
            y = ops.reshape(y, (-1, height, width, channels))
        x = x + y
        return x + self.mlp(self.layer_norm2(x))

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "intermediate_dim": self.intermediate_dim,
                "num_heads": self.num_heads,
                "window_size": self.window_size,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "activation": self.activation,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_sam3")
class SAM3ViT(keras.layers.Layer):
    """The SAM 3 ViT trunk (the reference's `Sam3ViTModel`).

    Patch embedding without bias, absolute position embeddings learned on
    the pretraining grid and *tiled* (not interpolated) over larger grids,
    a pre-trunk layer norm, then `num_layers` RoPE blocks: windowed, except
    the layers in `global_attn_indexes`. Windowed layers use the local
    position inside the window; global layers scale grid positions by
    `window_size / grid_width`.

    Args:
        hidden_dim: int. Defaults to `1024`.
        intermediate_dim: int. Defaults to `4736`.
        num_layers: int. Defaults to `32`.
        num_heads: int. Defaults to `16`.
        patch_size: int. Defaults to `14`.
        pretrain_image_size: int. Image size of the position-embedding grid.
            Defaults to `336` (a 24 x 24 grid).
        window_size: int. Defaults to `24`.
        global_attn_indexes: tuple of int. Defaults to `(7, 15, 23, 31)`.
        layer_norm_epsilon: float. Defaults to `1e-6`.
        rope_theta: float. Defaults to `10000.0`.
        activation: str. Defaults to `"gelu"`.

    Call arguments:
        images: `(B, H, W, 3)`, normalized to [-1, 1]; H and W static.

    Returns:
        `(B, H / patch, W / patch, hidden_dim)`.
    """

    def __init__(
        self,
        hidden_dim=1024,
        intermediate_dim=4736,
        num_layers=32,
        num_heads=16,
        patch_size=14,
        pretrain_image_size=336,
        window_size=24,
        global_attn_indexes=(7, 15, 23, 31),
        layer_norm_epsilon=1e-6,
        rope_theta=10000.0,
        activation="gelu",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.patch_size = patch_size
        self.pretrain_image_size = pretrain_image_size
        self.window_size = window_size
        self.global_attn_indexes = tuple(global_attn_indexes)
        self.layer_norm_epsilon = layer_norm_epsilon
        self.rope_theta = rope_theta
        self.activation = activation
        self.pretrain_grid = pretrain_image_size // patch_size

        self.patch_embeddings = Conv2D(
            hidden_dim,
            patch_size,
            strides=patch_size,
            use_bias=False,
            dtype=self.dtype_policy,
            name="patch_embeddings",
        )
        self.layer_norm = LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="layer_norm"
        )
        self.blocks = [
            ViTBlock(
                hidden_dim,
                intermediate_dim,
                num_heads,
                window_size=0 if i in self.global_attn_indexes else window_size,
                layer_norm_epsilon=layer_norm_epsilon,
                activation=activation,
                dtype=self.dtype_policy,
                name=f"layers_{i}",
            )
            for i in range(num_layers)
        ]

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        self.patch_embeddings.build(input_shape)
        grid_shape = self.patch_embeddings.compute_output_shape(input_shape)
        # (1, g * g, D): the checkpoint's layout; tiled in call().
        self.position_embeddings = self.add_weight(
            name="position_embeddings",
            shape=(1, self.pretrain_grid**2, self.hidden_dim),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        )
        self.layer_norm.build(grid_shape)
        for block in self.blocks:
            block.build(grid_shape)
        self.built = True

    def _tiled_position_embeddings(self, height, width):
        g = self.pretrain_grid
        # (1, g*g, D) -> (1, g, g, D), tiled and cropped to (1, H, W, D).
        pos = ops.reshape(self.position_embeddings, (1, g, g, self.hidden_dim))
        if height == g and width == g:
            return pos
        pos = ops.tile(pos, (1, height // g + 1, width // g + 1, 1))
        return pos[:, :height, :width, :]

    def rope_tables(self, height, width):
        """Numpy `(cos, sin)` for the windowed and for the global layers."""
        head_dim = self.hidden_dim // self.num_heads
        window = axial_rope_tables(
            self.window_size, self.window_size, head_dim, self.rope_theta
        )
        scale = self.window_size / width
        global_ = axial_rope_tables(height, width, head_dim, self.rope_theta, scale)
        return window, global_

    def call(self, images):
        x = self.patch_embeddings(images)
        _, height, width, _ = x.shape
        if height is None or width is None:
            raise ValueError(
                "SAM3ViT needs static image height and width; got an input of "
                f"shape {images.shape}."
            )
        x = x + ops.cast(self._tiled_position_embeddings(height, width), x.dtype)
        x = self.layer_norm(x)
        window_rope, global_rope = [
            tuple(ops.convert_to_tensor(t) for t in tables)
            for tables in self.rope_tables(height, width)
        ]
        for block in self.blocks:
            x = block(x, rope=window_rope if block.window_size > 0 else global_rope)
        return x

    def compute_output_shape(self, input_shape):
        return self.patch_embeddings.compute_output_shape(tuple(input_shape))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "intermediate_dim": self.intermediate_dim,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "patch_size": self.patch_size,
                "pretrain_image_size": self.pretrain_image_size,
                "window_size": self.window_size,
                "global_attn_indexes": list(self.global_attn_indexes),
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "rope_theta": self.rope_theta,
                "activation": self.activation,
            }
        )
        return config
