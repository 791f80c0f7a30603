"""Dataset routes: the governance library (register, PII scan, approve, reject) behind roles and the audit log.

Governance writes its own audit events (dataset_scan, dataset_approve, ...) with the dataset's SHA-256; the API
adds the request's own event (actor = the token, inputs = SHA-256 of the body, plus the dataset hash).
"""
from __future__ import annotations

from typing import Optional

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ..governance import manifest as gov
from ..orchestrator.jobs import confine, confine_file, safe_name


class AddRequest(BaseModel):
    path: str = Field(description="file or directory, relative to the data root")
    name: str
    license: str = Field(description="SPDX expression, e.g. CC0-1.0 or MIT")
    source_type: str = Field(description="e.g. public, internal, customer (see the policy)")
    source_url: Optional[str] = None
    organization: Optional[str] = None
    version: str = "1"
    description: Optional[str] = None
    include: Optional[list[str]] = None
    exclude: Optional[list[str]] = None


class ApproveRequest(BaseModel):
    accept_review: Optional[str] = Field(None, description="why rules flagged for review are acceptable")
    note: Optional[str] = None


class RejectRequest(BaseModel):
    reason: str = Field(min_length=1)


def _summary(ds: dict) -> dict:
    pii = ds.get("pii") or {}
    return {"name": ds["name"], "sha256": ds.get("sha256"), "license": (ds.get("license") or {}).get("expression"), "source": ds.get("source"),
            "files": ds.get("file_count"), "bytes": ds.get("total_bytes"), "samples": ds.get("sample_count"),
            "sample_unit": ds.get("sample_unit"), "approval": (ds.get("approval") or {}).get("status", "pending"),
            "pii_risk": pii.get("risk"), "scanned_at": pii.get("scanned_at")}


def add_dataset_routes(app, note, viewer, submitter, approver) -> None:
    def dataset(name: str) -> dict:
        safe_name(name, "dataset name")
        try:
            return dict(gov.get_dataset(name), name=name)
        except gov.UnknownDataset as e:
            raise HTTPException(404, str(e)) from None

    @app.get("/v1/datasets", tags=["datasets"])
    def datasets_list(p=viewer):
        return {"datasets": [_summary(d) for d in gov.list_datasets()]}

    @app.get("/v1/datasets/{name}", tags=["datasets"])
    def datasets_show(name: str, p=viewer):
        return dataset(name)

    @app.post("/v1/datasets", status_code=201, tags=["datasets"])
    def datasets_add(req: AddRequest, request: Request, p=submitter):
        note(request, action="dataset.add", resource=f"dataset:{req.name}")
        safe_name(req.name, "dataset name")
        path = confine(req.path, "path")
        entry = gov.add_dataset(path, req.name, req.license, req.source_type, source_url=req.source_url,
                                organization=req.organization, version=req.version, include=req.include,
                                exclude=req.exclude, description=req.description, actor=p.actor,
                                file_check=lambda f: confine_file(f, req.path))
        note(request, action="dataset.add", resource=f"dataset:{req.name}", dataset_sha256=entry.get("sha256"))
        return JSONResponse(_summary(dict(entry, name=req.name)), status_code=201)

    @app.post("/v1/datasets/{name}/scan", tags=["datasets"])
    def datasets_scan(name: str, request: Request, p=submitter):
        ds = dataset(name)
        note(request, action="dataset.scan", resource=f"dataset:{name}", dataset_sha256=ds["sha256"])
        summary = gov.scan_dataset(name, actor=p.actor)
        return {"name": name, "dataset_sha256": ds["sha256"], "pii": summary}

    @app.post("/v1/datasets/{name}/approve", tags=["datasets"])
    def datasets_approve(name: str, request: Request, req: Optional[ApproveRequest] = None, p=approver):
        ds = dataset(name)
        req = req or ApproveRequest()
        note(request, action="dataset.approve", resource=f"dataset:{name}", dataset_sha256=ds["sha256"])
        try:
            approval = gov.approve(name, p.actor, accept_review=req.accept_review, note=req.note)
        except gov.ApprovalRefused as e:
            note(request, action="dataset.approve", resource=f"dataset:{name}", outcome="refused")
            return JSONResponse({"error": str(e), "checks": e.checks}, status_code=409)
        return {"name": name, "approval": approval}

    @app.post("/v1/datasets/{name}/reject", tags=["datasets"])
    def datasets_reject(name: str, req: RejectRequest, request: Request, p=approver):
        ds = dataset(name)
        note(request, action="dataset.reject", resource=f"dataset:{name}", dataset_sha256=ds["sha256"])
        return {"name": name, "approval": gov.reject(name, p.actor, req.reason)}
