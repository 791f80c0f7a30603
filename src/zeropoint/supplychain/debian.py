"""Debian packages: the closure apt would install (downloaded with apt's download mode), what a .deb is, what is
installed, and the licenses a package's machine-readable copyright file declares."""
from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ZeropointError
from ..hashing import sha256_file

DEP5 = "https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
_INST = re.compile(r"^Inst (\S+) (?:\[[^\]]*\] )?\((\S+) .*\[(\S+)\]\)")


class DebianError(ZeropointError):
    pass


@dataclass(frozen=True)
class Deb:
    package: str
    version: str
    arch: str

    @property
    def filename(self) -> str:
        # apt's archive names: an epoch's ':' is written %3a
        return f"{self.package}_{self.version.replace(':', '%3a')}_{self.arch}.deb"


def _run(cmd: list[str], what: str) -> str:
    if not shutil.which(cmd[0]):
        raise DebianError(f"{cmd[0]} is not on this machine; {what} needs Debian's apt/dpkg (or pack --without debs)")
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise DebianError(f"{' '.join(cmd[:3])} ... failed ({what}): {p.stderr.strip()[-800:]}")
    return p.stdout


def _apt_opts(workdir: Path) -> list[str]:
    """An empty dpkg status: apt resolves the whole dependency closure, as for a machine with nothing installed,
    so the bundle installs on a minimal Debian too (install.sh skips what a machine already has)."""
    (workdir / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    status = workdir / "empty-status"
    status.touch()
    return ["-o", f"Dir::State::status={status}", "-o", f"Dir::Cache::archives={workdir / 'archives'}",
            "-o", "Debug::NoLocking=1", "-o", "APT::Install-Recommends=false", "-o", "APT::Install-Suggests=false"]


def closure(packages: list[str], workdir: Path) -> list[Deb]:
    """Every package apt would install for `packages` on an empty system (no recommends), in apt's order."""
    out = _run(["apt-get", "-q", "-s", *_apt_opts(workdir), "install", *packages], "resolving Debian packages")
    debs = [Deb(m.group(1).split(":")[0], m.group(2), m.group(3)) for m in map(_INST.match, out.splitlines()) if m]
    if not debs:
        raise DebianError(f"apt resolved nothing for {' '.join(packages)}; run `apt-get update` (packing needs the "
                          "network) and check the package names")
    return debs


def download(packages: list[str], workdir: Path) -> list[tuple[Deb, Path]]:
    """apt-get's download mode into workdir/archives (a cache: files already there and intact are not fetched)."""
    debs = closure(packages, workdir)
    _run(["apt-get", "-q", "-y", *_apt_opts(workdir), "install", "--download-only", *packages],
         "downloading Debian packages (apt-get install --download-only)")
    out = []
    for d in debs:
        p = workdir / "archives" / d.filename
        if not p.is_file():
            raise DebianError(f"apt reported {d.package} {d.version} but {p} was not downloaded")
        out.append((d, p))
    return out


def control(path: Path) -> str:
    """The control stanza of a .deb, as dpkg-deb prints it."""
    return _run(["dpkg-deb", "--field", str(path)], f"reading {path.name}").rstrip("\n")


def packages_index(debs: list[tuple[Path, str]]) -> str:
    """A `Packages` index of (file, name in the repository) pairs: what `apt-get update` reads from a flat
    repository (`deb [trusted=yes] file:/DIR ./`). Size and SHA256 let apt check each file it installs."""
    stanzas = [f"{control(p)}\nFilename: ./{name}\nSize: {p.stat().st_size}\nSHA256: {sha256_file(p)}\n"
               for p, name in debs]
    return "\n".join(stanzas)


def deb_fields(path: Path) -> dict[str, str]:
    out = _run(["dpkg-deb", "--field", str(path), "Package", "Version", "Architecture", "Homepage", "Source"],
               f"reading {path.name}")
    return dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)


def copyright_licenses(text: str) -> list[str]:
    """License short names of a DEP-5 copyright file, in order of first appearance; [] when it is free-form
    (then the file says it in prose and no machine-readable claim exists)."""
    if not text.startswith("Format:") or "copyright-format/1.0" not in text.split("\n", 1)[0]:
        return []
    seen: list[str] = []
    for line in text.splitlines():
        if line.startswith("License:"):
            name = line[len("License:"):].strip()
            if name and name not in seen:
                seen.append(name)
    return seen


def deb_copyright(path: Path, package: str) -> str | None:
    """usr/share/doc/PACKAGE/copyright from inside a .deb (None when the package ships its docs as a link)."""
    want = {f"./usr/share/doc/{package}/copyright", f"usr/share/doc/{package}/copyright"}
    p = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(path)], stdout=subprocess.PIPE)
    try:
        with tarfile.open(fileobj=p.stdout, mode="r|") as tf:
            for m in tf:
                if m.name in want and m.isreg():
                    return tf.extractfile(m).read().decode("utf-8", errors="replace")
    finally:
        p.stdout.close()
        p.kill()
        p.wait()
    return None


@dataclass(frozen=True)
class Installed:
    package: str
    version: str
    arch: str
    depends: tuple[tuple[str, ...], ...]   # each group: alternatives
    provides: tuple[str, ...]


def _dep_groups(field: str) -> tuple[tuple[str, ...], ...]:
    groups = []
    for grp in filter(None, (g.strip() for g in field.split(","))):
        alts = tuple(re.split(r"[\s(:\[]", a.strip(), maxsplit=1)[0] for a in grp.split("|"))
        groups.append(alts)
    return tuple(groups)


def installed_packages() -> dict[str, Installed]:
    """Every package dpkg has installed (status ii), by name."""
    if not shutil.which("dpkg-query"):
        return {}
    fmt = r"${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\t${Pre-Depends}, ${Depends}\t${Provides}\n"
    out = _run(["dpkg-query", "-W", "-f", fmt], "listing installed Debian packages")
    pkgs = {}
    for line in out.splitlines():
        st, name, ver, arch, deps, prov = (line.split("\t") + [""] * 6)[:6]
        if st.startswith("ii"):
            pkgs[name] = Installed(name, ver, arch, _dep_groups(deps), tuple(a[0] for a in _dep_groups(prov)))
    return pkgs


def installed_closure(roots: list[str], pkgs: dict[str, Installed]) -> list[Installed]:
    """The installed packages `roots` need, following Pre-Depends and Depends (first installed alternative, or an
    installed package that Provides it). Roots that are not installed are left out."""
    providers: dict[str, str] = {}
    for p in pkgs.values():
        for v in p.provides:
            providers.setdefault(v, p.package)
    seen: dict[str, Installed] = {}
    todo = [r for r in roots if r in pkgs]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen[name] = pkgs[name]
        for alts in pkgs[name].depends:
            hit = next((a for a in alts if a in pkgs), None) or next((providers[a] for a in alts if a in providers), None)
            if hit and hit not in seen:
                todo.append(hit)
    return sorted(seen.values(), key=lambda p: p.package)


def installed_copyright(package: str) -> str | None:
    p = Path("/usr/share/doc") / package / "copyright"
    try:
        return p.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
