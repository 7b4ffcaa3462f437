"""Instance matching and AP/F1/PQ: known answers on small label images."""
import numpy as np
import pytest

from zoo.errors import InputError
from zoo.segmentation.metrics import counts, evaluate, iou_matrix, scores


def squares(positions, size=10, shape=(64, 64), start=1):
    labels = np.zeros(shape, np.uint16)
    for k, (y, x) in enumerate(positions, start=start):
        labels[y:y + size, x:x + size] = k
    return labels


def test_perfect_prediction_with_other_ids_scores_one():
    truth = squares([(2, 2), (20, 30), (40, 5)])
    prediction = np.where(truth > 0, 10 - truth.astype(np.int32), 0).astype(np.int32)   # same objects, new ids
    for row in evaluate([truth], [prediction]):
        assert row["ap"] == row["f1"] == row["precision"] == row["recall"] == 1.0
        assert row["panoptic_quality"] == pytest.approx(1.0)


def test_known_counts_for_a_shifted_a_missing_and_an_extra_object():
    truth = squares([(2, 2), (20, 30), (40, 5)])
    prediction = squares([(2, 4), (40, 5), (50, 50)])     # 1st shifted by 2 px (IoU 80/120), 3rd exact, 1 extra
    iou = iou_matrix(truth, prediction)
    assert iou.shape == (3, 3) and iou[0, 0] == pytest.approx(80 / 120) and iou[2, 1] == 1.0
    at = {row["threshold"]: row for row in scores(counts(truth, prediction))}
    assert (at[0.5]["tp"], at[0.5]["fp"], at[0.5]["fn"]) == (2, 1, 1)
    assert at[0.5]["ap"] == pytest.approx(2 / 4) and at[0.5]["f1"] == pytest.approx(4 / 6)
    assert (at[0.7]["tp"], at[0.7]["fp"], at[0.7]["fn"]) == (1, 2, 2)     # the shifted one no longer counts
    assert at[0.5]["panoptic_quality"] == pytest.approx((80 / 120 + 1.0) / (2 + 0.5 + 0.5))


def test_hungarian_matching_is_one_to_one():
    """One prediction covering two true objects matches at most one of them."""
    truth = squares([(10, 10), (10, 22)], size=10)
    prediction = np.zeros_like(truth)
    prediction[10:20, 10:32] = 1
    row = counts(truth, prediction, [0.3])[0]
    assert row["tp"] == 1 and row["fn"] == 1 and row["fp"] == 0


def test_data_set_scores_sum_counts_over_images_and_work_in_3d():
    truth = np.zeros((8, 32, 32), np.uint16)
    truth[2:6, 4:12, 4:12] = 1
    truth[2:6, 20:28, 20:28] = 2
    empty = np.zeros_like(truth)
    rows = evaluate([truth, truth], [truth, empty], thresholds=[0.5])
    assert rows[0]["tp"] == 2 and rows[0]["fn"] == 2 and rows[0]["ap"] == pytest.approx(0.5)
    assert evaluate([empty], [empty], [0.5])[0]["ap"] == 1.0        # nothing to find, nothing found


def test_bad_inputs_are_clear():
    with pytest.raises(InputError, match="differ in shape"):
        iou_matrix(np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8))
    with pytest.raises(InputError, match="label image"):
        iou_matrix(np.zeros((4, 4), np.float32), np.zeros((4, 4), np.uint8))
    with pytest.raises(InputError, match="2 ground-truth images but 1"):
        evaluate([np.zeros((4, 4), np.uint8)] * 2, [np.zeros((4, 4), np.uint8)])
