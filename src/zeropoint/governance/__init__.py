"""Data governance: manifest, policy, PII scanning, hash-chained audit log, approval and the training gate.

Recipes call `zeropoint.governance.gate.require_approved([...], actor=..., purpose=..., run_id=...)` before
reading data; the CLI (`zpctl data|pii|audit`) and the HTTP API call the functions in `manifest`, `pii`, `audit`.
"""
