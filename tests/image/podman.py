"""Build the project's image with Debian's podman, over a stand-in for the base image.

The official `python:3.11-slim-bookworm` cannot be pulled on the project's machines (no Docker
Hub), so a stand-in of the same Debian release is made with debootstrap (python3 from Debian: under
/usr/bin, where the official image has its own build under /usr/local) and imported under the
official name; the Dockerfile builds over it unchanged. The stand-in is made once a day and kept
in podman's image store (labelled with its recipe and date); a real official image found there
is used as it is.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = "docker.io/library/python:3.11-slim-bookworm"
IMAGE_TAG = "localhost/trustcard:image-test"
STAND_IN_LABEL = "org.trustcard.stand-in"
STAND_IN_PACKAGES = "python3,python3-venv,python-is-python3,ca-certificates"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# crun fails on these machines' hybrid cgroups, and podman's default rlimits are refused.
RUNC = shutil.which("runc") or "/usr/sbin/runc"
GLOBAL_FLAGS = ["--runtime", RUNC, "--cgroup-manager=cgroupfs"]
RUN_LIMITS = ["--ulimit", "nofile=1024:4096", "--ulimit", "nproc=4096:4096"]
# One build at a time on the machine (a developer's run and CI's may overlap).
LOCK_FILE = Path(tempfile.gettempdir()) / "trustcard-image-build.lock"
# What debootstrap leaves that the official slim image does not carry either.
TRIMMED = (
    "var/cache/apt/archives",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/locale",
)


class PodmanError(RuntimeError):
    """A podman command failed; the message has its output."""


def find_podman() -> str | None:
    return shutil.which("podman")


def podman(
    args: list[str], timeout: float = 120, check: bool = True, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """podman with the global flags these machines need."""
    podman_bin = find_podman()
    assert podman_bin, "podman is not installed"
    result = subprocess.run(
        [podman_bin, *GLOBAL_FLAGS, *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        output = (result.stdout + result.stderr).decode(errors="replace")
        raise PodmanError(f"podman {' '.join(args[:3])} ... failed:\n{output[-4000:]}")
    return result


@contextlib.contextmanager
def machine_lock() -> Iterator[None]:
    with LOCK_FILE.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def debian_mirror() -> str:
    """The Debian archive apt uses here (deb822 .sources or a one-line sources.list)."""
    candidates = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    candidates.append(Path("/etc/apt/sources.list"))
    for path in candidates:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        for uri in re.findall(r"(?m)^\s*URIs:\s*(\S+)", text) + re.findall(
            r"(?m)^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+bookworm\s", text
        ):
            mirror = str(uri).rstrip("/")
            if mirror.endswith("/debian"):
                return mirror
    return DEFAULT_MIRROR


def stand_in_key(mirror: str) -> str:
    """The day plus the recipe: a new stand-in each day (security updates) or recipe change."""
    recipe = hashlib.sha256(f"{STAND_IN_PACKAGES} {mirror} {TRIMMED}".encode()).hexdigest()[:10]
    return f"{datetime.now(UTC).date().isoformat()}-{recipe}"


def _image_label(image: str, label: str) -> str | None:
    """The label's value ("" when unset), or None when the image is not in the store."""
    result = podman(
        ["image", "inspect", "--format", f'{{{{ index .Labels "{label}" }}}}', image],
        check=False,
    )
    if result.returncode != 0:
        return None
    value = result.stdout.decode().strip()
    return "" if value == "<no value>" else value


def _image_id(image: str) -> str | None:
    result = podman(["image", "inspect", "--format", "{{.Id}}", image], check=False)
    return result.stdout.decode().strip() if result.returncode == 0 else None


def ensure_base_image() -> str:
    """The base image for the build: what was found or how the stand-in was made."""
    mirror = debian_mirror()
    key = stand_in_key(mirror)
    with machine_lock():
        label = _image_label(BASE_IMAGE, STAND_IN_LABEL)
        if label == "":
            return f"{BASE_IMAGE} (a real image, found in podman's store)"
        if label == key:
            return f"stand-in {BASE_IMAGE} of today, reused ({key})"
        debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
        assert Path(debootstrap).exists(), "debootstrap is not installed (Debian package)"
        assert os.geteuid() == 0, "making the stand-in base image needs root (debootstrap)"
        old_id = _image_id(BASE_IMAGE)
        started = time.monotonic()
        rootfs = Path(tempfile.mkdtemp(prefix="trustcard-base-", dir="/var/tmp"))
        try:
            include = f"--include={STAND_IN_PACKAGES}"
            made = subprocess.run(
                [debootstrap, "--variant=minbase", include, "bookworm", str(rootfs), mirror],
                capture_output=True,
                timeout=900,
                check=False,
            )
            if made.returncode != 0:
                raise PodmanError(f"debootstrap failed:\n{made.stdout.decode()[-3000:]}")
            for folder in TRIMMED:
                for entry in (rootfs / folder).glob("*"):
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry)
                    else:
                        entry.unlink()
            # pip in the build reaches PyPI through this machine's CAs (a proxy's among them).
            shutil.copyfile(
                "/etc/ssl/certs/ca-certificates.crt", rootfs / "etc/ssl/certs/ca-certificates.crt"
            )
            archive = subprocess.run(
                ["tar", "-C", str(rootfs), "-c", "."], capture_output=True, timeout=300, check=True
            ).stdout
            podman(
                ["import", "--change", f"LABEL {STAND_IN_LABEL}={key}", "-", BASE_IMAGE],
                timeout=300,
                stdin=archive,
            )
        finally:
            shutil.rmtree(rootfs, ignore_errors=True)
        if old_id and old_id != _image_id(BASE_IMAGE):
            podman(["rmi", old_id], check=False)  # still used by cached layers: then kept
        return f"stand-in {BASE_IMAGE} made in {time.monotonic() - started:.0f} s ({key})"


def build_image(log_path: Path) -> tuple[str, float]:
    """Build the Dockerfile as it is; the image id and the seconds the build took."""
    with machine_lock():
        previous = _image_id(IMAGE_TAG)
        iidfile = log_path.with_suffix(".iid")
        started = time.monotonic()
        build = ["build", "--network=host", "--pull=never", f"--iidfile={iidfile}"]
        result = podman(
            [*build, f"--tag={IMAGE_TAG}", str(ROOT)],
            timeout=900,
            check=False,
        )
        seconds = time.monotonic() - started
        log_path.write_bytes(result.stdout + result.stderr)
        if result.returncode != 0:
            raise PodmanError(f"the build failed:\n{log_path.read_text()[-4000:]}")
        image_id = iidfile.read_text().strip().removeprefix("sha256:")
        if previous and previous != image_id:
            podman(["rmi", previous], check=False)  # a run of older sources: not kept
        # Build stages over older stand-ins (they carry its label) are no cache worth keeping.
        stale = ["--filter", f"label={STAND_IN_LABEL}", "--filter", "until=24h"]
        podman(["image", "prune", "--force", *stale], check=False)
        return image_id, seconds


def image_size(image: str) -> int:
    return int(podman(["image", "inspect", "--format", "{{.Size}}", image]).stdout.decode())
