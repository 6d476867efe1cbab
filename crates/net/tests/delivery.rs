//! Property: between honest servers every message is delivered exactly once and in sending order,
//! even when the TCP connections are dropped mid-stream.

mod common;

use common::*;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_exchange_thousands_of_messages_in_order() {
    timeout(TEST_TIME_MAX, async {
        const COUNT: u32 = 3000;
        let group = group(2);
        let (a, mut a_rx) = start(&group, 1).await;
        let (b, mut b_rx) = start(&group, 2).await;
        let a_send = a.clone();
        let b_send = b.clone();
        tokio::spawn(async move {
            for counter in 0..COUNT {
                a_send.send(id(2), message(1, counter)).await.expect("send");
            }
        });
        tokio::spawn(async move {
            for counter in 0..COUNT {
                b_send.send(id(1), message(2, counter)).await.expect("send");
            }
        });
        for counter in 0..COUNT {
            let at_b = b_rx.recv().await.expect("b receives");
            assert_eq!((at_b.from, counter_of(&at_b.bytes)), (id(1), counter));
            assert_eq!(at_b.bytes, message(1, counter));
            let at_a = a_rx.recv().await.expect("a receives");
            assert_eq!((at_a.from, counter_of(&at_a.bytes)), (id(2), counter));
        }
        assert_eq!(a.metrics().frames_received, u64::from(COUNT));
        assert_eq!(a.metrics().handshakes_refused, 0);
        a.shutdown().await;
        b.shutdown().await;
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_nodes_all_to_all_in_order() {
    timeout(TEST_TIME_MAX, async {
        const COUNT: u32 = 1000;
        let group = group(4);
        let mut handles = Vec::new();
        let mut receivers = Vec::new();
        for index in 1..=4 {
            let (handle, rx) = start(&group, index).await;
            handles.push(handle);
            receivers.push(rx);
        }
        for (position, handle) in handles.iter().enumerate() {
            let handle = handle.clone();
            let me = position as u16 + 1;
            tokio::spawn(async move {
                for counter in 0..COUNT {
                    for to in (1..=4).filter(|to| *to != me) {
                        handle
                            .send(id(to), message(me, counter))
                            .await
                            .expect("send");
                    }
                }
            });
        }
        for (position, mut rx) in receivers.into_iter().enumerate() {
            let me = position as u16 + 1;
            let mut next: HashMap<u16, u32> = HashMap::new();
            for _ in 0..3 * COUNT {
                let incoming = rx.recv().await.expect("receives");
                let from = incoming.from.get();
                assert_ne!(from, me);
                let expected = next.entry(from).or_insert(0);
                assert_eq!(
                    counter_of(&incoming.bytes),
                    *expected,
                    "in order from {from}"
                );
                *expected += 1;
            }
            assert!(next.values().all(|count| *count == COUNT));
        }
        for handle in handles {
            handle.shutdown().await;
        }
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_lose_nothing_and_duplicate_nothing() {
    timeout(TEST_TIME_MAX, async {
        const COUNT: u32 = 20_000;
        let group = group(2);
        let (a, _a_rx) = start(&group, 1).await;
        let (b, mut b_rx) = start(&group, 2).await;
        let sender = a.clone();
        tokio::spawn(async move {
            for counter in 0..COUNT {
                sender.send(id(2), message(1, counter)).await.expect("send");
            }
        });
        // Break the connections from both ends, again and again, while messages flow.
        let breaker_a = a.clone();
        let breaker_b = b.clone();
        let breaker = tokio::spawn(async move {
            for round in 0.. {
                tokio::time::sleep(Duration::from_millis(15)).await;
                if round % 2 == 0 {
                    breaker_a.disconnect(id(2));
                } else {
                    breaker_b.disconnect(id(1));
                }
            }
        });
        for counter in 0..COUNT {
            let incoming = b_rx.recv().await.expect("receives");
            assert_eq!(
                counter_of(&incoming.bytes),
                counter,
                "exactly once, in order"
            );
        }
        breaker.abort();
        let metrics = a.metrics();
        assert!(
            metrics.connections_failed > 0,
            "the test did break connections: {metrics:?}"
        );
        // Nothing more arrives: no duplicate trails behind.
        assert!(
            timeout(Duration::from_millis(300), b_rx.recv())
                .await
                .is_err()
        );
        a.shutdown().await;
        b.shutdown().await;
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_are_chunked_and_delivered() {
    timeout(TEST_TIME_MAX, async {
        let group = group(2);
        let (a, _a_rx) = start(&group, 1).await;
        let (b, mut b_rx) = start(&group, 2).await;
        let big: bytes::Bytes = (0..sintra_net::MESSAGE_BYTES_MAX)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into();
        a.send(id(2), big.clone()).await.expect("send");
        a.send(id(2), message(1, 7)).await.expect("send");
        assert_eq!(b_rx.recv().await.expect("big").bytes, big);
        assert_eq!(counter_of(&b_rx.recv().await.expect("small").bytes), 7);
        let too_big = bytes::Bytes::from(vec![0u8; sintra_net::MESSAGE_BYTES_MAX + 1]);
        assert!(matches!(
            a.send(id(2), too_big).await,
            Err(sintra_net::SendError::TooLarge { .. })
        ));
        assert_eq!(
            a.send(id(1), message(1, 0)).await,
            Err(sintra_net::SendError::ToSelf)
        );
        a.shutdown().await;
        b.shutdown().await;
    })
    .await
    .expect("test finished in time");
}
