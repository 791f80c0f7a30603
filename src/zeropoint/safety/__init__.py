"""Safety red-team: static probe packs, detectors that score replies in [0, 1], a runner that drives the
model through its chat template with seeded generation, garak-style reports with attack success rates and
bootstrap confidence intervals, and a release gate whose thresholds live in the policy file.

Layout: `probes/` (YAML packs + loader), `detectors/` (scorers), `canary.py` (training-data canaries),
`stats.py` (ASR + CI), `report.py` (report.jsonl, Markdown, HTML), `gate.py`, `runner.py`.
"""
