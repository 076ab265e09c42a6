"""Generates the Echo service's Python modules from echo.proto (with grpcio-tools) into a
temporary directory and imports them: `from echo_pb import pb, rpc`."""

import os
import sys
import tempfile

from grpc_tools import protoc

_HERE = os.path.dirname(os.path.abspath(__file__))
_OUT = tempfile.mkdtemp(prefix="weft-grpc-")
if protoc.main(["protoc", f"-I{_HERE}", f"--python_out={_OUT}", f"--grpc_python_out={_OUT}",
                os.path.join(_HERE, "echo.proto")]) != 0:
    raise SystemExit("protoc failed on echo.proto")
sys.path.insert(0, _OUT)

import echo_pb2 as pb  # noqa: E402
import echo_pb2_grpc as rpc  # noqa: E402
