"""`SAM3GeometryEncoder`: box exemplars -> prompt tokens (plus a CLS token)."""

import keras
from keras import ops

from keras_sam3.layers.conv import Conv2D
from keras_sam3.layers.dense import Dense
from keras_sam3.layers.embedding import Embedding
from keras_sam3.layers.layer_norm import layer_norm
from keras_sam3.layers.position_encoding import sine_encode
from keras_sam3.layers.unconverted_inputs import UnconvertedInputs
from keras_sam3.layers.transformer import PreNormFusionBlock
from keras_sam3.ops.boxes import box_cxcywh_to_xyxy
from keras_sam3.ops.roi_align import roi_align


@keras.saving.register_keras_serializable(package="keras_sam3")
class SAM3GeometryEncoder(UnconvertedInputs, keras.layers.Layer):
    """Encodes box exemplars into prompt tokens.

    Each box is the sum of a linear projection of its `(cx, cy, w, h)`, a
    projection of the ROI-aligned (7 x 7) layer-normed image features under
    it, a projection of its sine-encoded center with its raw size, and a
    positive / negative label embedding. A learned CLS token follows the
    boxes; the tokens are projected, normed and refined by pre-norm layers
    that self-attend and cross-attend to the image.

    With no boxes the CLS token still carries an image-conditioned summary:
    Meta's model always runs this encoder, and so does this one. The
    reference `transformers` model skips the encoder when no box is given;
    `cls_without_boxes=False` reproduces that by masking the CLS token out
    when there are zero boxes (a masked token changes no downstream output).

    Args:
        hidden_dim: int. Defaults to `256`.
        num_layers: int. Defaults to `3`.
        num_heads: int. Defaults to `8`.
        intermediate_dim: int. Defaults to `2048`.
        roi_size: int. Defaults to `7`.
        layer_norm_epsilon: float. Every norm here uses 1e-5 in the
            reference (its config value is ignored). Defaults to `1e-5`.
        dropout_rate: float. Training-only dropout. Defaults to `0.1`.
        cls_without_boxes: bool. Whether the CLS token counts when there are
            zero boxes: True as Meta's model, False as the reference.
            Defaults to `True`.

    Call arguments:
        boxes: `(B, Nb, 4)` normalized cxcywh.
        box_labels: int `(B, Nb)`: 1 positive, 0 negative.
        box_mask: bool `(B, Nb)`, True on real boxes.
        features: `(B, H, W, D)` image features (FPN level 2).
        position_encoding: `(1 or B, H, W, D)` their sine encoding.

    Returns:
        A dict: `features` `(B, Nb + 1, D)` (the CLS token last) and
        `mask` bool `(B, Nb + 1)`.
    """

    def __init__(
        self,
        hidden_dim=256,
        num_layers=3,
        num_heads=8,
        intermediate_dim=2048,
        roi_size=7,
        layer_norm_epsilon=1e-5,
        dropout_rate=0.1,
        cls_without_boxes=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        # Boxes stay float32 through ROI align's coordinates and the sine
        # encoding (in bfloat16 a box edge at 72 feature pixels moves by up
        # to 0.25 px, 3.5 image px; `UnconvertedInputs`); `call` casts the
        # features itself.
        self.cls_without_boxes = cls_without_boxes
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.roi_size = roi_size
        self.layer_norm_epsilon = layer_norm_epsilon
        self.dropout_rate = dropout_rate
        policy = self.dtype_policy


        self.label_embed = Embedding(2, hidden_dim, dtype=policy, name="label_embed")
        self.cls_embed = Embedding(1, hidden_dim, dtype=policy, name="cls_embed")
        self.boxes_direct_project = Dense(
            hidden_dim, dtype=policy, name="boxes_direct_project"
        )
        self.boxes_pool_project = Conv2D(
            hidden_dim, roi_size, dtype=policy, name="boxes_pool_project"
        )
        self.boxes_pos_enc_project = Dense(
            hidden_dim, dtype=policy, name="boxes_pos_enc_project"
        )
        self.vision_layer_norm = layer_norm("vision_layer_norm", layer_norm_epsilon, self.dtype_policy)
        self.final_proj = Dense(hidden_dim, dtype=policy, name="final_proj")
        self.prompt_layer_norm = layer_norm("prompt_layer_norm", layer_norm_epsilon, self.dtype_policy)
        self.encoder_layers = [
            PreNormFusionBlock(
                hidden_dim,
                intermediate_dim,
                num_heads,
                layer_norm_epsilon=layer_norm_epsilon,
                activation="relu",
                dropout_rate=dropout_rate,
                dtype=policy,
                name=f"layers_{i}",
            )
            for i in range(num_layers)
        ]
        self.output_layer_norm = layer_norm("output_layer_norm", layer_norm_epsilon, self.dtype_policy)

    def build(self, boxes_shape, *args, **kwargs):
        d = self.hidden_dim
        tokens = (None, None, d)
        self.label_embed.build((None, None))
        self.cls_embed.build((None,))
        self.boxes_direct_project.build((None, None, 4))
        self.boxes_pool_project.build((None, self.roi_size, self.roi_size, d))
        self.boxes_pos_enc_project.build((None, None, d + 2))
        self.vision_layer_norm.build((None, None, None, d))
        self.final_proj.build(tokens)
        self.prompt_layer_norm.build(tokens)
        for layer in self.encoder_layers:
            layer.build(tokens, tokens)
        self.output_layer_norm.build(tokens)
        self.built = True

    def _encode_boxes(self, boxes, box_labels, features):
        _, height, width, _ = features.shape
        d = self.hidden_dim
        embeddings = self.boxes_direct_project(boxes)

        # ROI-align on the normed map: cxcywh in [0, 1] -> xyxy in feature
        # pixels, in float32 (`boxes` is).
        scale = ops.convert_to_tensor([width, height, width, height], dtype=boxes.dtype)
        pixel_boxes = box_cxcywh_to_xyxy(boxes) * scale
        pooled = roi_align(self.vision_layer_norm(features), pixel_boxes, self.roi_size)
        # A P x P "valid" convolution over a P x P window is one matmul over
        # the flattened window; written so, it also differentiates on every
        # backend when there are no boxes (TensorFlow's conv filter gradient
        # fails on an empty batch).
        # (B, Nb, P, P, D) -> (B, Nb, P*P*D) @ (P*P*D, D) -> (B, Nb, D)
        batch, num_boxes = ops.shape(boxes)[0], ops.shape(boxes)[1]
        pooled = ops.reshape(pooled, (batch, num_boxes, self.roi_size * self.roi_size * d))
        project = self.boxes_pool_project
        kernel = ops.reshape(ops.cast(project.kernel, pooled.dtype), (-1, d))
        pooled = ops.matmul(pooled, kernel) + ops.cast(project.bias, pooled.dtype)
        embeddings = embeddings + pooled

        # [enc(cy), enc(cx), h, w] -> D.
        cx, cy, w, h = ops.unstack(boxes, 4, axis=-1)
        position = ops.concatenate(
            [
                sine_encode(cy, d // 2),
                sine_encode(cx, d // 2),
                h[..., None],
                w[..., None],
            ],
            axis=-1,
        )
        embeddings = embeddings + self.boxes_pos_enc_project(position)
        return embeddings + self.label_embed(box_labels)

    def call(
        self,
        boxes,
        box_labels,
        box_mask,
        features,
        position_encoding,
        training=None,
    ):
        batch = ops.shape(boxes)[0]
        d = self.hidden_dim
        boxes = ops.cast(boxes, "float32")
        features = ops.cast(features, self.compute_dtype)
        position_encoding = ops.cast(position_encoding, self.compute_dtype)
        tokens = self._encode_boxes(boxes, box_labels, features)
        cls = self.cls_embed(ops.zeros((batch, 1), "int32"))
        tokens = ops.concatenate([tokens, ops.cast(cls, tokens.dtype)], axis=1)
        cls_mask = ops.ones((batch, 1), "bool")
        if not self.cls_without_boxes:
            cls_mask = ops.logical_and(cls_mask, ops.shape(boxes)[1] > 0)
        mask = ops.concatenate([ops.cast(box_mask, "bool"), ops.cast(cls_mask, "bool")], axis=1)
        tokens = self.prompt_layer_norm(self.final_proj(tokens))

        # (B, H, W, D) -> (B, N, D)
        memory = ops.reshape(features, (batch, -1, d))
        memory_pos = ops.reshape(
            ops.cast(position_encoding, memory.dtype), (ops.shape(position_encoding)[0], -1, d)
        )
        self_mask = mask[:, None, None, :]  # keys: (B, 1, 1, Nb + 1)
        for layer in self.encoder_layers:
            tokens = layer(
                tokens,
                memory,
                memory_pos=memory_pos,
                self_mask=self_mask,
                training=training,
            )
        return {"features": self.output_layer_norm(tokens), "mask": mask}

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim,
                "roi_size": self.roi_size,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "dropout_rate": self.dropout_rate,
                "cls_without_boxes": self.cls_without_boxes,
            }
        )
        return config
