"""cgF1, pmF1 and IL_MCC as Meta's SA-Co evaluation defines them, plus mIoU.

Per (image, prompt) pair, predictions with `score >= 0.5` are kept (score
= sigmoid(logit) * sigmoid(presence)). Kept predictions and ground-truth
masks are matched once, by the Hungarian algorithm maximising total mask
IoU; at each IoU threshold t in 0.50, 0.55, ..., 0.95 a matched pair with
IoU >= t is a true positive, the other predictions false positives and the
other ground truths false negatives.

- pmF1(t) = 2 TP / (2 TP + FP + FN), micro-summed over pairs that have
  ground truth (false positives on prompts without ground truth count only
  in IL_MCC); pmF1 is its mean over the thresholds.
- IL_MCC: Matthews correlation of image-level presence, over all pairs:
  predicted present = any kept prediction, truly present = any ground truth.
  0 when a margin is empty.
- cgF1 = pmF1 * IL_MCC.
- mIoU: mean mask IoU of the matched (prediction, ground truth) pairs.

The epsilons of Meta's evaluator (`sam3/eval/cgf1_eval.py`) are kept, so a
perfect result reads 0.9999, as there. Values are fractions (Meta's
reports multiply cgF1 and pmF1 by 100). Not included: SA-Co/Gold's choice
among several annotators, the exhaustivity filter, crowd annotations and
box IoU (one exhaustive annotation per pair, mask IoU).
"""

import numpy as np

from keras_sam3.ops.masks import mask_iou

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
_EPS_INSTANCE = 1e-4
_EPS_IMAGE = 1e-6


def _binary(masks, name):
    masks = np.asarray(masks)
    if masks.dtype != bool and not np.all((masks == 0) | (masks == 1)):
        raise ValueError(f"{name} must be binary (bool or 0 / 1); threshold probabilities first.")
    return masks.astype(bool)


class ConceptSegmentationEvaluator:
    """Accumulates pairs; `result()` gives cgF1, pmF1, IL_MCC, mIoU.

    Args:
        score_threshold: float. Defaults to `0.5` (Meta's, inclusive).
        iou_thresholds: Defaults to 0.50:0.05:0.95.

    Example:
    >>> evaluator = ConceptSegmentationEvaluator()
    >>> square = np.zeros((1, 8, 8), bool)
    >>> square[0, 2:6, 2:6] = True
    >>> evaluator.update([0.9], square, square)  # a prompt with one object, found
    >>> evaluator.update([0.2], square, np.zeros((0, 8, 8), bool))  # an absent concept, not answered
    >>> round(evaluator.result()["cgF1"], 3)
    1.0
    """

    def __init__(self, score_threshold=0.5, iou_thresholds=IOU_THRESHOLDS):
        self.score_threshold = score_threshold
        self.iou_thresholds = np.asarray(iou_thresholds, "float64")
        t = len(self.iou_thresholds)
        self.tp = np.zeros(t)
        self.fp = np.zeros(t)  # on pairs with ground truth only
        self.fn = np.zeros(t)
        self.image = {"tp": 0, "fp": 0, "tn": 0, "fn": 0}
        self.matched_ious = []

    def update(self, scores, pred_masks, gt_masks):
        """One (image, prompt) pair.

        Args:
            scores: `(K,)` prediction scores.
            pred_masks: `(K, H, W)` bool.
            gt_masks: `(G, H, W)` bool (`G` may be 0: the concept is absent).
        """
        from scipy.optimize import linear_sum_assignment

        scores = np.asarray(scores, "float64").reshape(-1)
        pred_masks = _binary(pred_masks, "pred_masks")
        gt_masks = _binary(gt_masks, "gt_masks")
        if len(pred_masks) != len(scores):
            raise ValueError(f"{len(scores)} scores for {len(pred_masks)} masks.")
        kept = pred_masks[scores >= self.score_threshold]
        d, g = len(kept), len(gt_masks)
        if g == 0:
            self.image["fp" if d else "tn"] += 1
            return
        if d == 0:
            self.image["fn"] += 1
            self.fn += g
            return
        self.image["tp"] += 1
        iou = mask_iou(kept, gt_masks)
        rows, cols = linear_sum_assignment(-iou)
        matched = iou[rows, cols]
        self.matched_ious.extend(matched.tolist())
        tp = (matched[None] >= self.iou_thresholds[:, None]).sum(1)
        self.tp += tp
        self.fp += d - tp
        self.fn += g - tp

    def result(self):
        precision = self.tp / (self.tp + self.fp + _EPS_INSTANCE)
        recall = self.tp / (self.tp + self.fn + _EPS_INSTANCE)
        pm_f1 = 2 * precision * recall / (precision + recall + _EPS_INSTANCE)
        c = self.image
        numerator = c["tp"] * c["tn"] - c["fp"] * c["fn"]
        margins = (c["tp"] + c["fp"]) * (c["tp"] + c["fn"]) * (c["tn"] + c["fp"]) * (c["tn"] + c["fn"])
        il_mcc = numerator / (np.sqrt(float(margins)) + _EPS_IMAGE)
        return {
            "cgF1": float(pm_f1.mean() * il_mcc),
            "pmF1": float(pm_f1.mean()),
            f"pmF1@{self.iou_thresholds[0]:.2f}": float(pm_f1[0]),
            "IL_MCC": float(il_mcc),
            "mIoU": float(np.mean(self.matched_ious)) if self.matched_ious else 0.0,
            "pairs": int(sum(c.values())),
            "image_counts": dict(c),
        }
