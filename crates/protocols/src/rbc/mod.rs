//! Reliable broadcast: Bracha's protocol with hashed echoes (Bracha 1987; CKPS01 §2), and an
//! erasure-coded variant after Cachin–Tessaro's AVID (SRDS 2005). Design page:
//! `docs/protocols/rbc.md`.
//!
//! **Guarantee** (`n > 3t`, one sender, one instance id): all honest servers deliver the same
//! body, or none does; if the sender is honest, all deliver its body; each delivers at most
//! once. A Byzantine sender can at most make nobody deliver (or, in the erasure-coded variant,
//! make everybody deliver the invalid marker [`INVALID_BODY`]).
//!
//! Call order: [`Rbc::new`] at every server; [`Rbc::broadcast`] once at the sender; then
//! [`Rbc::handle_message`] for every message whose envelope names this instance. The one output
//! is the delivered body.

mod erasure;
mod message;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest as _, Sha256};
use sintra_crypto::ServerId;
use thiserror::Error;

pub use erasure::commit;
pub use message::{Digest, Fragment, Message};

use crate::mutation::{self, Mutation};
use crate::{Body, FaultKind, InstanceId, Party, Step};

/// The largest body a sender may broadcast (4 MiB): bounds what one instance stores per peer and
/// what a decoder allocates.
pub const BODY_BYTES_MAX: usize = 4 << 20;

/// The largest fragment accepted on the wire: the fragment of a maximal body with one data
/// shard (`t = 0`), i.e. the body, its 4-byte length and padding to an even size. Per group the
/// limit is tighter (`⌈(BODY_BYTES_MAX + 4) / (t + 1)⌉`, rounded up to even).
pub const FRAGMENT_BYTES_MAX: usize = BODY_BYTES_MAX + 8;

/// The longest Merkle path: `log₂` of [`sintra_crypto::SERVERS_MAX`] (1024) siblings.
pub const MERKLE_PATH_LEN_MAX: usize = 10;

/// How many REQUESTs a server answers per peer and instance. Honest servers ask each echoer
/// once, so a second request is a fault, and a flood costs the flooder one answer at most.
pub const REQUESTS_PER_PEER_MAX: usize = 1;

/// What an erasure-coded instance delivers when the sender committed to fragments that are not
/// a codeword of a well-formed body: the empty body (see the design page). Every honest server
/// delivers it in that case, so agreement holds; an honest sender's empty body is
/// indistinguishable from it, and callers treat both as "no content".
pub const INVALID_BODY: &[u8] = &[];

/// Purpose tag of the body digest.
pub const BODY_PURPOSE: &str = "rbc/body";

/// Purpose tag of the Merkle leaves of the erasure-coded variant.
pub const FRAGMENT_PURPOSE: &str = "rbc/fragment";

/// The digest that ECHO, READY and REQUEST carry: SHA-256 over the body, bound to the instance
/// id and [`BODY_PURPOSE`] (the injective layout of `Context::bind`, computed without copying
/// the body).
pub fn body_digest(instance: &InstanceId, body: &[u8]) -> Digest {
    let mut hasher = bound_hasher(BODY_PURPOSE, instance);
    hasher.update((body.len() as u64).to_be_bytes());
    hasher.update(body);
    hasher.finalize().into()
}

/// A hasher primed with `"sintra/v1"`, the scheme, the purpose and the instance id, each
/// length-prefixed like `Context::bind`; the caller appends the length-prefixed payload.
fn bound_hasher(purpose: &str, instance: &InstanceId) -> Sha256 {
    let mut hasher = Sha256::new();
    hasher.update(b"sintra/v1");
    for field in [
        b"sha256".as_slice(),
        purpose.as_bytes(),
        instance.as_bytes(),
    ] {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field);
    }
    hasher
}

/// Encodes `body` into the `n` fragments an honest erasure-coded sender sends (fragment `i` for
/// server `i`), for a group of `servers` tolerating `faults`.
pub fn disperse(
    instance: &InstanceId,
    servers: u16,
    faults: u16,
    body: &[u8],
) -> Result<Vec<Fragment>, RbcError> {
    if body.len() > BODY_BYTES_MAX {
        return Err(RbcError::BodyTooLarge {
            len: body.len(),
            max: BODY_BYTES_MAX,
        });
    }
    let shards = erasure::encode(body, usize::from(servers), erasure::data_shards(faults))?;
    Ok(commit(instance, shards))
}

