"""Host-level tuning (Phase 1.3): kernel settings through a sysctl drop-in, the open-file limit as a plan.

The plan appends to /etc/sysctl.conf with ``tee -a``, which duplicates the lines on every run; here
the values go to one drop-in file, ``/etc/sysctl.d/90-ragperf.conf``, written only when its content
changes, and into /proc/sys so they take effect now. Undo writes back each value read before and
removes the drop-in.

The plan's ``/etc/security/limits.conf`` lines do not apply to services started by systemd: their
open-file limit is ``LimitNOFILE=`` in the unit. That change is planned only (``plan_only`` in its
details): it edits the users' unit and takes a restart of their service, so the notebook shows the
drop-in text and the users apply it.

This changes the whole machine and needs root: it is planned by default and applied only when the
parameters allow it (``host_changes: true``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import resource
import shutil
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ragperf.core import procs
from ragperf.core.changes import Change, ChangeError, NotAllowed, own
from ragperf.core.params import Params
from ragperf.core.target import Target, TargetError
from ragperf.systems.postgres.pgvalues import GB

log = logging.getLogger(__name__)

KIND = "host"
DROPIN = Path("etc/sysctl.d/90-ragperf.conf")
NOFILE = "LimitNOFILE"
SYSCTL_KEYS = ("vm.swappiness", "vm.dirty_ratio", "vm.dirty_background_ratio", "fs.file-max")

# The plan's values, kept because they are sound for a database host:
# - vm.swappiness 10: swap out PostgreSQL's shared buffers and backends only under real memory pressure
#   (the default 60 swaps idle pages out early, and a swapped-out buffer costs a disk read twice).
# - vm.dirty_ratio 15 / vm.dirty_background_ratio 5 (kernel defaults 20 / 10): background writeback
#   starts earlier and fewer dirty pages pile up, so a checkpoint's fsync stalls for less time.
# - fs.file-max at least 65536: a floor, never lowered (modern kernels already allow far more).
DESIRED: dict[str, int] = {"vm.swappiness": 10, "vm.dirty_ratio": 15, "vm.dirty_background_ratio": 5}
FILE_MAX_MIN = 65536
NOFILE_DESIRED = 65536

REASONS = {
    "vm.swappiness": "swap out database memory only under real pressure (default 60)",
    "vm.dirty_ratio": "cap dirty page cache lower so writeback stalls are shorter (default 20)",
    "vm.dirty_background_ratio": "start background writeback earlier (default 10)",
    "fs.file-max": f"at least {FILE_MAX_MIN} open files system-wide; never lowered",
}


def sysctl_path(key: str, root: Path = Path("/")) -> Path:
    """The /proc/sys file of a sysctl key (``vm.swappiness`` → ``/proc/sys/vm/swappiness``) under ``root``."""
    if not key or key.startswith(".") or ".." in key or "/" in key:
        raise ValueError(f"{key!r} is not a sysctl key: expected dotted names such as 'vm.swappiness'")
    return root / "proc" / "sys" / Path(*key.split("."))


def read_current(root: Path = Path("/"), keys: Sequence[str] = SYSCTL_KEYS) -> dict[str, Any]:
    """Current sysctl values (int, or None when the file is missing) and this process's open-file limits.

    ``nofile`` is ``{"soft": ..., "hard": ...}`` of the current process, not of any service.
    """
    current: dict[str, Any] = {}
    for key in keys:
        try:
            current[key] = int(sysctl_path(key, root).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            current[key] = None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    current["nofile"] = {"soft": soft, "hard": hard}
    return current


def dropin_path(unit: str) -> Path:
    """Where a systemd drop-in for ``unit`` goes (relative to the root)."""
    if not unit or "/" in unit or unit.startswith("."):
        raise ValueError(f"{unit!r} is not a systemd unit name such as 'postgresql.service'")
    name = unit if "." in unit else f"{unit}.service"
    return Path("etc/systemd/system") / f"{name}.d" / "90-ragperf-nofile.conf"


def unit_dropin_text(limit: int = NOFILE_DESIRED) -> str:
    """The systemd drop-in that raises a service's open-file limit."""
    header = "# Written by ragperf (Phase 1.3): limits.conf does not apply to systemd services."
    return f"{header}\n[Service]\n{NOFILE}={limit}\n"


