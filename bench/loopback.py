"""Loopback TCP bandwidth, the baseline for replication catch-up: MiB/s of one connection
sending MIB mebibytes in 1 MiB writes.   python3 bench/loopback.py MIB"""
import socket
import sys
import threading
import time


def main(mib):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def sink():
        conn, _ = server.accept()
        buf = bytearray(1 << 20)
        while conn.recv_into(buf):
            pass

    reader = threading.Thread(target=sink)
    reader.start()
    client = socket.create_connection(server.getsockname())
    chunk = b"x" * (1 << 20)
    start = time.perf_counter()
    for _ in range(mib):
        client.sendall(chunk)
    client.close()
    reader.join()
    print("%.0f" % (mib / (time.perf_counter() - start)))


if __name__ == "__main__":
    main(int(sys.argv[1]))
