"""Image data for the vision recipes: loaders, transforms and deterministic batching.

Loaders take the file paths a governance record lists (`require_approved(...)["files"]`), never a directory the
caller did not approve, and return plain numpy:

- `load_idx_pair` / `load_idx_split`: IDX files (MNIST, Fashion-MNIST), gzip or raw; magic and sizes checked.
- `load_digits_csv`: the sklearn digits file (`digits.csv.gz`, 1,797 8x8 images) read without sklearn.
- `load_image_folder`: one sub-folder per class (`root/<class>/<image>`), decoded with Pillow.
- `load_caption_jsonl`: `{"image": "rel/or/abs.png", "caption": "...", "label": optional}` per line.
- `load_emoji_captions`: Noto emoji PNGs with their Unicode names as captions and categories as labels.

Images come back as float32 (N, C, H, W) in [0, 1]; `normalize` maps them with a per-channel mean/std.
`sample_order` / `batch_indices` make shuffling a pure function of (seed, epoch), so a resumed run and a
fresh run with the same seed see identical batches; `augment` draws its randomness from (seed, step).
"""
from __future__ import annotations

import gzip
import importlib.util
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import ZeropointError

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot"]
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MAX_IMAGE_BYTES = 64 << 20      # refuse decompression bombs: no single image file above 64 MiB


class ImageDataError(ZeropointError):
    pass


@dataclass
class ImageSet:
    """Images (N, C, H, W) float32 in [0, 1], integer labels, class names, and captions when the data has them."""
    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    captions: list[str] = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx) -> "ImageSet":
        idx = np.asarray(idx)
        return ImageSet(self.images[idx], self.labels[idx], self.classes,
                        [self.captions[i] for i in idx] if self.captions else [], self.source)


# ---- IDX -----------------------------------------------------------------------------------------------------
def _read_maybe_gz(path: Path) -> bytes:
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ImageDataError(f"{path} is a damaged gzip file ({e}); re-install or re-download it") from None
    return raw


def read_idx(path: Path | str) -> np.ndarray:
    """Parse one IDX file: 2 zero bytes, a type byte, a rank byte, big-endian int32 sizes, then the data."""
    path = Path(path)
    buf = _read_maybe_gz(path)
    if len(buf) < 4 or buf[0] != 0 or buf[1] != 0 or buf[2] not in IDX_DTYPES:
        raise ImageDataError(f"{path} is not an IDX file (bad magic {buf[:4].hex()}); expected e.g. "
                             "train-images-idx3-ubyte(.gz)")
    dt, rank = np.dtype(IDX_DTYPES[buf[2]]), buf[3]
    shape = tuple(int(s) for s in np.frombuffer(buf, ">i4", rank, 4))
    need = 4 + 4 * rank + int(np.prod(shape)) * dt.itemsize
    if len(buf) != need:
        raise ImageDataError(f"{path}: header says shape {shape} ({need} bytes) but the file has {len(buf)} bytes; "
                             "the file is truncated or corrupt")
    return np.frombuffer(buf, dt, offset=4 + 4 * rank).reshape(shape).astype(dt.newbyteorder("="))


def load_idx_pair(images_path: Path | str, labels_path: Path | str, classes: list[str] | None = None) -> ImageSet:
    x, y = read_idx(images_path), read_idx(labels_path)
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise ImageDataError(f"IDX pair {images_path} / {labels_path}: expected images (N,H,W) and labels (N,), got "
                             f"{x.shape} and {y.shape}")
    n_cls = int(y.max()) + 1
    return ImageSet((x.astype(np.float32) / 255.0)[:, None], y.astype(np.int32),
                    classes or [str(i) for i in range(n_cls)], source=str(images_path))


def find_file(files: list, *patterns: str) -> Path:
    """The one listed file whose name contains every pattern (e.g. 'train', 'images')."""
    paths = [Path(f["path"] if isinstance(f, dict) else f) for f in files]
    hits = [p for p in paths if all(s in p.name for s in patterns)]
    if len(hits) != 1:
        raise ImageDataError(f"expected exactly one file matching {patterns} among the dataset's files, found "
                             f"{[p.name for p in hits] or 'none'}; register the dataset with the IDX files "
                             "(e.g. zpctl data add /usr/share/datasets/fashion-mnist --name fashion-mnist ...)")
    return hits[0]


def load_idx_split(files: list, split: str, classes: list[str] | None = None) -> ImageSet:
    """Fashion-MNIST/MNIST naming: `train-images-idx3-ubyte.gz` + `train-labels-...`; split 'train' or 'test'
    (the test files are called `t10k-...`)."""
    tag = {"train": "train", "test": "t10k"}[split]
    return load_idx_pair(find_file(files, tag, "images"), find_file(files, tag, "labels"), classes)