def plan(
    current: Mapping[str, Any],
    desired: Mapping[str, int] | None = None,
    *,
    unit: str | None = "postgresql.service",
) -> list[Change]:
    """Host changes from ``current`` (as :func:`read_current` returns) to ``desired``; pure.

    ``desired`` overrides :data:`DESIRED` per key (``fs.file-max`` is a floor, never lowered;
    ``LimitNOFILE`` the service's open-file limit). ``unit`` names the service whose open-file limit
    is planned (None: none).
    """
    wanted = {**DESIRED, "fs.file-max": FILE_MAX_MIN, NOFILE: NOFILE_DESIRED, **(desired or {})}
    changes: list[Change] = []
    for key in sorted(k for k in wanted if k != NOFILE):
        value, before = int(wanted[key]), current.get(key)
        if before is None:
            log.info("%s: not readable on this host, not planned", key)
            continue
        if key == "fs.file-max":
            value = max(value, int(before))  # a floor: never lower it
        elif key.startswith("vm.dirty_") and int(before) == 0:
            # 0 means the byte-based twin (vm.dirty_bytes ...) is in use; writing the ratio would reset it.
            log.info("%s is 0 (the *_bytes variant is set): left alone", key)
            continue
        if int(before) == value:
            continue
        reason = f"{key} {before} → {value}: {REASONS.get(key, 'requested')}."
        changes.append(Change(KIND, key, int(before), value, reason, host=True, details={"sysctl": True}))
    if unit is not None:
        changes.append(_nofile_change(current, unit, int(wanted[NOFILE])))
    return changes


def _nofile_change(current: Mapping[str, Any], unit: str, limit: int) -> Change:
    path = dropin_path(unit)
    reason = (
        f"{unit}: {NOFILE}={limit} in a systemd drop-in (/{path}); limits.conf does not apply to systemd services. "
        "Plan only: applying it edits the users' unit and needs `systemctl daemon-reload` and a service restart."
    )
    details = {"plan_only": True, "unit": unit, "path": f"/{path}", "text": unit_dropin_text(limit)}
    before = current.get("nofile")
    return Change(KIND, f"{NOFILE}:{unit}", before, f"{NOFILE}={limit}", reason, restart=True, host=True,
                  details=details)  # fmt: skip


def _sysctl_changes(changes: Sequence[Change]) -> list[Change]:
    return [c for c in changes if c.kind == KIND and not c.details.get("plan_only")]


def render_dropin(changes: Sequence[Change]) -> str:
    """The content of /etc/sysctl.d/90-ragperf.conf for the planned sysctl changes: sorted, commented."""
    lines = [
        "# Written by ragperf (Phase 1.3). Undo: delete this file, then `sysctl --system` (or reboot).",
    ]
    for change in sorted(_sysctl_changes(changes), key=lambda c: c.name):
        lines.append(f"# {change.reason}")
        lines.append(f"{change.name} = {change.after}")
    return "\n".join(lines) + "\n"


