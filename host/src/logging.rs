//! Every line the host prints on stderr goes through here, with `tracing`:
//! the human lines of old by default, or one JSON object per line
//! (`--log-format json`) carrying the run id, the command and the event's
//! fields (step, provider, route, status, attempt, duration...). Either way
//! the writer scrubs the keys as everything else printed is scrubbed.

use crate::secrets::Credentials;
use std::fmt;
use std::io::Write;
use std::sync::{Arc, OnceLock};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// How log lines look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// The message alone, for a person.
    Human,
    /// One JSON object per line, for a log pipeline.
    Json,
}

/// The format in use.
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Whether lines are for a person (a terminal may then get a progress bar).
pub fn human() -> bool {
    FORMAT.get().is_none_or(|f| *f == LogFormat::Human)
}

/// The keys to scrub, once they are known.
static KEYS: OnceLock<Arc<Credentials>> = OnceLock::new();

/// From now on, log lines are scrubbed of these keys.
pub fn scrub_keys(credentials: &Arc<Credentials>) {
    let _ = KEYS.set(credentials.clone());
}

/// Installs the logging layer for this process; in JSON every line carries
/// the run's id and the command.
pub fn init(format: LogFormat, command: &'static str) {
    let _ = FORMAT.set(format);
    let builder = tracing_subscriber::fmt()
        .with_writer(ScrubbedStderr)
        .with_max_level(tracing::Level::INFO);
    let id = run_id();
    let installed = match format {
        LogFormat::Human => builder.event_format(Human).try_init(),
        LogFormat::Json => builder
            .event_format(Json {
                run_id: id.clone(),
                command,
            })
            .try_init(),
    };
    // A second init (tests in one process) keeps the first.
    let _ = installed;
}

/// A random id for this process's run, to find its lines in a log store.
fn run_id() -> String {
    use std::hash::{BuildHasher, RandomState};
    let high = RandomState::new().hash_one(std::process::id());
    let low = RandomState::new().hash_one(std::time::SystemTime::now());
    format!("{high:016x}{low:08x}")[..20].to_string()
}

/// The human format: the message alone, as the host always printed it.
struct Human;

impl<S, N> FormatEvent<S, N> for Human
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut message = Message(String::new());
        event.record(&mut message);
        writeln!(writer, "{}", message.0)
    }
}

/// One JSON object per event: its time (Unix seconds), level, target, the
/// run's id and command on every line whatever task logged it, the message
/// and every field of the event.
struct Json {
    run_id: String,
    command: &'static str,
}

impl<S, N> FormatEvent<S, N> for Json
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut fields = Fields(serde_json::Map::new());
        fields.0.insert(
            "time".into(),
            serde_json::json!((time * 1000.0).round() / 1000.0),
        );
        fields
            .0
            .insert("level".into(), event.metadata().level().as_str().into());
        fields
            .0
            .insert("target".into(), event.metadata().target().into());
        fields.0.insert("run_id".into(), self.run_id.clone().into());
        fields.0.insert("command".into(), self.command.into());
        event.record(&mut fields);
        let line = serde_json::Value::Object(fields.0).to_string();
        writeln!(writer, "{line}")
    }
}

/// Every field of an event, as JSON values.
struct Fields(serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

struct Message(String);

impl tracing::field::Visit for Message {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0.push_str(&format!("{value:?}"));
        }
    }
}

/// stderr, each formatted line scrubbed of the keys before it is written.
struct ScrubbedStderr;

impl<'a> MakeWriter<'a> for ScrubbedStderr {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter(Vec::new())
    }
}

/// Collects one formatted event, writes it scrubbed when dropped.
struct LineWriter(Vec<u8>);

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        let text = match KEYS.get() {
            Some(keys) => keys.redact(&text),
            None => text.into_owned(),
        };
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
}
