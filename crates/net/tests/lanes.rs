//! Properties of the two send lanes and of a peer's restart:
//! * a message in the control lane is taken while the bulk queue to the same peer is full, and
//!   reaches the peer before the bulk backlog, which then arrives complete and in order;
//! * a peer that restarts (a new process) gets none of what was queued or left unacknowledged
//!   for its previous process; those messages are counted as stale, and what is sent after its
//!   return arrives in order.

mod common;

use common::*;
use sintra_net::{LinkLimits, SendError};
use std::time::Duration;
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_messages_overtake_a_full_bulk_queue() {
    timeout(TEST_TIME_MAX, async {
        let group = group(2);
        let (a, _a_rx) = start(&group, 1).await;
        // Server 2 is not up yet: everything for it waits in server 1's queues.
        let bulk = LinkLimits::default().queue_frames_max as u32;
        let mut queued = 0;
        loop {
            match a.try_send(id(2), message(1, queued)) {
                Ok(()) => queued += 1,
                Err(SendError::Full(peer)) => {
                    assert_eq!(peer, id(2));
                    break;
                }
                Err(other) => panic!("{other}"),
            }
            assert!(queued <= bulk + 1, "the bulk queue is bounded");
        }
        assert_eq!(a.metrics().peers[0].queued, queued as usize);
        a.try_send_control(id(2), message(1, 1_000_000))
            .expect("the control lane has room while the bulk queue is full");
        assert!(a.broadcast_control(message(1, 1_000_001)).is_empty());
        assert_eq!(a.metrics().peers[0].control_queued, 2);

        let (b, mut b_rx) = start(&group, 2).await;
        for control in [1_000_000, 1_000_001] {
            let first = b_rx.recv().await.expect("receives");
            assert_eq!(counter_of(&first.bytes), control, "control first");
        }
        for counter in 0..queued {
            let incoming = b_rx.recv().await.expect("receives");
            assert_eq!(
                counter_of(&incoming.bytes),
                counter,
                "the backlog, in order"
            );
        }
        a.shutdown().await;
        b.shutdown().await;
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_gets_nothing_queued_for_its_previous_process() {
    timeout(TEST_TIME_MAX, async {
        let group = group(2);
        let (a, mut a_rx) = start(&group, 1).await;
        let (b, mut b_rx) = start(&group, 2).await;
        for counter in 0..10 {
            a.send(id(2), message(1, counter)).await.expect("send");
        }
        for counter in 0..10 {
            let incoming = b_rx.recv().await.expect("receives");
            assert_eq!(counter_of(&incoming.bytes), counter);
        }
        // Everything so far is acknowledged: nothing of it is stale below.
        while a.metrics().peers[0].unacked_frames > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Server 2 stops (its links go away as in a crash); server 1 keeps sending to it.
        b.shutdown().await;
        drop(b_rx);
        for counter in 10..50 {
            a.try_send(id(2), message(1, counter)).expect("room");
        }
        a.try_send_control(id(2), message(1, 50)).expect("room");
        assert_eq!(a.metrics().frames_dropped_stale, 0);

        // A new process of server 2: server 1 sees it come back and drops the backlog.
        let (b, mut b_rx) = start(&group, 2).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while a.metrics().frames_dropped_stale < 41 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "stale messages not dropped: {:?}",
                a.metrics()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(a.metrics().frames_dropped_stale, 41);
        for counter in 100..200 {
            a.send(id(2), message(1, counter)).await.expect("send");
        }
        for counter in 100..200 {
            let incoming = b_rx.recv().await.expect("receives");
            assert_eq!(
                counter_of(&incoming.bytes),
                counter,
                "only what was sent after the restart, in order"
            );
        }
        // Server 2 did not take server 1 for restarted: its own messages flow.
        b.send(id(1), message(2, 7)).await.expect("send");
        let incoming = a_rx.recv().await.expect("receives");
        assert_eq!((incoming.from, counter_of(&incoming.bytes)), (id(2), 7));
        assert_eq!(b.metrics().frames_dropped_stale, 0);
        a.shutdown().await;
        b.shutdown().await;
    })
    .await
    .expect("test finished in time");
}
