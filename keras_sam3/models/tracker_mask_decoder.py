"""`SAM3TrackerMaskDecoder`: SAM 2's two-way transformer mask decoder, as the
SAM 3 tracker uses it (IoU head, object-score head, multimask output)."""

import keras
from keras import ops

from keras_sam3.layers.attention import Attention
from keras_sam3.layers.conv import Conv2D
from keras_sam3.layers.conv import Conv2DTranspose
from keras_sam3.layers.embedding import Embedding
from keras_sam3.layers.layer_norm import layer_norm
from keras_sam3.layers.mlp import StackedMLP


def repeat_batch(x, times):
    """`(B, ...)` -> `(B * times, ...)`, each item `times` times in a row.
    (A broadcast rather than `ops.repeat`, which Keras' torch backend cannot
    trace on the meta device.)"""
    shape = tuple(x.shape[1:])
    x = ops.broadcast_to(x[:, None], (ops.shape(x)[0], times) + shape)  # (B, times, ...)
    return ops.reshape(x, (-1,) + shape)  # (B * times, ...)


@keras.saving.register_keras_serializable(package="keras_sam3")
class TwoWayBlock(keras.layers.Layer):
    """Tokens self-attend, attend to the image, pass an MLP; then the image
    attends to the tokens. Post-norm. The first block's self-attention uses
    no positions and no residual (SAM's `skip_first_layer_pe`).

    Args:
        hidden_dim: int. Token and image width `D`.
        num_heads: int.
        mlp_dim: int. The MLP's inner width.
        downsample_rate: int. The cross-attentions run at `D / rate`.
            Defaults to `2`.
        skip_first_layer_pe: bool. Defaults to `False`.
    """

    def __init__(self, hidden_dim, num_heads, mlp_dim, downsample_rate=2, skip_first_layer_pe=False, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.downsample_rate = downsample_rate
        self.skip_first_layer_pe = skip_first_layer_pe
        policy = self.dtype_policy
        inner = hidden_dim // downsample_rate
        self.self_attn = Attention(hidden_dim, num_heads, dtype=policy, name="self_attn")
        self.layer_norm1 = layer_norm("layer_norm1", 1e-5, policy)
        self.cross_attn_token_to_image = Attention(
            hidden_dim, num_heads, inner_dim=inner, dtype=policy, name="cross_attn_token_to_image"
        )
        self.layer_norm2 = layer_norm("layer_norm2", 1e-5, policy)
        self.mlp = StackedMLP(
            mlp_dim, hidden_dim, num_layers=2, layer_names=["proj_in", "proj_out"], dtype=policy, name="mlp"
        )
        self.layer_norm3 = layer_norm("layer_norm3", 1e-5, policy)
        self.layer_norm4 = layer_norm("layer_norm4", 1e-5, policy)
        self.cross_attn_image_to_token = Attention(
            hidden_dim, num_heads, inner_dim=inner, dtype=policy, name="cross_attn_image_to_token"
        )

    def build(self, *args, **kwargs):
        tokens = (None, None, self.hidden_dim)
        for layer in (self.self_attn, self.cross_attn_token_to_image, self.cross_attn_image_to_token):
            layer.build(tokens, tokens, tokens)
        for layer in (self.layer_norm1, self.layer_norm2, self.layer_norm3, self.layer_norm4, self.mlp):
            layer.build(tokens)
        self.built = True

    def call(self, queries, keys, query_pe, key_pe):
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.layer_norm1(queries)
        k = keys + key_pe
        queries = self.layer_norm2(queries + self.cross_attn_token_to_image(queries + query_pe, k, keys))
        queries = self.layer_norm3(queries + self.mlp(queries))
        keys = self.layer_norm4(keys + self.cross_attn_image_to_token(k, queries + query_pe, queries))
        return queries, keys

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "num_heads": self.num_heads,
                "mlp_dim": self.mlp_dim,
                "downsample_rate": self.downsample_rate,
                "skip_first_layer_pe": self.skip_first_layer_pe,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_sam3")
class TwoWayTransformer(keras.layers.Layer):
    """`num_layers` `TwoWayBlock`s and a final token-to-image attention.

    Args:
        hidden_dim: int. Defaults to `256`.
        num_layers: int. Defaults to `2`.
        num_heads: int. Defaults to `8`.
        mlp_dim: int. The blocks' MLP inner width. Defaults to `2048`.
        downsample_rate: int. Defaults to `2`.

    Call arguments:
        tokens: `(N, T, D)`; image: `(N, HW, D)`; image_pe: `(1 or N, HW, D)`.

    Returns:
        `(tokens, image)` after the blocks.
    """

    def __init__(self, hidden_dim=256, num_layers=2, num_heads=8, mlp_dim=2048, downsample_rate=2, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.downsample_rate = downsample_rate
        policy = self.dtype_policy
        self.blocks = [
            TwoWayBlock(
                hidden_dim, num_heads, mlp_dim, downsample_rate, skip_first_layer_pe=i == 0,
                dtype=policy, name=f"layers_{i}",
            )
            for i in range(num_layers)
        ]
        self.final_attn_token_to_image = Attention(
            hidden_dim, num_heads, inner_dim=hidden_dim // downsample_rate, dtype=policy,
            name="final_attn_token_to_image",
        )
        self.layer_norm_final_attn = layer_norm("layer_norm_final_attn", 1e-5, policy)

    def build(self, *args, **kwargs):
        tokens = (None, None, self.hidden_dim)
        for block in self.blocks:
            block.build()
        self.final_attn_token_to_image.build(tokens, tokens, tokens)
        self.layer_norm_final_attn.build(tokens)
        self.built = True

    def call(self, tokens, image, image_pe):
        queries, keys = tokens, image
        for block in self.blocks:
            queries, keys = block(queries, keys, tokens, image_pe)
        attended = self.final_attn_token_to_image(queries + tokens, keys + image_pe, keys)
        return self.layer_norm_final_attn(queries + attended), keys

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "mlp_dim": self.mlp_dim,
                "downsample_rate": self.downsample_rate,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_sam3")
class SAM3TrackerMaskDecoder(keras.layers.Layer):
    """Masks, IoU predictions and an object score from prompt tokens.

    Output tokens `[object score, IoU, 4 mask tokens]` precede the prompt
    tokens in a `TwoWayTransformer` over the image embedding (plus the dense
    prompt). The image is upscaled 4x by two transposed convolutions with the
    projected high-resolution FPN levels added; each mask token's
    hypernetwork MLP gives the weights of its mask.

    Args:
        hidden_dim: int. Defaults to `256`.
        num_layers, num_heads, mlp_dim, downsample_rate: the transformer's.
            Defaults to `2`, `8`, `2048`, `2`.
        num_multimask_outputs: int. Defaults to `3`.
        iou_head_depth, iou_head_hidden_dim: Defaults to `3`, `256`.
        dynamic_multimask_via_stability: bool. With `multimask_output=False`,
            fall back from mask 0 to the best of masks 1-3 when mask 0 is
            unstable. Defaults to `True`.
        stability_delta, stability_threshold: Defaults to `0.05`, `0.98`.

    Call arguments:
        image: `(B, h, w, D)`; image_pe: `(1, h, w, D)`; sparse: `(B, P, T, D)`;
        dense: `(B, h, w, D)`; high_resolution: `[s0 (B, 4h, 4w, D/8),
        s1 (B, 2h, 2w, D/4)]` already projected (`project_high_resolution`);
        multimask_output: bool.

    Returns:
        A dict: `masks` `(B, P, K, 4h, 4w)` logits, `iou_scores` `(B, P, K)`
        probabilities, `object_score_logits` `(B, P, 1)`; K is 3 or 1.
    """

    def __init__(
        self,
        hidden_dim=256,
        num_layers=2,
        num_heads=8,
        mlp_dim=2048,
        downsample_rate=2,
        num_multimask_outputs=3,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
        dynamic_multimask_via_stability=True,
        stability_delta=0.05,
        stability_threshold=0.98,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.downsample_rate = downsample_rate
        self.num_multimask_outputs = num_multimask_outputs
        self.iou_head_depth = iou_head_depth
        self.iou_head_hidden_dim = iou_head_hidden_dim
        self.dynamic_multimask_via_stability = dynamic_multimask_via_stability
        self.stability_delta = stability_delta
        self.stability_threshold = stability_threshold
        self.num_mask_tokens = num_multimask_outputs + 1
        policy = self.dtype_policy
        d = hidden_dim

        def embedding(rows, name):
            return Embedding(rows, d, dtype=policy, name=name)

        def head(hidden, out, depth, name):
            names = ["proj_in"] + [f"layers_{i}" for i in range(depth - 2)] + ["proj_out"]
            return StackedMLP(hidden, out, num_layers=depth, layer_names=names, dtype=policy, name=name)

        self.obj_score_token = embedding(1, "obj_score_token")
        self.iou_token = embedding(1, "iou_token")
        self.mask_tokens = embedding(self.num_mask_tokens, "mask_tokens")
        self.transformer = TwoWayTransformer(
            d, num_layers, num_heads, mlp_dim, downsample_rate, dtype=policy, name="transformer"
        )
        self.upscale_conv1 = Conv2DTranspose(d // 4, 2, strides=2, dtype=policy, name="upscale_conv1")
        self.upscale_layer_norm = layer_norm("upscale_layer_norm", 1e-6, policy)
        self.upscale_conv2 = Conv2DTranspose(d // 8, 2, strides=2, dtype=policy, name="upscale_conv2")
        self.output_hypernetworks_mlps = [
            head(d, d // 8, 3, f"output_hypernetworks_mlps_{i}") for i in range(self.num_mask_tokens)
        ]
        self.iou_prediction_head = head(iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth, "iou_prediction_head")
        self.pred_obj_score_head = head(d, 1, 3, "pred_obj_score_head")
        self.conv_s0 = Conv2D(d // 8, 1, dtype=policy, name="conv_s0")
        self.conv_s1 = Conv2D(d // 4, 1, dtype=policy, name="conv_s1")

    def build(self, *args, **kwargs):
        d = self.hidden_dim
        tokens = (None, None, d)
        for layer in (self.obj_score_token, self.iou_token, self.mask_tokens):
            layer.build((None,))
        self.transformer.build()
        self.upscale_conv1.build((None, None, None, d))
        self.upscale_layer_norm.build((None, None, None, d // 4))
        self.upscale_conv2.build((None, None, None, d // 4))
        for layer in self.output_hypernetworks_mlps + [self.iou_prediction_head, self.pred_obj_score_head]:
            layer.build(tokens)
        self.conv_s0.build((None, None, None, d))
        self.conv_s1.build((None, None, None, d))
        self.built = True

    def project_high_resolution(self, level0, level1):
        """FPN levels 0 and 1 `(B, 4h, 4w, D)`, `(B, 2h, 2w, D)` -> D/8 and D/4 wide."""
        if not self.built:
            self.build()
        return [self.conv_s0(level0), self.conv_s1(level1)]

    def _stability(self, logits):
        # (..., H, W) -> (...): area above +delta over area above -delta.
        inner = ops.sum(ops.cast(logits > self.stability_delta, "float32"), axis=(-2, -1))
        outer = ops.sum(ops.cast(logits > -self.stability_delta, "float32"), axis=(-2, -1))
        return ops.where(outer > 0, inner / ops.maximum(outer, 1.0), 1.0)

    def call(self, image, image_pe, sparse, dense, high_resolution, multimask_output=True):
        batch = ops.shape(sparse)[0]
        points = ops.shape(sparse)[1]
        _, h, w, d = image.shape
        output = ops.concatenate(
            [self.obj_score_token.embeddings, self.iou_token.embeddings, self.mask_tokens.embeddings], axis=0
        )
        # (2 + K, D) -> (B, P, 2 + K, D): object-score, IoU and mask tokens per prompt
        output = ops.broadcast_to(ops.cast(output, sparse.dtype), (batch, points) + tuple(output.shape))
        tokens = ops.concatenate([output, sparse], axis=2)  # (B, P, T, D)
        num_tokens = tokens.shape[2]
        # Every prompt of an image sees that image: (B, ...) -> (B * P, ...).
        image = repeat_batch(image + dense, points)
        tokens = ops.reshape(tokens, (-1, num_tokens, d))  # (B * P, T, D)
        image_flat = ops.reshape(image, (-1, h * w, d))  # (B * P, N, D)
        pe_flat = ops.reshape(ops.cast(image_pe, image.dtype), (-1, h * w, d))  # (1 or B, N, D)
        tokens, image_flat = self.transformer(tokens, image_flat, pe_flat)

        iou_token = tokens[:, 1]
        mask_tokens = tokens[:, 2 : 2 + self.num_mask_tokens]
        s0, s1 = [repeat_batch(f, points) for f in high_resolution]
        x = ops.reshape(image_flat, (-1, h, w, d))  # (B * P, N, D) -> (B * P, h, w, D)
        x = ops.gelu(self.upscale_layer_norm(self.upscale_conv1(x) + s1), approximate=False)
        x = ops.gelu(self.upscale_conv2(x) + s0, approximate=False)  # (B * P, 4h, 4w, D/8)
        hyper = ops.stack(
            [mlp(mask_tokens[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], axis=1
        )  # (B * P, K, D/8)
        masks = ops.einsum("nkc,nyxc->nkyx", hyper, x)  # (B * P, K, 4h, 4w)
        iou = ops.sigmoid(self.iou_prediction_head(iou_token))  # (B * P, K)
        object_score = self.pred_obj_score_head(tokens[:, 0])  # (B * P, 1)

        if multimask_output:
            masks, iou = masks[:, 1:], iou[:, 1:]
        elif self.dynamic_multimask_via_stability:
            best = ops.argmax(iou[:, 1:], axis=-1)  # (B * P,)
            pick = ops.one_hot(best, self.num_mask_tokens - 1, dtype=masks.dtype)
            best_mask = ops.einsum("nk,nkyx->nyx", pick, masks[:, 1:])[:, None]  # (B * P, 1, 4h, 4w)
            best_iou = ops.sum(pick * iou[:, 1:], axis=-1, keepdims=True)
            stable = self._stability(masks[:, 0]) >= self.stability_threshold  # (B * P,)
            masks = ops.where(stable[:, None, None, None], masks[:, :1], best_mask)
            iou = ops.where(stable[:, None], iou[:, :1], best_iou)
        else:
            masks, iou = masks[:, :1], iou[:, :1]
        out_h, out_w = masks.shape[-2:]
        return {  # (B * P, ...) -> (B, P, ...)
            "masks": ops.reshape(masks, (batch, points, -1, out_h, out_w)),
            "iou_scores": ops.reshape(iou, (batch, points, -1)),
            "object_score_logits": ops.reshape(object_score, (batch, points, 1)),
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "mlp_dim": self.mlp_dim,
                "downsample_rate": self.downsample_rate,
                "num_multimask_outputs": self.num_multimask_outputs,
                "iou_head_depth": self.iou_head_depth,
                "iou_head_hidden_dim": self.iou_head_hidden_dim,
                "dynamic_multimask_via_stability": self.dynamic_multimask_via_stability,
                "stability_delta": self.stability_delta,
                "stability_threshold": self.stability_threshold,
            }
        )
        return config
