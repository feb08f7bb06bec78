"""Free loopback ports for the lab's servers (Kannel, Kamailio, PostgreSQL, the farm's nodes)."""

from __future__ import annotations

import socket

HOST = "127.0.0.1"


def free_ports(count: int, *, udp: bool = False) -> list[int]:
    """``count`` different loopback ports (TCP, or UDP) free now: all held open together, so never the same one."""
    held = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            held.append(sock)
        return [int(sock.getsockname()[1]) for sock in held]
    finally:
        for sock in held:
            sock.close()