# ---- sklearn digits ------------------------------------------------------------------------------------------
def digits_csv_path() -> Path:
    """sklearn ships the digits as `sklearn/datasets/data/digits.csv.gz`; we read it ourselves (no pickle)."""
    spec = importlib.util.find_spec("sklearn")
    p = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if p is None or not p.is_file():
        raise ImageDataError("sklearn digits not found; `pip install scikit-learn==1.9.1` into the environment")
    return p


def load_digits_csv(path: Path | str) -> ImageSet:
    """1,797 8x8 digits, values 0..16, last column the label."""
    try:
        arr = np.loadtxt(io.BytesIO(_read_maybe_gz(Path(path))), delimiter=",", dtype=np.float32)
    except ValueError as e:
        raise ImageDataError(f"{path} is not the sklearn digits CSV ({e})") from None
    if arr.ndim != 2 or arr.shape[1] != 65:
        raise ImageDataError(f"{path}: expected 65 columns (64 pixels + label), got shape {arr.shape}")
    return ImageSet((arr[:, :64] / 16.0).reshape(-1, 1, 8, 8), arr[:, 64].astype(np.int32),
                    [str(i) for i in range(10)], source=str(path))


# ---- decoded image files -------------------------------------------------------------------------------------
def load_image(path: Path | str, size: int, channels: int = 3, background: int = 255) -> np.ndarray:
    """Decode one image to float32 (C, size, size) in [0, 1]. Transparent pixels are composited on `background`
    (emoji PNGs are RGBA: black-on-transparent would otherwise turn into black-on-black)."""
    path = Path(path)
    if not path.is_file():
        raise ImageDataError(f"image {path} not found; check the paths in the dataset")
    if path.stat().st_size > MAX_IMAGE_BYTES:
        raise ImageDataError(f"image {path} is larger than {MAX_IMAGE_BYTES >> 20} MiB; refusing to decode it")
    return decode_image(path, size, channels, background, name=str(path))


