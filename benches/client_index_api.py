#!/usr/bin/env python3
"""The client list and search through the real GUI/API at fleet size.

Generates a deployment in a temp folder, writes N synthetic client folders (info.json, and
labels.json for a third) in the datastore's format, starts a master frontend, waits for the
client index to load (its load time from /metrics), then times REQUESTS sequential GETs of
each query on one keep-alive HTTPS connection (as a browser tab makes them) and prints p50 /
p99 / max per query, and the frontend's own search time from
packhunt_client_index_search_duration_seconds. The temp folder is removed at the end.

Run: python3 benches/client_index_api.py [N] (N=50000; env REQUESTS=300,
BIN=target/release/packhunt). Needs a free port pair 18890/18891 (env GUI_PORT, AGENT_PORT).
"""

import base64
import http.client
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
REQUESTS = int(os.environ.get("REQUESTS", "300"))
BIN = os.environ.get("BIN", "target/release/packhunt")
GUI_PORT = int(os.environ.get("GUI_PORT", "18890"))
AGENT_PORT = int(os.environ.get("AGENT_PORT", "18891"))
PASSWORD = "bench-pw"

QUERIES = [
    ("everything, first page", "limit=100"),
    ("everything, last page", f"start={N - 100}&limit=100"),
    ("hostname substring", "search=web-4&limit=100"),
    ("rare hostname", "search=db-49999&limit=100"),
    ("label", "search=label%3Aweb&limit=100"),
    ("label + os + host", "search=label%3Aweb+os%3Alinux+host%3A.eu&limit=100"),
    ("id prefix", "search=C.9e&limit=100"),
    ("connected=false", "connected=false&limit=100"),
    ("one client", None),
]


def write_clients(datastore, n):
    clients = os.path.join(datastore, "clients")
    for i in range(n):
        cid = "C.%016x" % ((i * 0x9E3779B97F4A7C15) & (2**64 - 1))
        folder = os.path.join(clients, cid)
        os.makedirs(folder, exist_ok=True)
        host, os_name = [
            ("web-%05d.eu" % i, "linux"),
            ("db-%05d.us" % i, "windows"),
            ("Laptop-%05d" % i, "darwin"),
        ][i % 3]
        doc = {
            "client_id": cid,
            "hostname": host,
            "os": os_name,
            "labels": [],
            "first_seen_ms": 1_700_000_000_000 + i,
            "last_seen_ms": 1_700_000_100_000 + i,
            "version": "0.1.0",
        }
        with open(os.path.join(folder, "info.json"), "w") as f:
            json.dump(doc, f)
        if i % 3 == 0:
            with open(os.path.join(folder, "labels.json"), "w") as f:
                json.dump(["team-%d" % (i % 1000), "web"], f)
    return "C.%016x" % ((7 * 0x9E3779B97F4A7C15) & (2**64 - 1))


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main():
    out = tempfile.mkdtemp(prefix="ph-client-index-")
    frontend = None
    try:
        subprocess.run(
            [BIN, "config", "generate", "--out", out, "--frontend-port", str(AGENT_PORT),
             "--gui-port", str(GUI_PORT), "--replication-port", str(AGENT_PORT + 2),
             "--admin-password", PASSWORD],
            check=True, stdout=subprocess.DEVNULL)
        started = time.time()
        one = write_clients(os.path.join(out, "datastore"), N)
        print(f"wrote {N} client folders in {time.time() - started:.1f} s")
        subprocess.run(["sync"], check=True)
        subprocess.run(["sh", "-c", "echo 3 > /proc/sys/vm/drop_caches"], check=False)
        log = open(os.path.join(out, "frontend.log"), "w")
        frontend = subprocess.Popen(
            [BIN, "frontend", "--config", os.path.join(out, "server.config.toml")],
            stdout=log, stderr=log)
        ctx = ssl._create_unverified_context()
        auth = "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
        conn = None
        for _ in range(300):
            try:
                conn = http.client.HTTPSConnection("127.0.0.1", GUI_PORT, context=ctx)
                conn.request("GET", "/api/v1/clients?limit=1", headers={"Authorization": auth})
                body = json.loads(conn.getresponse().read())
                if body.get("complete"):
                    break
            except (OSError, ValueError):
                conn = None
            time.sleep(0.1)
        conn.request("GET", "/metrics", headers={"Authorization": auth})
        metrics = conn.getresponse().read().decode()
        load_ms = [l for l in metrics.splitlines() if l.startswith("packhunt_client_index_load_ms ")]
        entries = [l for l in metrics.splitlines() if l.startswith("packhunt_client_index_entries ")]
        print(f"{entries[0]}; {load_ms[0]} (cold page cache where drop_caches was allowed)")
        print(f"| query | total | p50 ms | p99 ms | max ms |  ({REQUESTS} sequential GETs, keep-alive)")
        print("|---|---|---|---|---|")
        for name, query in QUERIES:
            path = f"/api/v1/clients/{one}" if query is None else f"/api/v1/clients?{query}"
            times, total = [], None
            for _ in range(REQUESTS):
                t0 = time.perf_counter()
                conn.request("GET", path, headers={"Authorization": auth})
                response = conn.getresponse()
                body = response.read()
                times.append((time.perf_counter() - t0) * 1000)
                if response.status != 200:
                    raise SystemExit(f"{path}: {response.status} {body[:200]}")
                total = json.loads(body).get("total", 1)
            print(f"| {name} | {total} | {percentile(times, 0.5):.2f} | "
                  f"{percentile(times, 0.99):.2f} | {max(times):.2f} |")
        conn.request("GET", "/metrics", headers={"Authorization": auth})
        metrics = conn.getresponse().read().decode()
        print("frontend's own search time (index only), cumulative buckets:")
        for line in metrics.splitlines():
            if line.startswith("packhunt_client_index_search_duration_seconds"):
                print("  " + line)
        with open(f"/proc/{frontend.pid}/status") as f:
            rss = [l for l in f if l.startswith("VmRSS")]
        print(f"frontend {rss[0].strip()} with the index loaded")
    finally:
        if frontend is not None:
            frontend.terminate()
            frontend.wait()
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
