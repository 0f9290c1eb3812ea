"""A real OpenSSH server on loopback for remote-storage tests, with throwaway keys; skips when it cannot start."""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = Path("/usr/sbin/sshd")


@dataclass
class LoopbackServer:
    port: int
    user: str
    keyfile: Path
    home: Path  # a HOME whose ~/.ssh/known_hosts trusts exactly this server's host key


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


@contextlib.contextmanager
def loopback_sshd(folder: Path):
    if not SSHD.is_file() or shutil.which("ssh-keygen") is None:
        pytest.skip(f"no OpenSSH server at {SSHD} (Debian: apt-get install openssh-server)")
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    _keygen(folder / "host_key")
    _keygen(folder / "client_key")
    shutil.copy(folder / "client_key.pub", folder / "authorized_keys")
    port, user = _free_port(), getpass.getuser()
    config = folder / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {folder / 'host_key'}",
        f"AuthorizedKeysFile {folder / 'authorized_keys'}", f"PidFile {folder / 'sshd.pid'}",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
        "PermitRootLogin prohibit-password", "StrictModes no", "UsePAM no",
        "Subsystem sftp internal-sftp", ""]))
    if os.geteuid() == 0:  # sshd running as root wants its privilege-separation directory
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        if not _wait_for_port(port, server):
            output = server.stdout.read() if server.poll() is not None else "no answer within 10 s"
            pytest.skip(f"the OpenSSH server could not be started on loopback: {output.strip()[-500:]}")
        home = folder / "home"
        (home / ".ssh").mkdir(parents=True)
        host_key = (folder / "host_key.pub").read_text().split()
        (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
        yield LoopbackServer(port, user, folder / "client_key", home)
    finally:
        server.terminate()
        server.wait(timeout=10)


def _wait_for_port(port: int, server: subprocess.Popen) -> bool:
    for _ in range(100):
        if server.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
        time.sleep(0.1)
    return False