/// How an instance disseminates the body. All servers of an instance must use the same one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RbcConfig {
    /// Erasure-code the body (AVID): `O(n·|m|)` bytes in total instead of `O(n²·|m|)` in the
    /// worst case, at the cost of a Merkle path per fragment and one decode per server.
    pub erasure_coded: bool,
}

/// Local misuse of an instance. Peers' misbehaviour is never an error: it is a fault in the step.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RbcError {
    /// `broadcast` was called at a server that is not this instance's sender.
    #[error("only the sender broadcasts in this instance")]
    NotSender,
    /// `broadcast` was called twice.
    #[error("this instance already broadcast")]
    AlreadyBroadcast,
    /// The body exceeds [`BODY_BYTES_MAX`].
    #[error("body of {len} bytes exceeds the maximum {max}")]
    BodyTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The Reed–Solomon coder refused the group's parameters (not expected for `n <= 1024`).
    #[error("erasure coding failed: {0}")]
    Coding(String),
}

/// One reliable-broadcast instance at one server.
#[derive(Debug, Clone)]
pub struct Rbc {
    instance: InstanceId,
    sender: ServerId,
    config: RbcConfig,
    broadcast_started: bool,
    /// The first SEND's digest (plain) or the first FRAGMENT's fingerprint (erasure-coded), to
    /// tell an identical repeat from a second, different message of the sender.
    first_from_sender: Option<Digest>,
    /// Plain: the body of the sender's SEND and its digest, until delivery (then the delivered
    /// body serves requests).
    proposal: Option<(Digest, Vec<u8>)>,
    /// What this server echoed: the body digest (plain) or the root (erasure-coded).
    echoed: Option<Digest>,
    /// Per peer, its first echo: the digest (plain) or the fingerprint of its ECHO-FRAGMENT.
    echo_seen: BTreeMap<ServerId, Digest>,
    /// Per digest or root, the peers whose echo of it was valid.
    echoers: BTreeMap<Digest, BTreeSet<ServerId>>,
    /// Erasure-coded: each peer's valid echoed fragment, with its root; dropped at delivery.
    fragments: BTreeMap<ServerId, (Digest, Vec<u8>)>,
    /// Per peer, the digest it readied.
    readies: BTreeMap<ServerId, Digest>,
    /// Per digest, how many peers readied it.
    ready_counts: BTreeMap<Digest, usize>,
    ready_sent: bool,
    /// The digest that `2t + 1` servers readied: the only one any honest server can deliver.
    deliverable: Option<Digest>,
    /// Plain: the servers this one asked for the body, and whether each has answered.
    asked: BTreeMap<ServerId, bool>,
    /// Plain: the peers whose REQUEST this server received.
    requested_by: BTreeSet<ServerId>,
    delivered: Option<Vec<u8>>,
}

impl Rbc {
    /// An instance named `instance` whose body comes from `sender`.
    pub fn new(instance: InstanceId, sender: ServerId, config: RbcConfig) -> Self {
        Self {
            instance,
            sender,
            config,
            broadcast_started: false,
            first_from_sender: None,
            proposal: None,
            echoed: None,
            echo_seen: BTreeMap::new(),
            echoers: BTreeMap::new(),
            fragments: BTreeMap::new(),
            readies: BTreeMap::new(),
            ready_counts: BTreeMap::new(),
            ready_sent: false,
            deliverable: None,
            asked: BTreeMap::new(),
            requested_by: BTreeSet::new(),
            delivered: None,
        }
    }

    /// Starts the broadcast of `body` (only at the sender, once): SEND to all, or in the
    /// erasure-coded variant fragment `i` to server `i`.
    pub fn broadcast(
        &mut self,
        party: &mut Party,
        body: Vec<u8>,
    ) -> Result<Step<Vec<u8>>, RbcError> {
        if party.id != self.sender {
            return Err(RbcError::NotSender);
        }
        if self.broadcast_started {
            return Err(RbcError::AlreadyBroadcast);
        }
        if body.len() > BODY_BYTES_MAX {
            return Err(RbcError::BodyTooLarge {
                len: body.len(),
                max: BODY_BYTES_MAX,
            });
        }
        let mut step = Step::new();
        if self.config.erasure_coded {
            let fragments = disperse(&self.instance, party.servers(), party.faults(), &body)?;
            for fragment in fragments {
                let to = fragment.index;
                step.send(to, self.envelope(Message::Fragment(fragment)));
            }
        } else {
            step.broadcast(self.envelope(Message::Send { body }));
        }
        self.broadcast_started = true;
        Ok(step)
    }

