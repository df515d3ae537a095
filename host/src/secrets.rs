//! API keys: read by the host, attached at the HTTP boundary, never given to the
//! guest, and scrubbed from everything the host prints.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use memchr::memmem::Finder;

/// A key that does not print itself.
#[derive(Clone)]
pub struct Secret {
    value: String,
    /// Its searcher, built once: `memmem::find` built one again for every
    /// header and chunk of every response a [`Redactor`] looked at (1 % of a
    /// row's instructions, callgrind).
    finder: Arc<Finder<'static>>,
}

impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        self.value == other.value
    }
}

impl Eq for Secret {}

impl Secret {
    /// Checks that `value` can travel in an HTTP header and is long enough to
    /// be a key (and to be scrubbed from output without mangling it).
    pub fn new(name: &str, value: String) -> Result<Secret, String> {
        if value.is_empty() {
            return Err(format!("{name} is empty"));
        }
        if value.len() < MIN_KEY_LEN {
            return Err(format!(
                "{name} is shorter than {MIN_KEY_LEN} characters: too short for a key or a token"
            ));
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "{name} has spaces or characters that cannot go in an HTTP header"
            ));
        }
        let finder = Arc::new(Finder::new(value.as_bytes()).into_owned());
        Ok(Secret { value, finder })
    }

    /// The key itself, for the one place that attaches it.
    pub fn expose(&self) -> &str {
        &self.value
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", usage_sync_report::keys::REDACTED)
    }
}

/// The token `serve` callers present: a secret like a key, from the
/// environment or a file (a mounted Kubernetes Secret), never from a flag.
#[derive(Debug, Clone)]
pub struct ServeToken(Secret);

impl ServeToken {
    /// From `USAGE_SYNC_SERVE_TOKEN`, or the file `USAGE_SYNC_SERVE_TOKEN_FILE`
    /// names, or systemd's credential `usage_sync_serve_token` (see
    /// [`from_env_or_file`]). None, or a token too short to be one, is an
    /// error naming the variable.
    pub fn from_env() -> Result<ServeToken, String> {
        use usage_sync_report::keys::{SERVE_TOKEN_ENV, SERVE_TOKEN_FILE_ENV};
        let value = from_env_or_file(SERVE_TOKEN_ENV)?.ok_or_else(|| {
            format!(
                "serve needs a token for its callers: set {SERVE_TOKEN_ENV}, or {SERVE_TOKEN_FILE_ENV} to a file holding it"
            )
        })?;
        Secret::new(SERVE_TOKEN_ENV, value).map(ServeToken)
    }

    /// Whether an `Authorization` header value presents this token, in
    /// constant time.
    pub fn admits(&self, authorization: Option<&[u8]>) -> bool {
        usage_sync_report::keys::bearer_matches(authorization, self.0.expose())
    }
}

/// A secret named `NAME`: from the variable `NAME`, or the file `NAME_FILE`
/// names (a mounted Kubernetes Secret), or systemd's credential of the name in
/// lower case under `$CREDENTIALS_DIRECTORY` (`LoadCredential=`). One trailing
/// newline is trimmed. Both `NAME` and `NAME_FILE`, or a file that cannot be
/// read, is an error; none of the three is `None`.
pub fn from_env_or_file(name: &str) -> Result<Option<String>, String> {
    let file_name = format!("{name}_FILE");
    let text = |value: std::ffi::OsString, what: &str| {
        value
            .into_string()
            .map_err(|_| format!("{what} is not valid UTF-8"))
    };
    let read = |path: &Path, what: &str| {
        let content = read_secret_file(path)
            .map_err(|e| format!("{what}: cannot read {}: {e}", path.display()))?;
        let content = content.strip_suffix('\n').unwrap_or(&content);
        Ok::<_, String>(content.strip_suffix('\r').unwrap_or(content).to_string())
    };
    match (std::env::var_os(name), std::env::var_os(&file_name)) {
        (Some(_), Some(_)) => Err(format!("both {name} and {file_name} are set: set one")),
        (Some(value), None) => text(value, name).map(Some),
        (None, Some(path)) => read(Path::new(&path), &file_name).map(Some),
        (None, None) => {
            let Some(directory) = std::env::var_os("CREDENTIALS_DIRECTORY") else {
                return Ok(None);
            };
            let path = Path::new(&directory).join(name.to_ascii_lowercase());
            match path.exists() {
                true => read(&path, "the systemd credential").map(Some),
                false => Ok(None),
            }
        }
    }
}

/// A key is short (Stripe's run past 100 characters); a file longer than
/// this is not a key file.
pub const MAX_SECRET_FILE_BYTES: u64 = 4096;

