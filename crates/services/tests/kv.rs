//! Properties of the kv service and its encodings: encode/decode round-trip; every strict
//! prefix and every extension of an encoding is refused (so a request or answer has exactly one
//! encoding); any byte string executes to a deterministic answer without panicking; two stores
//! given the same requests answer alike and snapshot alike; a snapshot restores to an equal
//! store and every truncation or extension of it is refused, leaving the store unchanged.

use proptest::prelude::*;
use sintra_services::kv::{
    KEY_BYTES_MAX, KvAnswer, KvError, KvRequest, KvService, NONCE_BYTES, VALUE_BYTES_MAX,
};
use sintra_services::{ExecutionContext, Service};

fn request() -> impl Strategy<Value = KvRequest> {
    let key = prop::collection::vec(0u8..4, 0..4);
    let value = prop::collection::vec(any::<u8>(), 0..40);
    let nonce = any::<[u8; NONCE_BYTES]>();
    prop_oneof![
        (nonce, key.clone(), value).prop_map(|(nonce, key, value)| KvRequest::Put {
            nonce,
            key,
            value
        }),
        (nonce, key).prop_map(|(nonce, key)| KvRequest::Get { nonce, key }),
    ]
}

fn answer() -> impl Strategy<Value = KvAnswer> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 1..40)
            .prop_map(|value| KvAnswer::Ok { found: true, value }),
        Just(KvAnswer::Ok {
            found: false,
            value: Vec::new()
        }),
        "[a-z é]{0,20}".prop_map(|message| KvAnswer::Error { message }),
    ]
}

/// Runs `requests` on a fresh store; returns the answers and the final snapshot.
fn run(requests: &[Vec<u8>]) -> (Vec<Vec<u8>>, Vec<u8>) {
    let mut kv = KvService::with_limits(8, 200);
    let answers = requests
        .iter()
        .enumerate()
        .map(|(position, request)| {
            let context = ExecutionContext {
                position: position as u64,
                round: position as u64 / 3,
                time_ms: 0,
            };
            kv.execute(&context, request)
        })
        .collect();
    (answers, kv.snapshot())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn requests_round_trip_and_every_truncation_or_extension_is_refused(
        request in request(),
        extra in any::<u8>(),
    ) {
        let bytes = request.encode().unwrap();
        prop_assert_eq!(KvRequest::decode(&bytes).unwrap(), request);
        for len in 0..bytes.len() {
            prop_assert!(KvRequest::decode(&bytes[..len]).is_err(), "prefix {len} decoded");
        }
        let mut longer = bytes.clone();
        longer.push(extra);
        prop_assert_eq!(
            KvRequest::decode(&longer),
            Err(KvError::TrailingBytes { count: 1 })
        );
    }

    #[test]
    fn answers_round_trip_and_ok_answers_refuse_truncation_and_extension(
        answer in answer(),
        extra in any::<u8>(),
    ) {
        let bytes = answer.encode();
        prop_assert_eq!(KvAnswer::decode(&bytes).unwrap(), answer.clone());
        if let KvAnswer::Ok { .. } = answer {
            // An error answer's message runs to the end, so only ok answers have a fixed end.
            for len in 0..bytes.len() {
                prop_assert!(KvAnswer::decode(&bytes[..len]).is_err(), "prefix {len} decoded");
            }
            let mut longer = bytes.clone();
            longer.push(extra);
            prop_assert!(KvAnswer::decode(&longer).is_err());
        }
    }

    #[test]
    fn execution_is_deterministic_and_never_panics(
        requests in prop::collection::vec(
            prop_oneof![
                request().prop_map(|request| request.encode().unwrap()),
                prop::collection::vec(any::<u8>(), 0..30),
            ],
            0..30,
        )
    ) {
        let (answers, snapshot) = run(&requests);
        let (again, snapshot_again) = run(&requests);
        prop_assert_eq!(&answers, &again);
        prop_assert_eq!(&snapshot, &snapshot_again);
        for answer in &answers {
            prop_assert!(KvAnswer::decode(answer).is_ok(), "an answer that does not decode");
        }
    }

    #[test]
    fn snapshots_restore_exactly_and_damaged_ones_are_refused(
        requests in prop::collection::vec(request(), 0..20),
        extra in any::<u8>(),
    ) {
        let mut kv = KvService::with_limits(8, 200);
        for request in &requests {
            kv.apply(request.clone());
        }
        let snapshot = kv.snapshot();
        let mut restored = KvService::with_limits(8, 200);
        restored.restore(&snapshot).unwrap();
        prop_assert_eq!(&restored, &kv);
        prop_assert_eq!(restored.snapshot(), snapshot.clone());

        let before = restored.clone();
        for len in 0..snapshot.len() {
            prop_assert!(restored.restore(&snapshot[..len]).is_err(), "prefix {len} restored");
        }
        let mut longer = snapshot.clone();
        longer.push(extra);
        prop_assert!(restored.restore(&longer).is_err());
        prop_assert_eq!(&restored, &before);
    }
}

