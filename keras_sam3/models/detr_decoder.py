"""`SAM3DetrDecoder`: object queries with a presence token, box refinement
and a log-scaled box relative position bias."""

import math

import keras
import numpy as np
from keras import ops

from keras_sam3.layers.attention import Attention
from keras_sam3.layers.direct import dropout
from keras_sam3.layers.embedding import Embedding
from keras_sam3.layers.layer_norm import layer_norm
from keras_sam3.layers.mlp import MLP
from keras_sam3.layers.mlp import StackedMLP
from keras_sam3.layers.position_encoding import sine_encode
from keras_sam3.ops.boxes import box_cxcywh_to_xyxy
from keras_sam3.ops.boxes import inverse_sigmoid


@keras.saving.register_keras_serializable(package="keras_sam3")
class DetrDecoderBlock(keras.layers.Layer):
    """Post-norm decoder block: self-attention, prompt cross-attention,
    image cross-attention (with an additive bias), MLP; each residual is
    followed by its layer norm. Query positions are added to the queries of
    all three attentions and to the self-attention keys.
    """

    def __init__(
        self,
        hidden_dim,
        intermediate_dim,
        num_heads,
        layer_norm_epsilon=1e-5,
        dropout_rate=0.1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.num_heads = num_heads
        self.layer_norm_epsilon = layer_norm_epsilon
        self.dropout_rate = dropout_rate
        policy = self.dtype_policy


        def attention(name):
            return Attention(hidden_dim, num_heads, dtype=policy, name=name)

        self.self_attn = attention("self_attn")
        self.self_attn_layer_norm = layer_norm("self_attn_layer_norm", layer_norm_epsilon, self.dtype_policy)
        self.text_cross_attn = attention("text_cross_attn")
        self.text_cross_attn_layer_norm = layer_norm("text_cross_attn_layer_norm", layer_norm_epsilon, self.dtype_policy)
        self.vision_cross_attn = attention("vision_cross_attn")
        self.vision_cross_attn_layer_norm = layer_norm("vision_cross_attn_layer_norm", layer_norm_epsilon, self.dtype_policy)
        self.mlp = MLP(hidden_dim, intermediate_dim, activation="relu", dtype=policy, name="mlp")
        self.mlp_layer_norm = layer_norm("mlp_layer_norm", layer_norm_epsilon, self.dtype_policy)
        self.dropout = keras.layers.Dropout(dropout_rate, dtype=policy)

    def build(self, *args, **kwargs):
        tokens = (None, None, self.hidden_dim)
        for layer in (self.self_attn, self.text_cross_attn, self.vision_cross_attn):
            layer.build(tokens, tokens, tokens)
        for layer in (
            self.self_attn_layer_norm,
            self.text_cross_attn_layer_norm,
            self.vision_cross_attn_layer_norm,
            self.mlp_layer_norm,
            self.mlp,
        ):
            layer.build(tokens)
        self.built = True

    def call(
        self, x, query_pos, prompt, prompt_mask, memory, memory_pos, rpb, training=None, self_attention=True
    ):
        def residual(x, y, norm):
            return norm(x + dropout(self.dropout, y, training))

        if self_attention:
            q = x + query_pos
            x = residual(x, self.self_attn(q, q, x), self.self_attn_layer_norm)
        else:
            # Meta's one-to-many (DAC) queries: no self-attention, its layer
            # norm still applied (`dac_use_selfatt_ln`).
            x = self.self_attn_layer_norm(x)
        y = self.text_cross_attn(x + query_pos, prompt, prompt, attention_mask=prompt_mask)
        x = residual(x, y, self.text_cross_attn_layer_norm)
        y = self.vision_cross_attn(
            x + query_pos, memory + memory_pos, memory, attention_bias=rpb
        )
        x = residual(x, y, self.vision_cross_attn_layer_norm)
        return residual(x, self.mlp(x), self.mlp_layer_norm)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "intermediate_dim": self.intermediate_dim,
                "num_heads": self.num_heads,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "dropout_rate": self.dropout_rate,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_sam3")
class SAM3DetrDecoder(keras.layers.Layer):
    """DETR decoder of SAM 3 with a presence token and iterative box refinement.

    A presence token is prepended to `num_queries` learned queries. Every
    layer (1) sine-encodes the current reference boxes into query positions,
    (2) turns the box edges into a per-head bias over the image tokens
    (log-scaled distances, "boxRPB"), (3) runs a `DetrDecoderBlock`, then
    refines the boxes, `sigmoid(box_head(LN(q)) + inverse_sigmoid(box))`,
    and reads a presence logit from the presence token.

    Args:
        hidden_dim: int. Defaults to `256`.
        num_layers: int. Defaults to `6`.
        num_heads: int. Defaults to `8`.
        intermediate_dim: int. Defaults to `2048`.
        num_queries: int. Defaults to `200`.
        layer_norm_epsilon: float. Defaults to `1e-5`.
        presence_clamp: float or None. Presence logits are clamped to
            `+-presence_clamp`, as in the reference; Meta's code leaves them
            unclamped (None). Defaults to `10.0`.
        dropout_rate: float. Training-only dropout. Defaults to `0.1`.
        query_initializer: initializer of the learned queries, reference
            boxes and presence token. Defaults to standard normal, as
            PyTorch's `nn.Embedding` (Meta's); Keras' `"uniform"`
            (-0.05, 0.05) starts every query and reference box nearly alike,
            and training from scratch then often stays collapsed
            (docs/training.md).

    Call arguments:
        memory: `(B, H, W, D)` DETR encoder output on its grid.
        memory_pos: `(1 or B, H, W, D)`.
        prompt: `(B, L, D)`.
        prompt_mask: bool `(B, L)`.
        self_attention: bool. False runs the queries of Meta's one-to-many
            (DAC) branch, which training adds beside the one-to-one
            queries: the same learned queries and reference boxes, every
            layer without its self-attention (its layer norm kept), so no
            query sees another. In Meta's decoder they ride along in the same
            pass and the presence token attends only to the one-to-one
            half, so the one-to-one outputs are the default call's and the
            one-to-many ones this call's (its presence logits are not
            Meta's and no loss reads them). Defaults to `True`.

    Returns:
        A dict, every entry with a layer axis `L` after the batch:
        `queries` `(B, L, Q, D)` (normed), `boxes` `(B, L, Q, 4)` refined
        cxcywh, `reference_boxes` `(B, L, Q, 4)` each layer's input boxes,
        `presence_logits` `(B, L, 1)`.
    """

    def __init__(
        self,
        hidden_dim=256,
        num_layers=6,
        num_heads=8,
        intermediate_dim=2048,
        num_queries=200,
        layer_norm_epsilon=1e-5,
        presence_clamp=10.0,
        dropout_rate=0.1,
        query_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if query_initializer is None:
            query_initializer = keras.initializers.RandomNormal(stddev=1.0)
        self.query_initializer = keras.initializers.get(query_initializer)
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.num_queries = num_queries
        self.layer_norm_epsilon = layer_norm_epsilon
        self.presence_clamp = presence_clamp
        self.dropout_rate = dropout_rate
        policy = self.dtype_policy
        d = hidden_dim


        self.decoder_layers = [
            DetrDecoderBlock(
                d,
                intermediate_dim,
                num_heads,
                layer_norm_epsilon=layer_norm_epsilon,
                dropout_rate=dropout_rate,
                dtype=policy,
                name=f"layers_{i}",
            )
            for i in range(num_layers)
        ]
        self.output_layer_norm = layer_norm("output_layer_norm", layer_norm_epsilon, self.dtype_policy)
        self.box_head = StackedMLP(d, 4, num_layers=3, dtype=policy, name="box_head")
        def embedding(rows, cols, name):
            return Embedding(
                rows, cols, embeddings_initializer=self.query_initializer, dtype=policy, name=name
            )

        self.query_embed = embedding(num_queries, d, "query_embed")
        self.reference_points = embedding(num_queries, 4, "reference_points")
        self.presence_token = embedding(1, d, "presence_token")
        self.presence_head = StackedMLP(d, 1, num_layers=3, dtype=policy, name="presence_head")
        self.presence_layer_norm = layer_norm("presence_layer_norm", layer_norm_epsilon, self.dtype_policy)
        self.ref_point_head = StackedMLP(d, d, num_layers=2, dtype=policy, name="ref_point_head")
        self.box_rpb_embed_x = StackedMLP(
            d, num_heads, num_layers=2, dtype=policy, name="box_rpb_embed_x"
        )
        self.box_rpb_embed_y = StackedMLP(
            d, num_heads, num_layers=2, dtype=policy, name="box_rpb_embed_y"
        )

    def build(self, *args, **kwargs):
        d = self.hidden_dim
        tokens = (None, None, d)
        for layer in self.decoder_layers:
            layer.build()
        for layer in (self.output_layer_norm, self.box_head, self.presence_head, self.presence_layer_norm):
            layer.build(tokens)
        for layer in (self.query_embed, self.reference_points, self.presence_token):
            layer.build((None,))
        self.ref_point_head.build((None, None, 2 * d))
        self.box_rpb_embed_x.build((None, None, None, 2))
        self.box_rpb_embed_y.build((None, None, None, 2))
        self.built = True

    def set_grid_reference_boxes(self, box_size=0.2, trainable=False):
        """Spreads the learned reference boxes over a grid, for training
        from scratch.

        Sets query `i`'s initial box to the centre of cell `i` of an
        `n x n` grid (`n * n = num_queries`, row-major) with width and height
        `box_size`, and by default freezes them (DAB-DETR's fixed reference
        points): each query starts from its own region, meant to keep the
        matching consistent from the first steps. On the embedded model it
        was no better than learned boxes (docs/training.md). Leaves the variable trainable
        with `trainable=True`. The frozen state is not saved with a preset.
        """
        n = int(round(math.sqrt(self.num_queries)))
        if n * n != self.num_queries:
            raise ValueError(f"A grid of reference boxes needs a square number of queries; got {self.num_queries}.")
        if not 0.0 < box_size < 1.0:
            raise ValueError(f"`box_size` must lie in (0, 1); got {box_size}.")
        centres = (np.arange(n) + 0.5) / n
        cy, cx = np.meshgrid(centres, centres, indexing="ij")
        boxes = np.stack([cx.ravel(), cy.ravel(), np.full(n * n, box_size), np.full(n * n, box_size)], -1)
        self.reference_points.embeddings.assign(np.log(boxes / (1.0 - boxes)).astype("float32"))
        self.reference_points.trainable = trainable

    def _box_rpb(self, boxes, height, width):
        """`(B, Q, 4)` cxcywh -> `(B, h, 1 + Q, H * W)` attention bias."""
        x1, y1, x2, y2 = ops.unstack(box_cxcywh_to_xyxy(boxes), 4, axis=-1)
        # Pixel top-left corners in [0, 1): (H,), (W,).
        rows = ops.cast(ops.arange(height), boxes.dtype) / height
        cols = ops.cast(ops.arange(width), boxes.dtype) / width

        def log_scaled(grid, start, end):
            # (B, Q, n, 2): distance of every grid line to both box edges.
            delta = grid[None, None, :, None] - ops.stack([start, end], -1)[:, :, None, :]
            delta = delta * 8.0
            return ops.sign(delta) * ops.log2(ops.abs(delta) + 1.0) / math.log2(8)

        # The presence token attends without bias: a zero row in front of
        # both factors gives a zero row in their sum. The heads go in front
        # before the outer sum, so the large bias is written once, already
        # in the layout attention reads (a transpose or pad of the
        # (B, h, 1 + Q, H * W) tensor is a strided copy that cost more than
        # the sum at 1008 px).
        def heads_first(embedding):
            # (B, Q, n, h) -> (B, h, 1 + Q, n)
            return ops.pad(ops.transpose(embedding, (0, 3, 1, 2)), ((0, 0), (0, 0), (1, 0), (0, 0)))

        ey = heads_first(self.box_rpb_embed_y(log_scaled(rows, y1, y2)))
        ex = heads_first(self.box_rpb_embed_x(log_scaled(cols, x1, x2)))
        # (B, h, 1 + Q, H, 1) + (B, h, 1 + Q, 1, W) -> (B, h, 1 + Q, H * W)
        rpb = ey[:, :, :, :, None] + ex[:, :, :, None, :]
        return ops.reshape(rpb, (ops.shape(rpb)[0], self.num_heads, self.num_queries + 1, height * width))

    def call(self, memory, memory_pos, prompt, prompt_mask, training=None, self_attention=True):
        _, height, width, d = memory.shape
        batch = ops.shape(memory)[0]
        # (B, H, W, D) -> (B, N, D)
        memory = ops.reshape(memory, (-1, height * width, d))
        memory_pos = ops.reshape(memory_pos, (-1, height * width, d))
        ids = ops.broadcast_to(ops.arange(self.num_queries, dtype="int32")[None], (batch, self.num_queries))
        presence = self.presence_token(ops.zeros((batch, 1), "int32"))
        x = ops.concatenate([presence, self.query_embed(ids)], axis=1)  # (B, 1 + Q, D)
        # (B, Q, 4) cxcywh, float32 whatever the compute dtype: the sine
        # encoding, the box bias's distances and the refinement
        # `sigmoid(delta + inverse_sigmoid(boxes))` lose pixels in bfloat16
        # (a review measured 19x round-off in the encoding); the layers they
        # feed cast their inputs.
        boxes = ops.sigmoid(ops.cast(self.reference_points(ids), "float32"))
        prompt_mask = prompt_mask[:, None, None, :]  # keys: (B, 1, 1, L)
        memory_pos = ops.cast(memory_pos, memory.dtype)

        outputs = {"queries": [], "boxes": [], "reference_boxes": [], "presence_logits": []}
        previous = boxes  # the previous layer's boxes, with their gradient
        for layer in self.decoder_layers:
            cx, cy, w, h = ops.unstack(boxes, 4, axis=-1)
            sine = ops.concatenate([sine_encode(v, d // 2) for v in (cy, cx, w, h)], axis=-1)
            query_pos = self.ref_point_head(sine)  # (B, Q, D)
            query_pos = ops.pad(query_pos, ((0, 0), (1, 0), (0, 0)))
            rpb = self._box_rpb(boxes, height, width)
            x = layer(
                x, query_pos, prompt, prompt_mask, memory, memory_pos, rpb,
                training=training, self_attention=self_attention,
            )

            normed = self.output_layer_norm(x[:, 1:])
            delta = ops.cast(self.box_head(normed), "float32")
            refined = ops.sigmoid(delta + inverse_sigmoid(boxes))
            outputs["queries"].append(normed)
            outputs["reference_boxes"].append(boxes)
            # Same value as `refined`, but built on the previous layer's boxes
            # with their gradient ("look forward twice", as Meta trains): this
            # layer's box loss also trains the previous layer's box head.
            outputs["boxes"].append(ops.sigmoid(delta + inverse_sigmoid(previous)))
            presence = self.presence_head(self.presence_layer_norm(x[:, :1]))[:, :, 0]
            if self.presence_clamp is not None:
                presence = ops.clip(presence, -self.presence_clamp, self.presence_clamp)
            outputs["presence_logits"].append(presence)
            # The next layer's input boxes carry no gradient back into this one.
            previous = refined
            boxes = ops.stop_gradient(refined)
        return {k: ops.stack(v, axis=1) for k, v in outputs.items()}

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim,
                "num_queries": self.num_queries,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "presence_clamp": self.presence_clamp,
                "dropout_rate": self.dropout_rate,
                "query_initializer": keras.initializers.serialize(self.query_initializer),
            }
        )
        return config
