"""An analyst's script against the packhunt gRPC API (docs/security/grpc-api.md), run by
tests/grpc_api.rs with stubs generated from proto/api.proto by grpc_tools.protoc.

    python3 grpc_client.py STUBS_DIR CLIENT_FILE MODE

CLIENT_FILE is what `packhunt config api-client` wrote. MODE:
  scenario        list clients, collect from the first connected one, stream its results,
                  set the event table, watch events, create/start/stop a hunt, stream
                  its results; prints one JSON object with what it saw
  create-collection   try one collection on the first client; prints {"code": ...}
  no-certificate  connect with the CA only (no client certificate); prints {"code": ...}
Errors print {"code": "<grpc code name>", "details": "..."} and exit 0, so the Rust test
asserts on them.
"""

import json
import sys
import time
import tomllib

sys.path.insert(0, sys.argv[1])

import grpc  # noqa: E402
import api_pb2 as pb  # noqa: E402
import api_pb2_grpc as rpc  # noqa: E402

STATS = "Generic.Client.Stats"
# Generous: only stops a hung test; the waits end as soon as what they wait for is there.
WAIT_S = 60


def channel(client, with_certificate=True):
    if with_certificate:
        creds = grpc.ssl_channel_credentials(
            root_certificates=client["ca_certificate"].encode(),
            private_key=client["client_private_key"].encode(),
            certificate_chain=client["client_certificate"].encode(),
        )
    else:
        creds = grpc.ssl_channel_credentials(
            root_certificates=client["ca_certificate"].encode()
        )
    return grpc.secure_channel(client["api_url"], creds)


def first_connected(stub):
    deadline = time.time() + WAIT_S
    while True:
        listed = stub.ListClients(
            pb.ListClientsRequest(connected=pb.CONNECTED, limit=10), timeout=10
        )
        if listed.items:
            return listed
        if time.time() > deadline:
            raise SystemExit("no connected client within %d s" % WAIT_S)
        time.sleep(0.2)


