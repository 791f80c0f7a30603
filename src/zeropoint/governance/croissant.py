"""A manifest entry as MLCommons Croissant 1.0 JSON-LD: one `cr:FileObject` per file, each with its `sha256`."""
from __future__ import annotations

import mimetypes
from pathlib import Path

from .manifest import get_dataset

CONTEXT = {
    "@language": "en", "@vocab": "https://schema.org/", "sc": "https://schema.org/",
    "cr": "http://mlcommons.org/croissant/", "rai": "http://mlcommons.org/croissant/RAI/",
    "dct": "http://purl.org/dc/terms/", "zeropoint": "urn:zeropoint:",
    "citeAs": "cr:citeAs", "column": "cr:column", "conformsTo": "dct:conformsTo", "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"}, "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract", "field": "cr:field", "fileProperty": "cr:fileProperty", "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet", "format": "cr:format", "includes": "cr:includes", "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath", "key": "cr:key", "md5": "cr:md5", "parentField": "cr:parentField", "path": "cr:path",
    "recordSet": "cr:recordSet", "references": "cr:references", "regex": "cr:regex", "repeated": "cr:repeated",
    "replace": "cr:replace", "separator": "cr:separator", "source": "cr:source", "subField": "cr:subField",
    "transform": "cr:transform",
}
_FORMATS = {".txt": "text/plain", ".json": "application/json", ".jsonl": "application/jsonlines",
            ".ndjson": "application/jsonlines", ".csv": "text/csv", ".tsv": "text/tab-separated-values",
            ".parquet": "application/x-parquet", ".gz": "application/gzip"}


def _format(path: str) -> str:
    suf = Path(path).suffix.lower()
    return _FORMATS.get(suf) or mimetypes.guess_type(path)[0] or "application/octet-stream"


def to_croissant(name: str, manifest=None) -> dict:
    ds = get_dataset(name, manifest)
    lic = ds["license"]["expression"]
    root = Path(ds["root"])
    files = []
    for i, f in enumerate(ds["files"]):
        p = Path(f["path"])
        rel = p.relative_to(root).as_posix() if root in p.parents else p.name
        files.append({"@type": "cr:FileObject", "@id": f"file-{i}:{rel}", "name": rel,
                      "contentUrl": p.as_uri(), "contentSize": f"{f['size']} B",
                      "encodingFormat": _format(f["path"]), "sha256": f["sha256"]})
    appr = ds.get("approval") or {}
    pii = ds.get("pii") or {}
    doc = {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": "http://mlcommons.org/croissant/1.0",
        "name": name,
        "description": ds.get("description") or f"{name}: {ds['file_count']} files registered with Zeropoint",
        "version": ds["version"],
        # SPDX ids map to spdx.org URLs; compound expressions are kept as the expression text
        "license": (f"https://spdx.org/licenses/{lic}.html" if " " not in lic else lic),
        "url": ds["source"].get("url") or root.as_uri(),
        "creator": ({"@type": "sc:Organization", "name": ds["source"]["organization"]}
                    if ds["source"].get("organization") else None),
        "dateCreated": ds.get("added_at"),
        "distribution": files,
        "rai:personalSensitiveInformation": (
            f"Zeropoint PII scan {pii.get('scanned_at')}: " + ", ".join(f"{k}={v}" for k, v in pii["counts"].items() if v)
            + f"; risk {pii.get('risk')}" if pii else "not scanned"),
        "zeropoint:sha256": ds["sha256"],
        "zeropoint:approval": {k: appr.get(k) for k in ("status", "approver", "time", "policy_version")},
    }
    return {k: v for k, v in doc.items() if v is not None}
