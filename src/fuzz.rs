//! Property tests for everything that reads bytes from the network: the
//! token-response and error-body parsers, `expires_in` and `Retry-After`.
//! They must never panic, whatever arrives. `npm run fuzz` runs many more
//! cases (`FUZZ_CASES`, default 1 000 000) than `cargo test` does.

use std::time::SystemTime;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::grant::{normalize_expires_in, parse_failure, parse_success, MAX_EXPIRES_IN};
use crate::retry::{parse_retry_after, MAX_RETRY_AFTER};

/// JSON values shaped like what a token endpoint sends, with hostile leaves.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|n| serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::String),
        prop_oneof![Just("3600"), Just("NaN"), Just("-1"), Just("1e400"), Just(" 12 "), Just("0x10")]
            .prop_map(|text| Value::String(text.into())),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        let keys = prop_oneof![
            Just("access_token".to_owned()),
            Just("expires_in".to_owned()),
            Just("error".to_owned()),
            Just("error_description".to_owned()),
            Just("error_codes".to_owned()),
            Just("claims".to_owned()),
            Just("correlation_id".to_owned()),
            "[a-z_]{1,12}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(keys, inner, 0..6)
                .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Bytes: valid JSON documents, their truncations and mutations, and noise.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        json_value().prop_map(|value| value.to_string().into_bytes()),
        (json_value(), any::<prop::sample::Index>()).prop_map(|(value, cut)| {
            let text = value.to_string().into_bytes();
            let at = cut.index(text.len() + 1);
            text[..at].to_vec()
        }),
        (json_value(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(value, at, byte)| {
            let mut text = value.to_string().into_bytes();
            if !text.is_empty() {
                let at = at.index(text.len());
                text[at] = byte;
            }
            text
        }),
        prop::collection::vec(any::<u8>(), 0..256),
    ]
}

fn check_parsers(body: &[u8], status: u16) {
    match parse_success(status, body) {
        Ok(token) => {
            assert!(!token.access_token.is_empty());
            assert!(token.expires_in <= MAX_EXPIRES_IN);
        }
        Err(err) => assert!(!err.message.is_empty()),
    }
    let err = parse_failure(status, Some("application/json"), body);
    assert!(!err.message.is_empty());
    assert_eq!(err.status, Some(status));
}

fn run(cases: u32) {
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    runner
        .run(&(body(), 100u16..600), |(body, status)| {
            check_parsers(&body, status);
            Ok(())
        })
        .unwrap();
    runner
        .run(&json_value(), |value| {
            assert!(normalize_expires_in(Some(&value)) <= MAX_EXPIRES_IN);
            Ok(())
        })
        .unwrap();
    runner
        .run(&".{0,64}", |text| {
            if let Some(wait) = parse_retry_after(&text, SystemTime::now()) {
                assert!(wait <= MAX_RETRY_AFTER);
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn parsers_never_panic() {
    run(2_000);
}

/// The long run: `npm run fuzz` (`FUZZ_CASES` to change the count).
#[test]
#[ignore]
fn fuzz_parsers() {
    let cases = std::env::var("FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(1_000_000);
    run(cases);
}
