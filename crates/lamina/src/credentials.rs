//! The root key pair: from `LAMINA_ACCESS_KEY_ID` / `LAMINA_SECRET_ACCESS_KEY`, else from the
//! data directory, else generated on first start and stored there with mode 0600.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context as _;

pub struct KeyPair {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl KeyPair {
    /// A key for the server's own signatures, stable across restarts and secret as the pair.
    pub fn derive_key(&self, purpose: &[u8]) -> Vec<u8> {
        let mut key = self.secret_access_key.as_bytes().to_vec();
        key.extend_from_slice(b"\0");
        key.extend_from_slice(purpose);
        key
    }
}

const FILE: &str = "credentials";

pub fn load_or_create(data_dir: &Path) -> anyhow::Result<KeyPair> {
    let from_env = (
        std::env::var("LAMINA_ACCESS_KEY_ID"),
        std::env::var("LAMINA_SECRET_ACCESS_KEY"),
    );
    if let (Ok(access_key_id), Ok(secret_access_key)) = from_env
        && !access_key_id.is_empty()
        && !secret_access_key.is_empty()
    {
        return Ok(KeyPair {
            access_key_id,
            secret_access_key,
        });
    }
    let path = data_dir.join(FILE);
    if path.exists() {
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let value = |key: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(key)?.strip_prefix('=').map(str::to_owned))
        };
        let (Some(access_key_id), Some(secret_access_key)) = (
            value("LAMINA_ACCESS_KEY_ID"),
            value("LAMINA_SECRET_ACCESS_KEY"),
        ) else {
            anyhow::bail!(
                "{} is not a credentials file this server wrote",
                path.display()
            );
        };
        tracing::info!(file = %path.display(), access_key_id = %access_key_id, "using stored credentials");
        return Ok(KeyPair {
            access_key_id,
            secret_access_key,
        });
    }
    let pair = KeyPair {
        access_key_id: format!(
            "LKIA{}",
            random_string(16, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
        ),
        secret_access_key: random_string(
            40,
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
        ),
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(
        file,
        "LAMINA_ACCESS_KEY_ID={}\nLAMINA_SECRET_ACCESS_KEY={}",
        pair.access_key_id, pair.secret_access_key
    )?;
    file.sync_all()?;
    eprintln!(
        "Generated a root key pair and stored it in {path}.\nPoint the AWS CLI or an SDK at this \
         server with:\n\n  export AWS_ACCESS_KEY_ID={id} AWS_SECRET_ACCESS_KEY={secret} \
         AWS_DEFAULT_REGION=us-east-1\n",
        path = path.display(),
        id = pair.access_key_id,
        secret = pair.secret_access_key,
    );
    Ok(pair)
}

fn random_string(len: usize, alphabet: &[u8]) -> String {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).expect("the OS provides randomness");
    bytes
        .iter()
        .map(|b| alphabet[usize::from(*b) % alphabet.len()] as char)
        .collect()
}
