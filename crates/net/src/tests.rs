//! Property: an authenticated peer whose frame header announces more than `frame_bytes_max` has its
//! connection closed before anything is buffered for that frame, and honest traffic resumes.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::handshake;
use crate::wire::{FrameReader, FrameWriter};
use crate::*;

fn id(index: u16) -> sintra_crypto::ServerId {
    sintra_crypto::ServerId::new(index).expect("valid id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_header_closes_the_connection() {
    timeout(Duration::from_secs(30), async {
        let keys: Vec<LinkKeypair> = (0..2)
            .map(|_| LinkKeypair::generate(&mut rand_core::OsRng))
            .collect();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let peers = vec![
            PeerConfig {
                id: id(1),
                addr,
                static_public_key: keys[0].public(),
            },
            // Server 2 never listens; it only dials in this test.
            PeerConfig {
                id: id(2),
                addr: "127.0.0.1:9".parse().expect("addr"),
                static_public_key: keys[1].public(),
            },
        ];
        let limits = LinkLimits {
            handshake_timeout: Duration::from_secs(2),
            ..LinkLimits::default()
        };
        let (a, mut a_rx) = Links::start(LinksConfig {
            me: id(1),
            listen_addr: addr,
            peers,
            keypair: keys[0].clone(),
            limits,
        })
        .await
        .expect("start");
        let mut events = a.events();

        // A real server 2, speaking the protocol by hand.
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let transport = handshake::initiate(&mut stream, id(2), &keys[1], id(1), &keys[0].public())
            .await
            .expect("handshake");
        let cipher = std::sync::Arc::new(transport);
        let (read_half, write_half) = stream.into_split();
        let mut reader = FrameReader::new(read_half, cipher.clone(), FRAME_BYTES_MAX);
        let mut writer = FrameWriter::new(write_half, cipher);
        writer.push_resume(7, 1, 7);
        writer.push_data(1, b"fine");
        writer.push_raw_plaintext(&u32::MAX.to_be_bytes());
        writer.flush().await.expect("write");
        assert_eq!(
            a_rx.recv().await.expect("the good frame").bytes.as_ref(),
            b"fine"
        );
        loop {
            if let LinkEvent::Disconnected { peer, reason, .. } =
                events.recv().await.expect("events")
            {
                assert_eq!(peer, id(2));
                assert!(reason.contains("exceeds"), "{reason}");
                break;
            }
        }
        // The connection is closed from server 1's side: reading ends after the acks.
        while let Ok(Some(_)) = reader.next_frame().await {}

        // Server 2 reconnects with the same session and resumes after what was delivered.
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let transport = handshake::initiate(&mut stream, id(2), &keys[1], id(1), &keys[0].public())
            .await
            .expect("handshake");
        let cipher = std::sync::Arc::new(transport);
        let (_read_half, write_half) = stream.into_split();
        let mut writer = FrameWriter::new(write_half, cipher);
        writer.push_resume(7, 1, 7);
        writer.push_data(1, b"fine");
        writer.push_data(2, b"next");
        writer.flush().await.expect("write");
        assert_eq!(
            a_rx.recv().await.expect("the next frame").bytes.as_ref(),
            b"next"
        );
        assert_eq!(a.metrics().duplicates_dropped, 1);
        a.shutdown().await;
    })
    .await
    .expect("test finished in time");
}
