//! One replicated service made of several: requests are routed by their first byte (the tag
//! ranges of docs/services/README.md), so every server runs kv, the notary, the CA and the
//! directory side by side in one total order, with one state digest at checkpoints.

use std::ops::RangeInclusive;

use crate::{ExecutionContext, Service, ServiceError};

/// Services a router holds at most (a snapshot's count is checked against it).
pub const ROUTES_MAX: usize = 16;

/// The deterministic answer to a request whose tag no service claims.
pub const UNKNOWN_TAG_ANSWER: &[u8] = b"\x01unknown request tag";

/// Services, each owning a range of request tags.
#[derive(Default)]
pub struct Router {
    routes: Vec<(RangeInclusive<u8>, Box<dyn Service>)>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.routes
                    .iter()
                    .map(|(tags, service)| (tags, service.name())),
            )
            .finish()
    }
}

/// A route that cannot be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Two services claim one tag.
    #[error("service {service} claims tags {tags:?}, which {other} already serves")]
    Overlap {
        /// The service being added.
        service: &'static str,
        /// Its tags.
        tags: RangeInclusive<u8>,
        /// The service already there.
        other: &'static str,
    },
    /// More than [`ROUTES_MAX`] services.
    #[error("a router holds at most {ROUTES_MAX} services")]
    TooMany,
}

impl Router {
    /// A router with no service (every request gets [`UNKNOWN_TAG_ANSWER`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `service` for the requests whose first byte is in `tags`.
    pub fn with(
        mut self,
        tags: RangeInclusive<u8>,
        service: Box<dyn Service>,
    ) -> Result<Self, RouteError> {
        if self.routes.len() >= ROUTES_MAX {
            return Err(RouteError::TooMany);
        }
        if let Some((_, other)) = self
            .routes
            .iter()
            .find(|(taken, _)| taken.start() <= tags.end() && tags.start() <= taken.end())
        {
            return Err(RouteError::Overlap {
                service: service.name(),
                tags,
                other: other.name(),
            });
        }
        self.routes.push((tags, service));
        Ok(self)
    }

    /// The names of the services, in the order they were added.
    pub fn names(&self) -> Vec<&'static str> {
        self.routes
            .iter()
            .map(|(_, service)| service.name())
            .collect()
    }

    fn route(&self, request: &[u8]) -> Option<&dyn Service> {
        let tag = *request.first()?;
        self.routes
            .iter()
            .find(|(tags, _)| tags.contains(&tag))
            .map(|(_, service)| service.as_ref())
    }

    fn route_mut(&mut self, request: &[u8]) -> Option<&mut Box<dyn Service>> {
        let tag = *request.first()?;
        self.routes
            .iter_mut()
            .find(|(tags, _)| tags.contains(&tag))
            .map(|(_, service)| service)
    }
}

