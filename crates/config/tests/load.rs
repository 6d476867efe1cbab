//! Property: the loaders accept a consistent set of files (resolving paths against the config
//! file's directory, defaulting tunables) and refuse, naming the file, every inconsistency a
//! hand edit or a mix-up could bring: servers out of order or missing, malformed link keys and
//! addresses, duplicate endpoints, a key file of another server, a link secret that does not
//! match the group, unknown fields, and missing files.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sintra_config::{
    ConfigError, GroupFile, OrderingMode, SecretsFile, ServerConfig, ServerEntry, Tunables,
    load_server,
};
use sintra_crypto::ServerId;
use sintra_crypto::dealer::{GroupKeys, GroupParameters, ServerKeys, deal_with_primes};
use sintra_crypto::rsa;

/// A group of 4 around a 1024-bit modulus, dealt once per test binary, as TOML texts: the group
/// file and each server's secrets file.
fn texts() -> &'static (String, Vec<String>) {
    static TEXTS: OnceLock<(String, Vec<String>)> = OnceLock::new();
    TEXTS.get_or_init(|| {
        let mut rng = ChaCha20Rng::from_seed([3; 32]);
        let primes = rsa::generate_primes(1024, &mut rng, &mut |_| {}).unwrap();
        let parameters = GroupParameters::new(4, None).unwrap();
        let (keys, shares): (GroupKeys, Vec<ServerKeys>) =
            deal_with_primes(parameters, &primes, &mut rng, &mut |_| {}).unwrap();
        let mut secrets = Vec::new();
        let mut servers = Vec::new();
        for shares in shares {
            let mut secret = [0u8; 32];
            rng.fill_bytes(&mut secret);
            let file = SecretsFile {
                link_secret: hex::encode(secret),
                shares,
            };
            let id = file.shares.id.get();
            servers.push(ServerEntry {
                id: file.shares.id,
                endpoint: format!("127.0.0.1:{}", 7000 + id),
                gateway: format!("127.0.0.1:{}", 8000 + id),
                link_key: hex::encode(file.link_public_bytes().unwrap()),
            });
            secrets.push(toml::to_string(&file).unwrap());
        }
        let group = toml::to_string(&GroupFile::new(servers, keys)).unwrap();
        (group, secrets)
    })
}

/// Writes the group, server 2's secrets (or `secrets`) and a config for server 2 under `dir`;
/// returns the config's path.
fn write(dir: &Path, group: &str, secrets: Option<&str>, config: &str) -> PathBuf {
    std::fs::write(dir.join("group.toml"), group).unwrap();
    std::fs::create_dir_all(dir.join("server-2")).unwrap();
    let secrets = secrets.unwrap_or(&texts().1[1]);
    std::fs::write(dir.join("server-2/keys.toml"), secrets).unwrap();
    let path = dir.join("server-2/config.toml");
    std::fs::write(&path, config).unwrap();
    path
}

const CONFIG: &str = r#"
id = 2
listen = "127.0.0.1:7002"
gateway_listen = "127.0.0.1:8002"
group = "../group.toml"
keys = "keys.toml"
data_dir = "data"
"#;

fn refused(result: Result<impl std::fmt::Debug, ConfigError>, needle: &str) {
    match result {
        Ok(value) => panic!("accepted ({needle}): {value:?}"),
        Err(error) => {
            let text = error.to_string();
            assert!(
                text.contains(needle),
                "{text:?} does not mention {needle:?}"
            );
        }
    }
}

#[test]
fn a_consistent_server_loads_with_paths_resolved_and_default_tunables() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &texts().0, None, CONFIG);
    let loaded = load_server(&path).unwrap();
    assert_eq!(loaded.config.id, ServerId::new(2).unwrap());
    assert_eq!(loaded.me.endpoint, "127.0.0.1:7002");
    assert_eq!(loaded.me.gateway, "127.0.0.1:8002");
    assert_eq!(
        loaded.config.group,
        dir.path().join("server-2/../group.toml")
    );
    assert_eq!(loaded.config.data_dir, dir.path().join("server-2/data"));
    assert_eq!(loaded.config.tunables, Tunables::default());
    assert_eq!(loaded.config.tunables.checkpoint_rounds, 4);
    assert!(!format!("{:?}", loaded.secrets).contains(&loaded.secrets.link_secret));

    let with_tunables = format!("{CONFIG}\n[tunables]\ncheckpoint_rounds = 9\n");
    let path = write(dir.path(), &texts().0, None, &with_tunables);
    let config = ServerConfig::load(&path).unwrap();
    assert_eq!(config.tunables.checkpoint_rounds, 9);
    assert_eq!(config.tunables.ordering, OrderingMode::Randomized);
    let optimistic = format!("{CONFIG}\n[tunables]\nordering = \"optimistic\"\n");
    let path = write(dir.path(), &texts().0, None, &optimistic);
    assert_eq!(
        ServerConfig::load(&path).unwrap().tunables.ordering,
        OrderingMode::Optimistic
    );
    assert_eq!(
        config.tunables.batch_requests_max,
        Tunables::default().batch_requests_max
    );
}

