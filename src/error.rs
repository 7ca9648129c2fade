//! Error kinds of an exchange, shaped after what callers of the JavaScript
//! service read from a rejection (`retryable`, `oboFailureReason`, `status`,
//! `code`) plus the OAuth error body Entra sends, so that a failing set-up can
//! be diagnosed from the error alone. Nothing here ever holds a secret: texts
//! that come from outside pass through [`redact`] before they are stored.

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

use base64::Engine as _;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Why an exchange failed, as LibreChat's callers see it in `oboFailureReason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureReason {
    /// The provider refused, failed or could not be reached.
    ExchangeFailed,
    /// The provider answered 2xx without an `access_token`.
    EmptyExchangeResponse,
    /// No usable OpenID configuration (missing, invalid, or discovery failed).
    ConfigUnavailable,
    /// A call's argument the configuration cannot take (a token-exchange
    /// `audience` for a jwt-bearer client); `code` names the option.
    InvalidOption,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::ExchangeFailed => "exchange_failed",
            FailureReason::EmptyExchangeResponse => "empty_exchange_response",
            FailureReason::ConfigUnavailable => "config_unavailable",
            FailureReason::InvalidOption => "invalid_option",
        }
    }
}

/// The fields of an OAuth 2.0 error response (RFC 6749 §5.2) with Entra's extras.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OAuthErrorBody {
    pub error: String,
    pub error_description: Option<String>,
    pub error_codes: Option<Vec<i64>>,
    pub correlation_id: Option<String>,
    pub trace_id: Option<String>,
    pub timestamp: Option<String>,
    pub suberror: Option<String>,
    pub claims: Option<String>,
}

/// A failed exchange. Cheap to share between the callers of one flight.
#[derive(Clone, Debug, PartialEq)]
pub struct ExchangeError {
    pub message: String,
    pub reason: FailureReason,
    pub retryable: bool,
    /// HTTP status, when the provider answered.
    pub status: Option<u16>,
    /// `ETIMEDOUT`, `ECONNRESET`, … for transport failures; the OAuth `error` otherwise.
    pub code: Option<String>,
    /// Boxed: it is rare, and every `Result` carrying this error stays small.
    pub oauth: Option<Box<OAuthErrorBody>>,
    /// How long the provider asked us to wait (`Retry-After`).
    pub retry_after: Option<std::time::Duration>,
    /// True when this rejection came from a remembered throttle, without a request.
    pub throttled: bool,
}

impl ExchangeError {
    pub fn new(reason: FailureReason, message: impl Into<String>) -> Self {
        ExchangeError {
            message: message.into(),
            reason,
            retryable: false,
            status: None,
            code: None,
            oauth: None,
            retry_after: None,
            throttled: false,
        }
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(FailureReason::ExchangeFailed, message)
    }

    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    pub fn retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// The message Entra users know: `invalid_grant: AADSTS50013: …`.
    pub fn from_oauth(status: u16, body: OAuthErrorBody) -> Self {
        let message = match &body.error_description {
            Some(description) if !description.is_empty() => format!("{}: {}", body.error, description),
            _ => body.error.clone(),
        };
        ExchangeError {
            code: Some(body.error.clone()),
            oauth: Some(Box::new(body)),
            ..ExchangeError::failed(message).with_status(status)
        }
    }

    /// Removes every occurrence of each secret, in any of its forms, from every text of the error.
    pub fn redacted(mut self, secrets: &Secrets<'_>) -> Self {
        self.message = redact(&self.message, secrets);
        if let Some(oauth) = self.oauth.as_mut() {
            for text in [
                Some(&mut oauth.error),
                oauth.error_description.as_mut(),
                oauth.correlation_id.as_mut(),
                oauth.trace_id.as_mut(),
                oauth.timestamp.as_mut(),
                oauth.suberror.as_mut(),
                oauth.claims.as_mut(),
            ]
            .into_iter()
            .flatten()
            {
                *text = redact(text, secrets);
            }
        }
        if let Some(code) = self.code.as_mut() {
            *code = redact(code, secrets);
        }
        self
    }
}

impl ExchangeError {
    /// `Retry-After` in whole seconds, rounded up, as callers read it.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after.map(|wait| wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
    }
}

impl fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ExchangeError {}

/// Secrets shorter than this are not looked for: they would match ordinary words.
pub const MIN_SECRET_CHARS: usize = 4;

const REDACTED: &str = "[redacted]";

/// `application/x-www-form-urlencoded` as the request body is written (space aside).
const FORM: &AsciiSet = &NON_ALPHANUMERIC.remove(b'*').remove(b'-').remove(b'.').remove(b'_');
/// RFC 3986: everything but the unreserved characters.
const RFC3986: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
/// JavaScript's `encodeURIComponent`.
const URI_COMPONENT: &AsciiSet = &RFC3986.remove(b'!').remove(b'*').remove(b'\'').remove(b'(').remove(b')');

