"""`zpctl --help` in fresh processes: median wall time and CPU time (user + sys, which a loaded shared box
disturbs far less than wall time), and how many modules it loads. The figures the architecture note quotes:

    python -m tests.architecture.help_time [N]
"""
import resource
import statistics
import subprocess
import sys
import time

if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    times = []
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "zeropoint.cli.main", "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = ((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)) / n
    mods = subprocess.run([sys.executable, "-c", "import sys, zeropoint.cli.main; "
                           "print(len([m for m in sys.modules if m.startswith('zeropoint')]), len(sys.modules))"],
                          check=True, capture_output=True, text=True).stdout.split()
    print(f"zpctl --help: median {statistics.median(times):.3f} s wall (min {min(times):.3f} s), {cpu:.3f} s CPU, "
          f"over {n} runs; modules loaded: {mods[0]} zeropoint, {mods[1]} total")
