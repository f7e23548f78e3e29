#!/usr/bin/env python3
"""Asks a Kafka broker about its cluster over a plain socket (no Kafka client
needed): the launcher's wait and the fault suite's questions.

  kafka-metadata.py HOST:PORT [BROKERS]
      lists the live brokers (node@host:port); exits 0 when there are at
      least BROKERS (default 1).
  kafka-metadata.py HOST:PORT --leaders TOPIC
      prints "partition leader isr-size" per partition of TOPIC (leader -1
      when it has none); exits 1 on an error code.
  kafka-metadata.py HOST:PORT --coordinator GROUP
      prints the node id of GROUP's coordinator (FindCoordinator v1).
"""
import socket
import struct
import sys


def request(addr, api_key, version, body, timeout=2.0):
    host, port = addr.rsplit(":", 1)
    client = b"chat-tools"
    # Header v1: api_key, version, correlation id, client id.
    head = struct.pack(">hhih", api_key, version, 1, len(client)) + client
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(struct.pack(">i", len(head) + len(body)) + head + body)
        size = struct.unpack(">i", read(s, 4))[0]
        if size > 16 << 20:
            raise ValueError(f"an answer of {size} bytes")
        return Reader(read(s, size)[4:])  # past the correlation id


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, fmt):
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return values if len(values) > 1 else values[0]

    def string(self):
        n = self.take(">h")
        if n < 0:
            return None
        s = self.data[self.pos:self.pos + n].decode()
        self.pos += n
        return s


def string(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def metadata(addr, topic=None):
    # Metadata v4: the topics (none, or one), allow_auto_topic_creation false.
    topics = struct.pack(">i", 0) if topic is None else struct.pack(">i", 1) + string(topic)
    r = request(addr, 3, 4, topics + b"\x00")
    r.take(">i")  # throttle
    brokers = []
    for _ in range(r.take(">i")):
        node = r.take(">i")
        host = r.string()
        port = r.take(">i")
        r.string()  # rack
        brokers.append(f"{node}@{host}:{port}")
    r.string()  # cluster id
    r.take(">i")  # controller id
    partitions = []
    for _ in range(r.take(">i")):
        error = r.take(">h")
        r.string()
        r.take(">b")  # internal
        if error:
            raise ValueError(f"topic {topic}: error code {error}")
        for _ in range(r.take(">i")):
            _, index, leader = r.take(">hii")
            replicas = r.take(">i")
            r.pos += 4 * replicas
            isr = r.take(">i")
            r.pos += 4 * isr
            partitions.append((index, leader, isr))
    return brokers, sorted(partitions)


def coordinator(addr, group):
    r = request(addr, 10, 1, string(group) + b"\x00")
    r.take(">i")
    error = r.take(">h")
    r.string()
    node = r.take(">i")
    if error:
        raise ValueError(f"group {group}: error code {error}")
    return node


def read(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed")
        out += chunk
    return out


if __name__ == "__main__":
    addr, args = sys.argv[1], sys.argv[2:]
    try:
        if args[:1] == ["--leaders"]:
            for index, leader, isr in metadata(addr, args[1])[1]:
                print(index, leader, isr)
        elif args[:1] == ["--coordinator"]:
            print(coordinator(addr, args[1]))
        else:
            brokers = metadata(addr)[0]
            print(" ".join(brokers))
            sys.exit(0 if len(brokers) >= (int(args[0]) if args else 1) else 1)
    except (OSError, ValueError, struct.error) as e:
        print(f"{addr}: {e}", file=sys.stderr)
        sys.exit(1)