enum Secret<'a> {
    Text(Cow<'a, str>),
    /// `Authorization: Basic` credentials, whose header value hides both parts.
    Basic {
        user: Cow<'a, str>,
        password: Cow<'a, str>,
    },
}

/// The secrets of one exchange. A provider or a proxy may echo what it
/// received, so each secret is looked for as written and in every encoding
/// the request may have carried it in: form-urlencoded (`~` as `%7E`, space
/// as `+`), percent-encoded (upper or lower case hex), and inside the base64
/// of a Basic authorization. The forms are worked out at the first redaction:
/// an exchange that succeeds pays nothing for them.
#[derive(Default)]
pub struct Secrets<'a> {
    secrets: Vec<Secret<'a>>,
    forms: OnceLock<Vec<String>>,
}

impl<'a> Secrets<'a> {
    pub fn push(&mut self, secret: &'a str) {
        self.push_text(Cow::Borrowed(secret));
    }

    pub fn push_text(&mut self, secret: Cow<'a, str>) {
        self.secrets.push(Secret::Text(secret));
        self.forms = OnceLock::new();
    }

    /// A user and password sent as `Authorization: Basic` (or `Proxy-Authorization`):
    /// the password in its own forms, and the header value both as RFC 6749
    /// §2.3.1 writes it (each part form-urlencoded) and as plain `user:password`.
    pub fn push_basic(&mut self, user: Cow<'a, str>, password: Cow<'a, str>) {
        self.secrets.push(Secret::Text(password.clone()));
        self.secrets.push(Secret::Basic { user, password });
        self.forms = OnceLock::new();
    }

    /// A password as it appears in a URL (percent-encoded), and decoded, as
    /// it is sent in `Proxy-Authorization` with `user` (also decoded).
    pub fn push_url_credentials(&mut self, user: &'a str, password: &'a str) {
        self.push(password);
        let decode = |text: &'a str| percent_decode_str(text).decode_utf8_lossy();
        self.push_basic(decode(user), decode(password));
    }

    /// Every text to hide, longest first, none shorter than [`MIN_SECRET_CHARS`].
    fn forms(&self) -> &[String] {
        self.forms.get_or_init(|| {
            let mut forms = Vec::new();
            for secret in &self.secrets {
                match secret {
                    Secret::Text(text) => add_encoded_forms(&mut forms, text),
                    Secret::Basic { user, password } => {
                        let base64 = |pair: String| base64::engine::general_purpose::STANDARD.encode(pair);
                        let form =
                            |text: &str| url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
                        add_encoded_forms(&mut forms, &base64(format!("{}:{}", form(user), form(password))));
                        add_encoded_forms(&mut forms, &base64(format!("{user}:{password}")));
                    }
                }
            }
            forms.retain(|form| form.chars().count() >= MIN_SECRET_CHARS);
            forms.sort_unstable_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
            forms.dedup();
            forms
        })
    }
}

/// `secret` as written, form-urlencoded, percent-encoded the ways clients do
/// it, each with upper and lower case hex.
fn add_encoded_forms(forms: &mut Vec<String>, secret: &str) {
    if secret.chars().count() < MIN_SECRET_CHARS {
        return;
    }
    forms.push(secret.to_owned());
    let mut encoded = Vec::new();
    for set in [FORM, RFC3986, URI_COMPONENT] {
        encoded.push(utf8_percent_encode(secret, set).to_string());
    }
    if secret.contains(' ') {
        encoded.push(utf8_percent_encode(secret, FORM).to_string().replace("%20", "+"));
    }
    for form in encoded {
        if form.contains('%') {
            forms.push(lower_case_escapes(&form));
        }
        forms.push(form);
    }
}

fn lower_case_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '%' {
            out.extend(chars.by_ref().take(2).map(|hex| hex.to_ascii_lowercase()));
        }
    }
    out
}

/// Replaces every occurrence of every form of every secret in `text` with
/// `[redacted]`. Overlapping occurrences become one mark; the text is scanned
/// as it came, so a secret can never be pieced together from marks.
pub fn redact(text: &str, secrets: &Secrets<'_>) -> String {
    let mut hidden: Vec<(usize, usize)> = Vec::new();
    for form in secrets.forms() {
        hidden.extend(text.match_indices(form.as_str()).map(|(at, found)| (at, at + found.len())));
    }
    if hidden.is_empty() {
        return text.to_owned();
    }
    hidden.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut written = 0;
    let mut hidden = hidden.into_iter().peekable();
    while let Some((start, mut end)) = hidden.next() {
        while let Some(&(next_start, next_end)) = hidden.peek() {
            if next_start > end {
                break;
            }
            end = end.max(next_end);
            hidden.next();
        }
        out.push_str(&text[written..start]);
        out.push_str(REDACTED);
        written = end;
    }
    out.push_str(&text[written..]);
    out
}