def decode_image(src: Path | bytes, size: int, channels: int = 3, background: int = 255, name: str = "") -> np.ndarray:
    """`load_image` from a path or from bytes already read (and hash-checked: `governance.gate.read_verified`)."""
    if isinstance(src, bytes) and len(src) > MAX_IMAGE_BYTES:
        raise ImageDataError(f"image {name} is larger than {MAX_IMAGE_BYTES >> 20} MiB; refusing to decode it")
    try:
        with Image.open(io.BytesIO(src) if isinstance(src, bytes) else src) as im:
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, (background,) * 3 + (255,))
            im = Image.alpha_composite(bg, im).convert("RGB" if channels == 3 else "L")
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            a = np.asarray(im, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise ImageDataError(f"cannot decode image {name or ('(bytes)' if isinstance(src, bytes) else src)}: {e}") \
            from None
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def load_image_folder(files: list, size: int, channels: int = 3) -> ImageSet:
    """Class per folder: the class of `.../<class>/<file>` is its parent folder's name; classes sorted by name."""
    paths = sorted(Path(f["path"] if isinstance(f, dict) else f) for f in files)
    paths = [p for p in paths if p.suffix.lower() in IMAGE_EXTS]
    if not paths:
        raise ImageDataError("no image files (png/jpg/bmp/gif/webp) in the dataset; expect root/<class>/<image>")
    classes = sorted({p.parent.name for p in paths})
    if len(classes) < 2:
        raise ImageDataError(f"image folder has one class ({classes[0]}); put each class in its own sub-folder")
    cls_id = {c: i for i, c in enumerate(classes)}
    x = np.stack([load_image(p, size, channels) for p in paths])
    return ImageSet(x, np.array([cls_id[p.parent.name] for p in paths], np.int32), classes, source=str(paths[0].parent.parent))


def load_caption_jsonl(path: Path | str, size: int, channels: int = 3, allowed: set[str] | None = None) -> ImageSet:
    """Image-caption pairs. Relative image paths resolve against the JSONL's folder; with `allowed` (the
    governed file list) an image outside it is refused, so a JSONL cannot pull in unapproved files."""
    path = Path(path)
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            raise ImageDataError(f"{path}:{i}: not valid JSON ({e.msg}); one object per line") from None
        if not isinstance(r, dict) or not isinstance(r.get("image"), str) or not isinstance(r.get("caption"), str):
            raise ImageDataError(f'{path}:{i}: each line needs "image" (path) and "caption" (text), got {line[:80]!r}')
        img = (path.parent / r["image"]).resolve()
        if allowed is not None and str(img) not in allowed:
            raise ImageDataError(f"{path}:{i}: image {img} is not part of the approved dataset; register the images "
                                 "together with the JSONL (zpctl data add <folder>)")
        rows.append((img, r["caption"], str(r.get("label", ""))))
    if not rows:
        raise ImageDataError(f"{path} has no image-caption rows")
    classes = sorted({r[2] for r in rows})
    cls_id = {c: i for i, c in enumerate(classes)}
    x = np.stack([load_image(r[0], size, channels) for r in rows])
    return ImageSet(x, np.array([cls_id[r[2]] for r in rows], np.int32), classes, [r[1] for r in rows], str(path))


def emoji_records(emoji_json: Path | str, image_dir: Path | str | None = None) -> list[dict]:
    """One record per base emoji with a Google image: caption = lower-cased Unicode name, label = category.
    Skin-tone variants are left out (same name, near-identical image) and so is the 'Component' category."""
    emoji_json = Path(emoji_json)
    image_dir = Path(image_dir) if image_dir else emoji_json.parent / "img" / "google" / "64"
    out = []
    for e in json.loads(emoji_json.read_text(encoding="utf-8")):
        if not e.get("has_img_google") or not e.get("name") or e.get("category") in (None, "Component"):
            continue
        out.append({"image": str((image_dir / e["image"]).resolve()), "caption": e["name"].lower(),
                    "label": e["category"], "sort_order": e.get("sort_order", 0)})
    return sorted(out, key=lambda r: (r["sort_order"], r["image"]))


def load_emoji_captions(files: list, size: int) -> ImageSet:
    """Emoji image-caption pairs from the governed files of the emoji-datasource-google package."""
    allowed = {str(Path(f["path"] if isinstance(f, dict) else f)) for f in files}
    ej = find_file(files, "emoji.json")
    recs = emoji_records(ej)
    missing = [r["image"] for r in recs if r["image"] not in allowed]
    if missing:
        raise ImageDataError(f"{len(missing)} emoji images (e.g. {missing[0]}) are not in the approved dataset; "
                             "register the package folder with img/google/64 included")
    classes = sorted({r["label"] for r in recs})
    cls_id = {c: i for i, c in enumerate(classes)}
    x = np.stack([load_image(r["image"], size, 3) for r in recs])
    return ImageSet(x, np.array([cls_id[r["label"]] for r in recs], np.int32), classes, [r["caption"] for r in recs],
                    str(ej.parent))


# ---- transforms ----------------------------------------------------------------------------------------------
def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a (N, C, H, W) float batch (Pillow, per channel in float mode)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = np.empty(images.shape[:2] + (size, size), np.float32)
    for i in range(images.shape[0]):
        for c in range(images.shape[1]):
            out[i, c] = np.asarray(Image.fromarray(images[i, c].astype(np.float32), mode="F")
                                   .resize((size, size), Image.Resampling.BILINEAR))
    return out


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of a training set (what `normalize` should use)."""
    return ([float(v) for v in images.mean(axis=(0, 2, 3))],
            [float(max(v, 1e-6)) for v in images.std(axis=(0, 2, 3))])


def normalize(images: np.ndarray, mean, std) -> np.ndarray:
    m = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
    return ((images - m) / s).astype(np.float32)


def augment(images: np.ndarray, rng: np.random.Generator, *, crop_pad: int = 0, flip: bool = False) -> np.ndarray:
    """Random crop (pad by `crop_pad` with edge values, crop back at a random offset) and horizontal flip."""
    x = images
    n, c, h, w = x.shape
    if crop_pad > 0:
        padded = np.pad(x, ((0, 0), (0, 0), (crop_pad, crop_pad), (crop_pad, crop_pad)), mode="edge")
        oy = rng.integers(0, 2 * crop_pad + 1, n)
        ox = rng.integers(0, 2 * crop_pad + 1, n)
        x = np.stack([padded[i, :, oy[i]:oy[i] + h, ox[i]:ox[i] + w] for i in range(n)])
    if flip:
        m = rng.random(n) < 0.5
        x = x.copy() if x is images else x
        x[m] = x[m][..., ::-1]
    return np.ascontiguousarray(x, dtype=np.float32)


# ---- deterministic order -------------------------------------------------------------------------------------
def sample_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of epoch `epoch`: depends on (seed, epoch) only, never on what ran before."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def batch_indices(step: int, batch_size: int, n: int, seed: int) -> np.ndarray:
    """Indices of the `step`-th batch of a stream of epochs laid end to end (a batch may span two epochs)."""
    pos = np.arange(step * batch_size, (step + 1) * batch_size)
    epochs, offs = pos // n, pos % n
    out = np.empty(batch_size, np.int64)
    for e in np.unique(epochs):
        sel = epochs == e
        out[sel] = sample_order(n, seed, int(e))[offs[sel]]
    return out


def step_rng(seed: int, step: int, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, step, salt])


def split_indices(n: int, fraction: float, seed: int, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices; stratified by label when labels are given, so every class is in both."""
    rng = np.random.default_rng([seed, 7919])
    if labels is None:
        perm = rng.permutation(n)
        k = max(1, int(round(n * fraction)))
        return np.sort(perm[k:]), np.sort(perm[:k])
    held = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        held.extend(idx[:max(1, int(round(len(idx) * fraction)))].tolist())
    held = np.sort(np.array(held, np.int64))
    return np.setdiff1d(np.arange(n), held), held