    /// Handles a message from `from`. A message for another instance or protocol, or one the
    /// protocol never sends, is recorded as a fault against `from`.
    pub fn handle_message(
        &mut self,
        party: &mut Party,
        from: ServerId,
        message: &crate::Message,
    ) -> Step<Vec<u8>> {
        let mut step = Step::new();
        let body = match &message.body {
            Body::Rbc(body)
                if message.instance == self.instance && from.is_member_of(party.servers()) =>
            {
                body
            }
            _ => {
                step.fault(from, &message.instance, FaultKind::UnexpectedMessage);
                return step;
            }
        };
        match (body, self.config.erasure_coded) {
            (Message::Send { body }, false) => self.on_send(party, from, body, &mut step),
            (Message::Echo { digest }, false) => self.on_echo(party, from, *digest, &mut step),
            (Message::Ready { digest }, _) => self.on_ready(party, from, *digest, &mut step),
            (Message::Request { digest }, false) => self.on_request(from, *digest, &mut step),
            (Message::Body { body }, false) => self.on_body(from, body, &mut step),
            (Message::Fragment(fragment), true) => {
                self.on_fragment(party, from, fragment, &mut step)
            }
            (Message::EchoFragment(fragment), true) => {
                self.on_echo_fragment(party, from, fragment, &mut step)
            }
            _ => self.fault(&mut step, from, FaultKind::UnexpectedMessage),
        }
        step
    }

    /// The delivered body, once delivered.
    pub fn delivered(&self) -> Option<&[u8]> {
        self.delivered.as_deref()
    }

    /// Whether this server delivered. A terminated instance still answers late REQUESTs from
    /// the body it delivered and ignores everything else; it holds the body, what it echoed and
    /// one digest per peer.
    pub fn terminated(&self) -> bool {
        self.delivered.is_some()
    }

    /// This instance's id.
    pub fn instance(&self) -> &InstanceId {
        &self.instance
    }

    /// The sender.
    pub fn sender(&self) -> ServerId {
        self.sender
    }

    fn envelope(&self, body: Message) -> crate::Message {
        crate::Message {
            instance: self.instance.clone(),
            body: Body::Rbc(body),
        }
    }

    fn fault(&self, step: &mut Step<Vec<u8>>, server: ServerId, kind: FaultKind) {
        step.fault(server, &self.instance, kind);
    }

    /// Whether the sender's message with `fingerprint` is its first; an identical repeat is
    /// ignored (`false`), a different second one is equivocation (`false`).
    fn accept_from_sender(&mut self, fingerprint: Digest, step: &mut Step<Vec<u8>>) -> bool {
        let from = self.sender;
        match self.first_from_sender {
            Some(seen) if seen == fingerprint => false,
            Some(_) => {
                self.fault(step, from, FaultKind::Equivocation);
                false
            }
            None => {
                self.first_from_sender = Some(fingerprint);
                true
            }
        }
    }

    /// Records `from`'s echo fingerprint; `false` if it echoed before (a repeat is ignored, a
    /// different echo is equivocation).
    fn first_echo(
        &mut self,
        from: ServerId,
        fingerprint: Digest,
        step: &mut Step<Vec<u8>>,
    ) -> bool {
        match self.echo_seen.get(&from) {
            Some(seen) if *seen == fingerprint => false,
            Some(_) => {
                self.fault(step, from, FaultKind::Equivocation);
                false
            }
            None => {
                self.echo_seen.insert(from, fingerprint);
                true
            }
        }
    }

    fn on_send(
        &mut self,
        party: &mut Party,
        from: ServerId,
        body: &[u8],
        step: &mut Step<Vec<u8>>,
    ) {
        if from != self.sender {
            return self.fault(step, from, FaultKind::UnexpectedMessage);
        }
        if body.len() > BODY_BYTES_MAX {
            return self.fault(step, from, FaultKind::Malformed);
        }
        let digest = body_digest(&self.instance, body);
        if !self.accept_from_sender(digest, step) {
            return;
        }
        // Kept until delivery: this server answers REQUESTs for what it echoed.
        if self.delivered.is_none() {
            self.proposal = Some((digest, body.to_vec()));
        }
        self.echoed = Some(digest);
        step.broadcast(self.envelope(Message::Echo { digest }));
        self.try_deliver_plain(party, step);
    }

    fn on_echo(
        &mut self,
        party: &mut Party,
        from: ServerId,
        digest: Digest,
        step: &mut Step<Vec<u8>>,
    ) {
        if !self.first_echo(from, digest, step) {
            return;
        }
        self.count_echo(party, from, digest, step);
        // A server waiting for the body asks every new echoer of the deliverable digest.
        if self.deliverable == Some(digest) {
            self.try_deliver_plain(party, step);
        }
    }

