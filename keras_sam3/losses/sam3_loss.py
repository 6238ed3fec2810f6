"""`SAM3Loss`: Meta's SAM 3 image-training objective, in `keras.ops`.

Every batch row is one prompt (an image with a noun phrase and/or box
exemplars) with all of its ground-truth instances. Per prompt and per
decoder layer, queries are matched one-to-one to the ground truths by the
Hungarian algorithm on

    cost = 2 * class_cost + 5 * L1(cxcywh) + 2 * (-GIoU),
    class_cost(p) = -0.25 (1 - p)^2 log p + 0.75 p^2 log(1 - p),

(no presence term; prompts without ground truth match nothing; `cost_mask`
and `cost_dice` optionally add a mask term, off as in Meta's). Then:

- classification, every layer: IoU-aware BCE. A matched query's target is
  `max(p^0.25 * IoU^0.75, 0.01)` (box IoU, no gradient), weighted by
  `positive_weight`; an unmatched query's loss is `p^2 * BCE(logit, 0)`.
  Prompts without ground truth get none (presence covers them) unless
  `negative_prompts` (their weight). Mean over
  `B * max(Q, pad_num_queries)`. Weight 20.
- presence, every layer: `0.5 * mean BCE(presence_logit, has_ground_truth)`.
  Weight 20.
- boxes, every layer: L1 on normalized cxcywh (weight 5) and `1 - GIoU` on
  xyxy (weight 2), summed over matches and divided by `N`, the number of
  ground truths in the batch (at least 1).
- masks, last layer, matched queries: the logits upsampled bilinearly to
  the target size; focal (alpha 0.25, gamma 2; mean over pixels, weight 200)
  and dice (+1 smoothing, weight 10), summed over matches, divided by `N`.
- semantic segmentation: the union of a prompt's masks; focal (alpha 0.6,
  gamma 2, weight 20) and dice (weight 30), averaged over prompts with a
  non-empty union (with `negative_prompts`, the others weighted by it).
- the total is multiplied by `sqrt(B)` (Meta's `scale_by_find_batch_size`;
  Meta's B is the per-GPU batch, under Keras' distribution API it is the
  global one).

Facts from facebookresearch/sam3 (`sam3/train/matcher.py`
`BinaryHungarianMatcherV2`, `sam3/train/loss/loss_fns.py` `IABCEMdetr`,
`Boxes`, `Masks`, `SemanticSegCriterion`). The matching, class, presence
and box weights are those of its released (detection-only) fine-tuning
configurations, `positive_weight` 10 as in the Roboflow-100VL one; the mask
and semantic weights come from the segmentation block those configurations
carry commented out.

Meta's one-to-many (DAC) branch, optional (`o2m_weight > 0`):
`keras_sam3.losses.one_to_many`.

The decoder clamps presence logits to +-10 (as the reference does at
inference), so a presence logit beyond that gets no gradient; Meta's
clamp is a no-op.

Targets (`y`), a dict:
    boxes: `(B, G, 4)` normalized xyxy (of the model's square input).
    masks: `(B, G, Hm, Wm)` 0 / 1, any resolution (`Hm = Wm = image_size`
        matches Meta); optional when `mask_weight = dice_weight = 0` and
        the semantic weights are 0.
    valid: `(B, G)` 1 for a real instance, 0 for padding. A prompt with no
        valid instance is a negative (its concept is absent). Valid boxes
        must be finite, inside [0, 1] and have `x2 > x1`, `y2 > y1`, and
        valid masks lie in [0, 1]: otherwise `fit` stops with a message
        (`keras_sam3.losses.targets.TARGET_PROBLEMS`, checked in the step's host call; on JAX the
        loss is NaN and the segmenter's `fit` raises after the batch,
        `keras_sam3.ops.matching`). Padding slots may hold anything, NaN
        included.
    mask_valid: optional `(B, G)`: 0 for an instance without a segment
        (box-only annotation); mask losses skip it, boxes still train, and
        its prompt has no semantic segmentation loss (its union is unknown).
    `G` must be at least 1 (pad negatives with one invalid slot).
"""

