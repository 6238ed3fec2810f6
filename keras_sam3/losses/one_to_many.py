"""The one-to-many (DAC) part of `SAM3Loss`.

Meta's one-to-many (DAC) branch, optional (`o2m_weight > 0`; Meta's
configurations use 2.0, off here by default: it runs the decoder twice): a
second set of the same queries without self-attention
(`SAM3Backbone.one_to_many_model`) is matched one-to-many on the last layer
(`keras_sam3.ops.matching.one_to_many_match`: quality
`0.3 sigmoid(logit) + 0.7 IoU`, the `o2m_topk` best per ground truth above
the quantile and `o2m_threshold` 0.4) and one-to-one (Hungarian) on the
other layers, as Meta's configurations do (`use_o2m_matcher_on_o2m_aux:
false`). Its class, box and mask losses are `SAM3Loss`'s one-to-one ones, times
`o2m_weight`, with the same normalization; no presence or semantic loss.
A query matched to several ground truths is one positive, whose soft target
reads the largest of its IoUs (Meta's scatter keeps one of them).
"""

from keras import ops

from keras_sam3.ops.boxes import box_iou_and_giou
from keras_sam3.ops.boxes import box_xyxy_to_cxcywh
from keras_sam3.ops.matching import one_to_many_match


def add_terms(totals, terms):
    """Adds one decoder layer's `terms` to the running `totals` (same keys)."""
    for name in totals:
        totals[name] = totals[name] + terms[name]


class OneToManyTerms:
    """`SAM3Loss`'s one-to-many terms (a mixin: it reads the loss's weights
    and calls its one-to-one `_layer_terms`, `_class_term`, `_mask_cost`,
    `_gt_masks` and `_instance_mask_terms`)."""

    def _one_to_many_terms(self, logits, boxes_xyxy, gt_xyxy, valid, has_gt, num_boxes):
        """Class and box losses of one layer's one-to-many queries, matched
        one-to-many; and the matches `(index, matched)`, each `(B, G, k)`."""
        iou_all, _ = box_iou_and_giou(boxes_xyxy[:, :, None], gt_xyxy[:, None])  # (B, Q, G)
        quality = self.o2m_alpha * ops.sigmoid(logits)[..., None] + (1.0 - self.o2m_alpha) * iou_all
        index, matched = one_to_many_match(ops.stop_gradient(quality), valid, self.o2m_topk, self.o2m_threshold)
        batch, count, k = ops.shape(index)[0], ops.shape(index)[1], self.o2m_topk
        flat_index = ops.reshape(index, (batch, count * k))  # (B, G k)
        flat_matched = ops.reshape(matched, (batch, count * k))
        pred = ops.take_along_axis(boxes_xyxy, flat_index[..., None], axis=1)  # (B, G k, 4)
        gt = ops.repeat(gt_xyxy, k, axis=1)  # (B, G k, 4), each ground truth k times
        iou, giou = box_iou_and_giou(pred, gt)
        l1 = ops.sum(ops.abs(box_xyxy_to_cxcywh(pred) - box_xyxy_to_cxcywh(gt)), -1)
        terms = {
            "bbox": ops.sum(l1 * flat_matched) / num_boxes,
            "giou": ops.sum((1.0 - giou) * flat_matched) / num_boxes,
        }
        # (B, G k, Q): which query each pair is; a query counts once.
        pairs = ops.one_hot(flat_index, logits.shape[-1], dtype=logits.dtype) * flat_matched[..., None]
        positive = ops.max(pairs, axis=1)  # (B, Q)
        query_iou = ops.max(pairs * iou[..., None], axis=1)
        terms["class"] = self._class_term(logits, positive, query_iou, has_gt)
        return terms, (index, matched)

    def _one_to_many(self, y_true, y_pred, gt_xyxy, valid, has_gt, num_boxes, layers, mask_losses):
        """The weighted one-to-many terms, and the host calls' failure flags."""
        all_logits = ops.cast(y_pred["all_pred_logits_o2m"], "float32")
        all_boxes = ops.cast(y_pred["all_pred_boxes_o2m"], "float32")
        last = all_logits.shape[1] - 1
        totals = {"class": 0.0, "bbox": 0.0, "giou": 0.0}
        failed = []
        mask_cost = None  # for the earlier layers' one-to-one matching
        if "pred_masks_o2m" in y_pred and not self.o2m_matcher_on_aux and any(l != last for l in layers):
            mask_cost = self._mask_cost(y_true, y_pred["pred_masks_o2m"])
        for layer in layers:
            if layer == last or self.o2m_matcher_on_aux:
                terms, matches = self._one_to_many_terms(
                    all_logits[:, layer], all_boxes[:, layer], gt_xyxy, valid, has_gt, num_boxes
                )
            else:
                # No presence here: the one-to-many queries have none.
                no_presence = ops.zeros_like(all_logits[:, layer, :1])
                terms, _, layer_failed = self._layer_terms(
                    all_logits[:, layer], all_boxes[:, layer], no_presence,
                    gt_xyxy, valid, has_gt, num_boxes, mask_cost,
                )
                failed.append(layer_failed)
            add_terms(totals, terms)
        weighted = {
            "class_o2m": self.class_weight * totals["class"],
            "bbox_o2m": self.bbox_weight * totals["bbox"],
            "giou_o2m": self.giou_weight * totals["giou"],
        }
        if mask_losses and self.o2m_masks:
            if "pred_masks_o2m" not in y_pred:
                raise ValueError(
                    "SAM3Loss(o2m_masks=True) needs the one-to-many masks (pred_masks_o2m): build the "
                    "model with SAM3Backbone.one_to_many_model(masks=True), or set o2m_masks=False."
                )
            index, matched = matches  # the last layer's, one-to-many: (B, G, k)
            gt_masks = self._gt_masks(y_true)
            weighted["mask_o2m"] = weighted["dice_o2m"] = 0.0
            # One pick per ground truth at a time: the (B, G, Hm, Wm) targets
            # are never repeated k times.
            for pick in range(self.o2m_topk):
                instance = self._instance_mask_terms(
                    y_true, y_pred["pred_masks_o2m"], gt_masks, index[:, :, pick], matched[:, :, pick], num_boxes
                )
                weighted["mask_o2m"] = weighted["mask_o2m"] + instance["mask"]
                weighted["dice_o2m"] = weighted["dice_o2m"] + instance["dice"]
        return {name: self.o2m_weight * value for name, value in weighted.items()}, failed
