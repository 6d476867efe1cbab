//! Bookkeeping of one optimistic-broadcast server that is not protocol logic: the pending queue
//! (with the leader's cursor) and the window of delivered request digests.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use crate::abc::Batch;
use crate::cbc::Digest;

/// Requests submitted here and not yet delivered, in submission order.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    queue: BTreeMap<u64, (Digest, Vec<u8>)>,
    /// Lookup only, never iterated.
    index: HashMap<Digest, u64>,
    next: u64,
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

    pub(crate) fn push(&mut self, digest: Digest, request: Vec<u8>) {
        self.queue.insert(self.next, (digest, request));
        self.index.insert(digest, self.next);
        self.next += 1;
    }

    pub(crate) fn remove(&mut self, digest: &Digest) {
        if let Some(sequence) = self.index.remove(digest) {
            self.queue.remove(&sequence);
        }
    }

    /// Every pending request, oldest first.
    pub(crate) fn requests(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.queue.values().map(|(_, request)| request)
    }

    /// Whether a request submitted after `cursor` is pending.
    pub(crate) fn has_after(&self, cursor: u64) -> bool {
        self.queue.range(cursor..).next().is_some()
    }

    /// Whether the requests from `cursor` on fill a batch (`requests_max` of them, or more
    /// bytes than `bytes_max`). Looks at `requests_max` requests at most.
    pub(crate) fn fills_batch(&self, cursor: u64, requests_max: usize, bytes_max: usize) -> bool {
        let mut count = 0;
        let mut encoded_len = Batch::encoded_len([]);
        for (_, request) in self.queue.range(cursor..).map(|(_, entry)| entry) {
            if count >= requests_max || encoded_len + 4 + request.len() > bytes_max {
                return true;
            }
            count += 1;
            encoded_len += 4 + request.len();
        }
        count >= requests_max
    }

    /// The oldest requests from `cursor` on that fit one batch (stopping at the first that does
    /// not), and the cursor after them.
    pub(crate) fn batch_after(
        &self,
        cursor: u64,
        requests_max: usize,
        bytes_max: usize,
        time_ms: u64,
    ) -> (Batch, u64) {
        let mut requests = Vec::new();
        let mut encoded_len = Batch::encoded_len([]);
        let mut next = cursor;
        for (sequence, (_, request)) in self.queue.range(cursor..) {
            if requests.len() >= requests_max || encoded_len + 4 + request.len() > bytes_max {
                break;
            }
            encoded_len += 4 + request.len();
            requests.push(request.clone());
            next = sequence + 1;
        }
        (Batch { time_ms, requests }, next)
    }
}

/// The digests of the last `capacity` delivered requests. Counted in positions, which every
/// honest server delivers identically, so all skip the same copies.
#[derive(Debug)]
pub(crate) struct Window {
    digests: HashSet<Digest>,
    order: VecDeque<Digest>,
    capacity: usize,
}

impl Window {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            digests: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    pub(crate) fn contains(&self, digest: &Digest) -> bool {
        self.digests.contains(digest)
    }

    pub(crate) fn insert(&mut self, digest: Digest) {
        if self.order.len() >= self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.digests.remove(&old);
        }
        self.digests.insert(digest);
        self.order.push_back(digest);
    }

    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }
}
