//! Helpers shared by the links tests: a group of nodes on loopback ports.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use sintra_crypto::ServerId;
use sintra_net::{Incoming, LinkKeypair, LinkLimits, Links, LinksConfig, LinksHandle, PeerConfig};
use tokio::sync::mpsc;

pub struct Group {
    pub keypairs: Vec<LinkKeypair>,
    pub peers: Vec<PeerConfig>,
}

pub fn id(index: u16) -> ServerId {
    ServerId::new(index).expect("valid id")
}

/// Reserves `n` loopback addresses (bind to port 0, read the port, release it).
pub fn group(n: u16) -> Group {
    let keypairs: Vec<LinkKeypair> = (0..n)
        .map(|_| LinkKeypair::generate(&mut rand::rngs::OsRng))
        .collect();
    let peers = (1..=n)
        .map(|index| {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            PeerConfig {
                id: id(index),
                addr: listener.local_addr().expect("addr"),
                static_public_key: keypairs[usize::from(index) - 1].public(),
            }
        })
        .collect();
    Group { keypairs, peers }
}

pub fn limits() -> LinkLimits {
    LinkLimits {
        handshake_timeout: Duration::from_secs(2),
        reconnect_delay_min: Duration::from_millis(10),
        reconnect_delay_max: Duration::from_millis(200),
        ..LinkLimits::default()
    }
}

pub async fn start_as(
    group: &Group,
    index: u16,
    keypair: LinkKeypair,
) -> (LinksHandle, mpsc::Receiver<Incoming>) {
    let me = id(index);
    let listen_addr: SocketAddr = group.peers[usize::from(index) - 1].addr;
    Links::start(LinksConfig {
        me,
        listen_addr,
        peers: group.peers.clone(),
        keypair,
        limits: limits(),
    })
    .await
    .expect("links start")
}

pub async fn start(group: &Group, index: u16) -> (LinksHandle, mpsc::Receiver<Incoming>) {
    start_as(group, index, group.keypairs[usize::from(index) - 1].clone()).await
}

pub fn message(from: u16, counter: u32) -> bytes::Bytes {
    let mut bytes = Vec::with_capacity(6 + (counter % 97) as usize);
    bytes.extend_from_slice(&from.to_be_bytes());
    bytes.extend_from_slice(&counter.to_be_bytes());
    bytes.resize(6 + (counter % 97) as usize, 0xAB);
    bytes.into()
}

pub fn counter_of(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[2], bytes[3], bytes[4], bytes[5]])
}

/// Within this time every test finishes, or it fails instead of hanging.
pub const TEST_TIME_MAX: Duration = Duration::from_secs(60);
