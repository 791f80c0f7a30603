"""Shared by the LLM recipe tests: register and approve a real SOTU slice in the test's workspace."""
from zeropoint.data.assets import sotu_dir


def approve_sotu_slice(name="sotu", include=("179*.txt", "180*.txt")):
    from zeropoint.governance import manifest as M
    M.add_dataset(sotu_dir(), name, "PDDL-1.0 AND CC0-1.0", "public", include=list(include), actor="tester")
    M.scan_dataset(name, actor="tester")
    M.approve(name, "tester")
