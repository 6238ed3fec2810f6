"""`SAM3MaskDecoder`: instance and semantic masks from the pixel decoder."""

import keras
from keras import ops

from keras_sam3.layers.attention import Attention
from keras_sam3.layers.conv import Conv2D
from keras_sam3.layers.direct import dropout
from keras_sam3.layers.group_norm import GroupNormalization
from keras_sam3.layers.layer_norm import LayerNormalization
from keras_sam3.layers.mlp import StackedMLP
from keras_sam3.ops.conv import conv2d
from keras_sam3.ops.conv import upsampled_conv3x3


def upsample_nearest_add(x, skip):
    """`skip` plus `x` upsampled (nearest neighbour) to its size by an
    integer factor, in one broadcast add: the upsampled map is never
    written out on its own (at 1008 px that map is 288 x 288 x 256)."""
    _, h, w, channels = x.shape
    size = skip.shape[1:3]
    fy, fx = size[0] // h, size[1] // w
    if fy * h != size[0] or fx * w != size[1]:
        raise ValueError(f"Cannot upsample {(h, w)} to {tuple(size)} by an integer factor.")
    # (B, h * fy, w * fx, C) -> (B, h, fy, w, fx, C), + (B, h, 1, w, 1, C)
    y = ops.reshape(skip, (-1, h, fy, w, fx, channels)) + x[:, :, None, :, None, :]
    return ops.reshape(y, (-1, h * fy, w * fx, channels))


