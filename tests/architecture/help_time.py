"""Median wall time of `zpctl --help` in fresh processes (the figure the architecture note quotes before/after):

    python -m tests.architecture.help_time [N]
"""
import statistics
import subprocess
import sys
import time

if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "zeropoint.cli.main", "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    mods = subprocess.run([sys.executable, "-c", "import sys, zeropoint.cli.main; "
                           "print(len([m for m in sys.modules if m.startswith('zeropoint')]), len(sys.modules))"],
                          check=True, capture_output=True, text=True).stdout.split()
    print(f"zpctl --help: median {statistics.median(times):.3f} s, min {min(times):.3f} s over {n} runs; "
          f"modules loaded: {mods[0]} zeropoint, {mods[1]} total")
