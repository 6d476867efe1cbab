//! The client against scripted gateways on 127.0.0.1 (test doubles; the real replicas are
//! exercised by the root package's tests/cluster.rs): it accepts only answers that verify under
//! the service key for its own request, moves on from a refused port, a silent server, an
//! error status, garbage and a forged answer, sends the same bytes to every server, lists every
//! failure when nothing verifies, and encrypts confidential requests under the group's label.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sintra_config::ServerEntry;
use sintra_crypto::dealer::{GroupParameters, ServerKeys, deal_with_primes};
use sintra_crypto::encoding::Decode;
use sintra_crypto::rsa;
use sintra_services::answers::{AnswerBatch, leaf};
use sintra_services::kv::KvService;
use sintra_services::{ExecutionContext, Service};

use super::*;

/// Servers in the test group (t = 1: answers need 2 shares).
const N: u16 = 6;

fn group() -> &'static (GroupKeys, Vec<ServerKeys>) {
    static GROUP: OnceLock<(GroupKeys, Vec<ServerKeys>)> = OnceLock::new();
    GROUP.get_or_init(|| {
        let mut rng = ChaCha20Rng::from_seed([3; 32]);
        let primes = rsa::generate_primes(1024, &mut rng, &mut |_| {}).unwrap();
        let parameters = GroupParameters::new(N, None).unwrap();
        deal_with_primes(parameters, &primes, &mut rng, &mut |_| {}).unwrap()
    })
}

/// What a scripted gateway does with each request.
#[derive(Clone, Copy, Debug)]
enum Behaviour {
    /// Nothing listens on the port.
    Refused,
    /// Accepts, reads, never answers.
    Silent,
    /// `503` with a JSON error.
    Overloaded,
    /// `200` with a body that is not JSON.
    Garbage,
    /// A well-formed answer whose value was changed after signing.
    Forged,
    /// Executes the request on an empty kv store and signs it like `t + 1` servers would;
    /// for `?encrypt`, decrypts with `t + 1` shares first.
    Honest,
}

/// The bodies a gateway received, in order.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

fn read_request(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
        }
    };
    let head = String::from_utf8_lossy(&buffer[..end]).to_string();
    let target = head.split(' ').nth(1)?.to_owned();
    let length: usize = head
        .lines()
        .find_map(|line| {
            line.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = buffer.split_off(end);
    while body.len() < length {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(read) => body.extend_from_slice(&chunk[..read]),
        }
    }
    Some((target, body))
}

fn respond(stream: &mut TcpStream, status: u16, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

/// The signed answer an honest group gives to `request` as the only request of round 1.
fn honest_answer(request: &[u8]) -> SignedAnswer {
    let (keys, servers) = group();
    let answer = KvService::new().execute(
        &ExecutionContext {
            position: 0,
            round: 1,
            time_ms: 0,
        },
        request,
    );
    let batch = AnswerBatch::new(1, 0, vec![leaf(0, request, &answer)]).unwrap();
    let statement = batch.statement();
    let shares: Vec<_> = servers[2..4]
        .iter()
        .map(|server| server.service.sign(&keys.service, &statement))
        .collect();
    let signature = keys.service.combine(&statement, &shares).unwrap();
    batch
        .signed_answer(0, answer, signature.as_bytes().to_vec())
        .unwrap()
}

fn decrypt(ciphertext: &[u8]) -> Vec<u8> {
    let (keys, servers) = group();
    let ciphertext = Ciphertext::from_bytes(ciphertext).unwrap();
    let instance = scabc_instance().unwrap();
    let label = confidential_label(&instance);
    let mut rng = ChaCha20Rng::from_seed([9; 32]);
    let shares: Vec<_> = servers[..2]
        .iter()
        .map(|server| {
            server
                .encryption
                .decryption_share(&label, &ciphertext, &mut rng)
                .unwrap()
        })
        .collect();
    keys.encryption
        .combine(&label, &ciphertext, &shares)
        .unwrap()
        .value
}

/// Starts a scripted gateway; its address and what it received.
fn gateway(behaviour: Behaviour) -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let received: Received = Arc::default();
    if let Behaviour::Refused = behaviour {
        return (addr, received);
    }
    let log = received.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let log = log.clone();
            thread::spawn(move || {
                let Some((target, body)) = read_request(&mut stream) else {
                    return;
                };
                log.lock().unwrap().push((target.clone(), body.clone()));
                match behaviour {
                    Behaviour::Refused => {}
                    Behaviour::Silent => thread::sleep(Duration::from_secs(5)),
                    Behaviour::Overloaded => respond(
                        &mut stream,
                        503,
                        br#"{"error":"the submission queue is full"}"#,
                    ),
                    Behaviour::Garbage => respond(&mut stream, 200, b"<html>hello</html>"),
                    Behaviour::Forged => {
                        let mut answer = honest_answer(&body);
                        answer.answer = KvAnswer::Ok {
                            found: true,
                            value: b"forged".to_vec(),
                        }
                        .encode();
                        respond(&mut stream, 200, &serde_json::to_vec(&answer).unwrap());
                    }
                    Behaviour::Honest => {
                        let request = if target.ends_with("?encrypt") {
                            decrypt(&body)
                        } else {
                            body
                        };
                        let answer = honest_answer(&request);
                        respond(&mut stream, 200, &serde_json::to_vec(&answer).unwrap());
                    }
                }
            });
        }
    });
    (addr, received)
}

