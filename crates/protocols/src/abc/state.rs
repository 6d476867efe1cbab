//! The bookkeeping of one atomic-broadcast server that is not a protocol instance: the queue of
//! pending requests and the window of delivered request digests.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use crate::cbc::Digest;

use super::message::Batch;

/// Which of the two request classes a digest belongs to. A batch of round `r` carries only
/// requests of class `r mod 2`, so the batch a server disseminates for round `r + 1` while round
/// `r` is still being agreed on can never repeat one of its round-`r` requests, and every server
/// proposes a given request in the same rounds (docs/protocols/abc.md, "Validity").
pub(crate) fn class_of(digest: &Digest) -> usize {
    usize::from(digest[0] & 1)
}

/// The requests submitted here and not yet delivered, per class in submission order (FIFO: the
/// oldest go into the next batch, which is what makes every request's turn come).
#[derive(Debug, Default)]
pub(crate) struct Pending {
    queues: [BTreeMap<u64, (Digest, Vec<u8>)>; 2],
    /// Lookup only, never iterated (so its order cannot leak into what a server does): a hash
    /// map, several times cheaper per request than an ordered map of 32-byte keys.
    index: HashMap<Digest, (usize, u64)>,
    next_sequence: u64,
}

impl Pending {
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub(crate) fn contains(&self, digest: &Digest) -> bool {
        self.index.contains_key(digest)
    }

    pub(crate) fn has_class(&self, class: usize) -> bool {
        self.queues
            .get(class)
            .is_some_and(|queue| !queue.is_empty())
    }

    pub(crate) fn push(&mut self, digest: Digest, request: Vec<u8>) {
        let class = class_of(&digest);
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.queues[class].insert(sequence, (digest, request));
        self.index.insert(digest, (class, sequence));
    }

    pub(crate) fn remove(&mut self, digest: &Digest) {
        if let Some((class, sequence)) = self.index.remove(digest) {
            self.queues[class].remove(&sequence);
        }
    }

    /// The oldest requests of `class` that fit one batch (stopping at the first that does not,
    /// so a request is never overtaken by younger ones of its class). They stay pending until
    /// delivered, through this batch or any other.
    pub(crate) fn batch(
        &self,
        class: usize,
        requests_max: usize,
        bytes_max: usize,
        time_ms: u64,
    ) -> Batch {
        let mut requests = Vec::new();
        let mut encoded_len = Batch::encoded_len([]);
        for (_, request) in self.queues[class].values() {
            if requests.len() >= requests_max || encoded_len + 4 + request.len() > bytes_max {
                break;
            }
            encoded_len += 4 + request.len();
            requests.push(request.clone());
        }
        Batch { time_ms, requests }
    }
}

/// The digests of the requests delivered in the last [`super::DEDUP_ROUNDS`] rounds: a request
/// delivered again within that window is skipped. The window is counted in rounds, which every
/// honest server delivers identically, so all skip the same requests.
#[derive(Debug, Default)]
pub(crate) struct Delivered {
    /// Lookup only, never iterated (expiry goes by `by_round`): a hash set.
    digests: HashSet<Digest>,
    by_round: VecDeque<(u64, Vec<Digest>)>,
}

impl Delivered {
    pub(crate) fn contains(&self, digest: &Digest) -> bool {
        self.digests.contains(digest)
    }

    pub(crate) fn insert(&mut self, round: u64, digest: Digest) {
        self.digests.insert(digest);
        match self.by_round.back_mut() {
            Some((last, digests)) if *last == round => digests.push(digest),
            _ => self.by_round.push_back((round, vec![digest])),
        }
    }

    /// Forgets the digests of rounds before `oldest_kept`.
    pub(crate) fn expire(&mut self, oldest_kept: u64) {
        while let Some((round, _)) = self.by_round.front()
            && *round < oldest_kept
        {
            if let Some((_, digests)) = self.by_round.pop_front() {
                for digest in digests {
                    self.digests.remove(&digest);
                }
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.digests.len()
    }
}
