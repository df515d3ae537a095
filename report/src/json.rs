//! JSON text: the reader of every provider answer and of the inputs JSON
//! ([`parse`]), and the writer of what a run prints and sends ([`Out`]).
//!
//! Why our own: in the component, serde's derives cost one monomorphized
//! deserializer per struct (about 120 KB of a 690 KB component, measured with
//! twiggy), and the answers are read once, field by field, by code that
//! checks them anyway. This reader builds one tree per answer, borrowing
//! from its text: every value keeps its exact text ([`Json::raw`]), so
//! numbers are read as written (a quantity is never a float) and a part of an
//! answer can be handed on as it came. It is as strict as `serde_json`
//! (RFC 8259: one value, no trailing text, no comments, no control
//! characters or lone surrogates in strings) and stricter in one place that
//! matters for money: an object naming a key twice is refused, where a
//! reader would otherwise keep one of the two values. Nesting deeper than
//! [`MAX_DEPTH`] is refused, as `serde_json` does, so a hostile answer cannot
//! exhaust the stack.
//!
//! What is written is built as an [`Out`] tree and written as `serde_json`
//! writes it, compact or pretty, byte for byte (tested against it): the
//! printed objects are a contract, and `serde_json`'s writers and derives
//! were another 60 KB of the component. The host, which does not count its
//! bytes, turns an [`Out`] into a `serde_json::Value` through `Serialize`.

use crate::prelude::*;
use alloc::borrow::Cow;

/// How deep arrays and objects may nest (`serde_json`'s limit).
pub const MAX_DEPTH: usize = 128;
/// How many values one document may hold. A tree costs 24 to 34 bytes a
/// value in the component (containers allocated to size), so a hostile
/// answer of millions of tiny values under the response cap (8 MiB of
/// `[0,0,...]` is 4 million) would take more memory than the sandbox gives;
/// it is refused by name instead. An honest answer at the cap holds about
/// 560,000 (Amberflo's points, 15 bytes a value).
pub const MAX_VALUES: usize = 1 << 20;
/// A string with escapes is unescaped into an allocation of its own, which
/// counts against [`MAX_VALUES`] as one value more, and one more for each
/// 24 bytes it holds (a value's size): 900,000 strings of `"\u0041"` (8 MB,
/// under the value limit) ran the component out of its 64 MiB.
const OWNED_BYTES_PER_VALUE: usize = 24;
/// How many keys one object may have. Every object either provider sends
/// has a few dozen at most (Stripe caps `metadata` at 50). An object's
/// members take 36 bytes each in the component, and growing one list of
/// 600,000 of them (7 MB of text, under [`MAX_VALUES`]) ran the component
/// out of its 64 MiB: refused by name instead.
pub const MAX_KEYS: usize = 10_000;

/// A JSON value and its exact text.
#[derive(Clone, Debug, PartialEq)]
pub struct Json<'a> {
    raw: &'a str,
    value: Value<'a>,
}

/// What a [`Json`] holds.
#[derive(Clone, Debug, PartialEq)]
pub enum Value<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number: its text is [`Json::raw`].
    Number,
    /// A string, unescaped (borrowed when it had no escapes).
    String(Cow<'a, str>),
    /// An array.
    Array(Vec<Json<'a>>),
    /// An object's members in the order written, each key once.
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

/// Reads one JSON value from `text`; the error says what is wrong and where.
pub fn parse(text: &[u8]) -> Result<Json<'_>, String> {
    let text = core::str::from_utf8(text).map_err(|e| {
        let (line, column) = position(text, e.valid_up_to());
        format!("invalid UTF-8 at line {line} column {column}")
    })?;
    let mut reader = Reader {
        text,
        at: 0,
        depth: 0,
        values: 0,
        items: Vec::new(),
        members: Vec::new(),
    };
    let value = reader.value()?;
    reader.space();
    if reader.at < text.len() {
        return Err(reader.error("trailing characters"));
    }
    Ok(value)
}

impl<'a> Json<'a> {
    /// The value's text exactly as written (without surrounding space).
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// What the value holds.
    pub fn value(&self) -> &Value<'a> {
        &self.value
    }

    /// Whether it is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// What it is, for an error message: `a string`, `the number 5`, ...
    pub fn found(&self) -> String {
        match &self.value {
            Value::Null => "null".into(),
            Value::Bool(b) => format!("the boolean {b}"),
            Value::Number if self.raw.len() <= 40 => format!("the number {}", self.raw),
            Value::Number => "a number".into(),
            Value::String(_) => "a string".into(),
            Value::Array(_) => "an array".into(),
            Value::Object(_) => "an object".into(),
        }
    }

    fn expected(&self, what: &str) -> String {
        format!("expected {what}, found {}", self.found())
    }

    /// Its members, when it is an object.
    pub fn object(&self) -> Result<Object<'_, 'a>, String> {
        match &self.value {
            Value::Object(members) => Ok(Object { members }),
            _ => Err(self.expected("an object")),
        }
    }

    /// Its items, when it is an array.
    pub fn array(&self) -> Result<&[Json<'a>], String> {
        match &self.value {
            Value::Array(items) => Ok(items),
            _ => Err(self.expected("an array")),
        }
    }

    /// The string, when it is one.
    pub fn str(&self) -> Result<&str, String> {
        match &self.value {
            Value::String(s) => Ok(s),
            _ => Err(self.expected("a string")),
        }
    }

    /// The boolean, when it is one.
    pub fn bool(&self) -> Result<bool, String> {
        match self.value {
            Value::Bool(b) => Ok(b),
            _ => Err(self.expected("a boolean")),
        }
    }

    /// The number, when it is a whole number written without a fraction or
    /// an exponent (`1.0` is not one, as for serde) and `T` holds it.
    pub fn integer<T: TryFrom<i64> + core::str::FromStr>(&self) -> Result<T, String> {
        match self.small_integer()? {
            Some(value) => T::try_from(value).map_err(|_| self.out_of_range()),
            // Longer, `T`'s own parse (an `i64` or a `u64` may hold it).
            None => self.raw.parse().map_err(|_| self.out_of_range()),
        }
    }

    /// A whole number's value when it has at most 18 digits: one pass (on
    /// wasm a scan for a fraction or exponent, then `str::parse`, cost about
    /// 1 % of a sync's CPU).
    fn small_integer(&self) -> Result<Option<i64>, String> {
        if !matches!(self.value, Value::Number) {
            return Err(self.expected("a whole number"));
        }
        let (negative, digits) = match self.raw.as_bytes() {
            [b'-', rest @ ..] => (true, rest),
            all => (false, all),
        };
        // Up to 18 digits an `i64` holds any value: no overflow checks.
        if digits.len() > 18 {
            if !digits.iter().all(u8::is_ascii_digit) {
                return Err(self.expected("a whole number"));
            }
            return Ok(None);
        }
        let mut value = 0i64;
        for &b in digits {
            // What else a number holds: `.`, `e`, `E` and the exponent's sign.
            let digit = b.wrapping_sub(b'0');
            if digit > 9 {
                return Err(self.expected("a whole number"));
            }
            value = value * 10 + i64::from(digit);
        }
        Ok(Some(if negative { -value } else { value }))
    }

    #[inline(never)]
    fn out_of_range(&self) -> String {
        format!("the number {} is out of range", self.raw)
    }
}