class HostApplier:
    """Makes ``host`` changes: writes the sysctl drop-in and /proc/sys; needs root and permission."""

    kind = KIND

    def __init__(self, allowed: bool, root: Path = Path("/")) -> None:
        self.allowed = allowed
        self.root = Path(root)

    @property
    def dropin(self) -> Path:
        """The sysctl drop-in file under ``root``."""
        return self.root / DROPIN

    def _check(self, action: str) -> None:
        problems = []
        if not self.allowed:
            problems.append("the parameters do not allow host changes (set `host_changes: true` to allow them)")
        if os.geteuid() != 0:
            problems.append("they need root (ragperf runs as an unprivileged user)")
        if problems:
            raise NotAllowed(f"cannot {action} host settings: " + " and ".join(problems) + ".")

    def apply(self, changes: Sequence[Change]) -> None:
        """Write the drop-in (only if its content differs), then each value to /proc/sys."""
        own(self, changes)
        for change in changes:
            if change.details.get("plan_only"):
                log.info("%s is plan only, not applied: %s", change.name, change.reason)
        sysctls = _sysctl_changes(changes)
        if not sysctls:
            return
        self._check("apply")
        text = render_dropin(sysctls)
        if not self.dropin.exists() or self.dropin.read_text() != text:
            self.dropin.parent.mkdir(parents=True, exist_ok=True)
            procs.write_atomic(self.dropin, text)
        for change in sysctls:
            self._write(change.name, change.after)

    def undo(self, changes: Sequence[Change]) -> None:
        """Write back each ``before`` value and remove the drop-in; idempotent, a no-op when nothing is left."""
        own(self, changes)
        sysctls = _sysctl_changes(changes)
        if not sysctls:
            return
        # A key with no /proc/sys file was never written (apply fails on it): nothing to restore there.
        now = {c.name: self._read(c.name) for c in sysctls}
        to_restore = [c for c in sysctls if now[c.name] is not None and now[c.name] != c.before]
        if not to_restore and not self.dropin.exists():
            return
        self._check("undo")
        for change in to_restore:
            self._write(change.name, change.before)
        self.dropin.unlink(missing_ok=True)

    def _read(self, key: str) -> int | None:
        try:
            return int(sysctl_path(key, self.root).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _write(self, key: str, value: Any) -> None:
        path = sysctl_path(key, self.root)
        if not path.exists():
            raise ChangeError(f"{path} does not exist: is {key} a sysctl of this kernel?")
        path.write_text(f"{int(value)}\n")


def host_facts(target: Target, params: Params) -> dict[str, Any]:
    """The database host's facts the settings depend on: measured for the lab, from the parameters elsewhere."""
    if target.kind == "lab":
        return machine_facts(target.lab_dir or Path("."))
    host = params.target.host
    if host is None:
        raise TargetError(
            "target.host is needed to plan a deployment's settings (the database host is not this machine): "
            "give memory_gb, cpus and disk (hdd, ssd or nvme) in the target's parameter file"
        )
    return {"memory_total_bytes": int(host.memory_gb * GB), "cpu_usable": host.cpus, "disk": {"kind": host.disk}}


def machine_facts(path: Path) -> dict[str, Any]:
    """CPU, memory, kernel and the disk that holds ``path``: what a setting or a result depends on."""
    usage = shutil.disk_usage(path)
    return {
        "hostname": socket.gethostname(),
        "kernel": platform.release(),
        "os": _os_release(),
        "machine": platform.machine(),
        "cpu_cores": os.cpu_count(),
        "cpu_usable": len(os.sched_getaffinity(0)),
        "memory_total_bytes": _meminfo_total(),
        "cgroup_memory_limit_bytes": _cgroup_memory_limit(),
        "disk": {"path": str(path), **_disk_kind(path), "free_bytes": usage.free, "total_bytes": usage.total},
    }


def _os_release() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    return None


def _meminfo_total() -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _cgroup_memory_limit() -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(Path("/sys/fs/cgroup/memory.max").read_text().strip())
    return None


def _disk_kind(path: Path) -> dict[str, Any]:
    """``nvme``, ``ssd`` or ``hdd`` from /sys/block's rotational flag; ``unknown`` (overlay, tmpfs)."""
    dev = os.stat(path).st_dev
    block = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    if not block.exists():
        return {"device": None, "kind": "unknown", "rotational": None}
    device = block.resolve()
    if not (device / "queue").exists():  # a partition: the flag is on its disk
        device = device.parent
    try:
        rotational = (device / "queue" / "rotational").read_text().strip() == "1"
    except OSError:
        return {"device": device.name, "kind": "unknown", "rotational": None}
    kind = "hdd" if rotational else "nvme" if device.name.startswith("nvme") else "ssd"
    return {"device": device.name, "kind": kind, "rotational": rotational}
