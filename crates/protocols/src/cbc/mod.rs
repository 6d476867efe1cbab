//! Verifiable consistent broadcast: echo broadcast whose echoes are threshold-signature shares
//! (Cachin–Kursawe–Petzold–Shoup, CRYPTO 2001, §2.3). Design page: `docs/protocols/cbc.md`.
//!
//! **Guarantee** (`n > 3t`, one sender, one instance id): honest servers that deliver, deliver the
//! same body — at most one digest per instance ever carries a valid proof, because any two sets of
//! `ceil((n + t + 1) / 2)` signers share an honest server, who echoes once; if the sender is
//! honest, every honest server delivers; each delivers at most once. A delivery carries a
//! [`CbcProof`] that any server verifies alone and that lets a server without the body
//! [`fetch`](Cbc::fetch) it. There is no totality: a Byzantine sender may let only some deliver.
//!
//! Call order: [`Cbc::new`] at every server; [`Cbc::broadcast`] once at the sender; then
//! [`Cbc::handle_message`] for every message whose envelope names this instance, and
//! [`Cbc::fetch`] whenever the parent learns a proof (e.g. from an agreement vote).

mod message;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest as _, Sha256};
use sintra_crypto::bls::{Signature, SignatureShare};
use sintra_crypto::{CombineError, Combined, Context, Encode, ServerId};
use thiserror::Error;

pub use message::{CbcProof, Digest, Message};

use crate::mutation::{self, Mutation};
use crate::{Body, FaultKind, InstanceId, Party, Step};

/// The largest body a sender may broadcast (4 MiB): bounds what one instance stores and what a
/// decoder allocates.
pub const BODY_BYTES_MAX: usize = 4 << 20;

/// How many REQUESTs a server answers per peer and instance: a fetching server asks each server
/// once, so a second request is a fault and a flood earns one answer at most.
pub const REQUESTS_PER_PEER_MAX: usize = 1;

/// Purpose tag of the signed statement (echo shares and the combined signature).
pub const FINAL_PURPOSE: &str = "cbc/final";

/// Purpose tag of the body digest.
pub const BODY_PURPOSE: &str = "cbc/body";

/// The digest that echo shares sign: SHA-256 over the body, bound to the instance id and
/// [`BODY_PURPOSE`] (the injective layout of `Context::bind`, computed without copying the body).
/// A parent that holds a body and a proof checks `body_digest(instance, body) == proof.digest`.
pub fn body_digest(instance: &InstanceId, body: &[u8]) -> Digest {
    let mut hasher = Sha256::new();
    hasher.update(b"sintra/v1");
    for field in [
        b"sha256".as_slice(),
        BODY_PURPOSE.as_bytes(),
        instance.as_bytes(),
    ] {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field);
    }
    hasher.update((body.len() as u64).to_be_bytes());
    hasher.update(body);
    hasher.finalize().into()
}

/// The context of the signed statement in `instance`: shares and signatures made for one
/// instance are worthless in any other.
pub fn signing_context(instance: &InstanceId) -> Context<'_> {
    Context::new(FINAL_PURPOSE, instance.as_bytes())
}

impl CbcProof {
    /// Whether the signature verifies on `(instance, digest)` under the group's broadcast key
    /// set. Verified once per server: a success is remembered in the party's verified cache, so a
    /// proof that arrives in many messages costs one pairing check.
    pub fn verify(&self, party: &mut Party) -> bool {
        let signature = self.signature.to_bytes();
        let group = &party.group;
        party.cache.check(&self.cache_key(&signature), || {
            group
                .broadcast
                .verify(
                    &signing_context(&self.instance),
                    &self.digest,
                    &self.signature,
                )
                .is_ok()
        })
    }

    fn cache_key<'a>(&'a self, signature: &'a [u8]) -> [&'a [u8]; 4] {
        [
            FINAL_PURPOSE.as_bytes(),
            self.instance.as_bytes(),
            &self.digest,
            signature,
        ]
    }
}

/// What a consistent broadcast delivers: the body and the proof that it is the instance's one
/// body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CbcDelivery {
    /// The body.
    pub body: Vec<u8>,
    /// The proof, transferable to any server.
    pub proof: CbcProof,
}

/// Local misuse of an instance. Peers' misbehaviour is never an error: it is a fault in the step.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CbcError {
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
}