import keras
from keras import ops

from keras_sam3.losses.one_to_many import OneToManyTerms
from keras_sam3.losses.one_to_many import add_terms
from keras_sam3.losses.targets import TARGET_PROBLEMS
from keras_sam3.losses.targets import check_target_structure
from keras_sam3.losses.targets import target_problems
from keras_sam3.ops.boxes import box_iou_and_giou
from keras_sam3.ops.boxes import box_xyxy_to_cxcywh
from keras_sam3.ops.matching import FAILED
from keras_sam3.ops.matching import hungarian_match
from keras_sam3.ops.resize import resize_masks


def _bce(logits, targets):
    """Binary cross-entropy with logits, elementwise, stable."""
    return ops.maximum(logits, 0.0) - logits * targets + ops.log1p(ops.exp(-ops.abs(logits)))


def _focal(logits, targets, alpha, gamma):
    p = ops.sigmoid(logits)
    p_t = p * targets + (1.0 - p) * (1.0 - targets)
    alpha_t = alpha * targets + (1.0 - alpha) * (1.0 - targets)
    return alpha_t * (1.0 - p_t) ** gamma * _bce(logits, targets)


def _dice(logits, targets):
    """`(n, P)` logits and targets -> `(n,)` dice losses, +1 smoothed."""
    p = ops.sigmoid(logits)
    numerator = 2.0 * ops.sum(p * targets, axis=-1) + 1.0
    return 1.0 - numerator / (ops.sum(p, axis=-1) + ops.sum(targets, axis=-1) + 1.0)