/// How long reading a key file may take (a hung network mount).
const SECRET_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A key file's text: a regular file (a FIFO, a device, a socket or a
/// directory is refused before a byte is read, so none can hang the run or
/// fill its memory) of at most [`MAX_SECRET_FILE_BYTES`], read within
/// [`SECRET_READ_TIMEOUT`].
pub fn read_secret_file(path: &Path) -> Result<String, String> {
    use std::io::Read;
    #[cfg(unix)]
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        // Non-blocking: opening a FIFO without a writer returns at once.
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
    };
    #[cfg(not(unix))]
    let file = std::fs::File::open(path);
    let file = file.map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        let kind = kind_of(&meta);
        return Err(format!("it is {kind}, not a regular file holding the key"));
    }
    if meta.len() > MAX_SECRET_FILE_BYTES {
        return Err(format!(
            "it holds {} bytes, more than a key file's {MAX_SECRET_FILE_BYTES}",
            meta.len()
        ));
    }
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let read = file
            .take(MAX_SECRET_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map(|_| text);
        let _ = send.send(read);
    });
    let text = receive
        .recv_timeout(SECRET_READ_TIMEOUT)
        .map_err(|_| format!("no answer within {} s", SECRET_READ_TIMEOUT.as_secs()))?
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(format!(
            "it grew past a key file's {MAX_SECRET_FILE_BYTES} bytes"
        ));
    }
    Ok(text)
}

/// What a file that is not a regular one is, for the error.
fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if meta.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

/// Stripe's keys run past 100 characters and Amberflo's are UUIDs.
pub const MIN_KEY_LEN: usize = 16;

pub use usage_sync_report::keys::{AMBERFLO_ENV, STRIPE_ENV};

/// Stripe's mode: which account data a key reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Real money.
    Live,
    /// Test data.
    Test,
}

/// The two providers' keys.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// Amberflo's key.
    pub amberflo: Secret,
    /// Stripe's key.
    pub stripe: Secret,
}

impl Credentials {
    /// From `AMBERFLO_API_KEY` and `STRIPE_API_KEY`, or their `_FILE`
    /// variants, or systemd credentials (see `from_env_or_file`); never
    /// from flags, which other users can read in the process list.
    pub fn from_env() -> Result<Credentials, String> {
        let read = |name: &str| match from_env_or_file(name)? {
            Some(value) => Secret::new(name, value),
            None => Err(format!("{name} is not set")),
        };
        Ok(Credentials {
            amberflo: read(AMBERFLO_ENV)?,
            stripe: read(STRIPE_ENV)?,
        })
    }

    /// Whether the Stripe key is for live or test mode, from its prefix
    /// (`sk_live_`, `rk_live_`; `sk_test_`, `rk_test_`); None if neither.
    pub fn stripe_mode(&self) -> Option<Mode> {
        let key = self.stripe.expose();
        if key.starts_with("sk_live_") || key.starts_with("rk_live_") {
            Some(Mode::Live)
        } else if key.starts_with("sk_test_") || key.starts_with("rk_test_") {
            Some(Mode::Test)
        } else {
            None
        }
    }

    /// A full live secret key (`sk_live_`) can do anything on the account; a
    /// restricted key limited to meter events and meters is enough.
    pub fn is_full_live_key(&self) -> bool {
        self.stripe.expose().starts_with("sk_live_")
    }

    /// Replaces every occurrence of a key in `text`.
    pub fn redact(&self, text: &str) -> String {
        let mut redactor = Redactor::new(self);
        let mut out = redactor.push(text.as_bytes());
        out.extend(redactor.finish());
        // Keys and their replacement are ASCII: the text stays UTF-8.
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }
}

/// Replaces keys in a byte stream, holding back a key's length less one byte
/// so a key split across chunks is still found.
pub struct Redactor {
    keys: [Arc<Finder<'static>>; 2],
    keep: usize,
    carry: Vec<u8>,
}

const REDACTED: &[u8] = usage_sync_report::keys::REDACTED.as_bytes();

impl Redactor {
    /// A redactor of both providers' keys.
    pub fn new(credentials: &Credentials) -> Redactor {
        let keys = [&credentials.amberflo, &credentials.stripe].map(|k| k.finder.clone());
        let keep = keys.iter().map(|k| k.needle().len()).max().unwrap_or(1) - 1;
        Redactor {
            keys,
            keep,
            carry: Vec::new(),
        }
    }

    /// Whether `data` holds a key.
    pub fn contains_key(&self, data: &[u8]) -> bool {
        self.keys.iter().any(|k| k.find(data).is_some())
    }