/// One consistent-broadcast instance at one server.
#[derive(Debug, Clone)]
pub struct Cbc {
    instance: InstanceId,
    sender: ServerId,
    broadcast_started: bool,
    /// The digest of the sender's first SEND, to tell a repeat from equivocation.
    first_send: Option<Digest>,
    /// The body this server echoed (or, at the sender, broadcast) and its digest, kept until
    /// delivery to answer REQUESTs and to deliver on a fetch without asking anybody.
    proposal: Option<(Digest, Vec<u8>)>,
    /// Sender: the first share of every peer (dropped once FINAL is sent).
    echoes: BTreeMap<ServerId, SignatureShare>,
    /// Sender: peers whose share was found invalid when combining.
    invalid_shares: BTreeSet<ServerId>,
    final_sent: bool,
    /// The proof this server fetches the body for (kept: it tells late answers from
    /// unsolicited ones).
    fetching: Option<CbcProof>,
    /// A verified FINAL whose body has not arrived yet (the sender's SEND was overtaken):
    /// delivered when a SEND with that digest arrives, or fetched if the parent asks.
    final_awaiting_body: Option<CbcProof>,
    /// Peers that answered this server's REQUEST.
    answered_by: BTreeSet<ServerId>,
    /// Per peer, the digest it requested and whether it was answered.
    requests: BTreeMap<ServerId, (Digest, bool)>,
    delivery: Option<CbcDelivery>,
}

impl Cbc {
    /// An instance named `instance` whose body comes from `sender`.
    pub fn new(instance: InstanceId, sender: ServerId) -> Self {
        Self {
            instance,
            sender,
            broadcast_started: false,
            first_send: None,
            proposal: None,
            echoes: BTreeMap::new(),
            invalid_shares: BTreeSet::new(),
            final_sent: false,
            fetching: None,
            final_awaiting_body: None,
            answered_by: BTreeSet::new(),
            requests: BTreeMap::new(),
            delivery: None,
        }
    }

    /// Starts the broadcast of `body` (only at the sender, once): SEND to all. The sender's own
    /// echo share is made here rather than on its looped-back SEND, so it can combine as soon as
    /// enough other shares arrive, whatever the order.
    pub fn broadcast(
        &mut self,
        party: &mut Party,
        body: Vec<u8>,
    ) -> Result<Step<CbcDelivery>, CbcError> {
        if party.id != self.sender {
            return Err(CbcError::NotSender);
        }
        if self.broadcast_started {
            return Err(CbcError::AlreadyBroadcast);
        }
        if body.len() > BODY_BYTES_MAX {
            return Err(CbcError::BodyTooLarge {
                len: body.len(),
                max: BODY_BYTES_MAX,
            });
        }
        self.broadcast_started = true;
        let digest = body_digest(&self.instance, &body);
        let mut step = Step::new();
        step.broadcast(self.envelope(Message::Send { body: body.clone() }));
        self.first_send = Some(digest);
        self.proposal = Some((digest, body));
        let share = party
            .keys
            .broadcast
            .sign(&signing_context(&self.instance), &digest);
        self.echoes.insert(party.id, share);
        self.try_combine(party, &mut step);
        Ok(step)
    }

    /// Handles a message from `from`. A message for another instance or protocol, or one the
    /// protocol never sends, is recorded as a fault against `from`.
    pub fn handle_message(
        &mut self,
        party: &mut Party,
        from: ServerId,
        message: &crate::Message,
    ) -> Step<CbcDelivery> {
        let mut step = Step::new();
        let body = match &message.body {
            Body::Cbc(body)
                if message.instance == self.instance && from.is_member_of(party.servers()) =>
            {
                body
            }
            _ => {
                step.fault(from, &message.instance, FaultKind::UnexpectedMessage);
                return step;
            }
        };
        match body {
            Message::Send { body } => self.on_send(party, from, body, &mut step),
            Message::Echo { share } => self.on_echo(party, from, share, &mut step),
            Message::Final { digest, signature } => {
                self.on_final(party, from, *digest, signature, &mut step)
            }
            Message::Request { digest } => self.on_request(from, *digest, &mut step),
            Message::Body { body } => self.on_body(from, body, &mut step),
        }
        step
    }

    /// Obtains the body named by `proof`, a proof this server learnt elsewhere (e.g. from an
    /// agreement vote): delivers at once if the body is known, else asks every other server for
    /// it once; it is delivered when a body hashing to `proof.digest` arrives. A valid proof
    /// means at least one honest server echoed — and so keeps — that body, hence the fetch
    /// completes. A proof for another instance, an invalid one, or a second fetch is ignored.
    pub fn fetch(&mut self, party: &mut Party, proof: CbcProof) -> Step<CbcDelivery> {
        let mut step = Step::new();
        if self.delivery.is_some()
            || self.fetching.is_some()
            || proof.instance != self.instance
            || !proof.verify(party)
        {
            return step;
        }
        if let Some((digest, body)) = &self.proposal
            && *digest == proof.digest
        {
            let body = body.clone();
            self.deliver(body, proof, &mut step);
            return step;
        }
        let request = self.envelope(Message::Request {
            digest: proof.digest,
        });
        for server in ServerId::all(party.servers()).filter(|server| *server != party.id) {
            step.send(server, request.clone());
        }
        self.final_awaiting_body = None;
        self.fetching = Some(proof);
        step
    }

