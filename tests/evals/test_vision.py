"""Vision metrics against hand-computed cases."""
import numpy as np
import pytest

from zeropoint.evals import vision as V


def test_topk_accuracy_hand_case():
    logits = np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.1, 0.7, 0.2], [0.3, 0.3, 0.4]])
    labels = np.array([0, 1, 1, 2])
    r = V.topk_accuracy(logits, labels, ks=(1, 2, 5))
    assert r["top1"] == 0.75 and r["top2"] == 1.0
    assert r["top5"] is None and "3 classes" in r["top5_null_reason"]
    with pytest.raises(Exception, match="expected logits"):
        V.topk_accuracy(logits, labels[:2])


def test_confusion_matrix_and_png(tmp_path):
    cm = V.confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 3)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert V.per_class_accuracy(cm, ["a", "b", "c"]) == {"a": 1.0, "b": 1.0, "c": 0.5}
    p = V.save_confusion_png(cm, ["a", "b", "c"], tmp_path / "cm.png")
    data = p.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    from PIL import Image
    assert Image.open(p).size[0] >= 300


def test_retrieval_recall():
    rng = np.random.default_rng(0)
    txt = rng.standard_normal((50, 16))
    perfect = V.retrieval_recall(txt.copy(), txt)
    assert perfect["image_to_text"]["R@1"] == 1.0 and perfect["text_to_image"]["R@1"] == 1.0
    assert perfect["random_baseline"]["R@10"] == 10 / 50
    shuffled = V.retrieval_recall(txt[rng.permutation(50)], txt)
    assert shuffled["image_to_text"]["R@1"] < 0.2
    # hand case (pair i = image i + text i): image 0 is closest to text 0 (hit), image 1 is also closest to
    # text 0 (miss at 1, hit at 2) -> image->text R@1 = 0.5, R@2 = 1
    r = V.retrieval_recall(np.array([[0.1, 1.0], [0.0, 1.0]]), np.array([[0.0, 1.0], [1.0, 1.0]]), ks=(1, 2))
    assert r["image_to_text"]["R@1"] == 0.5 and r["image_to_text"]["R@2"] == 1.0


def test_zero_shot():
    cls = np.eye(3)
    img = np.array([[1, 0.1, 0], [0, 1, 0.2], [0, 0.1, 1], [1, 0, 0.1]])
    r = V.zero_shot(img, cls, np.array([0, 1, 2, 2]), ["x", "y", "z"])
    assert r["top1"] == 0.75 and r["chance"] == pytest.approx(1 / 3) and r["majority_baseline"] == 0.5