/// A group file whose server `i` is the scripted gateway `behaviours[i - 1]`.
fn group_file(behaviours: &[Behaviour]) -> (GroupFile, Vec<Received>) {
    assert_eq!(behaviours.len(), usize::from(N));
    let (keys, _) = group();
    let mut servers = Vec::new();
    let mut logs = Vec::new();
    for (id, behaviour) in ServerId::all(N).zip(behaviours) {
        let (addr, log) = gateway(*behaviour);
        servers.push(ServerEntry {
            id,
            endpoint: format!("127.0.0.1:{}", 1000 + id.get()),
            gateway: addr,
            link_key: hex_key(id.get()),
        });
        logs.push(log);
    }
    let file = GroupFile::new(servers, keys.clone());
    (file, logs)
}

fn hex_key(seed: u16) -> String {
    let mut key = [0u8; 32];
    key[..2].copy_from_slice(&seed.to_be_bytes());
    key.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn options(first: u16) -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_millis(500),
        first_server: ServerId::new(first),
        ..ClientOptions::default()
    }
}

use Behaviour::*;

#[test]
fn every_kind_of_bad_server_is_skipped_and_the_honest_answer_verifies() {
    let (file, logs) = group_file(&[Refused, Silent, Overloaded, Garbage, Forged, Honest]);
    let client = Client::with_options(file, options(1)).unwrap();
    let outcome = client.put(b"color", b"blue").unwrap();
    assert_eq!(
        outcome.result,
        KvAnswer::Ok {
            found: false,
            value: Vec::new()
        }
    );
    assert_eq!(outcome.submitted.server, ServerId::new(6).unwrap());
    let failures: Vec<_> = outcome
        .submitted
        .failures
        .iter()
        .map(|failure| (failure.server.get(), failure.failure.clone()))
        .collect();
    assert_eq!(failures.len(), 5, "{failures:?}");
    assert!(matches!(failures[0], (1, Failure::Transport(_))));
    assert_eq!(failures[1], (2, Failure::Timeout));
    assert_eq!(
        failures[2],
        (
            3,
            Failure::Status {
                status: 503,
                message: "the submission queue is full".into()
            }
        )
    );
    assert!(matches!(failures[3], (4, Failure::Undecodable(_))));
    assert_eq!(
        failures[4],
        (5, Failure::Unverified(VerifyError::BadSignature))
    );

    // Every server that read the request got the same bytes, and they decode to the put.
    let bodies: Vec<Vec<u8>> = logs
        .iter()
        .flat_map(|log| log.lock().unwrap().clone())
        .map(|(target, body)| {
            assert_eq!(target, "/v1/submit");
            body
        })
        .collect();
    assert_eq!(bodies.len(), 5);
    assert!(bodies.iter().all(|body| *body == bodies[0]));
    assert!(matches!(
        KvRequest::decode(&bodies[0]).unwrap(),
        KvRequest::Put { key, value, .. } if key == b"color" && value == b"blue"
    ));
}

#[test]
fn with_no_verifiable_answer_every_failure_is_listed() {
    let (file, _) = group_file(&[Forged, Overloaded, Refused, Garbage, Forged, Overloaded]);
    let client = Client::with_options(file, options(3)).unwrap();
    let error = client.get(b"color").unwrap_err();
    let ClientError::NoVerifiedAnswer { failures } = &error else {
        panic!("{error}");
    };
    let order: Vec<u16> = failures
        .iter()
        .map(|failure| failure.server.get())
        .collect();
    assert_eq!(
        order,
        [3, 4, 5, 6, 1, 2],
        "starts at the given server, wraps around"
    );
    let text = error.to_string();
    assert_eq!(text.lines().count(), 7, "{text}");
    assert!(text.contains("server 1 at 127.0.0.1:"), "{text}");
    assert!(
        text.contains("HTTP 503: the submission queue is full"),
        "{text}"
    );
    assert!(text.contains("answer rejected"), "{text}");

    // Fewer attempts than servers: only those are made.
    let (file, _) = group_file(&[Overloaded, Overloaded, Honest, Honest, Honest, Honest]);
    let options = ClientOptions {
        attempts: Some(2),
        ..options(1)
    };
    let client = Client::with_options(file, options).unwrap();
    let Err(ClientError::NoVerifiedAnswer { failures }) = client.get(b"x") else {
        panic!("two overloaded servers cannot answer");
    };
    assert_eq!(failures.len(), 2);
}

