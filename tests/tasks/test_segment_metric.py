"""The segmentation metric (dataset-level mIoU / mAcc / aAcc) against a plain numpy oracle, and the loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from swat_dist.tasks.segment import IGNORE, PAD, SegmentationTask, confusion, scores


def oracle(preds: list[np.ndarray], targets: list[np.ndarray], num_classes: int) -> dict[str, float]:
    """SEG_SPEC 5 written out per class with boolean masks over all images at once."""
    p = np.concatenate([x.ravel() for x in preds])
    t = np.concatenate([x.ravel() for x in targets])
    keep = (t != IGNORE) & (t != PAD)
    p, t = p[keep], t[keep]
    ious, accs, inter_total = [], [], 0
    for c in range(num_classes):
        inter = np.sum((p == c) & (t == c))
        union = np.sum((p == c) | (t == c))
        inter_total += inter
        if union:
            ious.append(inter / union)
        if np.sum(t == c):
            accs.append(inter / np.sum(t == c))
    return dict(mIoU=100 * np.mean(ious), mAcc=100 * np.mean(accs), aAcc=100 * inter_total / len(t))


def _random_set(rng: np.random.Generator, num_classes: int, sizes: list[tuple[int, int]]):
    preds, targets = [], []
    for h, w in sizes:
        t = rng.integers(0, num_classes - 2, (h, w))  # the last two classes never appear in the targets
        t[rng.random((h, w)) < 0.2] = IGNORE
        p = np.where(rng.random((h, w)) < 0.6, t, rng.integers(0, num_classes, (h, w)))  # 60% right
        p[t == IGNORE] = rng.integers(0, num_classes, int(np.sum(t == IGNORE)))
        preds.append(p)
        targets.append(t)
    return preds, targets


def test_metric_equals_the_oracle_with_ignored_pixels_and_absent_classes():
    rng = np.random.default_rng(0)
    c = 7
    preds, targets = _random_set(rng, c, [(13, 17), (8, 8), (21, 5)])
    matrix = sum(confusion(torch.from_numpy(p), torch.from_numpy(t), c) for p, t in zip(preds, targets))
    got = scores(matrix.view(c, c))
    want = oracle(preds, targets, c)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-9), key
    # class c-1 is predicted but never a target: it counts in mIoU (union > 0, IoU 0) but not in mAcc
    assert got["mIoU"] < got["mAcc"]


def test_a_class_absent_from_predictions_and_targets_is_left_out():
    t = torch.tensor([[0, 0, 1, 1]])
    p = torch.tensor([[0, 0, 1, 0]])
    got = scores(confusion(p, t, 5).view(5, 5))  # classes 2..4 appear nowhere
    assert got["mIoU"] == pytest.approx(100 * (2 / 3 + 1 / 2) / 2)
    assert got["mAcc"] == pytest.approx(100 * (1 + 1 / 2) / 2)
    assert got["aAcc"] == pytest.approx(75.0)


def test_padding_and_ignored_pixels_add_nothing():
    task = SegmentationTask(num_classes=3)
    x = torch.zeros(2, 3, 8, 8)
    target = torch.full((2, 8, 8), IGNORE)
    target[0, :4] = 1
    target[1] = PAD  # a padding sample

    def forward(z):  # logits at stride 4 that always say class 1
        out = torch.zeros(z.shape[0], 3, z.shape[2] // 4, z.shape[3] // 4)
        out[:, 1] = 1
        return out

    sums = task.eval_sums(forward, x, target)
    metrics = task.metrics(sums)
    assert metrics["samples"] == 1 and int(sums[:-1].sum()) == 32  # the 32 labelled pixels of image 0 only
    assert metrics["aAcc"] == 100.0 and metrics["mIoU"] == 100.0


def test_slide_inference_covers_every_pixel_and_equals_whole_for_a_pointwise_model():
    task_whole, task_slide = SegmentationTask(4), SegmentationTask(4, mode="slide", crop=16, stride=11)
    x = torch.randn(1, 3, 24, 37)
    target = torch.randint(0, 4, (1, 24, 37))
    conv = torch.nn.Conv2d(3, 4, 1)

    def forward(z):  # pointwise: every window sees the same logits for a pixel
        return conv(z)

    with torch.no_grad():
        whole = task_whole.eval_sums(forward, x, target)
        slide = task_slide.eval_sums(forward, x, target)
    assert torch.equal(whole, slide)
    assert int(whole[:-1].sum()) == 24 * 37


def test_loss_is_main_plus_0_4_aux_upsampled_to_the_crop_and_ignores_255():
    task = SegmentationTask(num_classes=3)
    torch.manual_seed(0)
    main, aux = torch.randn(2, 3, 4, 4, requires_grad=True), torch.randn(2, 3, 1, 1, requires_grad=True)
    target = torch.randint(0, 3, (2, 16, 16))
    target[:, :8] = IGNORE
    loss = task.loss((main, aux), target)
    up = torch.nn.functional.interpolate(main, size=(16, 16), mode="bilinear", align_corners=False)
    up_aux = torch.nn.functional.interpolate(aux, size=(16, 16), mode="bilinear", align_corners=False)
    keep = target != IGNORE
    ce = torch.nn.functional.cross_entropy(up.permute(0, 2, 3, 1)[keep], target[keep])
    ce_aux = torch.nn.functional.cross_entropy(up_aux.permute(0, 2, 3, 1)[keep], target[keep])
    assert loss.item() == pytest.approx((ce + 0.4 * ce_aux).item(), rel=1e-6)
    loss.backward()
    assert main.grad is not None and aux.grad is not None
