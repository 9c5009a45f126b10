//! Compiles proto/ with a protoc that comes from crates.io, so a fresh machine needs nothing else.
fn main() {
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc exists");
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto");
    // BTreeMap for `map` fields: a message then encodes to the same bytes every time, which
    // the event table's digest (protocol/event_table.rs) relies on.
    prost_build::Config::new()
        .bytes(["."])
        .btree_map(["."])
        .compile_protos(&["proto/agent.proto"], &["proto"])
        .expect("proto/agent.proto compiles");
    // The replication service: our own TLS and connectors, so no tonic transport glue.
    tonic_prost_build::configure()
        .bytes(".")
        .build_transport(false)
        .compile_protos(&["proto/replication.proto"], &["proto"])
        .expect("proto/replication.proto compiles");
    // The gRPC API for scripts: the server side only (clients generate their own stubs).
    tonic_prost_build::configure()
        .build_transport(false)
        .build_client(false)
        .compile_protos(&["proto/api.proto"], &["proto"])
        .expect("proto/api.proto compiles");
}
