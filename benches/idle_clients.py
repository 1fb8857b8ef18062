#!/usr/bin/env python3
"""Opens N client connections to a proxy (trust authentication), runs `SELECT 1` once
on each and leaves them idle, then prints how much the proxy's resident memory grew
per client, in KiB. Used by benches/pgbench.sh (IDLE_CLIENTS).

    idle_clients.py PORT N PID USER DATABASE
"""
import asyncio
import resource
import struct
import sys


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit(f"no VmRSS for process {pid}")


async def until_ready(reader):
    """Reads messages up to ReadyForQuery; fails on ErrorResponse or an auth request."""
    while True:
        tag = await reader.readexactly(1)
        (length,) = struct.unpack("!I", await reader.readexactly(4))
        body = await reader.readexactly(length - 4)
        if tag == b"E":
            raise SystemExit(f"server error: {body!r}")
        if tag == b"R" and body[:4] != b"\0\0\0\0":
            raise SystemExit("the proxy asked for a password: the clients must be trusted")
        if tag == b"Z":
            return


async def idle_client(port, user, database):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = struct.pack("!I", 196608) + b"user\0%s\0database\0%s\0\0" % (user, database)
    writer.write(struct.pack("!I", len(body) + 4) + body)
    await until_ready(reader)
    query = b"SELECT 1\0"
    writer.write(b"Q" + struct.pack("!I", len(query) + 4) + query)
    await until_ready(reader)
    return writer


async def main():
    port, count, pid = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    user, database = sys.argv[4].encode(), sys.argv[5].encode()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, count + 64)), hard))
    before = rss_kib(pid)
    writers = []
    for start in range(0, count, 50):
        batch = min(50, count - start)
        writers += await asyncio.gather(*[idle_client(port, user, database) for _ in range(batch)])
    await asyncio.sleep(1)
    after = rss_kib(pid)
    print(f"{(after - before) / count:.1f}")
    for writer in writers:
        writer.close()


asyncio.run(main())
