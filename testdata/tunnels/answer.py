"""A plain TCP server for tunnel tests: on each connection it reads until the client shuts its
write side down, then answers `INSTANCE got N bytes: FIRST-16-BYTES` and closes. Listens on
127.0.0.1:$PORT, and on each further $PORT_<NAME> port, where it answers
`INSTANCE:PORT_<NAME> got …`; $WEFT_INSTANCE names the replica."""

import os
import socket
import threading


def serve(conn, who):
    with conn:
        data = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        conn.sendall(f"{who} got {len(data)} bytes: ".encode() + data[:16])


def listen(port, who):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(128)
    while True:
        conn, _ = s.accept()
        threading.Thread(target=serve, args=(conn, who), daemon=True).start()


def main():
    instance = os.environ.get("WEFT_INSTANCE", "?")
    first = int(os.environ["PORT"])
    for name, value in os.environ.items():
        if name.startswith("PORT_") and int(value) != first:
            who = f"{instance}:{name}"
            threading.Thread(target=listen, args=(int(value), who), daemon=True).start()
    listen(first, instance)


main()