/// An object's members, read by name.
#[derive(Clone, Copy, Debug)]
pub struct Object<'j, 'a> {
    members: &'j [(Cow<'a, str>, Json<'a>)],
}

impl<'j, 'a> Object<'j, 'a> {
    /// Its members in the order written.
    pub fn members(&self) -> &'j [(Cow<'a, str>, Json<'a>)] {
        self.members
    }

    /// The member `name`; `null` counts as absent, as for an `Option` field.
    pub fn get(&self, name: &str) -> Option<&'j Json<'a>> {
        self.members
            .iter()
            .find(|(key, _)| same(key.as_bytes(), name.as_bytes()))
            .map(|(_, value)| value)
            .filter(|value| !value.is_null())
    }

    /// The member `name`, which must be there and not `null`.
    pub fn required(&self, name: &str) -> Result<&'j Json<'a>, String> {
        self.get(name)
            .ok_or_else(|| format!("missing field `{name}`"))
    }

    /// The member `name` read with `read`, naming it in the error.
    fn member<T>(&self, name: &str, read: ReadMember<'j, 'a, T>) -> Result<T, String> {
        read(self.required(name)?).map_err(|why| named(name, why))
    }

    /// [`Self::member`], when the member is there.
    fn opt_member<T>(&self, name: &str, read: ReadMember<'j, 'a, T>) -> Result<Option<T>, String> {
        self.get(name)
            .map(|v| read(v).map_err(|why| named(name, why)))
            .transpose()
    }

    /// The object member `name`.
    pub fn object(&self, name: &str) -> Result<Object<'j, 'a>, String> {
        self.member(name, Json::object)
    }

    /// The object member `name`, when there.
    pub fn opt_object(&self, name: &str) -> Result<Option<Object<'j, 'a>>, String> {
        self.opt_member(name, Json::object)
    }

    /// The array member `name`.
    pub fn array(&self, name: &str) -> Result<&'j [Json<'a>], String> {
        self.member(name, Json::array)
    }

    /// The array member `name`, when there.
    pub fn opt_array(&self, name: &str) -> Result<Option<&'j [Json<'a>]>, String> {
        self.opt_member(name, Json::array)
    }

    /// The string member `name`.
    pub fn string(&self, name: &str) -> Result<String, String> {
        self.member(name, owned_str)
    }

    /// The string member `name`, when there.
    pub fn opt_string(&self, name: &str) -> Result<Option<String>, String> {
        self.opt_member(name, owned_str)
    }

    /// The whole-number member `name`.
    pub fn integer<T: TryFrom<i64> + core::str::FromStr>(&self, name: &str) -> Result<T, String> {
        self.member(name, Json::integer)
    }

    /// The whole-number member `name`, when there.
    pub fn opt_integer<T: TryFrom<i64> + core::str::FromStr>(
        &self,
        name: &str,
    ) -> Result<Option<T>, String> {
        self.opt_member(name, Json::integer)
    }

    /// The boolean member `name`.
    pub fn bool(&self, name: &str) -> Result<bool, String> {
        self.member(name, Json::bool)
    }

    /// The boolean member `name`, when there.
    pub fn opt_bool(&self, name: &str) -> Result<Option<bool>, String> {
        self.opt_member(name, Json::bool)
    }
}

/// How a member is read: a plain function, so each type read costs the
/// component one copy of [`Object::member`], not one per call.
type ReadMember<'j, 'a, T> = fn(&'j Json<'a>) -> Result<T, String>;

