#!/usr/bin/env python3
"""A WAN delay line for the recording lab (run inside its own namespace).

Copies every Ethernet frame between two interfaces (AF_PACKET, raw frames,
nothing changed) after holding it --delay milliseconds, in each direction,
in order. It stands in for `tc qdisc ... netem delay` where the kernel has
no netem. The interfaces must have no addresses (the namespace's own stack
stays silent on them) and no checksum/segmentation offload on the veths that
feed them (ethtool -K ... tx off), so that every frame is complete as read.

Stops when killed; it never sends anything it did not receive.
"""
import argparse
import heapq
import selectors
import socket
import sys
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--delay", type=float, required=True, help="milliseconds, each direction")
    ap.add_argument("a")
    ap.add_argument("b")
    args = ap.parse_args()
    delay = args.delay / 1000.0

    socks = {}
    for name in (args.a, args.b):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.bind((name, 0))
        s.setblocking(False)
        socks[name] = s
    peer = {socks[args.a]: socks[args.b], socks[args.b]: socks[args.a]}

    sel = selectors.DefaultSelector()
    for s in socks.values():
        sel.register(s, selectors.EVENT_READ)
    queue = []  # (due, seq, out socket, frame)
    seq = 0
    print(f"delay line {args.a} <-> {args.b}: {args.delay} ms each way", flush=True)
    while True:
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, out, frame = heapq.heappop(queue)
            try:
                out.send(frame)
            except OSError as e:
                print(f"send: {e}", file=sys.stderr, flush=True)
        timeout = max(0.0, queue[0][0] - time.monotonic()) if queue else None
        for key, _ in sel.select(timeout):
            s = key.fileobj
            while True:
                try:
                    frame, addr = s.recvfrom(65536)
                except BlockingIOError:
                    break
                if addr[2] == PACKET_OUTGOING:  # our own copies going out
                    continue
                seq += 1
                heapq.heappush(queue, (time.monotonic() + delay, seq, peer[s], frame))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
