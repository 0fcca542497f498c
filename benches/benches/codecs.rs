//! Encode and decode cost of ringkv's codecs, per message (criterion).
//!
//! `cargo bench -p ringkv-bench --bench codecs`

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use ringkv_core::resp::{Command, Parsed, RespLimits, parse_request};
use ringkv_core::version::VersionBounds;
use ringkv_core::wire::{
    MemberRecord, MemberStatus, Message, WireLimits, decode_frame, encode_frame,
};
use ringkv_core::{NodeId, Value, VersionSet, VersionVector};

const CLUSTER: u64 = 7;

fn version_set(siblings: u64) -> VersionSet {
    let mut set = VersionSet::new();
    for node in 1..=siblings {
        let write =
            VersionSet::from_context(&VersionVector::new(), Value::new(vec![7u8; 100], node));
        set = VersionSet::update(write, &set, NodeId(node));
    }
    set
}

fn peer_messages(c: &mut Criterion) {
    let mut versions = Vec::new();
    version_set(1).encode(&mut versions);
    let member = MemberRecord {
        id: NodeId(1),
        peer_address: b"127.0.0.1:7380",
        client_address: b"127.0.0.1:7379",
        weight: 1,
        zone: u32::MAX,
        status: MemberStatus::Up,
        version: 3,
        heartbeat: 9,
    };
    let messages = [
        (
            "replica_get",
            Message::ReplicaGet {
                request: 1,
                key: b"user:00000042",
            },
        ),
        (
            "replica_put_100B",
            Message::ReplicaPut {
                request: 1,
                key: b"user:00000042",
                versions: &versions,
                hint: None,
                durable: false,
            },
        ),
        (
            "gossip_8_members",
            Message::Gossip {
                members: vec![member; 8],
            },
        ),
    ];
    for (name, message) in &messages {
        let mut buffer = Vec::with_capacity(4096);
        c.bench_function(&format!("wire/encode/{name}"), |b| {
            b.iter(|| {
                buffer.clear();
                encode_frame(&mut buffer, CLUSTER, black_box(message)).is_ok()
            })
        });
        c.bench_function(&format!("wire/decode/{name}"), |b| {
            b.iter(|| {
                decode_frame(black_box(&buffer), CLUSTER, WireLimits::default())
                    .map(|(_, size)| size)
            })
        });
    }
}

fn versions(c: &mut Criterion) {
    for siblings in [1u64, 3] {
        let set = version_set(siblings);
        let mut bytes = Vec::with_capacity(4096);
        c.bench_function(&format!("version/encode/{siblings}_siblings_100B"), |b| {
            b.iter(|| {
                bytes.clear();
                black_box(&set).encode(&mut bytes);
            })
        });
        c.bench_function(&format!("version/decode/{siblings}_siblings_100B"), |b| {
            b.iter(|| {
                VersionSet::decode(black_box(&bytes), VersionBounds::default())
                    .map(|s| s.sibling_count())
            })
        });
    }
    let context = version_set(3).join();
    let token = context.to_token();
    c.bench_function("version/context_token/encode_3_coordinators", |b| {
        b.iter(|| black_box(&context).to_token())
    });
    c.bench_function("version/context_token/decode_3_coordinators", |b| {
        b.iter(|| VersionVector::from_token(black_box(&token)))
    });
}

fn resp(c: &mut Criterion) {
    let mut set = b"*3\r\n$3\r\nSET\r\n$13\r\nuser:00000042\r\n$100\r\n".to_vec();
    set.extend_from_slice(&[b'x'; 100]);
    set.extend_from_slice(b"\r\n");
    c.bench_function("resp/parse_and_type/SET_100B", |b| {
        b.iter(
            || match parse_request(black_box(&set), RespLimits::default()) {
                Parsed::Request { arguments, .. } => Command::parse(&arguments).is_ok(),
                _ => false,
            },
        )
    });
    let get = b"*2\r\n$3\r\nGET\r\n$13\r\nuser:00000042\r\n";
    c.bench_function("resp/parse_and_type/GET", |b| {
        b.iter(
            || match parse_request(black_box(get), RespLimits::default()) {
                Parsed::Request { arguments, .. } => Command::parse(&arguments).is_ok(),
                _ => false,
            },
        )
    });
}

criterion_group!(codecs, peer_messages, versions, resp);
criterion_main!(codecs);
