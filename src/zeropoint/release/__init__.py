"""Release gate and signed evidence bundle (issue 12).

`pipeline.release()` runs every gate and writes the bundle; `verify.verify_bundle()` checks one anywhere
(stdlib + cryptography only); `keys` holds the appliance's Ed25519 key. Nothing here is imported eagerly so
`verify.py` stays usable on its own.
"""