    /// What of `chunk` can be passed on now.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut data = std::mem::take(&mut self.carry);
        data.extend_from_slice(chunk);
        for key in &self.keys {
            // A secret is never empty ([`Secret::new`]), which would match
            // everywhere.
            let len = key.needle().len();
            while let Some(at) = key.find(&data).filter(|_| len > 0) {
                data.splice(at..at + len, REDACTED.iter().copied());
            }
        }
        // Keys hold no white space, so none can straddle the last of it:
        // everything up to there can go now (a line need not wait for more).
        let after_space = data
            .iter()
            .rposition(u8::is_ascii_whitespace)
            .map_or(0, |at| at + 1);
        let split = data.len().saturating_sub(self.keep).max(after_space);
        self.carry = data.split_off(split);
        data
    }

    /// The held-back tail, at the end of the stream.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.carry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_that_is_no_regular_file_or_too_big_is_refused_before_reading() {
        let dir = std::env::temp_dir().join(format!("usage-sync-keyfiles-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fine = dir.join("key");
        std::fs::write(&fine, "sk_test_0123456789abcdef\n").unwrap();
        assert_eq!(
            read_secret_file(&fine).unwrap(),
            "sk_test_0123456789abcdef\n"
        );
        let big = dir.join("big");
        std::fs::write(&big, vec![b'k'; 5000]).unwrap();
        assert!(read_secret_file(&big).unwrap_err().contains("5000 bytes"));
        // A FIFO with no writer: refused at once, not waited on.
        let fifo = dir.join("fifo");
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        assert!(read_secret_file(&fifo).unwrap_err().contains("a FIFO"));
        assert!(
            read_secret_file(Path::new("/dev/zero"))
                .unwrap_err()
                .contains("a device")
        );
        assert!(read_secret_file(&dir).unwrap_err().contains("a directory"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn keys_never_print() {
        let creds = Credentials {
            amberflo: Secret::new("A", "amb-canary-000001".into()).unwrap(),
            stripe: Secret::new("S", "sk_test_canary0000".into()).unwrap(),
        };
        assert!(!format!("{creds:?}").contains("canary"));
        assert_eq!(
            creds.redact("x sk_test_canary0000 y amb-canary-000001"),
            "x [redacted] y [redacted]"
        );
        assert!(Secret::new("S", "with space in the key".into()).is_err());
        assert!(Secret::new("S", "sk_short".into()).is_err());
        assert!(Secret::new("S", String::new()).is_err());
    }

    fn redactor() -> Redactor {
        Redactor::new(&Credentials {
            amberflo: Secret::new("A", "amb_key_123456789".into()).unwrap(),
            stripe: Secret::new("S", "sk_test_456789012".into()).unwrap(),
        })
    }

    fn through(chunks: &[&str]) -> String {
        let mut r = redactor();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(r.push(c.as_bytes()));
        }
        out.extend(r.finish());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn keys_are_scrubbed_even_when_split_across_chunks() {
        assert_eq!(through(&["x sk_test_456789012 y"]), "x [redacted] y");
        assert_eq!(
            through(&["x sk_te", "st_45", "6789012 y"]),
            "x [redacted] y"
        );
        assert_eq!(
            through(&["amb_key_12", "3456789amb_key_123456789"]),
            "[redacted][redacted]"
        );
        assert_eq!(through(&["plain ", "text"]), "plain text");
        assert_eq!(through(&[]), "");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(2000),
                ..ProptestConfig::default()
            })]

            #[test]
            fn no_key_survives_any_chunking(
                parts in prop::collection::vec(("[a-z _\\[\\]]{0,12}", 0u8..3), 0..8),
                cuts in prop::collection::vec(1usize..20, 0..10),
            ) {
                let keys = ["amb_key_123456789", "sk_test_456789012"];
                let mut text = String::new();
                let mut expected = String::new();
                for (plain, key) in &parts {
                    text.push_str(plain);
                    expected.push_str(plain);
                    if let Some(k) = keys.get(*key as usize) {
                        text.push_str(k);
                        expected.push_str("[redacted]");
                    }
                }
                let mut r = redactor();
                let mut out = Vec::new();
                let mut rest = text.as_bytes();
                for cut in cuts {
                    let (chunk, tail) = rest.split_at(cut.min(rest.len()));
                    out.extend(r.push(chunk));
                    rest = tail;
                }
                out.extend(r.push(rest));
                out.extend(r.finish());
                prop_assert_eq!(String::from_utf8(out).unwrap(), expected);
            }
        }
    }
}
