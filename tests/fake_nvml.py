"""A fake NVML (the `pynvml` API of nvidia-ml-py) for tests on machines without an NVIDIA GPU.

It answers the calls the appliance makes with the figures an H200 reports (driver 580, CUDA 13.0); the test moves
counters by hand. `unsupported` names calls that raise like NVML's NotSupported error does.
"""


class NVMLError(Exception):
    pass


class FakeNVML:
    NVML_CLOCK_GRAPHICS, NVML_CLOCK_SM, NVML_CLOCK_MEM = 0, 1, 2

    class MemInfo:
        def __init__(self, used, total):
            self.used, self.total = used, total

    class PciInfo:
        busId = b"00000000:19:00.0"

    def __init__(self, count=1, unsupported=(), name=b"NVIDIA H200", total=143771 * 2**20):
        self.count, self.unsupported, self.name, self.total = count, set(unsupported), name, total
        self.used = 600 * 2**20
        self.energy_mj, self.power_mw = 10_000, 120_000
        self.inits = self.shutdowns = 0

    def _check(self, call):
        if call in self.unsupported:
            raise NVMLError("Not Supported")

    def nvmlInit(self): self.inits += 1
    def nvmlShutdown(self): self.shutdowns += 1
    def nvmlDeviceGetCount(self): return self.count
    def nvmlSystemGetDriverVersion(self): return "580.159.04"
    def nvmlSystemGetNVMLVersion(self): return "13.580.159.04"
    def nvmlSystemGetCudaDriverVersion_v2(self): return 13000
    def nvmlDeviceGetHandleByIndex(self, i): return ("gpu", i)
    def nvmlDeviceGetName(self, h): return self.name
    def nvmlDeviceGetUUID(self, h): return f"GPU-0000000{h[1]}-fake-uuid"
    def nvmlDeviceGetPciInfo(self, h): return self.PciInfo()
    def nvmlDeviceGetMemoryInfo(self, h): return self.MemInfo(self.used, self.total)
    def nvmlDeviceGetCudaComputeCapability(self, h): return (9, 0)

    def nvmlDeviceGetEccMode(self, h):
        self._check("ecc")
        return (1, 1)

    def nvmlDeviceGetPowerManagementLimit(self, h): return 700_000
    def nvmlDeviceGetPowerManagementDefaultLimit(self, h): return 700_000
    def nvmlDeviceGetMaxClockInfo(self, h, typ): return {0: 1980, 1: 1980, 2: 3201}[typ]
    def nvmlDeviceGetClockInfo(self, h, typ): return {0: 345, 1: 345, 2: 3201}[typ]
    def nvmlDeviceGetPowerUsage(self, h): return self.power_mw

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        self._check("energy")
        return self.energy_mj