/// Whether two keys are the same, compared eight bytes at a time: on wasm
/// `==` on byte slices is a call to wasi-libc's `memcmp`, a byte at a time,
/// and every field read compares its name with an object's keys (1.5 % of a
/// sync's CPU, `perf`).
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut a, mut b) = (a, b);
    while let (Some((x, rest_a)), Some((y, rest_b))) =
        (a.split_first_chunk::<8>(), b.split_first_chunk::<8>())
    {
        if u64::from_ne_bytes(*x) != u64::from_ne_bytes(*y) {
            return false;
        }
        (a, b) = (rest_a, rest_b);
    }
    a.iter().zip(b).all(|(x, y)| x == y)
}

fn owned_str(value: &Json) -> Result<String, String> {
    value.str().map(str::to_owned)
}

/// `why`, in the member `name`.
pub fn named(name: &str, why: String) -> String {
    format!("`{name}`: {why}")
}

/// What `read` reads inside the member `name`, its error named so.
pub fn within<T>(name: &str, read: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    read().map_err(|why| named(name, why))
}

/// Reads each item of an array with `read`, naming the item in the error
/// (`[3]: ...`).
pub fn items<'j, 'a, T>(
    array: &'j [Json<'a>],
    mut read: impl FnMut(&'j Json<'a>) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    array
        .iter()
        .enumerate()
        .map(|(i, item)| read(item).map_err(|why| item_error(i, why)))
        .collect()
}

/// Out of line: `items` is instantiated for every item type, its message once.
#[inline(never)]
fn item_error(i: usize, why: String) -> String {
    format!("[{i}]: {why}")
}

/// The 1-based line and column of byte `at`.
fn position(text: &[u8], at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = at
        - before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |n| n + 1)
        + 1;
    (line, column)
}

struct Reader<'a> {
    text: &'a str,
    at: usize,
    depth: usize,
    values: usize,
    /// The items of the arrays being read, innermost last: each array is
    /// moved out in one allocation of its size when it closes, where growing
    /// a `Vec` per array and shrinking it to size took two or three.
    items: Vec<Json<'a>>,
    /// The same for the members of the objects being read.
    members: Vec<(Cow<'a, str>, Json<'a>)>,
}

impl<'a> Reader<'a> {
    fn error(&self, what: &str) -> String {
        let (line, column) = position(self.text.as_bytes(), self.at);
        format!("{what} at line {line} column {column}")
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn space(&mut self) {
        /// Eight spaces, as one word.
        const SPACES: u64 = u64::from_ne_bytes([b' '; 8]);
        loop {
            match self.peek() {
                // Indentation (providers answer pretty-printed): a run of
                // spaces skipped by the word, up to its first other byte.
                Some(b' ') => {
                    let rest = &self.text.as_bytes()[self.at..];
                    match rest.first_chunk::<8>() {
                        Some(chunk) => {
                            let other = u64::from_le_bytes(*chunk) ^ SPACES;
                            self.at += (other.trailing_zeros() / 8) as usize;
                        }
                        None => self.at += 1,
                    }
                }
                Some(b'\t' | b'\n' | b'\r') => self.at += 1,
                _ => return,
            }
        }
    }

    /// Counts `n` values against [`MAX_VALUES`].
    fn count(&mut self, n: usize) -> Result<(), String> {
        self.values += n;
        if self.values > MAX_VALUES {
            return Err(self.error(&format!("the document holds more than {MAX_VALUES} values")));
        }
        Ok(())
    }

    fn value(&mut self) -> Result<Json<'a>, String> {
        self.space();
        self.count(1)?;
        let start = self.at;
        let value = match self.peek() {
            None => return Err(self.error("EOF while parsing a value")),
            Some(b'n') => self.word(b"null", Value::Null)?,
            Some(b't') => self.word(b"true", Value::Bool(true))?,
            Some(b'f') => self.word(b"false", Value::Bool(false))?,
            Some(b'"') => Value::String(self.string()?),
            Some(b'-' | b'0'..=b'9') => self.number()?,
            Some(open @ (b'[' | b'{')) => {
                if self.depth == MAX_DEPTH {
                    return Err(self.error("recursion limit exceeded"));
                }
                self.depth += 1;
                self.at += 1;
                let value = if open == b'[' {
                    self.array()?
                } else {
                    self.object()?
                };
                self.depth -= 1;
                value
            }
            Some(_) => return Err(self.error("expected value")),
        };
        Ok(Json {
            raw: &self.text[start..self.at],
            value,
        })
    }

