"""A plain TCP server for tunnel tests: on each connection it reads until the client shuts its
write side down, then answers `INSTANCE got N bytes: FIRST-16-BYTES` and closes. Listens on
127.0.0.1:$PORT; $WEFT_INSTANCE names the replica."""

import os
import socket
import threading


def serve(conn):
    with conn:
        data = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        instance = os.environ.get("WEFT_INSTANCE", "?")
        conn.sendall(f"{instance} got {len(data)} bytes: ".encode() + data[:16])


def main():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(os.environ["PORT"])))
    s.listen(128)
    while True:
        conn, _ = s.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


main()
