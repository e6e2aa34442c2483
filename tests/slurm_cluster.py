"""A real single-node SLURM cluster for tests: munged, slurmctld and slurmd on 127.0.0.1.

Debian's ``slurm-wlm`` and ``munge`` run without systemd: ``munged`` as user ``munge``
with its own key, socket and log in a private folder, then ``slurmctld`` and ``slurmd``
in the foreground with ``SLURM_CONF`` pointing at a generated ``slurm.conf`` (one node
with this machine's CPUs and memory, state and spool in the same folder,
``proctrack/linuxproc``, ``task/none``, no accounting database). Every daemon is stopped
by its own PID. Clients (``sbatch``, ``squeue``, ``scontrol``) reach it through
:attr:`SlurmCluster.env`.

GPU partition: the node declares ``Gres=gpu:fake:N``. Slurm 22.05 drops a GPU gres
without device files ("Removing file-less GPU") and drains a node whose gres count is
short, and refuses regular files as devices; so ``gres.conf`` points at N character
devices made here with mknod as twins of /dev/null (major 1, minor 3). Then
``--gres=gpu:fake:N`` jobs are scheduled, counted and given ``CUDA_VISIBLE_DEVICES``
exactly as on a GPU node; nothing ever opens the "devices". :attr:`SlurmCluster.gres`
is the string to request.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel")


def missing_reason() -> str | None:
    """Why this machine cannot run the cluster (None when it can)."""
    missing = [
        name
        for name in (*DAEMONS, *CLIENTS)
        if not shutil.which(name) and not Path("/usr/sbin", name).exists()
    ]
    if missing:
        return (
            f"SLURM test cluster needs Debian's slurm-wlm and munge "
            f"(apt-get install slurm-wlm munge); missing: {', '.join(missing)}"
        )
    if os.geteuid() != 0:
        return "SLURM test cluster runs slurmd as root and munged as user munge: not root here"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "no 'munge' user (the munge package creates it)"
    return None


def _daemon(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_line() -> tuple[int, int]:
    """This machine's CPUs and memory (MB) as slurmd itself sees them (``slurmd -C``)."""
    out = subprocess.run(
        [_daemon("slurmd"), "-C"], capture_output=True, text=True, check=True
    ).stdout
    cpus = int(re.search(r"CPUs=(\d+)", out).group(1))  # type: ignore[union-attr]
    memory = int(re.search(r"RealMemory=(\d+)", out).group(1))  # type: ignore[union-attr]
    return cpus, memory


@dataclass
class SlurmCluster:
    """One node, two partitions (``cpu`` default, ``gpu`` with fake GPU gres)."""

    root: Path
    gpus: int = 2
    cpus: int = 0
    hostname: str = field(default_factory=socket.gethostname)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """The environment for client commands (and so for the jobs they submit)."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    @property
    def gres(self) -> str:
        return f"gpu:fake:{self.gpus}"

    def write_config(self) -> None:
        cpus, memory = _node_line()
        self.cpus = cpus
        for sub in ("state", "spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        r = self.root
        node = (
            f"NodeName={self.hostname} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} "
            f"Gres={self.gres} State=UNKNOWN"
        )
        conf = f"""\
