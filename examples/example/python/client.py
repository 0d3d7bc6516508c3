#!/usr/bin/python3
"""Calls ExampleService.SayHello at ADDRESS (argv[1], host:port) once per
name in argv[2:] and prints each reply on its own line. Used by the interop
test; run it with Debian's /usr/bin/python3."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402

import example_pb2  # noqa: E402
import example_pb2_grpc  # noqa: E402


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: client.py HOST:PORT NAME...")
    with grpc.insecure_channel(sys.argv[1]) as ch:
        stub = example_pb2_grpc.ExampleServiceStub(ch)
        for i, name in enumerate(sys.argv[2:]):
            resp = stub.SayHello(example_pb2.Request(id=i, name=name), timeout=10)
            print(resp.message, flush=True)


if __name__ == "__main__":
    main()
