//! Property: a peer that cannot prove its pinned key, or that sends garbage, is refused and logged,
//! its connection is closed, and the node keeps serving its honest peers.

mod common;

use common::*;
use sintra_net::{LinkEvent, LinkKeypair};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_the_wrong_static_key_is_refused() {
    timeout(TEST_TIME_MAX, async {
        let group = group(3);
        let (a, mut a_rx) = start(&group, 1).await;
        let mut events = a.events();
        // Server 2 runs with a key that is not the one pinned for it.
        let impostor = LinkKeypair::generate(&mut rand::rngs::OsRng);
        let (b, _b_rx) = start_as(&group, 2, impostor).await;
        let (c, _c_rx) = start(&group, 3).await;
        b.send(id(1), message(2, 0)).await.expect("queued");
        c.send(id(1), message(3, 0)).await.expect("queued");
        loop {
            match events.recv().await.expect("events") {
                LinkEvent::HandshakeRefused { claimed, .. } => {
                    assert_eq!(claimed, Some(id(2)));
                    break;
                }
                _ => continue,
            }
        }
        // The honest peer still gets through, and nothing from the impostor is delivered.
        let incoming = a_rx.recv().await.expect("receives");
        assert_eq!(incoming.from, id(3));
        assert!(
            timeout(Duration::from_millis(300), a_rx.recv())
                .await
                .is_err()
        );
        assert!(a.metrics().handshakes_refused >= 1);
        for handle in [a, b, c] {
            handle.shutdown().await;
        }
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_handshakes_close_only_that_connection() {
    timeout(TEST_TIME_MAX, async {
        let group = group(2);
        let (a, mut a_rx) = start(&group, 1).await;
        let mut events = a.events();
        let address = a.local_addr();
        // Garbage that parses as a short handshake message, then an oversized length header.
        let mut garbage = TcpStream::connect(address).await.expect("connect");
        garbage.write_all(&[0, 40]).await.expect("write");
        garbage.write_all(&[0x5a; 40]).await.expect("write");
        let mut oversized = TcpStream::connect(address).await.expect("connect");
        oversized
            .write_all(&[0xff, 0xff, 1, 2, 3])
            .await
            .expect("write");
        let mut refusals = 0;
        while refusals < 2 {
            if let LinkEvent::HandshakeRefused { claimed, .. } =
                events.recv().await.expect("events")
            {
                assert_eq!(claimed, None);
                refusals += 1;
            }
        }
        let (b, _b_rx) = start(&group, 2).await;
        for counter in 0..100 {
            b.send(id(1), message(2, counter)).await.expect("send");
        }
        for counter in 0..100 {
            assert_eq!(
                counter_of(&a_rx.recv().await.expect("receives").bytes),
                counter
            );
        }
        assert_eq!(a.metrics().handshakes_refused, 2);
        a.shutdown().await;
        b.shutdown().await;
    })
    .await
    .expect("test finished in time");
}
