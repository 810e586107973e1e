#!/usr/bin/env python3
"""Baseline for the all-reduce benchmark: the butterfly's traffic pattern in
plain TCP. Member `index` of `n` sends `per_peer` bytes to every other member
(all at once, one connection each) while receiving the same from each, and
prints the seconds from the common start time until it has sent and received
everything. With per_peer = 2 * bytes / n, every member moves 2(N-1)/N * bytes
each way: what an ideal all-reduce moves, without its dependencies (a part's
mean can only go back once every member has sent that part)."""
import socket
import sys
import threading
import time

index, n, per_peer, start_at = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
addr = lambda i: "198.18.0.%d" % (i + 1)
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((addr(index), 9100))
server.listen(n)
received = [0]
lock = threading.Lock()


def receive(conn):
    while True:
        data = conn.recv(1 << 20)
        if not data:
            break
        with lock:
            received[0] += len(data)


def accept_all():
    threads = []
    for _ in range(n - 1):
        conn, _ = server.accept()
        t = threading.Thread(target=receive, args=(conn,))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()


def send(peer):
    while True:
        try:
            s = socket.create_connection((addr(peer), 9100))
            break
        except OSError:
            time.sleep(0.05)
    buf = b"x" * (1 << 20)
    left = per_peer
    while left > 0:
        left -= s.send(buf[: min(left, len(buf))])
    s.close()


acceptor = threading.Thread(target=accept_all)
acceptor.start()
time.sleep(max(0.0, start_at - time.time()))
senders = [threading.Thread(target=send, args=(p,)) for p in range(n) if p != index]
for t in senders:
    t.start()
for t in senders:
    t.join()
acceptor.join()
assert received[0] == per_peer * (n - 1), received[0]
print("%.3f" % (time.time() - start_at))