@keras.saving.register_keras_serializable(package="keras_sam3")
class SAM3Loss(OneToManyTerms):
    """Meta's SAM 3 training loss; every weight is an argument.

    Args:
        cost_class, cost_bbox, cost_giou: matching cost weights.
            Default `2.0`, `5.0`, `2.0`.
        cost_mask, cost_dice: weights of a mask term in the matching cost
            (Mask2Former-style: mean pixel BCE and dice of the last layer's
            masks against each ground truth, added to every layer's cost).
            Meta matches on boxes alone: default `0.0`, `0.0`.
        class_weight: IoU-aware classification. Defaults to `20.0`.
        positive_weight: weight of matched queries in it. Defaults to `10.0`.
        iou_alpha: target blend `p^a * IoU^(1-a)`. Defaults to `0.25`.
        soft_targets: bool. Meta's IoU-aware targets (True), or 1 for every
            matched query (False: plain DETR-style targets, which do not need
            good boxes to start from, for training from scratch).
            Defaults to `True`.
        negative_gamma: modulation `p^g` of unmatched queries. Defaults to `2.0`.
        negative_prompts: bool, or a weight in [0, 1]. Also train the
            queries of prompts without ground truth (every query an
            unmatched one) and their semantic mask (target empty), their
            terms weighted by this (`True` is 1, `False` 0). Meta leaves both
            to the presence head (False); from scratch, presence alone gets
            too little signal on absent concepts, and a weight below 1
            brings them in gradually (docs/training.md). Defaults to `False`.
        pad_num_queries: the mean divides by `B * max(Q, this)`. Defaults to
            `200` (Meta's query count).
        presence_weight: Defaults to `20.0`.
        bbox_weight, giou_weight: Default `5.0`, `2.0`.
        mask_weight, dice_weight: Default `200.0`, `10.0`.
        semantic_weight, semantic_dice_weight: Default `20.0`, `30.0`.
        aux_layers: bool. Class, presence and box losses on every decoder
            layer (each matched on its own). Defaults to `True`.
        scale_by_batch_size: bool. Multiply by `sqrt(B)`. Defaults to `True`.
        o2m_weight: weight of the one-to-many (DAC) branch; 0 turns it off.
            Defaults to `0.0` (Meta's configurations: `2.0`).
        o2m_alpha, o2m_threshold, o2m_topk: its matching. Default `0.3`,
            `0.4`, `4`.
        o2m_matcher_on_aux: bool. Match the one-to-many queries of the
            earlier decoder layers one-to-many too (True), or one-to-one
            as Meta's configurations do (False). Defaults to `False`.
        o2m_masks: bool. Mask losses on the one-to-many queries too, as
            Meta's released model builder predicts their masks (its
            configurations keep an unused `o2m_mask: false` from an earlier
            version). False also spares the mask decoder their run.
            Defaults to `True`.
    """

    def __init__(
        self,
        cost_class=2.0,
        cost_bbox=5.0,
        cost_giou=2.0,
        cost_mask=0.0,
        cost_dice=0.0,
        class_weight=20.0,
        positive_weight=10.0,
        iou_alpha=0.25,
        soft_targets=True,
        negative_gamma=2.0,
        negative_prompts=False,
        pad_num_queries=200,
        presence_weight=20.0,
        bbox_weight=5.0,
        giou_weight=2.0,
        mask_weight=200.0,
        dice_weight=10.0,
        semantic_weight=20.0,
        semantic_dice_weight=30.0,
        aux_layers=True,
        scale_by_batch_size=True,
        o2m_weight=0.0,
        o2m_alpha=0.3,
        o2m_threshold=0.4,
        o2m_topk=4,
        o2m_matcher_on_aux=False,
        o2m_masks=True,
    ):
        self.config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        for name, value in self.config.items():
            setattr(self, name, value)
        try:
            weight = float(negative_prompts)
        except (TypeError, ValueError):
            weight = float("nan")
        if not 0.0 <= weight <= 1.0:  # NaN fails too
            raise ValueError(f"negative_prompts must be a bool or a weight in [0, 1]; got {negative_prompts!r}")
        self.negative_weight = weight

    def get_config(self):
        return dict(self.config)

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # --- matching ----------------------------------------------------------
    def matching_cost(self, logits, boxes_xyxy, gt_xyxy):
        """`(B, Q)` logits, `(B, Q, 4)` and `(B, G, 4)` xyxy -> `(B, Q, G)`."""
        log_p = -ops.softplus(-logits)
        log_1mp = -ops.softplus(logits)
        p = ops.sigmoid(logits)
        class_cost = -0.25 * (1.0 - p) ** 2 * log_p + 0.75 * p**2 * log_1mp  # (B, Q)
        pred = box_xyxy_to_cxcywh(boxes_xyxy)
        gt = box_xyxy_to_cxcywh(gt_xyxy)
        # (B, Q, 1, 4) - (B, 1, G, 4) -> (B, Q, G)
        l1 = ops.sum(ops.abs(pred[:, :, None] - gt[:, None]), axis=-1)
        _, giou = box_iou_and_giou(boxes_xyxy[:, :, None], gt_xyxy[:, None])
        return self.cost_class * class_cost[:, :, None] + self.cost_bbox * l1 - self.cost_giou * giou

    def mask_matching_cost(self, mask_logits, gt_masks):
        """`(B, Q, h, w)` logits, `(B, G, Hm, Wm)` 0 / 1 -> `(B, Q, G)`.

        Mean BCE over pixels and dice, at the prediction's resolution (the
        targets resized bilinearly), both as matrix products.
        """
        batch, count = ops.shape(gt_masks)[0], ops.shape(gt_masks)[1]
        h, w = mask_logits.shape[2], mask_logits.shape[3]
        targets = ops.reshape(resize_masks(gt_masks, (h, w)), (batch, count, h * w))  # (B, G, P)
        logits = ops.reshape(mask_logits, (batch, -1, h * w))  # (B, Q, P)
        targets_t = ops.transpose(targets, (0, 2, 1))  # (B, P, G)
        # BCE(x, t) = softplus(x) - x t, averaged over the P pixels.
        bce = (ops.sum(ops.softplus(logits), -1)[..., None] - ops.matmul(logits, targets_t)) / float(h * w)
        p = ops.sigmoid(logits)
        numerator = 2.0 * ops.matmul(p, targets_t) + 1.0
        denominator = ops.sum(p, -1)[..., None] + ops.sum(targets, -1)[:, None, :] + 1.0
        dice = 1.0 - numerator / denominator
        return self.cost_mask * bce + self.cost_dice * dice

    def match(self, logits, boxes_xyxy, gt_xyxy, valid, extra_cost=None, problems=None):
        """One-hot assignment `(B, G, Q)` (zero rows for padding), the matched
        query per ground truth `(B, G)`, and whether the host call found an
        error (JAX; elsewhere it raised). `problems`: target checks for the
        host call (`hungarian_match`)."""
        cost = self.matching_cost(logits, boxes_xyxy, gt_xyxy)
        if extra_cost is not None:
            cost = cost + extra_cost
        index = hungarian_match(cost, valid, problems, TARGET_PROBLEMS)  # (B, G), -1 where unmatched
        failed = ops.any(index == FAILED)
        matched = ops.cast(index >= 0, logits.dtype)
        one_hot = ops.one_hot(ops.maximum(index, 0), logits.shape[-1], dtype=logits.dtype)
        return one_hot * matched[..., None], ops.maximum(index, 0), failed

    # --- terms -------------------------------------------------------------
    def _layer_terms(
        self, logits, boxes_xyxy, presence, gt_xyxy, valid, has_gt, num_boxes, mask_cost=None, problems=None
    ):
        """Class, presence and box losses of one decoder layer."""
        # (B, G, Q), (B, G)
        assignment, index, failed = self.match(logits, boxes_xyxy, gt_xyxy, valid, mask_cost, problems)
        # Gathers, not one-hot matmuls: exact whatever the matmul precision.
        # (B, Q, 4) -> (B, G, 4): the query matched to each ground truth
        matched_boxes = ops.take_along_axis(
            boxes_xyxy, ops.broadcast_to(index[..., None], ops.shape(gt_xyxy)), axis=1
        )
        is_matched = ops.sum(assignment, axis=-1)  # (B, G)
        iou, giou = box_iou_and_giou(matched_boxes, gt_xyxy)
        l1 = ops.sum(ops.abs(box_xyxy_to_cxcywh(matched_boxes) - box_xyxy_to_cxcywh(gt_xyxy)), -1)
        terms = {
            "bbox": ops.sum(l1 * is_matched) / num_boxes,
            "giou": ops.sum((1.0 - giou) * is_matched) / num_boxes,
        }

        # IoU-aware classification: soft targets on matched queries.
        positive = ops.sum(assignment, axis=1)  # (B, Q)
        query_iou = ops.sum(assignment * iou[..., None], axis=1)  # (B, Q)
        terms["class"] = self._class_term(logits, positive, query_iou, has_gt)
        terms["presence"] = 0.5 * ops.mean(_bce(presence[:, 0], has_gt))
        return terms, (assignment, index), failed

    def _class_term(self, logits, positive, query_iou, has_gt):
        """IoU-aware BCE of `(B, Q)` logits: `positive` 1 on matched queries,
        `query_iou` their box IoU."""
        query_iou = ops.stop_gradient(query_iou)
        p = ops.sigmoid(logits)
        if self.soft_targets:
            target = ops.maximum(
                ops.stop_gradient(p) ** self.iou_alpha * query_iou ** (1.0 - self.iou_alpha), 0.01
            )
        else:
            target = ops.ones_like(p)
        positive_loss = self.positive_weight * _bce(logits, target)
        negative_loss = p**self.negative_gamma * _bce(logits, ops.zeros_like(logits))
        per_query = positive * positive_loss + (1.0 - positive) * negative_loss
        per_query = per_query * (has_gt + (1.0 - has_gt) * self.negative_weight)[:, None]
        denominator = ops.cast(ops.shape(logits)[0], logits.dtype) * float(
            max(logits.shape[-1], self.pad_num_queries)
        )
        return ops.sum(per_query) / denominator

    def __call__(self, y_true, y_pred):
        return self.compute(y_true, y_pred)["total"]

    def compute(self, y_true, y_pred):
        """All terms: a dict of scalars, weighted, with their sum as `total`.

        The one-to-many terms (`*_o2m`) are computed when `o2m_weight > 0`
        and `y_pred` holds the one-to-many outputs (a training forward
        pass: evaluation runs without them, as Meta's does).
        """
        check_target_structure(y_true)
        gt_xyxy = ops.cast(y_true["boxes"], "float32")
        if gt_xyxy.shape[1] == 0:
            raise ValueError("Targets have no instance slot (G = 0): pad every prompt to G >= 1.")
        valid = ops.cast(y_true["valid"], "float32")
        # Checked on the host with the first layer's matching: bad values of
        # valid instances stop `fit` with a message (`TARGET_PROBLEMS`).
        problems = target_problems(y_true, gt_xyxy, valid)
        # Whatever padding slots hold (NaN included) must not reach the sums.
        gt_xyxy = ops.where(ops.isfinite(gt_xyxy), gt_xyxy, 0.0)
        has_gt = ops.cast(ops.sum(valid, axis=-1) > 0, "float32")  # (B,)
        num_boxes = ops.maximum(ops.sum(valid), 1.0)
        all_logits = ops.cast(y_pred["all_pred_logits"], "float32")  # (B, L, Q)
        all_boxes = ops.cast(y_pred["all_pred_boxes"], "float32")  # (B, L, Q, 4)
        all_presence = ops.cast(y_pred["all_presence_logits"], "float32")  # (B, L, 1)
        num_layers = all_logits.shape[1]
        layers = range(num_layers) if self.aux_layers else [num_layers - 1]
        mask_losses = bool(self.mask_weight or self.dice_weight or self.semantic_weight or self.semantic_dice_weight)
        if (mask_losses or self.cost_mask or self.cost_dice) and "masks" not in y_true:
            raise ValueError(
                "Mask losses or a mask matching cost are on but the targets have no 'masks'; set "
                "mask_weight, dice_weight, semantic_weight, semantic_dice_weight, cost_mask and "
                "cost_dice to 0."
            )
        one_to_many = self.o2m_weight > 0 and "all_pred_logits_o2m" in y_pred

        totals = {"class": 0.0, "presence": 0.0, "bbox": 0.0, "giou": 0.0}
        failed = []
        mask_cost = self._mask_cost(y_true, y_pred["pred_masks"])
        for layer in layers:
            terms, matches, layer_failed = self._layer_terms(
                all_logits[:, layer],
                all_boxes[:, layer],
                all_presence[:, layer],
                gt_xyxy,
                valid,
                has_gt,
                num_boxes,
                mask_cost,
                problems,
            )
            problems = None  # checked once
            failed.append(layer_failed)
            add_terms(totals, terms)
        weighted = {
            "class": self.class_weight * totals["class"],
            "presence": self.presence_weight * totals["presence"],
            "bbox": self.bbox_weight * totals["bbox"],
            "giou": self.giou_weight * totals["giou"],
        }
        if mask_losses:
            gt_masks = self._gt_masks(y_true)
            assignment, index = matches
            weighted.update(
                self._instance_mask_terms(
                    y_true, y_pred["pred_masks"], gt_masks, index, ops.sum(assignment, axis=-1), num_boxes
                )
            )
            weighted.update(self._semantic_terms(y_true, y_pred, gt_masks, valid))
        if one_to_many:
            o2m, o2m_failed = self._one_to_many(y_true, y_pred, gt_xyxy, valid, has_gt, num_boxes, layers, mask_losses)
            weighted.update(o2m)
            failed.extend(o2m_failed)
        total = ops.sum(ops.stack(list(weighted.values())))
        if self.scale_by_batch_size:
            total = total * ops.sqrt(ops.cast(ops.shape(all_logits)[0], "float32"))
        weighted["total"] = total
        # On JAX a host call that found an error cannot raise under `jit`:
        # the loss is NaN and `matching.raise_host_errors()` has the message.
        failed = ops.any(ops.stack(failed))
        return {name: ops.where(failed, float("nan"), value) for name, value in weighted.items()}

    def _mask_cost(self, y_true, pred_masks):
        """The matching's optional mask term, `(B, Q, G)`, or None."""
        if not (self.cost_mask or self.cost_dice):
            return None
        cost = self.mask_matching_cost(
            ops.stop_gradient(ops.cast(pred_masks, "float32")), ops.cast(y_true["masks"], "float32")
        )
        if "mask_valid" in y_true:
            # Box-only instances are matched on boxes and scores alone.
            cost = cost * ops.cast(y_true["mask_valid"], "float32")[:, None, :]
        return cost

    @staticmethod
    def _gt_masks(y_true):
        gt_masks = ops.cast(y_true["masks"], "float32")  # (B, G, Hm, Wm)
        return ops.where(ops.isfinite(gt_masks), gt_masks, 0.0)  # padding may hold NaN

    def _instance_mask_terms(self, y_true, pred_masks, gt_masks, index, is_matched, num_boxes):
        """Focal and dice of matched masks: `index` `(B, N)` the query of each
        of the `N` ground-truth slots of `gt_masks` `(B, N, Hm, Wm)`,
        `is_matched` `(B, N)` 1 where that pair counts."""
        size = tuple(gt_masks.shape[2:])
        if None in size:  # TensorFlow, resolution changing between batches
            size = tuple(ops.shape(gt_masks)[2:])
        pred_masks = ops.cast(pred_masks, "float32")  # (B, Q, h, w)
        batch, count = ops.shape(gt_masks)[0], ops.shape(gt_masks)[1]
        h, w = pred_masks.shape[2], pred_masks.shape[3]
        # (B, Q, h, w) -> (B, N, h, w): each slot's query, upsampled
        gather = ops.broadcast_to(index[:, :, None, None], (batch, count, h, w))
        matched = resize_masks(ops.take_along_axis(pred_masks, gather, axis=1), size)
        if y_true.get("mask_valid") is not None:
            is_matched = is_matched * ops.cast(y_true["mask_valid"], "float32")
        logits = ops.reshape(matched, (batch, count, -1))
        targets = ops.reshape(gt_masks, (batch, count, -1))
        focal = ops.mean(_focal(logits, targets, 0.25, 2.0), axis=-1)
        dice = _dice(logits, targets)
        return {
            "mask": self.mask_weight * ops.sum(focal * is_matched) / num_boxes,
            "dice": self.dice_weight * ops.sum(dice * is_matched) / num_boxes,
        }

    def _semantic_terms(self, y_true, y_pred, gt_masks, valid):
        """Semantic segmentation against the union of the prompt's instances."""
        size = tuple(gt_masks.shape[2:])
        if None in size:
            size = tuple(ops.shape(gt_masks)[2:])
        batch = ops.shape(gt_masks)[0]
        # Prompts whose semantic target is known: every valid instance has a
        # mask (a box-only instance's region is unknown, not background).
        semantic_known = ops.ones_like(valid[:, 0])
        if "mask_valid" in y_true:
            mask_valid = ops.cast(y_true["mask_valid"], "float32")
            semantic_known = ops.cast(ops.sum(valid * (1.0 - mask_valid), axis=-1) == 0, "float32")
            valid = valid * mask_valid
        union = ops.max(gt_masks * valid[:, :, None, None], axis=1)  # (B, Hm, Wm)
        semantic = ops.cast(y_pred["semantic_seg"], "float32")[..., 0][:, None]  # (B, 1, h, w)
        semantic = ops.reshape(resize_masks(semantic, size), (batch, -1))
        union = ops.reshape(union, (batch, -1))
        positive = ops.cast(ops.sum(union, axis=-1) > 0, "float32")
        positive = positive + (1.0 - positive) * self.negative_weight
        positive = positive * semantic_known
        count_positive = ops.sum(positive) + 1e-6
        semantic_focal = ops.mean(_focal(semantic, union, 0.6, 2.0), axis=-1)
        return {
            "semantic": self.semantic_weight * ops.sum(semantic_focal * positive) / count_positive,
            "semantic_dice": (
                self.semantic_dice_weight * ops.sum(_dice(semantic, union) * positive) / count_positive
            ),
        }
