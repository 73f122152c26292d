"""Slot selection: the IoU head's pick vs the mask that agrees with the clicks."""

import numpy as np
import pytest
import torch

from sampo_engine.models.slots import click_scores, select_slot, select_slots_torch


def _logits():
    """Three 8 × 8 slots: 0 = left half, 1 = everything, 2 = nothing (logits ±4)."""
    z = np.full((3, 8, 8), -4.0, np.float32)
    z[0, :, :4] = 4.0
    z[1] = 4.0
    return z


def test_clicks_rule_picks_the_mask_matching_the_clicks():
    z = _logits()
    points = np.array([[1.0, 1.0], [6.0, 6.0], [0, 0]], np.float32)  # (x, y): left, right, pad
    labels = np.array([1, 0, -1])
    scores = click_scores(z, points, labels, size=8)
    assert scores.argmax() == 0 and scores[1] == pytest.approx(0.0, abs=1e-3)
    iou_pred = np.array([0.1, 0.9, 0.5])
    assert select_slot(z, iou_pred, points, labels, 8, "iou") == 1
    assert select_slot(z, iou_pred, points, labels, 8, "clicks") == 0
    with pytest.raises(ValueError, match="iou, clicks"):
        select_slot(z, iou_pred, points, labels, 8, "best")


def test_points_are_scaled_to_low_resolution_logits_and_torch_agrees():
    z = _logits()
    points = np.array([[10.0, 10.0], [60.0, 60.0]], np.float32)  # in a 64 px input frame
    labels = np.array([1, 0])
    iou_pred = np.array([0.1, 0.9, 0.5], np.float32)
    assert select_slot(z, iou_pred, points, labels, 64, "clicks") == 0
    batched = select_slots_torch(
        torch.from_numpy(z)[None, None], torch.from_numpy(iou_pred)[None, None],
        torch.from_numpy(points)[None, None], torch.from_numpy(labels)[None, None], 64, "clicks",
    )  # fmt: skip
    assert batched.tolist() == [[0]]
    assert select_slots_torch(
        torch.from_numpy(z)[None, None], torch.from_numpy(iou_pred)[None, None],
        torch.from_numpy(points)[None, None], torch.from_numpy(labels)[None, None], 64, "iou",
    ).tolist() == [[1]]  # fmt: skip


def test_iou_head_breaks_ties():
    z = np.zeros((3, 4, 4), np.float32)  # every slot equally unsure
    points, labels = np.array([[1.0, 1.0]], np.float32), np.array([1])
    assert select_slot(z, np.array([0.2, 0.3, 0.9]), points, labels, 4, "clicks") == 2


def test_auto_rule_is_clicks_for_t2_and_the_iou_head_for_t1():
    import pytest

    from sampo_engine.models.slots import slot_rule_for

    assert slot_rule_for("auto", "t2") == "clicks" and slot_rule_for("auto", "t1") == "iou"
    assert slot_rule_for("iou", "t2") == "iou" and slot_rule_for("clicks", "t1") == "clicks"
    with pytest.raises(ValueError, match="unknown slot rule 'best'"):
        slot_rule_for("best", "t1")