#[test]
fn inconsistent_group_files_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let group = &texts().0;
    let path = dir.path().join("group.toml");
    let load = |text: &str| {
        std::fs::write(&path, text).unwrap();
        GroupFile::load(&path)
    };
    assert!(load(group).is_ok());
    refused(
        load(&group.replacen("id = 2", "id = 3", 1)),
        "1..=n in order",
    );
    refused(
        load(&group.replacen("127.0.0.1:7003", "127.0.0.1", 1)),
        "endpoint \"127.0.0.1\" is not host:port",
    );
    refused(
        load(&group.replacen("127.0.0.1:8003", "127.0.0.1:0", 1)),
        "gateway",
    );
    refused(
        load(&group.replacen("127.0.0.1:7003", "127.0.0.1:7002", 1)),
        "another server's",
    );
    let first_key = group.split("link_key = \"").nth(1).unwrap();
    let first_key = &first_key[..64];
    refused(
        load(&group.replacen(first_key, &first_key[..62], 1)),
        "link_key is not 64 hex digits",
    );
    refused(
        load(&group.replacen("[[servers]]", "[[servers]]\nextra = 1", 1)),
        "unknown field",
    );
    // Drop the last server entry: the count no longer matches n.
    let last = group.rfind("[[servers]]").unwrap();
    let keys = group.find("[keys]").unwrap();
    let three = format!("{}{}", &group[..last], &group[keys..]);
    refused(load(&three), "lists 3 servers");
    refused(
        GroupFile::load(&dir.path().join("missing.toml")),
        "missing.toml",
    );
}

#[test]
fn a_server_whose_files_disagree_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (group, secrets) = texts();
    // The key file of server 3 in server 2's place.
    let path = write(dir.path(), group, Some(&secrets[2]), CONFIG);
    refused(load_server(&path), "holds the keys of server 3");
    // Another link secret for server 2.
    let other = secrets[1].replacen("link_secret = \"", "link_secret = \"00", 1);
    let other = {
        let start = other.find("link_secret = \"").unwrap() + 15;
        format!("{}{}", &other[..start + 64], &other[start + 66..])
    };
    let path = write(dir.path(), group, Some(&other), CONFIG);
    refused(load_server(&path), "does not match the link_key");
    // A link secret that is not hex.
    let bad = secrets[1].replacen("link_secret = \"", "link_secret = \"zz", 1);
    let path = write(dir.path(), group, Some(&bad), CONFIG);
    refused(load_server(&path), "link_secret is not 64 hex digits");
    // An id outside the group.
    let path = write(dir.path(), group, None, &CONFIG.replace("id = 2", "id = 5"));
    refused(load_server(&path), "not a member of the group");
    // Bad addresses, tunables and unknown fields in the config file.
    let path = write(
        dir.path(),
        group,
        None,
        &CONFIG.replace("127.0.0.1:7002", "localhost"),
    );
    refused(load_server(&path), "config.toml");
    let path = write(
        dir.path(),
        group,
        None,
        &format!("{CONFIG}\n[tunables]\ncheckpoint_rounds = 0\n"),
    );
    refused(load_server(&path), "checkpoint_rounds must be at least 1");
    for (setting, why) in [
        ("patience_ms = 5", "patience_ms must be at least 10"),
        (
            "checkpoint_batches = 300",
            "checkpoint_batches must be between 1 and 256",
        ),
        (
            "batch_interval_ms = 5000",
            "batch_interval_ms must be at most 1000",
        ),
        ("ordering = \"fast\"", "ordering"),
    ] {
        let path = write(
            dir.path(),
            group,
            None,
            &format!("{CONFIG}\n[tunables]\n{setting}\n"),
        );
        refused(load_server(&path), why);
    }
    let path = write(
        dir.path(),
        group,
        None,
        &format!("{CONFIG}\nsurprise = 1\n"),
    );
    refused(load_server(&path), "unknown field");
    let path = write(
        dir.path(),
        group,
        None,
        &CONFIG.replace("keys.toml", "nothing.toml"),
    );
    refused(load_server(&path), "nothing.toml");
}
