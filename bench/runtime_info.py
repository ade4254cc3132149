"""Prints one key of a broker's GET_BROKER_RUNTIME_INFO (RocketMQ remoting, JSON header), for
bench scripts.   python3 bench/runtime_info.py HOST:PORT KEY"""
import json
import socket
import struct
import sys

GET_BROKER_RUNTIME_INFO = 28


def request(addr):
    host, port = addr.rsplit(":", 1)
    header = json.dumps({"code": GET_BROKER_RUNTIME_INFO, "language": "PYTHON", "version": 409,
                         "opaque": 1, "flag": 0, "extFields": {}}).encode()
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(struct.pack(">ii", 4 + len(header), len(header)) + header)
        data = b""
        while len(data) < 4 or len(data) < 4 + struct.unpack(">i", data[:4])[0]:
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit("connection closed")
            data += chunk
    header_len = struct.unpack(">i", data[4:8])[0] & 0xFFFFFF
    body = data[8 + header_len:4 + struct.unpack(">i", data[:4])[0]]
    return json.loads(body)["table"]


if __name__ == "__main__":
    print(request(sys.argv[1]).get(sys.argv[2], ""))
