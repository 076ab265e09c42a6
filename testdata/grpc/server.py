"""The Echo gRPC server for the end-to-end tests. Listens on 127.0.0.1:$PORT (plaintext
HTTP/2, as an app behind a sidecar does); --name says who answers. With --fail CODE every call
fails with that status: unary calls at once (a trailers-only answer), Stream after its first
message (the status in the trailers)."""

import argparse
import os
import random
import time
from concurrent import futures

import grpc

from echo_pb import pb, rpc


class Echo(rpc.EchoServicer):
    def __init__(self, name, fail):
        self.name = name
        self.fail = fail

    def Unary(self, req, ctx):
        if self.fail:
            ctx.abort(grpc.StatusCode(_code(self.fail)), f"{self.name} always fails")
        if req.code > 0:
            time.sleep(req.code / 1000)
        return pb.Msg(text=req.text, by=self.name)

    def Stream(self, req, ctx):
        for i in range(int(req.n)):
            yield pb.Msg(text=f"{req.text}-{i}", by=self.name)
            if self.fail:
                ctx.abort(grpc.StatusCode(_code(self.fail)), f"{self.name} always fails")

    def Bidi(self, reqs, ctx):
        for req in reqs:
            yield pb.Msg(text=req.text, by=self.name)

    def Flaky(self, req, ctx):
        if random.random() < req.n:
            ctx.abort(grpc.StatusCode(_code(req.code or 14)), f"{self.name} fails on purpose")
        return pb.Msg(text=req.text, by=self.name)

    def FailAfterOne(self, req, ctx):
        yield pb.Msg(text=req.text, by=self.name)
        ctx.abort(grpc.StatusCode(_code(req.code or 14)), f"{self.name} fails after one reply")


def _code(n):
    return next(c.value for c in grpc.StatusCode if c.value[0] == n)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--name", default=os.environ.get("WEFT_INSTANCE", "echo"))
    p.add_argument("--fail", type=int, default=0)
    args = p.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    rpc.add_EchoServicer_to_server(Echo(args.name, args.fail), server)
    server.add_insecure_port(f"127.0.0.1:{os.environ['PORT']}")
    server.start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
