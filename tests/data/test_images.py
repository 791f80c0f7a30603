"""Image data: IDX parsing (real Fashion-MNIST + corrupt files), digits CSV, image folders, caption JSONL,
emoji pairs, augmentation and seeded batch order."""
import gzip
import json
import struct

import numpy as np
import pytest

from zeropoint.data import assets
from zeropoint.data import images as I


def _idx_bytes(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "i" * arr.ndim, *arr.shape) + arr.astype(np.uint8).tobytes()


def test_idx_round_trip_and_errors(tmp_path):
    x = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.idx").write_bytes(_idx_bytes(x))
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(_idx_bytes(x)))
    assert np.array_equal(I.read_idx(tmp_path / "a.idx"), x)
    assert np.array_equal(I.read_idx(tmp_path / "a.idx.gz"), x)
    (tmp_path / "short.idx").write_bytes(_idx_bytes(x)[:-3])
    with pytest.raises(I.ImageDataError, match="truncated"):
        I.read_idx(tmp_path / "short.idx")
    (tmp_path / "png.idx").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(I.ImageDataError, match="not an IDX file"):
        I.read_idx(tmp_path / "png.idx")
    (tmp_path / "bad.gz").write_bytes(gzip.compress(_idx_bytes(x))[:-8])
    with pytest.raises(I.ImageDataError, match="damaged gzip"):
        I.read_idx(tmp_path / "bad.gz")


def test_real_fashion_mnist_test_split():
    files = sorted(str(p) for p in assets.fashion_mnist_dir().glob("*.gz"))
    ds = I.load_idx_split(files, "test", I.FASHION_MNIST_CLASSES)
    assert ds.images.shape == (10000, 1, 28, 28) and ds.images.dtype == np.float32
    assert 0.0 <= ds.images.min() and ds.images.max() <= 1.0
    assert np.bincount(ds.labels).tolist() == [1000] * 10   # the published test set is balanced
    with pytest.raises(I.ImageDataError, match="exactly one file"):
        I.find_file(files, "nothing-like-this")


def test_digits_csv():
    ds = I.load_digits_csv(I.digits_csv_path())
    assert ds.images.shape == (1797, 1, 8, 8) and set(np.unique(ds.labels)) == set(range(10))
    assert ds.images.max() == 1.0


def _png(path, color, size=12, alpha=255):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGBA", (size, size), color + (alpha,)).save(path)


def test_image_folder_and_transparency(tmp_path):
    for i in range(2):
        _png(tmp_path / "red" / f"{i}.png", (255, 0, 0))
        _png(tmp_path / "blue" / f"{i}.png", (0, 0, 255))
    _png(tmp_path / "blue" / "clear.png", (0, 0, 0), alpha=0)
    files = [str(p) for p in sorted(tmp_path.rglob("*.png"))]
    ds = I.load_image_folder(files, size=8)
    assert ds.classes == ["blue", "red"] and ds.images.shape == (5, 3, 8, 8)
    red = ds.images[ds.labels == 1][0]
    assert red[0].mean() == 1.0 and red[2].mean() == 0.0
    # fully transparent pixels are composited on white, not black
    assert ds.images[[files.index(str(tmp_path / "blue" / "clear.png"))]].min() == 1.0
    (tmp_path / "red" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(I.ImageDataError, match="cannot decode"):
        I.load_image_folder(files + [str(tmp_path / "red" / "broken.png")], size=8)


def test_caption_jsonl_refuses_unapproved_images(tmp_path):
    _png(tmp_path / "img" / "a.png", (255, 0, 0))
    _png(tmp_path / "outside.png", (0, 255, 0))
    j = tmp_path / "pairs.jsonl"
    j.write_text(json.dumps({"image": "img/a.png", "caption": "a red square", "label": "red"}) + "\n")
    allowed = {str((tmp_path / "img" / "a.png").resolve()), str(j)}
    ds = I.load_caption_jsonl(j, 8, allowed=allowed)
    assert ds.captions == ["a red square"] and ds.classes == ["red"]
    j.write_text(json.dumps({"image": "outside.png", "caption": "x"}) + "\n")
    with pytest.raises(I.ImageDataError, match="not part of the approved dataset"):
        I.load_caption_jsonl(j, 8, allowed=allowed)
    j.write_text('{"image": "img/a.png"}\n')
    with pytest.raises(I.ImageDataError, match='"caption"'):
        I.load_caption_jsonl(j, 8)


def test_emoji_records_are_real_pairs():
    recs = I.emoji_records(assets.emoji_google_dir() / "emoji.json")
    assert len(recs) > 1800
    caps = {r["caption"] for r in recs}
    assert "grinning face" in caps and "red apple" in caps
    assert "Component" not in {r["label"] for r in recs} and len({r["label"] for r in recs}) == 9


def test_batch_order_is_a_function_of_seed_and_step():
    n, b = 10, 4
    a = [I.batch_indices(s, b, n, seed=1) for s in range(5)]
    assert all(np.array_equal(x, I.batch_indices(s, b, n, seed=1)) for s, x in enumerate(a))
    first_epoch = np.concatenate(a)[:n]
    assert sorted(first_epoch.tolist()) == list(range(n))          # every sample once per epoch
    assert not np.array_equal(np.concatenate(a)[:n], np.concatenate(a)[n:2 * n])   # reshuffled per epoch
    assert not np.array_equal(I.batch_indices(0, b, n, seed=2), a[0])


def test_augment_is_seeded_and_shape_preserving():
    x = np.random.default_rng(0).random((8, 1, 6, 6)).astype(np.float32)
    a = I.augment(x, I.step_rng(0, 3), crop_pad=2, flip=True)
    b = I.augment(x, I.step_rng(0, 3), crop_pad=2, flip=True)
    c = I.augment(x, I.step_rng(0, 4), crop_pad=2, flip=True)
    assert a.shape == x.shape and np.array_equal(a, b) and not np.array_equal(a, c)
    f = I.augment(x, np.random.default_rng(0), flip=True)
    flipped = [np.array_equal(f[i], x[i][..., ::-1]) for i in range(8)]
    kept = [np.array_equal(f[i], x[i]) for i in range(8)]
    assert all(p or q for p, q in zip(flipped, kept)) and any(flipped) and any(kept)


def test_stratified_split_keeps_every_class():
    labels = np.array([0] * 10 + [1] * 10 + [2] * 3)
    tr, te = I.split_indices(len(labels), 0.2, 0, labels)
    assert set(labels[te]) == {0, 1, 2} and set(labels[tr]) == {0, 1, 2}
    assert len(np.intersect1d(tr, te)) == 0 and len(tr) + len(te) == len(labels)


def test_normalize_and_resize():
    x = np.random.default_rng(0).random((4, 3, 8, 8)).astype(np.float32)
    m, s = I.channel_stats(x)
    z = I.normalize(x, m, s)
    assert np.allclose(z.mean(axis=(0, 2, 3)), 0, atol=1e-5) and np.allclose(z.std(axis=(0, 2, 3)), 1, atol=1e-4)
    assert I.resize(x, 4).shape == (4, 3, 4, 4)
