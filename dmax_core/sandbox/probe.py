"""What this machine lets the sandbox use (namespaces, a pids cgroup, RLIMIT_NPROC), probed once per process."""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dmax_core.sandbox.limits import Limits

SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


UNSHARE_FLAGS = ("--net", "--pid", "--fork", "--kill-child", "--mount-proc", "--ipc", "--uts")


@dataclass(frozen=True)
class MachineConfig:
    """How programs are launched on this machine (probed once by `machine_config`)."""

    unshare: tuple[str, ...] | None = None  # argv prefix creating the namespaces, None without them
    user_namespace: bool = False
    cgroup_parent: str | None = None  # directory in which each run creates its pids cgroup
    nproc_rlimit: bool = False  # RLIMIT_NPROC is enforced for our uid (not root)


def isolation() -> dict[str, bool]:
    """What this machine provides to sandboxed programs (probed on first use, then cached).

    network_namespace / pid_namespace / mount_namespace / ipc_uts_namespaces: created by `unshare` per run;
    user_namespace: `--user --map-root-user` was needed (non-root); pids_cgroup: a per-run pids cgroup;
    rlimit_nproc: RLIMIT_NPROC is enforced (non-root); process_limit: either of the two;
    privileged: the program runs with root's file access on the host."""
    config = machine_config()
    namespaces = config.unshare is not None
    return {
        "network_namespace": namespaces,
        "pid_namespace": namespaces,
        "mount_namespace": namespaces,
        "ipc_uts_namespaces": namespaces,
        "user_namespace": config.user_namespace,
        "pids_cgroup": config.cgroup_parent is not None,
        "rlimit_nproc": config.nproc_rlimit,
        "process_limit": config.cgroup_parent is not None or config.nproc_rlimit,
        "privileged": os.geteuid() == 0,
    }


@functools.cache
def machine_config() -> MachineConfig:
    """How programs are launched here: namespaces if `unshare` can make them, a pids cgroup if one works
    (tried by running a program in it), RLIMIT_NPROC if not root."""
    from dmax_core.sandbox.launch import execute  # launch needs MachineConfig: imported when first probed

    unshare, user_namespace = probe_namespaces()
    base = MachineConfig(unshare=unshare, user_namespace=user_namespace, nproc_rlimit=os.geteuid() != 0)
    for parent in pids_cgroup_dirs():
        candidate = dataclasses.replace(base, cgroup_parent=str(parent))
        if execute("pass\n", Limits(wall_seconds=10.0), candidate).status == "passed":
            return candidate
    return base


def probe_namespaces() -> tuple[tuple[str, ...] | None, bool]:
    """The unshare argv prefix that works here (root: plain first, then with a user namespace), if any."""
    path = shutil.which("unshare", path="/usr/bin:/bin:/usr/sbin:/sbin")
    if path is None:
        return None, False
    candidates: list[tuple[tuple[str, ...], bool]] = []
    if os.geteuid() == 0:
        candidates.append(((path, *UNSHARE_FLAGS), False))
    candidates.append(((path, "--user", "--map-root-user", *UNSHARE_FLAGS), True))
    for argv, user_namespace in candidates:
        if succeeds([*argv, "--", sys.executable, "-I", "-S", "-c", "pass"]):
            return argv, user_namespace
    return None, False


def succeeds(argv: list[str]) -> bool:
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={"PATH": SYSTEM_PATH}, start_new_session=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def pids_cgroup_dirs() -> list[Path]:
    """Writable directories of our own cgroup in a hierarchy with the pids controller (v1 first, then v2)."""
    try:
        memberships = Path("/proc/self/cgroup").read_text().splitlines()
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    found: list[Path] = []
    for line in memberships:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, cgroup_path = parts
        if "pids" in controllers.split(","):
            fstype, option = "cgroup", "pids"
        elif hierarchy == "0" and not controllers:
            fstype, option = "cgroup2", None
        else:
            continue
        for mount_root, mountpoint in cgroup_mounts(mounts, fstype, option):
            directory = cgroup_directory(mountpoint, mount_root, cgroup_path)
            if directory is not None and os.access(directory, os.W_OK) and directory not in found:
                found.append(directory)
    found.sort(key=lambda directory: directory.name == "unified")  # v1 pids before a v2 mount
    return found


def cgroup_mounts(mounts: list[str], fstype: str, option: str | None) -> Iterator[tuple[str, str]]:
    for line in mounts:
        left, _, right = line.partition(" - ")
        fields, extra = left.split(), right.split()
        if len(fields) < 5 or len(extra) < 3 or extra[0] != fstype:
            continue
        if option is not None and option not in extra[2].split(","):
            continue
        yield unescape(fields[3]), unescape(fields[4])


def cgroup_directory(mountpoint: str, mount_root: str, cgroup_path: str) -> Path | None:
    relative = cgroup_path
    if mount_root != "/" and (cgroup_path == mount_root or cgroup_path.startswith(mount_root + "/")):
        relative = cgroup_path[len(mount_root):]
    directory = Path(mountpoint) / relative.lstrip("/")
    return directory if directory.is_dir() else None


def unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)
