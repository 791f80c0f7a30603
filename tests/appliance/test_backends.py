"""tinygrad backends with no hardware here, through fakes: diag lists every one, opens or not, and never crashes."""
import os
import textwrap

from tests.helpers import REPO, zpctl_json
from zeropoint.appliance import devices


def test_empty_message_is_reported_not_crashed_on():
    def opener(name):
        raise RuntimeError()      # what crashed diag on the H200: str(e).splitlines()[0] on ""
    row = devices.probe_backend("CUDA", opener)
    assert row["opens"] is False and row["error_type"] == "RuntimeError"
    assert row["error"] == "RuntimeError (no message)" and row["error_message"] == ""


def test_exception_group_lists_each_interface():
    def opener(name):
        raise ExceptionGroup("No interface for NV:0 is available", [FileNotFoundError("/dev/nvidiactl"), RuntimeError()])
    row = devices.probe_backend("NV", opener)
    assert row["error_type"] == "ExceptionGroup"
    assert row["causes"] == ["FileNotFoundError: /dev/nvidiactl", "RuntimeError (no message)"]


def test_backend_list_is_tinygrads_compute_backends():
    names = devices.backends()
    assert {"CPU", "CUDA", "NV", "AMD", "METAL"} <= set(names) and not set(names) & {"DISK", "NPY"}


FAKES = textwrap.dedent("""
    # loaded by every Python process of the test: fake tinygrad backends with no hardware behind them
    import os, signal, sys, types
    def fake(mod, cls, init):
        m = types.ModuleType("tinygrad.runtime." + mod)
        setattr(m, cls, type(cls, (), {"__init__": init}))
        sys.modules[m.__name__] = m
    def empty(self, device):
        raise RuntimeError()
    def crash(self, device):
        os.kill(os.getpid(), signal.SIGKILL)
    fake("ops_amd", "AMDDevice", empty)
    fake("ops_metal", "MetalDevice", crash)
""")


def test_diag_survives_an_empty_error_and_a_backend_that_kills_its_process(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(FAKES)
    r, doc = zpctl_json("diag", "--json", "--no-parity",
                        env={"PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO / "src")])})
    assert r.returncode == 0, r.stderr
    rows = {d["device"]: d for d in doc["hardware"]["accelerators"]["tinygrad"]}
    assert set(devices.backends()) == set(rows)                        # every backend listed
    assert all(isinstance(d["opens"], bool) and "error" in d for d in rows.values())
    assert rows["AMD"]["opens"] is False and rows["AMD"]["error"] == "RuntimeError (no message)"
    assert rows["METAL"]["opens"] is False and rows["METAL"]["error_type"] == "ProbeCrashed"
    assert "signal 9" in rows["METAL"]["error"]
    assert rows["CPU"]["opens"] is True and rows["CPU"]["error"] is None   # probed after the crash, by a new child
    assert doc["hardware"]["accelerators"]["nvml"]["available"] in (True, False)