    /// A word of `N` bytes compared as one (`starts_with` with a word passed
    /// in is a `memcmp` call on wasm, and Stripe's objects are full of
    /// `null`s and booleans).
    fn word<const N: usize>(
        &mut self,
        word: &[u8; N],
        value: Value<'a>,
    ) -> Result<Value<'a>, String> {
        if self.text.as_bytes()[self.at..].first_chunk::<N>() == Some(word) {
            self.at += N;
            Ok(value)
        } else {
            Err(self.error("expected value"))
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        self.at - start
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Result<Value<'a>, String> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.at += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(self.error("invalid number"));
                }
            }
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.error("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return Err(self.error("invalid number"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if self.digits() == 0 {
                return Err(self.error("invalid number"));
            }
        }
        Ok(Value::Number)
    }

    /// Moves to the next quote or backslash of a string: what lies between
    /// needs no unescaping.
    fn plain(&mut self) -> Result<u8, String> {
        // Eight bytes at a time while none of them stops the run (a quote, a
        // backslash, a control character): ids, URLs and keys are mostly
        // plain. The tests below are exact for "is there such a byte"; the
        // loop after finds which.
        const ONES: u64 = u64::from_ne_bytes([1; 8]);
        const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
        let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
        let bytes = self.text.as_bytes();
        while let Some(chunk) = bytes.get(self.at..).and_then(<[u8]>::first_chunk::<8>) {
            let x = u64::from_ne_bytes(*chunk);
            let stops = zero(x ^ (ONES * u64::from(b'"')))
                | zero(x ^ (ONES * u64::from(b'\\')))
                | (x.wrapping_sub(ONES * 0x20) & !x & HIGH);
            if stops != 0 {
                break;
            }
            self.at += 8;
        }
        loop {
            match self.peek() {
                None => return Err(self.error("EOF while parsing a string")),
                Some(stop @ (b'"' | b'\\')) => return Ok(stop),
                Some(0..=0x1f) => return Err(self.error("control character in a string")),
                Some(_) => self.at += 1,
            }
        }
    }

    fn string(&mut self) -> Result<Cow<'a, str>, String> {
        self.at += 1; // the opening quote
        let mut plain = self.at;
        // Most strings have no escapes: borrowed.
        if self.plain()? == b'"' {
            self.at += 1;
            return Ok(Cow::Borrowed(&self.text[plain..self.at - 1]));
        }
        let mut out = String::new();
        loop {
            out.push_str(&self.text[plain..self.at]);
            if self.peek() == Some(b'"') {
                self.at += 1;
                // Its own allocation: counted as values of what it holds.
                self.count(out.len() / OWNED_BYTES_PER_VALUE + 1)?;
                return Ok(Cow::Owned(out));
            }
            self.at += 1; // the backslash
            let escaped = match self.peek() {
                Some(b'u') => {
                    self.at += 1;
                    self.unicode()?
                }
                Some(letter) => {
                    let escaped = match letter {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        _ => return Err(self.error("invalid escape")),
                    };
                    self.at += 1;
                    escaped
                }
                None => return Err(self.error("invalid escape")),
            };
            out.push(escaped);
            plain = self.at;
            self.plain()?;
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self
            .text
            .get(self.at..self.at + 4)
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| self.error("invalid escape"))?;
        self.at += 4;
        u32::from_str_radix(digits, 16).map_err(|_| self.error("invalid escape"))
    }

    /// After `\u`: one character, from a surrogate pair when it takes two.
    fn unicode(&mut self) -> Result<char, String> {
        let first = self.hex4()?;
        let code = match first {
            0xD800..=0xDBFF => {
                if !self.text[self.at..].starts_with("\\u") {
                    return Err(self.error("lone leading surrogate in hex escape"));
                }
                self.at += 2;
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(self.error("lone leading surrogate in hex escape"));
                }
                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(self.error("lone trailing surrogate in hex escape")),
            _ => first,
        };
        char::from_u32(code).ok_or_else(|| self.error("invalid escape"))
    }

    fn array(&mut self) -> Result<Value<'a>, String> {
        self.space();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(Value::Array(Vec::new()));
        }
        let base = self.items.len();
        // Past this many items an array grows in an allocation of its own,
        // so a huge one is never held twice (on the stack and copied out).
        const OWN: usize = 1024;
        let mut own = Vec::new();
        loop {
            let item = self.value()?;
            if own.is_empty() {
                self.items.push(item);
                if self.items.len() - base == OWN {
                    own = self.items.split_off(base);
                }
            } else {
                own.push(item);
            }
            self.space();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    // Allocated to size (`split_off` allocates the exact
                    // size): see MAX_VALUES.
                    if own.is_empty() {
                        own = self.items.split_off(base);
                    } else {
                        own.shrink_to_fit();
                    }
                    return Ok(Value::Array(own));
                }
                None => return Err(self.error("EOF while parsing a list")),
                Some(_) => return Err(self.error("expected `,` or `]`")),
            }
        }
    }

    fn object(&mut self) -> Result<Value<'a>, String> {
        self.space();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(Value::Object(Vec::new()));
        }
        let base = self.members.len();
        loop {
            self.space();
            if self.peek() != Some(b'"') {
                return Err(self.error("key must be a string"));
            }
            let key_at = self.at;
            let key = self.string()?;
            self.space();
            if self.peek() != Some(b':') {
                return Err(self.error("expected `:`"));
            }
            self.at += 1;
            let value = self.value()?;
            // Few keys: a scan; many: checked once, sorted, at the end.
            let members = &self.members[base..];
            if members.len() < 16 && members.iter().any(|(k, _)| *k == key) {
                self.at = key_at;
                return Err(self.error(&format!("the key `{key}` appears twice")));
            }
            if members.len() == MAX_KEYS {
                self.at = key_at;
                return Err(self.error(&format!("an object has more than {MAX_KEYS} keys")));
            }
            self.members.push((key, value));
            self.space();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    break;
                }
                None => return Err(self.error("EOF while parsing an object")),
                Some(_) => return Err(self.error("expected `,` or `}`")),
            }
        }
        // Allocated to size (`split_off` allocates the exact size); an
        // object has at most MAX_KEYS.
        let members = self.members.split_off(base);
        if members.len() > 16 {
            // Sorted, a key twice is two neighbours (a B-tree set would cost
            // the component about 5 KB more).
            let mut keys: Vec<&str> = members.iter().map(|(k, _)| k.as_ref()).collect();
            keys.sort_unstable();
            if let Some(twice) = keys.windows(2).find(|w| w[0] == w[1]) {
                return Err(self.error(&format!("the key `{}` appears twice", twice[0])));
            }
        }
        Ok(Value::Object(members))
    }
}