#[test]
fn over_long_fields_are_refused_when_encoding_and_decoding() {
    let nonce = [1; NONCE_BYTES];
    let long_key = KvRequest::Get {
        nonce,
        key: vec![0; KEY_BYTES_MAX + 1],
    };
    assert!(matches!(
        long_key.encode(),
        Err(KvError::TooLong { what: "key", .. })
    ));
    let long_value = KvRequest::Put {
        nonce,
        key: vec![0; KEY_BYTES_MAX],
        value: vec![0; VALUE_BYTES_MAX + 1],
    };
    assert!(matches!(
        long_value.encode(),
        Err(KvError::TooLong { what: "value", .. })
    ));

    // The longest key and value are accepted; the same bytes with lengths one more are not.
    let longest = KvRequest::Put {
        nonce,
        key: vec![0; KEY_BYTES_MAX],
        value: vec![0; VALUE_BYTES_MAX],
    };
    let bytes = longest.encode().unwrap();
    assert_eq!(KvRequest::decode(&bytes).unwrap(), longest);
    let mut key_too_long = bytes[..17].to_vec();
    key_too_long.extend_from_slice(&((KEY_BYTES_MAX + 1) as u16).to_be_bytes());
    key_too_long.extend_from_slice(&[0; KEY_BYTES_MAX + 1]);
    key_too_long.extend_from_slice(&0u32.to_be_bytes());
    assert!(matches!(
        KvRequest::decode(&key_too_long),
        Err(KvError::TooLong { what: "key", .. })
    ));
    let mut value_too_long = bytes[..17 + 2 + KEY_BYTES_MAX].to_vec();
    value_too_long.extend_from_slice(&((VALUE_BYTES_MAX + 1) as u32).to_be_bytes());
    value_too_long.extend_from_slice(&vec![0; VALUE_BYTES_MAX + 1]);
    assert!(matches!(
        KvRequest::decode(&value_too_long),
        Err(KvError::TooLong { what: "value", .. })
    ));

    assert!(matches!(
        KvRequest::decode(&[3; 30]),
        Err(KvError::UnknownTag { tag: 3, .. })
    ));
    assert!(
        KvAnswer::decode(&[0, 2, 0, 0, 0, 0]).is_err(),
        "found byte 2"
    );
    assert!(
        KvAnswer::decode(&[0, 0, 0, 0, 0, 1, 9]).is_err(),
        "value without found"
    );
    assert!(
        KvAnswer::decode(&[1, 0xff]).is_err(),
        "error message not UTF-8"
    );
}

#[test]
fn a_bad_request_gets_the_same_error_answer_everywhere() {
    let mut one = KvService::new();
    let mut two = KvService::new();
    let context = ExecutionContext {
        position: 5,
        round: 2,
        time_ms: 0,
    };
    let bad = [1u8, 2, 3];
    let answer = one.execute(&context, &bad);
    assert_eq!(answer, two.execute(&context, &bad));
    match KvAnswer::decode(&answer).unwrap() {
        KvAnswer::Error { message } => assert!(message.starts_with("bad request"), "{message}"),
        other => panic!("expected an error answer, got {other:?}"),
    }
    assert!(one.is_empty());
}
