"""install.sh verifies a bundle before it installs anything: a changed byte, an added file or another signer is
refused, naming the file or the key, and the install prefix is never created. `seal.verify` (zpctl appliance
verify) agrees with it on every case."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from zeropoint.supplychain import seal

from .bundles import INSTALL_SH, make_bundle, new_key

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="install.sh verifies with openssl")
REFUSED = 3


def run_install(bundle, pubkey, prefix, *extra, installer=None):
    """The bundle's own install.sh, or a trusted one pointed at the bundle with --bundle."""
    cmd = ["bash", str(installer or bundle / "install.sh"), "--pubkey", str(pubkey), "--prefix", str(prefix), "--no-debs"]
    if installer:
        cmd += ["--bundle", str(bundle)]
    return subprocess.run(cmd + [str(e) for e in extra], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def sealed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sealed")
    key, pub = new_key(tmp, "packer")
    return make_bundle(tmp, key), pub, key


@pytest.fixture
def bundle(sealed, tmp_path):
    src, pub, _ = sealed
    dst = tmp_path / "bundle"
    shutil.copytree(src, dst)
    return dst, pub


def repacked(sealed, tmp_path, **env):
    """The sealed bundle with other platform facts in bundle.env, sealed again by the same packer."""
    src, pub, key = sealed
    b = tmp_path / "bundle"
    shutil.copytree(src, b)
    text = (b / "bundle.env").read_text()
    for k, v in env.items():
        text = "".join(f"{k}={v}\n" if line.startswith(f"{k}=") else line + "\n" for line in text.splitlines())
    (b / "bundle.env").write_text(text)
    seal.seal(b, key)
    return b, pub


def test_intact_bundle_verifies_and_installs_nothing_with_verify_only(bundle, tmp_path):
    b, pub = bundle
    r = run_install(b, pub, tmp_path / "prefix", "--verify-only")
    assert r.returncode == 0, r.stderr
    assert "verifies with key" in r.stdout and "no file added" in r.stdout and "nothing installed" in r.stdout
    assert not (tmp_path / "prefix").exists()
    assert seal.verify(b, pub)["files"] == len(seal.bundle_files(b))


FILES = ["wheels/zp_tiny-1.0-py3-none-any.whl", "requirements.txt", "bundle.env", "bundle.json", "sbom.cdx.json",
         "configs/llm/tiny_lora.yaml", "install.sh"]


@pytest.mark.parametrize("rel", FILES)
def test_flipped_byte_is_refused_naming_the_file(bundle, tmp_path, rel):
    b, pub = bundle
    data = bytearray((b / rel).read_bytes())
    data[len(data) // 2] ^= 0x01
    (b / rel).write_bytes(bytes(data))
    # a tampered install.sh cannot be trusted to check itself: the operator runs a verified installer on the bundle
    r = run_install(b, pub, tmp_path / "prefix", installer=INSTALL_SH if rel == "install.sh" else None)
    assert r.returncode == REFUSED, r.stdout + r.stderr
    assert f"REFUSED: {rel} : SHA-256 differs from the signed manifest" in r.stderr
    assert "Nothing was installed." in r.stderr
    assert not (tmp_path / "prefix").exists()
    with pytest.raises(seal.BundleRejected) as e:
        seal.verify(b, pub)
    assert e.value.files == [rel]


@pytest.mark.parametrize("rel", list(seal.UNLISTED))
def test_changed_manifest_or_signature_is_refused(bundle, tmp_path, rel):
    b, pub = bundle
    data = bytearray((b / rel).read_bytes())
    data[-2] ^= 0x01                       # the manifest's last path, or the signature's last byte
    (b / rel).write_bytes(bytes(data))
    r = run_install(b, pub, tmp_path / "prefix")
    assert r.returncode == REFUSED, r.stdout + r.stderr
    assert "the signature on MANIFEST.sha256 does not verify with key" in r.stderr
    assert not (tmp_path / "prefix").exists()
    with pytest.raises(seal.BundleRejected):
        seal.verify(b, pub)


@pytest.mark.parametrize("rel", ["wheels/extra-1.0-py3-none-any.whl", "postinst.sh"])
def test_added_file_is_refused_naming_it(bundle, tmp_path, rel):
    b, pub = bundle
    (b / rel).write_bytes(b"not in the manifest\n")
    r = run_install(b, pub, tmp_path / "prefix")
    assert r.returncode == REFUSED, r.stdout + r.stderr
    assert f"REFUSED: {rel} : in the bundle but not in the signed manifest" in r.stderr
    assert not (tmp_path / "prefix").exists()
    with pytest.raises(seal.BundleRejected) as e:
        seal.verify(b, pub)
    assert e.value.files == [rel]


def test_removed_file_is_refused(bundle, tmp_path):
    b, pub = bundle
    os.remove(b / "requirements.txt")
    r = run_install(b, pub, tmp_path / "prefix")
    assert r.returncode == REFUSED and "REFUSED: requirements.txt : SHA-256 differs" in r.stderr


def test_resigned_with_another_key_is_refused_naming_both_keys(bundle, tmp_path):
    b, pub = bundle
    other, other_pub = new_key(tmp_path, "intruder")
    (b / "wheels" / "extra-1.0-py3-none-any.whl").write_bytes(b"payload\n")
    seal.seal(b, other)                    # a complete, self-consistent bundle, but not from the packer
    r = run_install(b, pub, tmp_path / "prefix")
    assert r.returncode == REFUSED, r.stdout + r.stderr
    fp = seal.public_key_fingerprint(seal.load_public_key(pub))
    fp_other = seal.public_key_fingerprint(other.public_key())
    assert f"does not verify with key {fp[:16]} ({pub})" in r.stderr
    assert f"the manifest names signer {fp_other[:16]}" in r.stderr
    assert not (tmp_path / "prefix").exists()
    with pytest.raises(seal.BundleRejected, match=fp[:16]):
        seal.verify(b, pub)
    # the intruder's own key does verify it: the refusal is about who signed, not a broken file
    assert run_install(b, other_pub, tmp_path / "prefix", "--verify-only").returncode == 0


def test_public_key_from_inside_the_bundle_is_refused(bundle, tmp_path):
    b, pub = bundle
    shutil.copy2(pub, b / "appliance.pub")
    r = run_install(b, b / "appliance.pub", tmp_path / "prefix")
    assert r.returncode == REFUSED and "lies inside the bundle" in r.stderr
    with pytest.raises(seal.BundleRejected, match="inside the bundle"):
        seal.verify(b, b / "appliance.pub")


def test_symlink_in_bundle_is_refused(bundle, tmp_path):
    b, pub = bundle
    (b / "wheels" / "link.whl").symlink_to(b / "requirements.txt")
    r = run_install(b, pub, tmp_path / "prefix")
    assert r.returncode == REFUSED and "wheels/link.whl : symbolic link" in r.stderr


def test_wrong_machine_is_a_clear_error_before_anything(sealed, tmp_path):
    b, pub = repacked(sealed, tmp_path, MACHINE="aarch64")
    r = run_install(b, pub, tmp_path / "prefix")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "this bundle is for aarch64" in r.stderr and "Pack a bundle on a" in r.stderr
    assert not (tmp_path / "prefix").exists()


def test_wrong_python_is_a_clear_error_before_anything(sealed, tmp_path):
    b, pub = repacked(sealed, tmp_path, PYTHON_VERSION="3.99", PYTHON_TAG="cp399")
    r = run_install(b, pub, tmp_path / "prefix", "--python", shutil.which("python3"))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "wheels are for CPython 3.99 (cp399)" in r.stderr and "Pass --python" in r.stderr
    assert not (tmp_path / "prefix").exists()


def test_tar_is_reproducible_and_holds_exactly_the_bundle(sealed, tmp_path):
    import tarfile
    src, _, _ = sealed
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    seal.write_tar(src, a)
    seal.write_tar(src, b)
    assert a.read_bytes() == b.read_bytes()
    with tarfile.open(a) as tf:
        names = {m.name for m in tf.getmembers() if m.isfile()}
        assert all(m.isfile() or m.isdir() for m in tf.getmembers())
    assert names == {f"{src.name}/{n}" for n in [*seal.bundle_files(src), *seal.UNLISTED]}


def test_many_symlinks_are_refused_with_a_message(bundle, tmp_path):
    b, pub = bundle
    for i in range(8):                       # more than the message lists
        (b / f"link{i}").symlink_to(b / "requirements.txt")
    r = run_install(b, pub, tmp_path / "prefix")
    assert r.returncode == REFUSED and "symbolic link or special file" in r.stderr