#[test]
fn each_put_has_a_fresh_nonce_and_an_answer_is_bound_to_its_own_request() {
    let (file, logs) = group_file(&[Honest; 6]);
    let client = Client::with_options(file, options(2)).unwrap();
    client.put(b"k", b"v").unwrap();
    client.put(b"k", b"v").unwrap();
    let bodies: Vec<_> = logs[1]
        .lock()
        .unwrap()
        .iter()
        .map(|(_, b)| b.clone())
        .collect();
    assert_eq!(bodies.len(), 2);
    assert_ne!(
        bodies[0], bodies[1],
        "two puts of one pair are distinct requests"
    );

    // A valid signed answer to another request does not verify for this one.
    let other = KvRequest::Get {
        nonce: [1; NONCE_BYTES],
        key: b"k".to_vec(),
    }
    .encode()
    .unwrap();
    let mine = KvRequest::Get {
        nonce: [2; NONCE_BYTES],
        key: b"k".to_vec(),
    }
    .encode()
    .unwrap();
    let answer = honest_answer(&other);
    assert!(answer.verify(&group().0.service, &other).is_ok());
    assert_eq!(
        answer.verify(&group().0.service, &mine),
        Err(VerifyError::BadSignature)
    );

    // Requests the kv service cannot take are refused before anything is sent.
    let long_key = vec![b'k'; sintra_services::kv::KEY_BYTES_MAX + 1];
    assert!(matches!(
        client.get(&long_key),
        Err(ClientError::InvalidRequest(_))
    ));
}

#[test]
fn confidential_requests_are_encrypted_under_the_group_label_and_answered_for_the_plaintext() {
    let (keys, _) = group();
    let request = KvRequest::Put {
        nonce: [5; NONCE_BYTES],
        key: b"secret".to_vec(),
        value: b"plans".to_vec(),
    }
    .encode()
    .unwrap();
    let ciphertext = encrypt_request(keys, &request, &mut rand::rngs::OsRng).unwrap();
    let instance = scabc_instance().unwrap();
    assert_eq!(instance.as_str(), SCABC_INSTANCE);
    assert!(
        keys.encryption
            .verify_ciphertext(&confidential_label(&instance), &ciphertext)
            .is_ok()
    );
    let abc = InstanceId::root("sintra").unwrap().child("abc").unwrap();
    assert!(
        keys.encryption
            .verify_ciphertext(&confidential_label(&abc), &ciphertext)
            .is_err(),
        "a ciphertext is bound to its instance"
    );
    let bytes = ciphertext.to_bytes();
    assert!(
        !bytes.windows(6).any(|window| window == b"secret"),
        "the key is not in the clear"
    );

    let (file, logs) = group_file(&[Overloaded, Honest, Honest, Honest, Honest, Honest]);
    let options = ClientOptions {
        encrypt: true,
        ..options(1)
    };
    let client = Client::with_options(file, options).unwrap();
    let outcome = client.put(b"secret", b"plans").unwrap();
    assert_eq!(outcome.submitted.server, ServerId::new(2).unwrap());
    let first = logs[0].lock().unwrap()[0].clone();
    let second = logs[1].lock().unwrap()[0].clone();
    assert_eq!(first.0, "/v1/submit?encrypt");
    assert_eq!(first, second, "the retry carries the same ciphertext");
    assert!(Ciphertext::from_bytes(&first.1).is_ok());
}

#[test]
fn a_bad_group_or_options_are_refused() {
    let (mut file, _) = group_file(&[Honest; 6]);
    assert!(matches!(
        Client::with_options(file.clone(), options(7)),
        Err(ClientError::Group(_))
    ));
    let zero = ClientOptions {
        attempts: Some(0),
        ..options(1)
    };
    assert!(Client::with_options(file.clone(), zero).is_err());
    file.servers.pop();
    assert!(matches!(Client::new(file), Err(ClientError::Group(_))));
}

#[test]
fn a_local_directory_state_is_refused_when_older_than_asked() {
    let state = sintra_services::directory::StateStatement {
        round: 7,
        height: 40,
        time_ms: 1_000_000,
        count: 3,
        root: [0; 32],
    };
    let now = 1_000_000 + 5_000;
    assert!(check_freshness(&state, Freshness::default(), now).is_ok());
    let within = Freshness {
        max_age: Some(Duration::from_secs(5)),
        min_height: Some(40),
    };
    assert!(check_freshness(&state, within, now).is_ok());
    let too_old = Freshness {
        max_age: Some(Duration::from_millis(4_999)),
        min_height: None,
    };
    assert!(matches!(
        check_freshness(&state, too_old, now),
        Err(Failure::Rejected(_))
    ));
    let too_low = Freshness {
        max_age: None,
        min_height: Some(41),
    };
    assert!(matches!(
        check_freshness(&state, too_low, now),
        Err(Failure::Rejected(_))
    ));
    // A clock behind the state's time is not an age.
    assert!(check_freshness(&state, within, 0).is_ok());
}