    /// Counts a valid echo of `digest` and readies after `n - t` of them.
    fn count_echo(
        &mut self,
        party: &Party,
        from: ServerId,
        digest: Digest,
        step: &mut Step<Vec<u8>>,
    ) {
        if self.delivered.is_some() {
            return;
        }
        let echoers = self.echoers.entry(digest).or_default();
        echoers.insert(from);
        if echoers.len() >= party.quorum() {
            self.send_ready(digest, step);
        }
    }

    fn send_ready(&mut self, digest: Digest, step: &mut Step<Vec<u8>>) {
        if !self.ready_sent {
            self.ready_sent = true;
            step.broadcast(self.envelope(Message::Ready { digest }));
        }
    }

    fn on_ready(
        &mut self,
        party: &mut Party,
        from: ServerId,
        digest: Digest,
        step: &mut Step<Vec<u8>>,
    ) {
        match self.readies.get(&from) {
            // A repeat is ignored — except by the deliberate bug, which counts it again.
            Some(seen) if *seen == digest && !mutation::active(Mutation::CountDuplicateVotes) => {
                return;
            }
            Some(seen) if *seen == digest => {}
            Some(_) => return self.fault(step, from, FaultKind::Equivocation),
            None => {
                self.readies.insert(from, digest);
            }
        }
        if self.delivered.is_some() {
            return;
        }
        let count = self.ready_counts.entry(digest).or_default();
        *count += 1;
        let count = *count;
        let t = usize::from(party.faults());
        if count > t {
            // At least one honest server readied `digest`: amplify.
            self.send_ready(digest, step);
        }
        // 2t + 1 readies include t + 1 honest ones, whose readies reach everyone and make every
        // honest server ready too (totality); 2t (the deliberate bug) include only t.
        let deliver_after = if mutation::active(Mutation::RbcDeliverAfter2tReadies) {
            2 * t
        } else {
            2 * t + 1
        };
        if count >= deliver_after && self.deliverable.is_none() {
            self.deliverable = Some(digest);
            if self.config.erasure_coded {
                self.try_deliver_erasure(party, step);
            } else {
                self.try_deliver_plain(party, step);
            }
        }
    }

    /// Plain: delivers once `2t + 1` readied a digest whose body is known; otherwise asks the
    /// echoers of that digest (each once) for the body.
    fn try_deliver_plain(&mut self, party: &Party, step: &mut Step<Vec<u8>>) {
        let Some(digest) = self.deliverable else {
            return;
        };
        if self.delivered.is_some() {
            return;
        }
        if let Some((known, _)) = &self.proposal
            && *known == digest
        {
            if let Some((_, body)) = self.proposal.take() {
                self.deliver(body, step);
            }
            return;
        }
        let echoers: Vec<ServerId> = self
            .echoers
            .get(&digest)
            .into_iter()
            .flatten()
            .copied()
            .filter(|echoer| *echoer != party.id && !self.asked.contains_key(echoer))
            .collect();
        for echoer in echoers {
            self.asked.insert(echoer, false);
            step.send(echoer, self.envelope(Message::Request { digest }));
        }
    }

    fn on_request(&mut self, from: ServerId, digest: Digest, step: &mut Step<Vec<u8>>) {
        if !self.requested_by.insert(from) {
            // Honest servers ask each echoer once.
            return self.fault(step, from, FaultKind::UnexpectedMessage);
        }
        if self.echoed != Some(digest) {
            // Honest servers ask only servers whose ECHO of `digest` they received.
            return self.fault(step, from, FaultKind::UnexpectedMessage);
        }
        let body = match (&self.delivered, &self.proposal) {
            (Some(body), _) if self.deliverable == Some(digest) => body.clone(),
            (_, Some((known, body))) if *known == digest => body.clone(),
            // Echoed, but delivered another digest and dropped this body: an honest peer
            // never asks for a digest that is not deliverable, so there is nobody to serve.
            _ => return,
        };
        step.send(from, self.envelope(Message::Body { body }));
    }

    fn on_body(&mut self, from: ServerId, body: &[u8], step: &mut Step<Vec<u8>>) {
        match self.asked.get_mut(&from) {
            None | Some(true) => return self.fault(step, from, FaultKind::UnexpectedMessage),
            Some(answered) => *answered = true,
        }
        if self.delivered.is_some() {
            // Another echoer answered first.
            return;
        }
        if body.len() > BODY_BYTES_MAX {
            return self.fault(step, from, FaultKind::Malformed);
        }
        if self.deliverable == Some(body_digest(&self.instance, body)) {
            self.deliver(body.to_vec(), step);
        } else {
            self.fault(step, from, FaultKind::WrongBody);
        }
    }