/// JSON to write, in the order built.
#[derive(Clone, Debug, PartialEq)]
pub enum Out {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// A string, escaped when written.
    Str(String),
    /// JSON text written as it is: the caller has checked it.
    Raw(String),
    /// An array.
    Array(Vec<Out>),
    /// An object's members, written in this order.
    Object(Vec<(Cow<'static, str>, Out)>),
}

impl Out {
    /// An object with no members yet.
    pub fn object() -> Out {
        Out::Object(Vec::new())
    }

    /// This object with the member `key` added after the others.
    pub fn with(self, key: impl Into<Cow<'static, str>>, value: impl Into<Out>) -> Out {
        self.with_out(key.into(), value.into())
    }

    fn with_out(mut self, key: Cow<'static, str>, value: Out) -> Out {
        if let Out::Object(members) = &mut self {
            members.push((key, value));
        }
        self
    }

    /// This object with `key` added when `value` is given (a skipped field).
    pub fn with_some<T: Into<Out>>(self, key: &'static str, value: Option<T>) -> Out {
        match value {
            Some(value) => self.with_out(Cow::Borrowed(key), value.into()),
            None => self,
        }
    }

    /// This value with every object's keys sorted, and a key given twice
    /// kept once with its last value: as a `serde_json::Value` holds it.
    pub fn sorted(self) -> Out {
        match self {
            Out::Array(items) => Out::Array(items.into_iter().map(Out::sorted).collect()),
            Out::Object(members) => {
                let mut sorted: Vec<(Cow<'static, str>, Out)> = Vec::new();
                for (key, value) in members {
                    let value = value.sorted();
                    match sorted.binary_search_by(|(k, _)| k.as_ref().cmp(&key)) {
                        Ok(at) => sorted[at].1 = value,
                        Err(at) => sorted.insert(at, (key, value)),
                    }
                }
                Out::Object(sorted)
            }
            other => other,
        }
    }

    /// The text with no space, as `serde_json::to_string` writes it.
    pub fn compact(&self) -> String {
        let mut text = String::new();
        self.write(&mut text, None);
        text
    }

    /// The text indented by two spaces, as `serde_json::to_string_pretty`
    /// writes it.
    pub fn pretty(&self) -> String {
        let mut text = String::new();
        self.write(&mut text, Some(0));
        text
    }

    /// Writes the value; `indent` is the depth when pretty.
    fn write(&self, text: &mut String, indent: Option<usize>) {
        let inner = indent.map(|depth| depth + 1);
        let newline = |text: &mut String, depth: Option<usize>| {
            if let Some(depth) = depth {
                text.push('\n');
                text.extend(core::iter::repeat_n("  ", depth));
            }
        };
        match self {
            Out::Null => text.push_str("null"),
            Out::Bool(b) => text.push_str(if *b { "true" } else { "false" }),
            Out::Int(n) => text.push_str(&n.to_string()),
            Out::Str(s) => escape(s, text),
            Out::Raw(raw) => text.push_str(raw),
            Out::Array(items) if items.is_empty() => text.push_str("[]"),
            Out::Array(items) => {
                text.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        text.push(',');
                    }
                    newline(text, inner);
                    item.write(text, inner);
                }
                newline(text, indent);
                text.push(']');
            }
            Out::Object(members) if members.is_empty() => text.push_str("{}"),
            Out::Object(members) => {
                text.push('{');
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        text.push(',');
                    }
                    newline(text, inner);
                    escape(key, text);
                    text.push_str(if indent.is_some() { ": " } else { ":" });
                    value.write(text, inner);
                }
                newline(text, indent);
                text.push('}');
            }
        }
    }
}

/// `s` as a JSON string: quotes, backslashes and control characters escaped,
/// as `serde_json` escapes them (nothing else).
fn escape(s: &str, text: &mut String) {
    text.push('"');
    let mut plain = 0;
    for (at, byte) in s.bytes().enumerate() {
        let escaped = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        text.push_str(&s[plain..at]);
        plain = at + 1;
        if escaped.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            text.push_str("\\u00");
            text.push(HEX[usize::from(byte >> 4)] as char);
            text.push(HEX[usize::from(byte & 0xf)] as char);
        } else {
            text.push_str(escaped);
        }
    }
    text.push_str(&s[plain..]);
    text.push('"');
}

impl From<&str> for Out {
    fn from(s: &str) -> Out {
        Out::Str(s.to_owned())
    }
}

impl From<String> for Out {
    fn from(s: String) -> Out {
        Out::Str(s)
    }
}

impl From<&String> for Out {
    fn from(s: &String) -> Out {
        Out::Str(s.clone())
    }
}

impl From<bool> for Out {
    fn from(b: bool) -> Out {
        Out::Bool(b)
    }
}

impl From<i64> for Out {
    fn from(n: i64) -> Out {
        Out::Int(n)
    }
}

impl From<u32> for Out {
    fn from(n: u32) -> Out {
        Out::Int(n.into())
    }
}

impl From<u16> for Out {
    fn from(n: u16) -> Out {
        Out::Int(n.into())
    }
}