impl Service for Router {
    fn name(&self) -> &'static str {
        "router"
    }

    fn execute(&mut self, context: &ExecutionContext, request: &[u8]) -> Vec<u8> {
        match self.route_mut(request) {
            Some(service) => service.execute(context, request),
            None => UNKNOWN_TAG_ANSWER.to_vec(),
        }
    }

    /// `[count u8]` then per service `[len u64][snapshot]`, in the order the services were
    /// added (every server builds its router in the same order).
    fn snapshot(&self) -> Vec<u8> {
        let mut out = vec![self.routes.len() as u8];
        for (_, service) in &self.routes {
            let snapshot = service.snapshot();
            out.extend_from_slice(&(snapshot.len() as u64).to_be_bytes());
            out.extend_from_slice(&snapshot);
        }
        out
    }

    /// Restores every service or none: the parts are all checked by restoring into the
    /// services, and on the first error the ones restored already are put back.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), ServiceError> {
        let invalid = |why: &str| ServiceError::InvalidSnapshot {
            service: "router",
            why: why.into(),
        };
        let (&count, mut rest) = snapshot
            .split_first()
            .ok_or_else(|| invalid("empty snapshot"))?;
        if usize::from(count) != self.routes.len() {
            return Err(invalid("the snapshot holds another number of services"));
        }
        let mut parts = Vec::with_capacity(self.routes.len());
        for _ in 0..count {
            let (len, tail) = rest
                .split_first_chunk::<8>()
                .ok_or_else(|| invalid("truncated length"))?;
            let len = usize::try_from(u64::from_be_bytes(*len))
                .ok()
                .filter(|len| *len <= tail.len())
                .ok_or_else(|| invalid("a part is longer than the snapshot"))?;
            let (part, tail) = tail.split_at(len);
            parts.push(part);
            rest = tail;
        }
        if !rest.is_empty() {
            return Err(invalid("trailing bytes"));
        }
        let before: Vec<Vec<u8>> = self.routes.iter().map(|(_, s)| s.snapshot()).collect();
        for (index, part) in parts.iter().enumerate() {
            if let Err(error) = self.routes[index].1.restore(part) {
                for (undo, old) in before.iter().enumerate().take(index) {
                    // These snapshots came from the services themselves: they restore.
                    let _ = self.routes[undo].1.restore(old);
                }
                return Err(error);
            }
        }
        Ok(())
    }

    fn signing_message(&self, request: &[u8], answer: &[u8]) -> Option<Vec<u8>> {
        self.route(request)?.signing_message(request, answer)
    }

    fn complete(&self, request: &[u8], answer: &[u8], signature: &[u8]) -> Vec<u8> {
        match self.route(request) {
            Some(service) => service.complete(request, answer, signature),
            None => answer.to_vec(),
        }
    }

    /// The first service's tree that has one (a router holds one directory).
    fn state_tree(&self) -> Option<std::sync::Arc<crate::directory::StateTree>> {
        self.routes
            .iter()
            .find_map(|(_, service)| service.state_tree())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{self, KvRequest, KvService};

    /// A second service for routing tests: counts its requests and signs every answer.
    #[derive(Default)]
    struct Counter(u64);

    impl Service for Counter {
        fn name(&self) -> &'static str {
            "counter"
        }
        fn execute(&mut self, _: &ExecutionContext, _: &[u8]) -> Vec<u8> {
            self.0 += 1;
            self.0.to_be_bytes().to_vec()
        }
        fn snapshot(&self) -> Vec<u8> {
            self.0.to_be_bytes().to_vec()
        }
        fn restore(&mut self, snapshot: &[u8]) -> Result<(), ServiceError> {
            let bytes: [u8; 8] =
                snapshot
                    .try_into()
                    .map_err(|_| ServiceError::InvalidSnapshot {
                        service: "counter",
                        why: "not 8 bytes".into(),
                    })?;
            self.0 = u64::from_be_bytes(bytes);
            Ok(())
        }
        fn signing_message(&self, _: &[u8], answer: &[u8]) -> Option<Vec<u8>> {
            Some([b"counted".as_slice(), answer].concat())
        }
        fn complete(&self, _: &[u8], answer: &[u8], signature: &[u8]) -> Vec<u8> {
            [answer, signature].concat()
        }
    }

    fn router() -> Router {
        Router::new()
            .with(kv::TAGS, Box::new(KvService::new()))
            .unwrap()
            .with(0x40..=0x41, Box::new(Counter::default()))
            .unwrap()
    }

    fn put(key: &str) -> Vec<u8> {
        KvRequest::Put {
            nonce: [3; 16],
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
        }
        .encode()
        .unwrap()
    }

    #[test]
    fn requests_reach_the_service_owning_their_tag() {
        let mut router = router();
        let context = ExecutionContext::default();
        let kv_answer = router.execute(&context, &put("a"));
        assert_eq!(kv_answer, KvService::new().execute(&context, &put("a")));
        assert_eq!(router.execute(&context, &[0x41]), 1u64.to_be_bytes());
        assert_eq!(router.execute(&context, &[0x40, 9]), 2u64.to_be_bytes());
        assert_eq!(router.execute(&context, &[0x99]), UNKNOWN_TAG_ANSWER);
        assert_eq!(router.execute(&context, &[]), UNKNOWN_TAG_ANSWER);
        // Signing and completion follow the request's route.
        assert_eq!(router.signing_message(&put("a"), &kv_answer), None);
        assert_eq!(
            router.signing_message(&[0x40], b"x"),
            Some(b"countedx".to_vec())
        );
        assert_eq!(router.complete(&[0x40], b"x", b"s"), b"xs");
        assert_eq!(router.complete(&put("a"), b"x", b"s"), b"x");
        assert_eq!(router.names(), ["kv", "counter"]);
    }

    #[test]
    fn overlapping_tags_are_refused() {
        let error = router()
            .with(0x41..=0x50, Box::new(Counter::default()))
            .unwrap_err();
        assert!(
            matches!(
                error,
                RouteError::Overlap {
                    other: "counter",
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn snapshots_restore_all_services_or_none() {
        let mut router = router();
        let context = ExecutionContext::default();
        router.execute(&context, &put("a"));
        router.execute(&context, &[0x40]);
        let snapshot = router.snapshot();
        let mut copy = self::router();
        copy.restore(&snapshot).unwrap();
        assert_eq!(copy.snapshot(), snapshot);
        assert_eq!(copy.execute(&context, &[0x40]), 2u64.to_be_bytes());
        // Damaged snapshots change nothing.
        let before = copy.snapshot();
        let mut bad_counter = snapshot.clone();
        let last = bad_counter.len() - 1;
        bad_counter.truncate(last);
        let mut bad_length = snapshot.clone();
        bad_length[1] = 0xff;
        for bad in [
            Vec::new(),
            vec![3],
            bad_counter,
            bad_length,
            [snapshot.as_slice(), &[0]].concat(),
        ] {
            assert!(copy.restore(&bad).is_err());
            assert_eq!(copy.snapshot(), before);
        }
    }
}
