"""HTTP API (`zpctl serve`): `app` (FastAPI routes + the Guard middleware: body limit, traversal, audit), `auth`
(bearer tokens, roles), `datasets` (governance routes), `server` (executor choice + uvicorn)."""
