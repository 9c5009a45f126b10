#!/usr/bin/env python3
"""Writes N client folders (clients/<id>/info.json, and labels.json for every tenth) into
a datastore, as enrolled agents that are offline now would have left them. The GUI
benchmarks use it to put a 50,000-client fleet in the master's client index without
running 50,000 agents.

usage: seed_clients.py DATASTORE N [--prefix seed-]
"""
import json
import os
import random
import sys


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    root, n = sys.argv[1], int(sys.argv[2])
    prefix = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--prefix" else "seed-"
    rng = random.Random(42)
    clients = os.path.join(root, "clients")
    os.makedirs(clients, exist_ok=True)
    oses = ["linux", "windows", "darwin"]
    for i in range(n):
        client_id = "C.%016x" % rng.getrandbits(64)
        folder = os.path.join(clients, client_id)
        os.makedirs(folder, exist_ok=True)
        seen = 1_700_000_000_000 + rng.randrange(10**10)
        info = {
            "client_id": client_id,
            "hostname": "%s%d" % (prefix, i),
            "os": oses[i % len(oses)],
            "labels": [],
            "first_seen_ms": seen,
            "last_seen_ms": seen,
            "version": "seed",
        }
        with open(os.path.join(folder, "info.json"), "w") as f:
            json.dump(info, f)
        if i % 10 == 0:
            with open(os.path.join(folder, "labels.json"), "w") as f:
                json.dump(["group-%d" % (i % 100)], f)
        if (i + 1) % 10_000 == 0:
            print("seeded %d of %d clients" % (i + 1, n), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
