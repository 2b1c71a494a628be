"""What every benchmark shares: the release agent on a socket and requests
to it, waiting for a condition, readings of /proc, and 95 % confidence
intervals. Each bench/*.py imports these instead of writing its own."""
import os
import signal
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from target_dir import release  # noqa: E402  (cargo's target directory, CARGO_TARGET_DIR included)

AGENT = release("tracecar-agent")


def in_own_pid_namespace(script):
    """Re-executes `script` (a benchmark's __file__) with its arguments
    in a PID namespace of its own, as a pod has, unless it runs in one
    already: the agent then sees the benchmark's processes, not the
    machine's."""
    if os.environ.get("TRACECAR_BENCH_PIDNS") != "1":
        os.environ["TRACECAR_BENCH_PIDNS"] = "1"
        os.execvp("unshare", ["unshare", "--pid", "--fork", "--mount-proc", sys.executable,
                              os.path.abspath(script), *sys.argv[1:]])


class TimedOut(SystemExit):
    """A condition a benchmark waited for did not come."""


def wait(cond, timeout, what, error=TimedOut):
    """Polls `cond` every 20 ms until it holds; raises `error` after
    `timeout` seconds."""
    deadline = time.time() + timeout
    while not cond():
        if time.time() > deadline:
            raise error(f"timed out waiting for {what}")
        time.sleep(0.02)


def status_kib(pid, field):
    """A kB field of /proc/PID/status (VmRSS, VmHWM, RssAnon, …); 0 if
    absent."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class Agent:
    """The release agent serving `tmp/NAME.sock`, with `args` after
    `serve`; started at construction, once it answers /healthz."""

    def __init__(self, tmp, name="agent", args=()):
        self.socket = os.path.join(tmp, f"{name}.sock")
        self.proc = subprocess.Popen([AGENT, "--log", "warn", "serve", "--socket", self.socket, *args])
        wait(lambda: self.get("/healthz")[0] == 200, 10, "the agent")

    @property
    def pid(self):
        return self.proc.pid

    def url(self, path):
        """The curl argv for `path`."""
        return ["curl", "-s", "--unix-socket", self.socket, f"http://localhost{path}"]

    def get(self, path):
        """(status, body) of `path`; status 0 when nothing answered."""
        out = subprocess.run(self.url(path) + ["-w", "\n%{http_code}"], capture_output=True)
        body, _, code = out.stdout.rpartition(b"\n")
        return int(code or 0), body

    def body(self, path, headers=None):
        """The body of `path`; exits when curl fails. `headers` is a file
        for the response headers."""
        cmd = self.url(path) + (["-D", headers] if headers is not None else [])
        r = subprocess.run(cmd, capture_output=True)
        if r.returncode != 0:
            raise SystemExit(f"curl {path} failed ({r.returncode}): {r.stderr.decode(errors='replace').strip()}")
        return r.stdout

    def stream(self, path, stdout=subprocess.PIPE):
        """`path` read as it comes (curl -N), in the background."""
        return subprocess.Popen(["curl", "-sN", "--unix-socket", self.socket, f"http://localhost{path}"],
                                stdout=stdout)

    def background(self, path, out):
        """`path` written to the file `out`, in the background."""
        return subprocess.Popen(self.url(path) + ["-o", out])

    def peak_rss_mb(self):
        return status_kib(self.proc.pid, "VmHWM") / 1024

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


# Two-sided 97.5 % quantiles of Student's t, by degrees of freedom, for
# 95 % confidence intervals (1.96 past the table).
T975 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23,
        12: 2.18, 15: 2.13, 20: 2.09, 25: 2.06, 30: 2.04, 40: 2.02, 60: 2.00}


def t975(df):
    return next((T975[k] for k in sorted(T975) if k >= df), 1.96)


def mean_ci(values):
    """Mean and 95 % confidence half-width."""
    m = statistics.mean(values)
    if len(values) < 2:
        return m, float("inf")
    return m, t975(len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5


def cpu_seconds(proc, check=True):
    """Waits for `proc` and returns its user + system CPU time (wait4), and
    its peak RSS in MiB."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if check and proc.returncode != 0:
        raise SystemExit(f"workload {proc.args} exited with {proc.returncode}")
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def proc_cpu(pid):
    """A process's user + system CPU seconds so far (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak_rss(pid):
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def start_waiting(argv):
    """Starts a workload that waits for a byte on stdin."""
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)


def go(w):
    w.stdin.write("g")
    w.stdin.flush()
    w.stdin.close()
