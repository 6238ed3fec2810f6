"""cgF1 / pmF1 / IL_MCC / mIoU on hand-computed cases."""

import numpy as np
import pytest

from keras_sam3.metrics import ConceptSegmentationEvaluator
from keras_sam3.metrics import mask_iou


def square(x, y, w=10, h=10, size=32):
    mask = np.zeros((size, size), bool)
    mask[y : y + h, x : x + w] = True
    return mask


def four_pairs(evaluator):
    gt1, gt2 = square(0, 0), square(15, 15)
    # (a) two ground truths; one exact prediction, one shifted by 2 px
    # (IoU 80 / 120 = 2/3), and a third below the score threshold.
    evaluator.update([0.9, 0.8, 0.4], [gt1, square(17, 15), square(0, 20)], [gt1, gt2])
    # (b) a ground truth and no prediction.
    evaluator.update([], np.zeros((0, 32, 32), bool), [gt1])
    # (c) no ground truth, one prediction (score exactly 0.5 counts).
    evaluator.update([0.5], [gt2], np.zeros((0, 32, 32), bool))
    # (d) nothing at all.
    evaluator.update([0.2], [gt2], np.zeros((0, 32, 32), bool))


def test_mask_iou():
    iou = mask_iou([square(17, 15)], [square(15, 15), square(0, 0)])
    np.testing.assert_allclose(iou, [[2 / 3, 0.0]])


def test_hand_computed_four_pairs():
    evaluator = ConceptSegmentationEvaluator()
    four_pairs(evaluator)
    result = evaluator.result()
    # t <= 0.65 (4 thresholds): TP 2, FP 0, FN 1 -> F1 0.8; t > 0.65: TP 1, FP 1, FN 2 -> 0.4.
    assert result["pmF1@0.50"] == pytest.approx(0.8, abs=2e-4)
    assert result["pmF1"] == pytest.approx((4 * 0.8 + 6 * 0.4) / 10, abs=2e-4)
    assert result["image_counts"] == {"tp": 1, "fp": 1, "tn": 1, "fn": 1}
    assert result["IL_MCC"] == 0.0 and result["cgF1"] == 0.0
    assert result["mIoU"] == pytest.approx((1 + 2 / 3) / 2)


def test_mcc_with_an_extra_true_negative():
    evaluator = ConceptSegmentationEvaluator()
    four_pairs(evaluator)
    evaluator.update([], np.zeros((0, 32, 32), bool), np.zeros((0, 32, 32), bool))
    result = evaluator.result()
    # (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2 - 1) / sqrt(2*2*3*3)
    assert result["IL_MCC"] == pytest.approx(1 / 6, abs=1e-6)
    assert result["cgF1"] == pytest.approx(result["pmF1"] / 6, abs=1e-6)


def test_perfect_predictions_read_like_meta():
    evaluator = ConceptSegmentationEvaluator()
    evaluator.update([0.9], [square(0, 0)], [square(0, 0)])
    evaluator.update([0.1], [square(0, 0)], np.zeros((0, 32, 32), bool))
    result = evaluator.result()
    assert result["pmF1"] == pytest.approx(0.9999, abs=1e-4) and result["IL_MCC"] == pytest.approx(1.0, abs=1e-5)


def test_mismatched_scores_raise():
    with pytest.raises(ValueError, match="scores"):
        ConceptSegmentationEvaluator().update([0.9, 0.8], [square(0, 0)], [square(0, 0)])


def test_probability_masks_are_refused():
    with pytest.raises(ValueError, match="binary"):
        ConceptSegmentationEvaluator().update([0.9], [square(0, 0) * 0.7], [square(0, 0)])