@keras.saving.register_keras_serializable(package="keras_sam3")
class SAM3MaskDecoder(keras.layers.Layer):
    """Mask head of SAM 3 (Meta's `UniversalSegmentationHead`).

    The encoder memory first cross-attends to the prompt (pre-norm, one
    residual). A pixel decoder then walks up the FPN from the memory (which
    replaces the coarsest level): nearest 2x upsampling, add the skip level,
    3x3 conv, GroupNorm(8), ReLU. Instance masks are dot products of an MLP
    of each query with a 1x1 projection of the pixel embedding; the semantic
    mask is a 1x1 conv of it.

    The reference's third pixel-decoder stage (`conv_layers.2`, `norms.2`)
    is never called there or in Meta's code and is not built here.

    Args:
        hidden_dim: int. Defaults to `256`.
        num_heads: int. Defaults to `8`.
        num_upsampling_stages: int. Stages actually applied: one per skip
            level. Defaults to `2`.
        layer_norm_epsilon: float. Defaults to `1e-5`.
        dropout_rate: float. Defaults to `0.0` (as the reference).

    Call arguments:
        queries: `(B, Q, D)` last-layer decoder queries.
        memory: `(B, H, W, D)` DETR encoder output on its grid.
        skips: list of `(B, H_i, W_i, D)` finer FPN levels, finest first
            (levels 0 and 1), or what `convolve_skips` made of them.
        prompt: `(B, L, D)`, prompt_mask: bool `(B, L)`.
        skips_convolved: bool. Whether `skips` come from `convolve_skips`.
            Defaults to `False`.

    Returns:
        A dict: `pred_masks` `(B, Q, H_0, W_0)` logits and `semantic_seg`
        `(B, H_0, W_0, 1)` logits.
    """

    def __init__(
        self,
        hidden_dim=256,
        num_heads=8,
        num_upsampling_stages=2,
        layer_norm_epsilon=1e-5,
        dropout_rate=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.num_upsampling_stages = num_upsampling_stages
        self.layer_norm_epsilon = layer_norm_epsilon
        self.dropout_rate = dropout_rate
        policy = self.dtype_policy
        d = hidden_dim
        self.conv_layers = [
            Conv2D(d, 3, padding="same", dtype=policy, name=f"conv_layers_{i}")
            for i in range(num_upsampling_stages)
        ]
        self.norms = [
            GroupNormalization(8, epsilon=1e-5, dtype=policy, name=f"norms_{i}")
            for i in range(num_upsampling_stages)
        ]
        self.mask_embedder = StackedMLP(
            d,
            d,
            num_layers=3,
            layer_names=["layers_0", "layers_1", "layers_2"],
            dtype=policy,
            name="mask_embedder",
        )
        self.instance_projection = Conv2D(d, 1, dtype=policy, name="instance_projection")
        self.semantic_projection = Conv2D(1, 1, dtype=policy, name="semantic_projection")
        self.prompt_cross_attn = Attention(d, num_heads, dtype=policy, name="prompt_cross_attn")
        self.prompt_cross_attn_norm = LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=policy, name="prompt_cross_attn_norm"
        )
        self.dropout = keras.layers.Dropout(dropout_rate, dtype=policy)

    def build(self, *args, **kwargs):
        d = self.hidden_dim
        maps = (None, None, None, d)
        for layer in self.conv_layers + self.norms:
            layer.build(maps)
        self.mask_embedder.build((None, None, d))
        self.instance_projection.build(maps)
        self.semantic_projection.build(maps)
        self.prompt_cross_attn.build((None, None, d), (None, None, d))
        self.prompt_cross_attn_norm.build((None, None, d))
        self.built = True

    def convolve_skips(self, skips):
        """The prompt-independent half of the pixel decoder, for images that
        will be prompted more than once.

        Each stage convolves (upsampled previous stage + skip level), and a
        convolution is linear: conv(up + skip) = conv(skip) + conv(up)
        without bias. This returns conv(skip), bias included, for each
        level (same order and shapes as `skips`); `call(...,
        skips_convolved=True)` then adds the other half, computed at the
        coarser resolution by `keras_sam3.ops.upsampled_conv3x3` (at 1008 px
        16 instead of 36 products per coarse pixel and channel for the
        288 x 288 stage). Equal to the plain path up to float rounding.
        """
        if len(skips) != self.num_upsampling_stages:
            raise ValueError(
                f"Expected {self.num_upsampling_stages} skip levels, got {len(skips)}."
            )
        convolved = [conv(skip) for conv, skip in zip(self.conv_layers, reversed(skips))]
        return convolved[::-1]

    def _upsampled_stage(self, conv, x, convolved_skip):
        """conv(upsample(x) + skip) from x and conv(skip)."""
        skip = ops.cast(convolved_skip, x.dtype)
        if tuple(skip.shape[1:3]) == (2 * x.shape[1], 2 * x.shape[2]):
            return upsampled_conv3x3(x, conv.kernel, skip)
        # Another integer factor: convolve the upsampled map itself.
        upsampled = upsample_nearest_add(x, ops.zeros_like(skip))
        return conv2d(upsampled, ops.cast(conv.kernel, x.dtype), padding="same") + skip

    def call(
        self,
        queries,
        memory,
        skips,
        prompt,
        prompt_mask,
        training=None,
        skips_convolved=False,
    ):
        if len(skips) != self.num_upsampling_stages:
            raise ValueError(
                f"Expected {self.num_upsampling_stages} skip levels, got {len(skips)}."
            )
        _, height, width, d = memory.shape
        memory = ops.reshape(memory, (-1, height * width, d))  # (B, N, D)
        y = self.prompt_cross_attn(
            self.prompt_cross_attn_norm(memory),
            prompt,
            prompt,
            attention_mask=prompt_mask[:, None, None, :],
        )
        memory = memory + dropout(self.dropout, y, training)

        # (B, N, D) -> (B, H, W, D)
        x = ops.reshape(memory, (-1, height, width, d))
        for conv, norm, skip in zip(self.conv_layers, self.norms, reversed(skips)):
            if skips_convolved:
                x = self._upsampled_stage(conv, x, skip)
            else:
                x = conv(upsample_nearest_add(x, skip))
            x = ops.relu(norm(x))

        # The 1x1 instance projection folds into the query embeddings:
        # e . (x K + b) = x (K e) + e . b, which spares a 256 -> 256
        # convolution of the finest map.
        embeddings = self.mask_embedder(queries)  # (B, Q, D)
        kernel = ops.cast(self.instance_projection.kernel[0, 0], embeddings.dtype)  # (D_in, D)
        bias = ops.cast(self.instance_projection.bias, embeddings.dtype)
        folded = ops.einsum("bqc,kc->bqk", embeddings, kernel)  # (B, Q, D_in)
        offset = ops.einsum("bqc,c->bq", embeddings, bias)  # (B, Q)
        pred_masks = ops.einsum("bqk,bhwk->bqhw", folded, x) + offset[:, :, None, None]  # (B, Q, H, W)
        return {"pred_masks": pred_masks, "semantic_seg": self.semantic_projection(x)}

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "num_heads": self.num_heads,
                "num_upsampling_stages": self.num_upsampling_stages,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "dropout_rate": self.dropout_rate,
            }
        )
        return config