impl From<usize> for Out {
    fn from(n: usize) -> Out {
        Out::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

impl<T: Into<Out>> From<Option<T>> for Out {
    fn from(value: Option<T>) -> Out {
        value.map_or(Out::Null, Into::into)
    }
}

impl<T: Into<Out>> From<Vec<T>> for Out {
    fn from(items: Vec<T>) -> Out {
        Out::Array(items.into_iter().map(Into::into).collect())
    }
}

/// For the host: an [`Out`] inside serde's data, or as a `serde_json::Value`.
#[cfg(feature = "serde")]
impl serde::Serialize for Out {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeMap, SerializeSeq};
        match self {
            Out::Null => serializer.serialize_unit(),
            Out::Bool(b) => serializer.serialize_bool(*b),
            Out::Int(n) => serializer.serialize_i64(*n),
            Out::Str(s) => serializer.serialize_str(s),
            Out::Raw(raw) => serde_json::value::RawValue::from_string(raw.clone())
                .map_err(S::Error::custom)?
                .serialize(serializer),
            Out::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Out::Object(members) => {
                let mut map = serializer.serialize_map(Some(members.len()))?;
                for (key, value) in members {
                    map.serialize_entry(key.as_ref(), value)?;
                }
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text.as_bytes()).unwrap_err()
    }

    #[test]
    fn a_string_stops_at_every_place_a_stop_can_be() {
        // A quote, a backslash escape or a control character at every place
        // of strings across two words, beside bytes of several-byte characters.
        for len in 0usize..20 {
            for at in 0..=len {
                for stop in ["\\\"", "\\n", "\n", "\u{1f}", "é", "€"] {
                    let mut inner: String = (0..len).map(|i| (b'a' + i as u8) as char).collect();
                    inner.insert_str(at, stop);
                    let text = format!("[\"{inner}\", \"x\"]");
                    let ours = parse(text.as_bytes());
                    let theirs = serde_json::from_str::<serde_json::Value>(&text);
                    match (ours, theirs) {
                        (Ok(json), Ok(theirs)) => assert_eq!(
                            json.array().unwrap()[0].str().unwrap(),
                            theirs[0].as_str().unwrap(),
                            "{text:?}"
                        ),
                        (Err(_), Err(_)) => {}
                        (ours, theirs) => panic!("{text:?}: {ours:?} / {theirs:?}"),
                    }
                }
            }
        }
    }

    #[test]
    fn space_of_any_length_is_skipped_to_the_byte() {
        // Runs of spaces across two words, between and around values, at the
        // very end of the text, and mixed with the other three.
        for n in 0usize..20 {
            let run = " ".repeat(n);
            let text = format!("{run}[{run}1{run},\n{run}\"a\"\t{run}]{run}");
            let json = parse(text.as_bytes()).unwrap();
            assert_eq!(json.raw(), format!("[{run}1{run},\n{run}\"a\"\t{run}]"));
            let items = json.array().unwrap();
            assert_eq!((items[0].raw(), items[1].str().unwrap()), ("1", "a"));
            assert!(parse(format!("[1{run}x]").as_bytes()).is_err());
        }
    }

    #[test]
    fn keys_compare_as_equal_bytes_do() {
        // Every length across two words, a difference at every place.
        for len in 0usize..20 {
            let key: Vec<u8> = (0..len).map(|i| b'a' + i as u8).collect();
            assert!(same(&key, &key.clone()), "{len}");
            if len > 0 {
                assert!(!same(&key, &key[..len - 1]), "{len}");
            }
            for at in 0..len {
                let mut other = key.clone();
                other[at] ^= 0x20;
                assert!(!same(&key, &other), "{len} at {at}");
            }
        }
        let json = parse(br#"{"secondsSinceEpochUtc": 1, "secondsSinceEpochUtC": 2}"#).unwrap();
        let object = json.object().unwrap();
        assert_eq!(object.get("secondsSinceEpochUtC").unwrap().raw(), "2");
        assert!(object.get("secondsSinceEpochUt").is_none());
    }

    #[test]
    fn values_keep_their_text() {
        let json = parse(br#" {"a": [1.50, -0.0e+3, "x\"y", true, null], "b": {}} "#).unwrap();
        assert_eq!(
            json.raw(),
            r#"{"a": [1.50, -0.0e+3, "x\"y", true, null], "b": {}}"#
        );
        let top = json.object().unwrap();
        let a = top.required("a").unwrap().array().unwrap();
        let raws: Vec<&str> = a.iter().map(Json::raw).collect();
        assert_eq!(raws, ["1.50", "-0.0e+3", r#""x\"y""#, "true", "null"]);
        assert_eq!(a[2].str().unwrap(), "x\"y");
        assert!(top.get("b").unwrap().object().unwrap().members().is_empty());
    }

    #[test]
    fn strings_are_unescaped_as_json_says() {
        let json = parse(br#""a\u00e9\ud83d\ude00\/\b\f\n\r\t\\""#).unwrap();
        assert_eq!(json.str().unwrap(), "a\u{e9}\u{1F600}/\u{8}\u{c}\n\r\t\\");
        assert!(matches!(
            parse(br#""plain""#).unwrap().value(),
            Value::String(Cow::Borrowed("plain"))
        ));
    }

    #[test]
    fn what_json_refuses_is_refused_with_where() {
        for (text, why) in [
            ("", "EOF while parsing a value at line 1 column 1"),
            ("{\"a\":1,}", "key must be a string at line 1 column 8"),
            ("[1,]", "expected value at line 1 column 4"),
            ("[1 2]", "expected `,` or `]` at line 1 column 4"),
            ("01", "invalid number at line 1 column 2"),
            ("1.", "invalid number"),
            ("-", "invalid number"),
            ("1e", "invalid number"),
            ("+1", "expected value"),
            ("NaN", "expected value"),
            ("nul", "expected value"),
            ("nulL", "expected value"),
            ("tru", "expected value"),
            ("[fals]", "expected value"),
            ("[true,fasle]", "expected value at line 1 column 7"),
            ("nullx", "trailing characters at line 1 column 5"),
            ("{\"a\":1}\n x", "trailing characters at line 2 column 2"),
            ("\"a\u{1}\"", "control character in a string"),
            ("\"\\x\"", "invalid escape"),
            ("\"\\u12\"", "invalid escape"),
            ("\"\\ud800\"", "lone leading surrogate"),
            ("\"\\udc00\"", "lone trailing surrogate"),
            ("\"abc", "EOF while parsing a string"),
            ("[1", "EOF while parsing a list"),
            ("{\"a\" 1}", "expected `:`"),
            ("// no\n1", "expected value"),
            ("\u{feff}1", "expected value"),
        ] {
            let got = err(text);
            assert!(got.contains(why), "{text:?}: {got}");
        }
        assert!(parse(b"\"\xff\"").unwrap_err().contains("invalid UTF-8"));
    }

    #[test]
    fn a_key_given_twice_is_refused_in_small_and_large_objects() {
        assert!(err(r#"{"value":1,"value":2}"#).contains("the key `value` appears twice"));
        let many: Vec<String> = (0..40).map(|i| format!("\"k{}\":{i}", i % 39)).collect();
        let got = err(&format!("{{{}}}", many.join(",")));
        assert!(got.contains("the key `k0` appears twice"), "{got}");
        let distinct: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        assert!(parse(format!("{{{}}}", distinct.join(",")).as_bytes()).is_ok());
    }

    #[test]
    fn an_escaped_string_counts_as_the_values_its_allocation_costs() {
        let strings = |item: &str, n: usize| format!("[{}]", vec![item; n].join(","));
        // Borrowed, one value each: under the limit.
        assert!(parse(strings(r#""A""#, 600_000).as_bytes()).is_ok());
        // Unescaped into allocations of their own: two values each.
        let got = err(&strings(r#""\u0041""#, 600_000));
        assert!(got.contains("more than 1048576 values"), "{got}");
        // A long one counts a value for each 24 bytes it holds.
        let long = format!(r#""\n{}""#, "x".repeat(240));
        assert!(parse(strings(&long, 80_000).as_bytes()).is_ok());
        assert!(err(&strings(&long, 90_000)).contains("more than 1048576 values"));
    }

    #[test]
    fn an_object_of_more_keys_than_the_limit_is_refused_by_name() {
        let keys = |n: usize| {
            let members: Vec<String> = (0..n).map(|i| format!("\"k{i}\":0")).collect();
            format!("{{{}}}", members.join(","))
        };
        assert!(parse(keys(MAX_KEYS).as_bytes()).is_ok());
        let got = err(&keys(MAX_KEYS + 1));
        assert!(got.contains("an object has more than 10000 keys"), "{got}");
    }

    #[test]
    fn nesting_stops_at_the_limit_without_exhausting_the_stack() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(ok.as_bytes()).is_ok());
        let deep = "[".repeat(100_000);
        assert!(err(&deep).contains("recursion limit exceeded"));
    }

    #[test]
    fn whole_numbers_are_read_exactly_and_only_when_whole() {
        let read = |t: &str| parse(t.as_bytes()).unwrap().integer::<i64>();
        assert_eq!(read("1732406400"), Ok(1_732_406_400));
        assert_eq!(read("-5"), Ok(-5));
        assert_eq!(
            read("1.0").unwrap_err(),
            "expected a whole number, found the number 1.0"
        );
        assert!(read("1e3").is_err());
        assert_eq!(
            read("9223372036854775808").unwrap_err(),
            "the number 9223372036854775808 is out of range"
        );
        assert!(parse(b"-1").unwrap().integer::<u32>().is_err());
        assert_eq!(read("-9223372036854775808"), Ok(i64::MIN));
        assert_eq!(read("9223372036854775807"), Ok(i64::MAX));
        assert_eq!(read("-0"), Ok(0));
        assert!(read("-9223372036854775809").is_err());
        assert!(read("1E3").is_err() && read("1e-3").is_err() && read("10.5").is_err());
        let big = parse(b"18446744073709551615").unwrap().integer::<u64>();
        assert_eq!(big, Ok(u64::MAX));
        assert!(
            parse(b"18446744073709551616")
                .unwrap()
                .integer::<u64>()
                .is_err()
        );
        assert!(parse(b"256").unwrap().integer::<u8>().is_err());
        assert_eq!(
            read("\"5\"").unwrap_err(),
            "expected a whole number, found a string"
        );
    }

    #[test]
    fn fields_are_named_in_errors_and_null_is_absent() {
        let json = parse(br#"{"a":null,"b":"x","n":[{"t":"1"}]}"#).unwrap();
        let o = json.object().unwrap();
        assert_eq!(o.opt_string("a"), Ok(None));
        assert_eq!(o.string("a").unwrap_err(), "missing field `a`");
        assert_eq!(
            o.integer::<i64>("b").unwrap_err(),
            "`b`: expected a whole number, found a string"
        );
        let got = items(o.array("n").unwrap(), |item| {
            item.object()?.integer::<i64>("t")
        });
        assert_eq!(
            got.unwrap_err(),
            "[0]: `t`: expected a whole number, found a string"
        );
        assert_eq!(
            o.object("b").unwrap_err(),
            "`b`: expected an object, found a string"
        );
    }
}

/// The reader against `serde_json` on generated documents and their
/// mutations: the same values, and the same verdict except where this reader
/// is stricter on purpose (a key given twice).
#[cfg(test)]
mod against_serde_json {
    use super::*;
    use proptest::prelude::*;

    fn to_serde(json: &Json) -> serde_json::Value {
        match json.value() {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => (*b).into(),
            Value::Number => serde_json::from_str(json.raw()).unwrap(),
            Value::String(s) => s.as_ref().into(),
            Value::Array(items) => items.iter().map(to_serde).collect(),
            Value::Object(members) => members
                .iter()
                .map(|(k, v)| (k.to_string(), to_serde(v)))
                .collect::<serde_json::Map<_, _>>()
                .into(),
        }
    }

    /// Containers of thousands of values (which keep the reader's stack's
    /// allocation) beside, inside and after small ones: read as written.
    #[test]
    fn big_containers_anywhere_are_read_whole() {
        let many = |n: usize| (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        let keys = |n: usize| {
            (0..n)
                .map(|i| format!(r#""k{i}":[{i}]"#))
                .collect::<Vec<_>>()
                .join(",")
        };
        for text in [
            format!("[{}]", many(5000)),
            format!("[[1,2],[{}],[3]]", many(3000)),
            format!(r#"[[{}],{{"a":[{}]}},4]"#, many(1500), many(1024)),
            format!(r#"{{"x":1,"y":[{}],"z":{{{}}}}}"#, many(2048), keys(1100)),
            format!(r#"[{{{}}},{{"b":{{{}}}}}]"#, keys(1024), keys(2000)),
        ] {
            let ours = to_serde(&parse(text.as_bytes()).unwrap());
            let theirs: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(ours, theirs, "{}", &text[..40]);
        }
    }

    fn document() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(Into::into),
            any::<i64>().prop_map(Into::into),
            any::<u64>().prop_map(Into::into),
            (-1e12f64..1e12).prop_map(Into::into),
            any::<String>().prop_map(Into::into),
            "[a-z\"\\\\/\u{0}-\u{1f}\u{7f}-\u{10ffff}]{0,8}".prop_map(Into::into),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Into::into),
                prop::collection::btree_map("[a-z]{0,3}", inner, 0..8)
                    .prop_map(|m| m.into_iter().collect::<serde_json::Map<_, _>>().into()),
            ]
        })
    }

    fn to_out(value: &serde_json::Value) -> Out {
        match value {
            serde_json::Value::Null => Out::Null,
            serde_json::Value::Bool(b) => Out::Bool(*b),
            serde_json::Value::Number(n) => n.as_i64().map_or(Out::Raw(n.to_string()), Out::Int),
            serde_json::Value::String(s) => Out::Str(s.clone()),
            serde_json::Value::Array(items) => Out::Array(items.iter().map(to_out).collect()),
            serde_json::Value::Object(members) => Out::Object(
                members
                    .iter()
                    .map(|(k, v)| (Cow::Owned(k.clone()), to_out(v)))
                    .collect(),
            ),
        }
    }

    proptest! {
        #[test]
        fn writes_what_serde_json_writes(doc in document()) {
            let out = to_out(&doc);
            prop_assert_eq!(out.compact(), serde_json::to_string(&doc).unwrap());
            prop_assert_eq!(out.pretty(), serde_json::to_string_pretty(&doc).unwrap());
            // And the host's way round, through Serialize (a number written
            // as text is read back as serde_json reads its own text).
            let reread: serde_json::Value =
                serde_json::from_str(&serde_json::to_string(&doc).unwrap()).unwrap();
            prop_assert_eq!(serde_json::to_value(&out).unwrap(), reread);
        }

        #[test]
        fn sorted_is_how_a_serde_json_value_holds_an_object(
            members in prop::collection::vec(("[a-cA-C]{0,2}", any::<i64>()), 0..12),
        ) {
            let out = Out::Object(
                members.iter().map(|(k, v)| (Cow::Owned(k.clone()), Out::Int(*v))).collect(),
            );
            let value: serde_json::Value = serde_json::from_str(&out.compact()).unwrap();
            prop_assert_eq!(out.sorted().pretty(), serde_json::to_string_pretty(&value).unwrap());
        }

        #[test]
        fn reads_what_serde_json_writes(doc in document(), pretty in any::<bool>()) {
            let text = if pretty {
                serde_json::to_string_pretty(&doc).unwrap()
            } else {
                serde_json::to_string(&doc).unwrap()
            };
            let json = parse(text.as_bytes()).unwrap();
            prop_assert_eq!(json.raw(), text.as_str());
            // serde_json's own reading of the text: its float parsing is not
            // exact, and this compares readers, not float parsers.
            let theirs: serde_json::Value = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(to_serde(&json), theirs);
        }

        #[test]
        fn accepts_and_refuses_as_serde_json_does(
            doc in document(),
            cut in any::<prop::sample::Index>(),
            byte in prop_oneof![
                Just(b'"'), Just(b'\\'), Just(b','), Just(b'{'), Just(b']'), Just(b'-'),
                Just(b'.'), Just(b'e'), Just(b'0'), Just(b' '), Just(b'u'), any::<u8>()
            ],
            replace in any::<bool>(),
        ) {
            let mut text = serde_json::to_vec(&doc).unwrap();
            let at = cut.index(text.len() + 1);
            if replace && at < text.len() {
                text[at] = byte;
            } else {
                text.insert(at, byte);
            }
            let ours = parse(&text);
            let theirs = serde_json::from_slice::<serde_json::Value>(&text);
            match (&ours, &theirs) {
                (Ok(_), Ok(_)) | (Err(_), Err(_)) => {}
                (Err(why), Ok(_)) => prop_assert!(why.contains("appears twice"), "{}", why),
                // A number is kept as text here, never made a float.
                (Ok(_), Err(e)) => prop_assert!(
                    e.to_string().contains("number out of range"),
                    "serde_json refused: {}", e
                ),
            }
        }
    }
}
