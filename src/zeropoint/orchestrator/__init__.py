"""Jobs: `store` (SQLite WAL queue behind the JobStore interface, hashed API tokens), `jobs` (validate a request into
a `zpctl` command), `executor` (local subprocesses: limit, logs, cancel, crash recovery), `ray_executor` (Ray Jobs
API), `dryrun` (the process a --dry-run job runs). Kept import-light: a dry-run job imports this package."""
