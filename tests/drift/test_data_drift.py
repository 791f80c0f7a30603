import json

import numpy as np
from typer.testing import CliRunner

from zeropoint.drift.data import random_halves, run_data_drift


def test_spamassassin_vs_state_of_the_union_is_flagged_and_halves_are_not(tmp_path):
    from zeropoint.data import assets
    spam, sotu = str(assets.spam_assassin_dir()), str(assets.sotu_dir())
    # Real corpora. 150 documents a side for the drift that must be flagged (fewer rows only lower the tests' power);
    # the two negative controls keep every document (the SOTU halves are p-value tests, the spam halves need > 1000
    # measured rows for the Wasserstein branch).
    rep = run_data_drift(spam, sotu, max_items=150, out_dir=tmp_path / "a")
    assert rep["dataset_drift"] and rep["share_drifted"] >= 0.75
    assert {f["test"] for f in rep["features"]} == {"ks", "jensen_shannon"}   # <= 1000 rows: KS per feature
    halves = run_data_drift(sotu, None, halves_seed=0, out_dir=tmp_path / "b")
    assert not halves["dataset_drift"] and halves["share_drifted"] < 0.5
    spam_halves = run_data_drift(spam, None, halves_seed=0, out_dir=tmp_path / "c")
    assert spam_halves["n_reference"] > 1000 and not spam_halves["dataset_drift"]
    assert {f["test"] for f in spam_halves["features"]} == {"wasserstein_norm", "jensen_shannon"}
    for r in (rep, halves):
        for p in r["plots"]:
            assert open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
        assert json.loads((tmp_path / ("a" if r is rep else "b") / "report.json").read_text())["n_features"] == 9


def test_image_drift_on_fashion_mnist_brightness_shift(tmp_path):
    from zeropoint.data import assets
    from zeropoint.drift.data import image_drift
    from zeropoint.drift.features import load_images
    imgs = load_images(assets.fashion_mnist_dir() / "t10k-images-idx3-ubyte.gz", max_images=1200)
    a, b = imgs[:600], imgs[600:1200]
    res, _ = image_drift(a, b)
    assert not any(r.drifted for r in res)
    darker, _ = image_drift(a, np.clip(b * 0.6, 0, 1))
    assert {r.feature for r in darker if r.drifted} >= {"brightness", "contrast"}


def test_cli_drift_data_exit_codes_and_json(tmp_path):
    from zeropoint.cli.main import app
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"]
    for i in range(60):
        (a / f"{i}.txt").write_text(" ".join(rng.choice(words, rng.integers(20, 40))))
        (b / f"{i}.txt").write_text("SHOUTING 1234 $$$ " * int(rng.integers(30, 60)))
    r = CliRunner().invoke(app, ["drift", "data", "--reference", str(a), "--current", str(b), "--json"])
    assert r.exit_code == 3, r.output
    assert json.loads(r.output)["dataset_drift"] is True
    r = CliRunner().invoke(app, ["drift", "data", "--reference", str(a), "--halves", "1", "--json"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["drift", "data", "--reference", str(tmp_path / "nope"), "--current", str(b)])
    assert r.exit_code == 2 and "does not exist" in r.output


def test_random_halves_partition():
    a, b = random_halves(list(range(11)), 3)
    assert sorted(a + b) == list(range(11)) and len(a) == 5


def test_image_drift_with_vit_embedding_features(tmp_path):
    """Embedding-space features from a (random-init) vit-nano-28 checkpoint: same images -> no drift on the
    PCA features; images from a different source (inverted) -> the embedding features drift."""
    from zeropoint.checkpoint import save_checkpoint
    from zeropoint.data import assets
    from zeropoint.drift.data import run_data_drift
    from zeropoint.models.vit import init_vit_arrays, vit_config
    cfg = vit_config("vit-nano-28")
    save_checkpoint(tmp_path / "ck", 1, weights=init_vit_arrays(cfg, seed=0), optimizer={},
                    state={"classes": [str(i) for i in range(10)], "normalize": {"mean": [0.286], "std": [0.353]}},
                    config={}, config_sha256="0" * 64, extra_files={"vit_config.json": json.dumps(cfg.to_dict()).encode()})
    src = assets.fashion_mnist_dir() / "t10k-images-idx3-ubyte.gz"
    rep = run_data_drift(str(src), None, halves_seed=0, max_items=128, embed_model=str(tmp_path / "ck"),
                         out_dir=tmp_path / "r")
    emb = [f for f in rep["features"] if f["feature"].startswith("emb_pc")]
    assert len(emb) == 5 and not rep["dataset_drift"]
