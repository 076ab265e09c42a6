"""The Echo gRPC client for the end-to-end tests: calls TARGET (host:port, plaintext HTTP/2 with
prior knowledge) naming AUTHORITY (a mesh service, `svc:port`), as a client that calls through a
proxy's listener does, and prints one JSON line per call: {"code": N, "message": ..., "texts": [...]}.

  client.py TARGET AUTHORITY unary|stream|bidi|flaky|fail-after-one [--count N] [--n X] [--code C]
            [--timeout S] [--text T] [--metadata KEY=VALUE]... [--pause S]
"""

import argparse
import json
import time

import grpc

from echo_pb import pb, rpc


def call(stub, kind, args):
    msg = pb.Msg(text=args.text, n=args.n, code=args.code)
    kw = {"timeout": args.timeout, "metadata": [tuple(m.split("=", 1)) for m in args.metadata]}
    if kind == "unary":
        return [stub.Unary(msg, **kw)]
    if kind == "flaky":
        return [stub.Flaky(msg, **kw)]
    if kind == "stream":
        return list(stub.Stream(msg, **kw))
    if kind == "fail-after-one":
        return list(stub.FailAfterOne(msg, **kw))
    if kind == "bidi":
        # Each message goes out only once the previous answer came back: the call streams both
        # ways at once rather than buffering either side.
        import queue
        q = queue.Queue()

        def requests():
            for i in range(int(args.n)):
                if i and args.pause:
                    time.sleep(args.pause)
                yield pb.Msg(text=f"{args.text}-{i}")
                q.get(timeout=30)

        out = []
        for r in stub.Bidi(requests(), **kw):
            out.append(r)
            q.put(None)
        return out
    raise SystemExit(f"unknown call {kind}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("target")
    p.add_argument("authority")
    p.add_argument("kind")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--n", type=float, default=0)
    p.add_argument("--code", type=int, default=0)
    p.add_argument("--timeout", type=float, default=30)
    p.add_argument("--text", default="hi")
    p.add_argument("--metadata", action="append", default=[])
    p.add_argument("--pause", type=float, default=0, help="bidi: seconds between messages")
    args = p.parse_args()
    options = [("grpc.enable_http_proxy", 0), ("grpc.default_authority", args.authority),
               ("grpc.enable_retries", 0)]
    with grpc.insecure_channel(args.target, options=options) as ch:
        stub = rpc.EchoStub(ch)
        for _ in range(args.count):
            try:
                rsps = call(stub, args.kind, args)
                out = {"code": 0, "message": "", "texts": [r.text for r in rsps],
                       "by": [r.by for r in rsps]}
            except grpc.RpcError as e:
                md = dict(e.initial_metadata() or ()) | dict(e.trailing_metadata() or ())
                out = {"code": e.code().value[0], "message": e.details() or "",
                       "flag": md.get("x-weft-flag", "")}
            print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