    fn deliver(&mut self, body: Vec<u8>, step: &mut Step<Vec<u8>>) {
        step.outputs.push(body.clone());
        self.delivered = Some(body);
        // What a terminated instance no longer needs.
        self.proposal = None;
        self.echoers.clear();
        self.fragments.clear();
        self.ready_counts.clear();
    }

    fn on_fragment(
        &mut self,
        party: &mut Party,
        from: ServerId,
        fragment: &Fragment,
        step: &mut Step<Vec<u8>>,
    ) {
        if from != self.sender {
            return self.fault(step, from, FaultKind::UnexpectedMessage);
        }
        if !self.accept_from_sender(fragment_fingerprint(fragment), step) {
            return;
        }
        match self.check_fragment(party, fragment, party.id) {
            Ok(()) => {
                self.echoed = Some(fragment.root);
                step.broadcast(self.envelope(Message::EchoFragment(fragment.clone())));
            }
            Err(kind) => self.fault(step, from, kind),
        }
    }

    fn on_echo_fragment(
        &mut self,
        party: &mut Party,
        from: ServerId,
        fragment: &Fragment,
        step: &mut Step<Vec<u8>>,
    ) {
        if !self.first_echo(from, fragment_fingerprint(fragment), step) {
            return;
        }
        if let Err(kind) = self.check_fragment(party, fragment, from) {
            return self.fault(step, from, kind);
        }
        if self.delivered.is_some() {
            return;
        }
        self.fragments
            .insert(from, (fragment.root, fragment.data.clone()));
        self.count_echo(party, from, fragment.root, step);
        if self.deliverable == Some(fragment.root) {
            self.try_deliver_erasure(party, step);
        }
    }

    /// Whether `fragment` is server `owner`'s, has a size an honest sender produces, and
    /// verifies against its root. An honest server echoes only fragments that pass this very
    /// check, so a failure is always the fault of whoever sent it.
    fn check_fragment(
        &self,
        party: &Party,
        fragment: &Fragment,
        owner: ServerId,
    ) -> Result<(), FaultKind> {
        let n = usize::from(party.servers());
        let k = erasure::data_shards(party.faults());
        if fragment.index != owner {
            return Err(FaultKind::InvalidProof);
        }
        if !erasure::fragment_size_ok(fragment.data.len(), k) {
            return Err(FaultKind::Malformed);
        }
        if !erasure::verify(&self.instance, fragment, n) {
            return Err(FaultKind::InvalidProof);
        }
        Ok(())
    }

    /// Erasure-coded: delivers once `2t + 1` readied a root and `t + 1` valid fragments of it are
    /// known — the body if the fragments are a codeword under that root, else [`INVALID_BODY`].
    fn try_deliver_erasure(&mut self, party: &Party, step: &mut Step<Vec<u8>>) {
        let Some(root) = self.deliverable else {
            return;
        };
        if self.delivered.is_some() {
            return;
        }
        let n = usize::from(party.servers());
        let k = erasure::data_shards(party.faults());
        let chosen: BTreeMap<ServerId, &[u8]> = self
            .fragments
            .iter()
            .filter(|(_, (fragment_root, _))| *fragment_root == root)
            .map(|(id, (_, data))| (*id, data.as_slice()))
            .take(k)
            .collect();
        if chosen.len() < k {
            return;
        }
        match erasure::decode(&self.instance, &root, &chosen, n, k) {
            erasure::Decoded::Body(body) => self.deliver(body, step),
            erasure::Decoded::Invalid => {
                // Honest servers echo only fragments the sender sent them under this root, so
                // the sender committed to fragments that are not a codeword.
                let sender = self.sender;
                self.fault(step, sender, FaultKind::WrongBody);
                self.deliver(INVALID_BODY.to_vec(), step);
            }
        }
    }
}

/// A digest of a whole fragment message, to tell repeats from equivocation without storing it.
fn fragment_fingerprint(fragment: &Fragment) -> Digest {
    let mut hasher = Sha256::new();
    hasher.update(fragment.root);
    hasher.update(fragment.index.get().to_be_bytes());
    hasher.update((fragment.data.len() as u64).to_be_bytes());
    hasher.update(&fragment.data);
    hasher.update((fragment.merkle_path.len() as u64).to_be_bytes());
    for sibling in &fragment.merkle_path {
        hasher.update(sibling);
    }
    hasher.finalize().into()
}