/// An invalid `configure()` option; the JavaScript side throws it as a `TypeError`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub option: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(option: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { option: option.into(), message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oauth_message_joins_error_and_description() {
        let err = ExchangeError::from_oauth(
            400,
            OAuthErrorBody {
                error: "invalid_grant".into(),
                error_description: Some("AADSTS50013: Assertion failed signature validation".into()),
                ..Default::default()
            },
        );
        assert_eq!(err.message, "invalid_grant: AADSTS50013: Assertion failed signature validation");
        assert_eq!(err.code.as_deref(), Some("invalid_grant"));
        assert_eq!(err.status, Some(400));
    }

    #[test]
    fn oauth_message_without_description_is_the_error_code() {
        let err =
            ExchangeError::from_oauth(401, OAuthErrorBody { error: "invalid_client".into(), ..Default::default() });
        assert_eq!(err.message, "invalid_client");
    }

    fn secrets<'a>(texts: &[&'a str]) -> Secrets<'a> {
        let mut secrets = Secrets::default();
        for text in texts {
            secrets.push(text);
        }
        secrets
    }

    #[test]
    fn redaction_covers_every_text() {
        let secret = "eyJhbGciOiJSUzI1NiJ9.payload.sig";
        let err = ExchangeError::from_oauth(
            400,
            OAuthErrorBody {
                error: "invalid_grant".into(),
                error_description: Some(format!("bad assertion {secret}")),
                claims: Some(secret.into()),
                ..Default::default()
            },
        )
        .redacted(&secrets(&[secret]));
        assert!(!format!("{err:?}").contains(secret));
        assert!(err.message.contains("[redacted]"));
    }

    #[test]
    fn secrets_under_four_characters_are_left_alone_from_four_on_they_go() {
        assert_eq!(redact("a b c", &secrets(&["b"])), "a b c");
        assert_eq!(redact("the key abc is", &secrets(&["abc"])), "the key abc is");
        assert_eq!(redact("the key k~y5 is", &secrets(&["k~y5"])), "the key [redacted] is");
        assert_eq!(redact("client_secret=k%7Ey5&x", &secrets(&["k~y5"])), "client_secret=[redacted]&x");
    }

    #[test]
    fn encoded_forms_of_a_secret_are_redacted() {
        let secret = "Xq8Q~a.b_c-d e+f/g=h";
        let forms = [
            "Xq8Q~a.b_c-d e+f/g=h",
            "Xq8Q%7Ea.b_c-d+e%2Bf%2Fg%3Dh",
            "Xq8Q%7Ea.b_c-d%20e%2Bf%2Fg%3Dh",
            "Xq8Q~a.b_c-d%20e%2Bf%2Fg%3Dh",
            "Xq8Q%7ea.b_c-d+e%2bf%2fg%3dh",
            "Xq8Q~a.b_c-d%20e%2bf%2fg%3dh",
        ];
        for form in forms {
            let text = format!("echo client_secret={form}&scope=x");
            assert_eq!(redact(&text, &secrets(&[secret])), "echo client_secret=[redacted]&scope=x", "{form}");
        }
    }

    #[test]
    fn the_basic_authorization_value_is_redacted_whichever_way_it_was_built() {
        let mut secrets = Secrets::default();
        secrets.push_basic(Cow::Borrowed("client id"), Cow::Borrowed("s3cr~t"));
        let b64 = |pair: &str| base64::engine::general_purpose::STANDARD.encode(pair);
        for value in [b64("client+id:s3cr%7Et"), b64("client id:s3cr~t")] {
            let text = format!("authorization=Basic {value} end");
            assert_eq!(redact(&text, &secrets), "authorization=Basic [redacted] end", "{value}");
        }
    }

    #[test]
    fn proxy_credentials_are_redacted_as_written_in_the_url_and_as_sent() {
        let mut secrets = Secrets::default();
        secrets.push_url_credentials("proxy-user", "pr0xy~pass%20word");
        let sent = base64::engine::general_purpose::STANDARD.encode("proxy-user:pr0xy~pass word");
        let text = format!("url pr0xy~pass%20word decoded pr0xy~pass word header Basic {sent}");
        assert_eq!(redact(&text, &secrets), "url [redacted] decoded [redacted] header Basic [redacted]");
    }

    #[test]
    fn overlapping_secrets_leave_one_mark_and_no_fragment() {
        let secrets = secrets(&["abcdef", "defghi"]);
        assert_eq!(redact("xx abcdefghi yy abcdef", &secrets), "xx [redacted] yy [redacted]");
    }
}