ClusterName=plankline-test
SlurmctldHost={self.hostname}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={r}/munge/munge.socket
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
MinJobAge=600
InactiveLimit=0
GresTypes=gpu
{node}
PartitionName=cpu Nodes={self.hostname} Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes={self.hostname} MaxTime=INFINITE State=UP
"""
        self.conf.write_text(conf)
        devices = self.root / "dev"
        devices.mkdir(exist_ok=True)
        for index in range(self.gpus):  # character devices that are /dev/null's twins
            path = devices / f"nvidia{index}"
            if not path.exists():
                os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        (self.root / "gres.conf").write_text(
            f"NodeName={self.hostname} Name=gpu Type=fake "
            f"File={devices}/nvidia[0-{self.gpus - 1}]\n"
        )

    def _start_munge(self) -> None:
        """munged as user munge, its key and socket in folders only munge can write."""
        folder = self.root / "munge"  # the socket's folder: everyone may enter
        keys = folder / "key"  # the key's: munge alone
        keys.mkdir(parents=True)
        folder.chmod(0o755)
        keys.chmod(0o700)
        key = keys / "munge.key"
        key.write_bytes(os.urandom(1024))
        user = pwd.getpwnam("munge")
        for path in (folder, keys, key):
            os.chown(path, user.pw_uid, user.pw_gid)
        key.chmod(0o400)
        self.procs["munged"] = subprocess.Popen(
            [
                _daemon("munged"),
                "--foreground",
                f"--socket={folder}/munge.socket",
                f"--key-file={key}",
                f"--pid-file={folder}/munged.pid",
                f"--log-file={folder}/munged.log",
                f"--seed-file={folder}/munged.seed",
            ],
            user=user.pw_uid,
            group=grp.getgrgid(user.pw_gid).gr_gid,
            stdout=subprocess.DEVNULL,
            stderr=(self.root / "log" / "munged.out").open("wb"),
        )
        self._wait_for(lambda: (folder / "munge.socket").exists(), "munged socket")

    def start(self, timeout: float = 30.0) -> None:
        self.root.chmod(0o755)  # munge must reach its own folder
        self.write_config()
        self._start_munge()
        log = self.root / "log"
        self.procs["slurmctld"] = subprocess.Popen(
            [_daemon("slurmctld"), "-D", "-i", "-f", str(self.conf)],
            env=self.env,
            stdout=(log / "slurmctld.out").open("wb"),
            stderr=subprocess.STDOUT,
        )
        self._wait_for(lambda: self._ok(["scontrol", "ping"], "UP"), "slurmctld", timeout)
        self.procs["slurmd"] = subprocess.Popen(
            [_daemon("slurmd"), "-D", "-N", self.hostname, "-f", str(self.conf)],
            env=self.env,
            stdout=(log / "slurmd.out").open("wb"),
            stderr=subprocess.STDOUT,
        )
        self._wait_for(self._node_idle, "slurmd to register its node as idle", timeout)

    def _ok(self, cmd: list[str], expect: str) -> bool:
        out = subprocess.run(cmd, env=self.env, capture_output=True, text=True)
        return out.returncode == 0 and expect in out.stdout

    def _node_idle(self) -> bool:
        out = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%T"], env=self.env, capture_output=True, text=True
        ).stdout
        return "idle" in out

    def _wait_for(self, ready: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited ({proc.returncode}) while waiting for {what}; logs in "
                        f"{self.root / 'log'}: {self.tail()}"
                    )
            if ready():
                return
            time.sleep(0.1)
        raise TimeoutError(f"no {what} within {timeout:.0f} s; logs: {self.tail()}")

    def tail(self, lines: int = 15) -> str:
        """The end of every daemon log, for failure messages."""
        parts = []
        for path in [*sorted((self.root / "log").glob("*")), self.root / "munge" / "munged.log"]:
            if path.is_file():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel this cluster's jobs (their processes end with them), then SIGTERM each
        daemon by PID (slurmd, slurmctld, munged), SIGKILL after 10 s."""
        if self.procs.get("slurmd") and self.procs["slurmd"].poll() is None:
            user = pwd.getpwuid(os.getuid()).pw_name
            subprocess.run(["scancel", "-u", user], env=self.env, capture_output=True, timeout=30)
            deadline = time.monotonic() + 15
            while (
                time.monotonic() < deadline
                and subprocess.run(
                    ["squeue", "-h"], env=self.env, capture_output=True, text=True, timeout=30
                ).stdout.strip()
            ):
                time.sleep(0.2)
        for name in reversed(DAEMONS):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # --- client helpers ---------------------------------------------------------------

    def jobs(self, job_id: str) -> list[dict[str, str]]:
        """Every record of a job: one per array task for an array."""
        out = subprocess.run(
            ["scontrol", "show", "job", "-o", job_id],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return [dict(re.findall(r"(\w[\w:/]*)=(\S*)", line)) for line in out.splitlines()]


def make_cluster_dir() -> Path:
    """A folder munge may enter: pytest's own tmp folders are root-only (0700)."""
    return Path(tempfile.mkdtemp(prefix="plankline-slurm-"))