def scenario(stub):
    out = {}
    listed = first_connected(stub)
    client = listed.items[0]
    out["clients_total"] = listed.total
    out["client"] = {
        "client_id": client.client_id,
        "hostname": client.hostname,
        "connected": client.connected,
        "frontend": client.frontend,
    }
    out["get_client_hostname"] = stub.GetClient(
        pb.GetClientRequest(client_id=client.client_id), timeout=10
    ).hostname
    artifacts = stub.ListArtifacts(pb.ListArtifactsRequest(), timeout=10)
    out["artifacts"] = sorted(a.name for a in artifacts.items)

    # Events first: the agent gets the table within a second and samples every second.
    table = stub.SetEventTable(
        pb.SetEventTableRequest(
            all=[pb.EventTableEntry(name=STATS, parameters={"period_s": "1"})]
        ),
        timeout=10,
    )
    out["event_table_version"] = table.version
    out["event_table_read"] = [
        (e.name, dict(e.parameters))
        for e in stub.GetEventTable(pb.GetEventTableRequest(), timeout=10).all
    ]

    created = stub.CreateCollection(
        pb.CreateCollectionRequest(
            client_id=client.client_id,
            artifacts=["Generic.Client.Info"],
            limits=pb.FlowLimits(timeout_s=60),
        ),
        timeout=10,
    )
    flow_id = created.flow_id
    out["flow_id"] = flow_id
    deadline = time.time() + WAIT_S
    while True:
        status = stub.GetCollection(
            pb.GetCollectionRequest(client_id=client.client_id, flow_id=flow_id),
            timeout=10,
        )
        if status.state in ("finished", "error", "cancelled"):
            break
        if time.time() > deadline:
            raise SystemExit("collection not done within %d s: %s" % (WAIT_S, status.state))
        time.sleep(0.2)
    out["collection"] = {
        "state": status.state,
        "total_rows": status.total_rows,
        "artifacts": [(a.name, a.rows) for a in status.artifacts],
    }
    rows = list(
        stub.GetResults(
            pb.GetResultsRequest(client_id=client.client_id, flow_id=flow_id),
            timeout=30,
        )
    )
    out["result_rows"] = [json.loads(r.json) for r in rows]
    out["result_indexes"] = [r.row_index for r in rows]
    listed_flows = stub.ListCollections(
        pb.ListCollectionsRequest(client_id=client.client_id), timeout=10
    )
    out["collections_listed"] = [c.flow_id for c in listed_flows.items]

    watch = stub.WatchEvents(
        pb.WatchEventsRequest(artifact=STATS, client_id=client.client_id),
        timeout=WAIT_S,
    )
    events = []
    for event in watch:
        events.append(
            {
                "client_id": event.client_id,
                "artifact": event.artifact,
                "row": json.loads(event.row_json) if event.row_json else None,
                "end": event.end,
            }
        )
        if len(events) >= 2:
            break
    watch.cancel()
    out["events"] = events

    hunt = stub.CreateHunt(
        pb.CreateHuntRequest(
            artifacts=["Generic.Client.Info"],
            condition=pb.HuntCondition(os=""),
        ),
        timeout=10,
    )
    out["hunt_id"] = hunt.hunt_id
    out["hunt_state_created"] = stub.GetHunt(
        pb.GetHuntRequest(hunt_id=hunt.hunt_id), timeout=10
    ).state
    started = stub.StartHunt(pb.StartHuntRequest(hunt_id=hunt.hunt_id), timeout=10)
    out["hunt_started"] = started.state
    deadline = time.time() + WAIT_S
    while True:
        h = stub.GetHunt(pb.GetHuntRequest(hunt_id=hunt.hunt_id), timeout=10)
        if h.completed >= 1:
            break
        if time.time() > deadline:
            raise SystemExit("hunt not completed on a client within %d s" % WAIT_S)
        time.sleep(0.2)
    hunt_rows = list(
        stub.GetHuntResults(pb.GetHuntResultsRequest(hunt_id=hunt.hunt_id), timeout=30)
    )
    out["hunt_rows"] = [
        {"client_id": r.client_id, "flow_id": r.flow_id, "row": json.loads(r.json)}
        for r in hunt_rows
    ]
    out["hunts_listed"] = [h.hunt_id for h in stub.ListHunts(pb.ListHuntsRequest()).items]
    stopped = stub.StopHunt(pb.StopHuntRequest(hunt_id=hunt.hunt_id), timeout=10)
    out["hunt_stopped"] = stopped.state
    try:
        stub.GetCollection(
            pb.GetCollectionRequest(client_id=client.client_id, flow_id="F.0123456789ABCDEF"),
            timeout=10,
        )
        out["missing_collection"] = "OK"
    except grpc.RpcError as e:
        out["missing_collection"] = e.code().name
    try:
        stub.GetClient(pb.GetClientRequest(client_id="C.x/collections"), timeout=10)
        out["bad_id"] = "OK"
    except grpc.RpcError as e:
        out["bad_id"] = e.code().name
    return out


def create_collection(stub):
    listed = first_connected(stub)
    stub.CreateCollection(
        pb.CreateCollectionRequest(
            client_id=listed.items[0].client_id, artifacts=["Generic.Client.Info"]
        ),
        timeout=10,
    )
    return {"code": "OK", "clients": len(listed.items)}


def main():
    with open(sys.argv[2], "rb") as f:
        client = tomllib.load(f)
    mode = sys.argv[3]
    with channel(client, with_certificate=(mode != "no-certificate")) as ch:
        stub = rpc.PackhuntApiStub(ch)
        try:
            if mode == "scenario":
                out = scenario(stub)
            elif mode == "create-collection":
                out = create_collection(stub)
            elif mode in ("no-certificate", "list-clients"):
                listed = stub.ListClients(pb.ListClientsRequest(), timeout=10)
                out = {"code": "OK", "total": listed.total}
            else:
                raise SystemExit("unknown mode " + mode)
        except grpc.RpcError as e:
            out = {"code": e.code().name, "details": e.details()}
    print(json.dumps(out))


main()