    /// The delivery (body and proof), once delivered.
    pub fn delivered(&self) -> Option<&CbcDelivery> {
        self.delivery.as_ref()
    }

    /// The delivery, consuming the instance: for a caller that drops the instance but keeps
    /// what it delivered (atomic broadcast retiring a round), without copying the body.
    pub fn into_delivered(self) -> Option<CbcDelivery> {
        self.delivery
    }

    /// Whether this server delivered. A terminated instance keeps the delivery (to answer late
    /// REQUESTs), one request mark per peer, and ignores the rest.
    pub fn terminated(&self) -> bool {
        self.delivery.is_some()
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
            body: Body::Cbc(body),
        }
    }

    fn fault(&self, step: &mut Step<CbcDelivery>, server: ServerId, kind: FaultKind) {
        step.fault(server, &self.instance, kind);
    }

    fn on_send(
        &mut self,
        party: &mut Party,
        from: ServerId,
        body: &[u8],
        step: &mut Step<CbcDelivery>,
    ) {
        if from != self.sender {
            return self.fault(step, from, FaultKind::UnexpectedMessage);
        }
        if body.len() > BODY_BYTES_MAX {
            return self.fault(step, from, FaultKind::Malformed);
        }
        let digest = body_digest(&self.instance, body);
        match self.first_send {
            Some(seen) if seen == digest => return,
            Some(_) => return self.fault(step, from, FaultKind::Equivocation),
            None => self.first_send = Some(digest),
        }
        if self.delivery.is_some() {
            // A signature exists already; an echo would be useless.
            return;
        }
        if let Some(proof) = self
            .final_awaiting_body
            .take_if(|proof| proof.digest == digest)
        {
            // The FINAL overtook the SEND: the signature exists, deliver without echoing.
            return self.deliver(body.to_vec(), proof, step);
        }
        let share = party
            .keys
            .broadcast
            .sign(&signing_context(&self.instance), &digest);
        step.send(self.sender, self.envelope(Message::Echo { share }));
        self.answer_requests(digest, body, step);
        self.proposal = Some((digest, body.to_vec()));
        if let Some(proof) = self.fetching.as_ref().filter(|p| p.digest == digest) {
            let proof = proof.clone();
            self.deliver(body.to_vec(), proof, step);
        }
    }

    fn on_echo(
        &mut self,
        party: &mut Party,
        from: ServerId,
        share: &SignatureShare,
        step: &mut Step<CbcDelivery>,
    ) {
        if party.id != self.sender || !self.broadcast_started || share.id() != from {
            // Echoes go to the sender only, after its SEND, signed with the echoer's own key.
            return self.fault(step, from, FaultKind::UnexpectedMessage);
        }
        if self.final_sent {
            // Late, and not needed: checking it would cost a pairing for nothing.
            return;
        }
        match self.echoes.get(&from) {
            Some(seen) if seen == share => return,
            // BLS shares are deterministic: a different second share is a second statement or
            // an invalid share.
            Some(_) => return self.fault(step, from, FaultKind::Equivocation),
            None => {
                self.echoes.insert(from, *share);
            }
        }
        self.try_combine(party, step);
    }

    /// Sender: combines the shares once `ceil((n + t + 1) / 2)` not known to be invalid are at
    /// hand, optimistically (one check of the result; the shares are checked only if it fails).
    /// Invalid shares are recorded against their senders and left out; the sender waits for more.
    fn try_combine(&mut self, party: &mut Party, step: &mut Step<CbcDelivery>) {
        if self.final_sent {
            return;
        }
        let Some((digest, _)) = &self.proposal else {
            return;
        };
        let shares: Vec<SignatureShare> = self
            .echoes
            .iter()
            .filter(|(id, _)| !self.invalid_shares.contains(id))
            .map(|(_, share)| *share)
            .collect();
        let keys = &party.group.broadcast;
        // ceil((n + t + 1) / 2) shares: any two such sets share an honest server, who echoes one
        // body only. The deliberate bug waits for t + 1 (and needs a key dealt t + 1 of n).
        let needed = if mutation::active(Mutation::CbcQuorumTPlusOne) {
            usize::from(party.faults()) + 1
        } else {
            keys.threshold()
        };
        if shares.len() < needed {
            return;
        }
        let context = signing_context(&self.instance);
        let faulty = match keys.combine(&context, digest, &shares) {
            Ok(Combined { value, faulty }) => {
                let digest = *digest;
                let proof = CbcProof {
                    instance: self.instance.clone(),
                    digest,
                    signature: value,
                };
                // `combine` verified the signature: spare the looped-back FINAL a pairing.
                let signature = value.to_bytes();
                party.cache.check(&proof.cache_key(&signature), || true);
                self.final_sent = true;
                self.echoes.clear();
                step.broadcast(self.envelope(Message::Final {
                    digest,
                    signature: value,
                }));
                faulty
            }
            Err(CombineError::NotEnoughValidShares { faulty, .. }) => faulty,
            // Duplicates and non-members cannot occur: shares are keyed by their checked sender.
            Err(_) => Vec::new(),
        };
        for server in faulty {
            self.invalid_shares.insert(server);
            self.fault(step, server, FaultKind::InvalidShare);
        }
    }

    fn on_final(
        &mut self,
        party: &mut Party,
        from: ServerId,
        digest: Digest,
        signature: &Signature,
        step: &mut Step<CbcDelivery>,
    ) {
        if from != self.sender {
            return self.fault(step, from, FaultKind::UnexpectedMessage);
        }
        if let Some(delivery) = &self.delivery
            && delivery.proof.digest == digest
            && delivery.proof.signature == *signature
        {
            return;
        }
        if self.final_awaiting_body.is_some() {
            // The sender sends one FINAL; a second one is answered by nothing.
            return self.fault(step, from, FaultKind::UnexpectedMessage);
        }
        let proof = CbcProof {
            instance: self.instance.clone(),
            digest,
            signature: *signature,
        };
        if !proof.verify(party) {
            return self.fault(step, from, FaultKind::InvalidProof);
        }
        if self.delivery.is_some() {
            return;
        }
        match &self.proposal {
            Some((known, body)) if *known == digest => {
                let body = body.clone();
                self.deliver(body, proof, step);
            }
            // The body is on its way in the SEND (links deliver every message eventually); if
            // the sender never sends it, the parent fetches the body when it needs it.
            _ => self.final_awaiting_body = Some(proof),
        }
    }

    fn on_request(&mut self, from: ServerId, digest: Digest, step: &mut Step<CbcDelivery>) {
        if self.requests.contains_key(&from) {
            // A fetching server asks each server once.
            return self.fault(step, from, FaultKind::UnexpectedMessage);
        }
        let known = match (&self.delivery, &self.proposal) {
            (Some(delivery), _) if delivery.proof.digest == digest => Some(&delivery.body),
            (_, Some((known, body))) if *known == digest => Some(body),
            _ => None,
        };
        let answered = match known {
            Some(body) => {
                let answer = self.envelope(Message::Body { body: body.clone() });
                step.send(from, answer);
                true
            }
            // Remembered (one digest per peer) and answered if the body becomes known.
            None => false,
        };
        self.requests.insert(from, (digest, answered));
    }

    /// Answers the pending requests for `digest` with `body`.
    fn answer_requests(&mut self, digest: Digest, body: &[u8], step: &mut Step<CbcDelivery>) {
        let waiting: Vec<ServerId> = self
            .requests
            .iter_mut()
            .filter(|(_, (wanted, answered))| *wanted == digest && !*answered)
            .map(|(server, (_, answered))| {
                *answered = true;
                *server
            })
            .collect();
        for server in waiting {
            let answer = self.envelope(Message::Body {
                body: body.to_vec(),
            });
            step.send(server, answer);
        }
    }

    fn on_body(&mut self, from: ServerId, body: &[u8], step: &mut Step<CbcDelivery>) {
        let Some(proof) = &self.fetching else {
            return self.fault(step, from, FaultKind::UnexpectedMessage);
        };
        if !self.answered_by.insert(from) {
            // Each server answers a request once.
            return self.fault(step, from, FaultKind::UnexpectedMessage);
        }
        if self.delivery.is_some() {
            return;
        }
        if body.len() > BODY_BYTES_MAX {
            return self.fault(step, from, FaultKind::Malformed);
        }
        if body_digest(&self.instance, body) != proof.digest {
            return self.fault(step, from, FaultKind::WrongBody);
        }
        let proof = proof.clone();
        self.deliver(body.to_vec(), proof, step);
    }

    fn deliver(&mut self, body: Vec<u8>, proof: CbcProof, step: &mut Step<CbcDelivery>) {
        self.answer_requests(proof.digest, &body, step);
        let delivery = CbcDelivery { body, proof };
        step.outputs.push(delivery.clone());
        self.delivery = Some(delivery);
        // What a terminated instance no longer needs.
        self.proposal = None;
        self.final_awaiting_body = None;
        self.echoes.clear();
        self.invalid_shares.clear();
    }
}
