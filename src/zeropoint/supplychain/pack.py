"""`zpctl appliance pack`: everything an appliance needs to install with no network, in one signed directory + .tar.

    OUT/
      install.sh               the offline installer (supplychain/install.sh)
      MANIFEST.sha256(.sig)    SHA-256 of every other file, signed with the packer's Ed25519 key (seal.py)
      bundle.json bundle.env   what was packed, for people and tools / for install.sh
      sbom.cdx.json            CycloneDX SBOM of the bundle
      requirements.txt         the part of requirements.lock this bundle installs (pins + hashes)
      wheels/                  the project wheel and those locked wheels, for this platform and Python
      weights/                 the weight wheels of requirements-assets.lock
      data/                    the data packs of scripts/assets.sha256 (npm tarballs, the lm-eval wheel) + index.tsv
      debs/                    the Debian packages set-up installs, with every dependency (apt download mode) + index.tsv
      configs/                 the recipe configs (configs/llm/tiny_lora.yaml ...)

Packing needs the network (pip download, npm pack, apt-get); every download is checked against the hash the
repository pins for it (requirements.lock, requirements-assets.lock, scripts/assets.sha256) before it is packed.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from .. import __version__
from ..errors import ZeropointError
from ..hashing import sha256_file
from ..release.keys import load_private_key
from ..workspace import atomic_dir
from . import debian, lock, sbom, seal
from .assets import by_source

REPO_ROOT = Path(__file__).resolve().parents[3]
PY = f"{sys.version_info[0]}.{sys.version_info[1]}"
# Debian packages by group; apt adds every dependency. A minimal Debian has no Python, so it travels too.
DEB_GROUPS: dict[str, list[str]] = {
    "python": [f"python{PY}", f"python{PY}-venv"],
    "runtime": ["clang"],                      # tinygrad's CPU device compiles its kernels with clang
    "data": ["dataset-fashion-mnist"],         # the ViT recipe's Fashion-MNIST
    "browser": ["chromium"],                   # the control center's browser tests
}
WITHOUT = ("browser", "debs", "weights", "data", "python", "runtime")


class PackError(ZeropointError):
    pass


@dataclass
class PackOptions:
    out: Path
    with_: list[str] = field(default_factory=list)       # extras or packages of an extra: test | torch,ray
    without: list[str] = field(default_factory=list)     # browser | debs | weights | data | a Debian group
    cache: Path | None = None                            # keeps downloads between packs
    repo: Path = REPO_ROOT


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    os.chmod(dst, 0o644)


def _pip(args: list[str], what: str) -> None:
    p = subprocess.run([sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "-q"],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise PackError(f"pip {args[0]} failed ({what}): {p.stderr.strip()[-1500:]}")


def _by_hash(folder: Path, hashes: set[str]) -> dict[str, Path]:
    """{sha256: file} for the files in folder whose SHA-256 is wanted (a cache may hold other versions)."""
    out = {}
    for p in sorted(folder.iterdir()):
        if p.is_file():
            h = sha256_file(p)
            if h in hashes:
                out[h] = p
    return out


def git_state(repo: Path) -> dict:
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30)
        return {"commit": head.stdout.strip() or None, "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}


def os_release() -> dict[str, str]:
    out = {}
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            k, _, v = line.partition("=")
            out[k] = v.strip().strip('"')
    except OSError:
        pass
    return out


def build_project_wheel(repo: Path, dest: Path) -> Path:
    """The project wheel, built from a copy of the sources (the checkout gets no build/ or egg-info)."""
    with tempfile.TemporaryDirectory(prefix="zp-wheel-") as tmp:
        src = Path(tmp) / "src-tree"
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(repo / name, src / name)
        shutil.copytree(repo / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        _pip(["wheel", "--no-deps", "--no-build-isolation", "-w", str(Path(tmp) / "dist"), str(src)],
             "building the project wheel")
        [whl] = list((Path(tmp) / "dist").glob("zeropoint-*.whl"))
        _link_or_copy(whl, dest / whl.name)
        return dest / whl.name


def fetch_locked(reqs: list[lock.LockedPackage], cache: Path, dest: Path, what: str) -> list[Path]:
    """pip download (binary only, --require-hashes) into the cache; copy the locked artifacts into dest."""
    cache.mkdir(parents=True, exist_ok=True)
    req_file = cache.parent / f"{cache.name}.requirements.txt"
    req_file.write_text(lock.subset_text(reqs, ""))
    _pip(["download", "--no-deps", "--only-binary=:all:", "--require-hashes", "-r", str(req_file), "-d", str(cache)],
         f"downloading {what}")
    found = _by_hash(cache, {h for r in reqs for h in r.hashes})
    out = []
    for r in reqs:
        hit = [found[h] for h in r.hashes if h in found]
        if not hit:
            raise PackError(f"pip downloaded no artifact of {r.name}=={r.version} with a hash in the lock ({what})")
        # the artifact for this interpreter and platform (pip chose it); a cache may hold others of the same pin
        best = max(hit, key=lambda p: p.stat().st_mtime)
        _link_or_copy(best, dest / best.name)
        out.append(dest / best.name)
    return out


def fetch_data_packs(repo: Path, cache: Path, dest: Path) -> list[dict]:
    """npm tarballs and the lm-eval wheel, each checked against scripts/assets.sha256."""
    pinned = dict(reversed(line.split()) for line in (repo / "scripts" / "assets.sha256").read_text().splitlines()
                  if line.strip())
    cache.mkdir(parents=True, exist_ok=True)
    rows = []
    for a in by_source("npm") + by_source("wheel"):
        fname = next((f for f in pinned if a.is_pack_file(f)), "")
        want = pinned.get(fname)
        if not want:
            raise PackError(f"scripts/assets.sha256 pins no file for {a.spec}; add its SHA-256 there")
        path = cache / fname
        if not (path.is_file() and sha256_file(path) == want):
            if a.source == "npm":
                if not shutil.which("npm"):
                    raise PackError("npm is not on this machine; packing the data packs needs it (or --without data)")
                p = subprocess.run(["npm", "pack", "-q", a.spec], cwd=cache, capture_output=True, text=True)
                if p.returncode != 0:
                    raise PackError(f"npm pack {a.spec} failed: {p.stderr.strip()[-800:]}")
            else:
                req = cache / "data.requirements.txt"
                req.write_text(f"{a.spec} --hash=sha256:{want}\n")
                _pip(["download", "--no-deps", "--require-hashes", "-r", str(req), "-d", str(cache)], f"downloading {a.spec}")
        got = sha256_file(path) if path.is_file() else None
        if got != want:
            raise PackError(f"{fname}: SHA-256 {got} differs from scripts/assets.sha256 ({want}); refusing to pack it")
        _link_or_copy(path, dest / fname)
        rows.append({"name": a.name, "kind": a.source, "path": f"data/{fname}", "sha256": want})
    return rows


def fetch_debs(groups: list[str], cache: Path, dest: Path, say: Callable[[str], None]) -> list[dict]:
    roots = [p for g in groups for p in DEB_GROUPS[g]]
    say(f"debs: apt-get install --download-only {' '.join(roots)} (whole dependency closure)")
    debs = debian.download(roots, cache)
    # the licenses come from each package's copyright file, read out of the .deb (dpkg-deb runs in parallel)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as ex:
        texts = list(ex.map(lambda dp: debian.deb_copyright(dp[1], dp[0].package), debs))
    rows = []
    for (d, path), text in zip(debs, texts):
        _link_or_copy(path, dest / d.filename)
        rows.append({"package": d.package, "version": d.version, "arch": d.arch, "path": f"debs/{d.filename}",
                     "licenses": debian.copyright_licenses(text or ""), "root": d.package in roots})
    # install.sh hands the bundle to apt as a flat repository: apt orders the unpacking (Pre-Depends) and dpkg installs
    (dest / "Packages").write_text(debian.packages_index([(dest / d.filename, d.filename) for d, _ in debs]))
    return rows


def _check_options(opts: PackOptions) -> tuple[list[str], list[str]]:
    bad = [w for w in opts.without if w not in WITHOUT]
    if bad:
        raise PackError(f"--without {','.join(bad)}: choose from {', '.join(WITHOUT)}")
    groups = [] if "debs" in opts.without else [g for g in DEB_GROUPS if g not in opts.without]
    return groups, [w for w in opts.without]


def pack(opts: PackOptions, say: Callable[[str], None] = lambda m: None) -> dict:
    """Build the bundle directory and its .tar; returns what went in, the sizes and the time each stage took."""
    repo, out = Path(opts.repo), Path(opts.out)
    for need in ("pyproject.toml", "requirements.lock", "requirements-assets.lock", "scripts/assets.sha256", "configs", "src"):
        if not (repo / need).exists():
            raise PackError(f"{repo / need} is missing: `zpctl appliance pack` runs from a source checkout of Zeropoint")
    if out.exists() or out.with_name(out.name + ".tar").exists():
        raise PackError(f"{out} (or {out.name}.tar) already exists; pass a new --out (nothing was overwritten)")
    groups, without = _check_options(opts)
    key = load_private_key()                      # fail before any download when there is no key
    locked = lock.parse_lock((repo / "requirements.lock").read_text())
    base, extras = lock.project_requirements(repo / "pyproject.toml")
    roots = base + lock.resolve_with(opts.with_, extras, locked)
    reqs = lock.select(locked, roots)
    cache_ctx = tempfile.TemporaryDirectory(prefix="zp-pack-cache-") if opts.cache is None else None
    cache = Path(cache_ctx.name) if cache_ctx else Path(opts.cache)
    times: dict[str, float] = {}

    def stage(name, message=None):
        times[name] = time.perf_counter()
        if message:
            say(message)

    def done(name):
        times[name] = round(time.perf_counter() - times[name], 2)

    t0 = time.perf_counter()
    try:
        with atomic_dir(out) as root:
            os.chmod(root, 0o755)                  # mkdtemp made it 0700; a bundle is meant to be read
            stage("project_wheel", "building the project wheel")
            wheel = build_project_wheel(repo, root / "wheels")
            done("project_wheel")
            stage("wheels", f"wheels: {len(reqs)} locked packages (pip download --require-hashes)")
            fetch_locked(reqs, cache / "wheels", root / "wheels", "the locked wheels")
            (root / "requirements.txt").write_text(lock.subset_text(
                reqs, f"# the part of requirements.lock this bundle installs: {', '.join(roots)} and what they need\n"))
            done("wheels")
            weights: list = []
            if "weights" not in without:
                stage("weights", "weights: requirements-assets.lock")
                wlocked = list(lock.parse_lock((repo / "requirements-assets.lock").read_text()).values())
                weights = fetch_locked(wlocked, cache / "weights", root / "weights", "the weight wheels")
                shutil.copy2(repo / "requirements-assets.lock", root / "weights" / "requirements-assets.lock")
                done("weights")
            data_rows: list = []
            if "data" not in without:
                stage("data", "data packs: npm pack / pip download, checked against scripts/assets.sha256")
                data_rows = fetch_data_packs(repo, cache / "data", root / "data")
                (root / "data" / "index.tsv").write_text("".join(
                    f"{r['name']}\t{r['kind']}\t{r['path']}\t{r['sha256']}\n" for r in data_rows))
                done("data")
            deb_rows: list = []
            if groups:
                stage("debs")
                deb_rows = fetch_debs(groups, cache / "apt", root / "debs", say)
                (root / "debs" / "index.tsv").write_text("".join(
                    f"{r['package']}\t{r['version']}\t{r['arch']}\t{r['path']}\t{';'.join(r['licenses'])}\n"
                    for r in deb_rows))
                done("debs")
            stage("seal", "configs, install.sh, bundle.json, SBOM, signed manifest")
            shutil.copytree(repo / "configs", root / "configs", ignore=shutil.ignore_patterns("__pycache__"))
            shutil.copy2(Path(__file__).with_name("install.sh"), root / "install.sh")
            os.chmod(root / "install.sh", 0o755)
            meta = bundle_meta(opts, out.name, wheel, reqs, roots, groups, without, repo)
            meta["debs"] = [{k: r[k] for k in ("package", "version", "arch")} for r in deb_rows]
            meta["data_packs"] = data_rows
            meta["weights"] = [p.name for p in weights]
            (root / "bundle.json").write_text(json.dumps(meta, indent=2) + "\n")
            (root / "bundle.env").write_text(bundle_env(meta))
            (root / sbom.SBOM_NAME).write_text(sbom.bundle_sbom(root, meta))
            sealed = seal.seal(root, key)
            done("seal")
        stage("tar", f"writing {out.name}.tar")
        tar_bytes = seal.write_tar(out, out.with_name(out.name + ".tar"))
        done("tar")
    finally:
        if cache_ctx:
            cache_ctx.cleanup()
    sizes = {}
    for p in sorted(out.rglob("*")):
        if p.is_file():
            top = p.relative_to(out).parts[0] if len(p.relative_to(out).parts) > 1 else "(top)"
            sizes[top] = sizes.get(top, 0) + p.stat().st_size
    return {"bundle": str(out), "tar": str(out.with_name(out.name + ".tar")), "tar_bytes": tar_bytes,
            "dir_bytes": sum(sizes.values()), "bytes_by_part": sizes, "files": sealed["files"],
            "manifest_sha256": sealed["manifest_sha256"], "signer": sealed["signer"], "wheels": len(reqs) + 1,
            "debs": len(deb_rows), "data_packs": len(data_rows), "weights": len(weights), "with": roots[len(base):],
            "without": without, "seconds": {**times, "total": round(time.perf_counter() - t0, 2)}}


def bundle_meta(opts: PackOptions, bundle_id: str, wheel: Path, reqs, roots, groups, without, repo: Path) -> dict:
    osr = os_release()
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip() \
        if shutil.which("dpkg") else None
    return {"format": seal.FORMAT, "bundle_id": bundle_id, "zeropoint_version": __version__,
            "created": datetime.now(timezone.utc).replace(microsecond=0).isoformat(), **{
                f"git_{k}": v for k, v in git_state(repo).items()},
            "machine": platform.machine(), "python_version": PY, "python_tag": f"cp{PY.replace('.', '')}",
            "os_id": osr.get("ID"), "os_version_codename": osr.get("VERSION_CODENAME"), "dpkg_arch": arch,
            "project_wheel": f"wheels/{wheel.name}", "requirements_lock_sha256": sha256_file(repo / "requirements.lock"),
            "roots": roots, "with": list(opts.with_), "without": without, "deb_groups": groups,
            "python_packages": [{"name": r.name, "version": r.version} for r in reqs]}


def bundle_env(meta: dict) -> str:
    """The facts install.sh checks, as KEY=value lines (read with sed, never sourced)."""
    keys = {"FORMAT": "format", "ZEROPOINT_VERSION": "zeropoint_version", "MACHINE": "machine",
            "PYTHON_VERSION": "python_version", "PYTHON_TAG": "python_tag", "OS_ID": "os_id",
            "OS_VERSION_CODENAME": "os_version_codename", "DPKG_ARCH": "dpkg_arch", "PROJECT_WHEEL": "project_wheel"}
    roots = " ".join(p for g in meta.get("deb_groups") or [] for p in DEB_GROUPS[g])
    return "".join(f"{k}={meta.get(v) or ''}\n" for k, v in keys.items()) + f"DEB_ROOTS={roots}\n"
