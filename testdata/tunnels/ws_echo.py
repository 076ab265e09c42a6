"""A WebSocket echo server for tunnel tests (the `websockets` package): it first sends its
replica's name ($WEFT_INSTANCE), then echoes every message. Listens on 127.0.0.1:$PORT."""

import asyncio
import os

import websockets


async def echo(ws, *_path):
    await ws.send(os.environ.get("WEFT_INSTANCE", "?"))
    async for message in ws:
        await ws.send(message)


async def main():
    async with websockets.serve(echo, "127.0.0.1", int(os.environ["PORT"])):
        await asyncio.Future()


asyncio.run(main())
