//! A shared token is stored with when the exchange that brought it began, in
//! clear in front of the sealed value, so that Redis itself can refuse to
//! replace it with a token from an exchange that began earlier: a plain
//! exchange that was already under way when a claims challenge or a forced
//! refresh was answered must not put back the token the resource refused.
//! The comparison runs in a script, so no other writer comes between the
//! read and the write. The time is the only thing the prefix reveals.
//!
//! Stored value: `{begun_us}:{nonce ‖ ciphertext ‖ tag}`.

/// Replaces KEYS[1] with ARGV[1] for ARGV[3] ms unless the value held began
/// after ARGV[2]; 1 when stored. Times in µs stay below 2^53, exact in Lua.
const PUT_SCRIPT: &str = r#"
local held = redis.call('GET', KEYS[1])
if held then
  local colon = string.find(held, ':', 1, true)
  local begun = colon and tonumber(string.sub(held, 1, colon - 1))
  if begun and begun > tonumber(ARGV[2]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
"#;

/// Longest decimal prefix: `u64::MAX` has 20 digits.
const MAX_DIGITS: usize = 20;

pub(super) fn join(begun_us: u64, sealed: &[u8]) -> Vec<u8> {
    let mut stored = format!("{begun_us}:").into_bytes();
    stored.extend_from_slice(sealed);
    stored
}

/// When the value's exchange began, and the sealed value; `None` for a value
/// stored in any other form.
pub(super) fn split(stored: &[u8]) -> Option<(u64, &[u8])> {
    let colon = stored.iter().take(MAX_DIGITS + 1).position(|&byte| byte == b':')?;
    let digits = std::str::from_utf8(&stored[..colon]).ok()?;
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, &stored[colon + 1..]))
}

pub(super) fn put_unless_newer(name: &str, stored: &[u8], begun_us: u64, ttl_ms: u64) -> redis::Cmd {
    let mut script = redis::cmd("EVAL");
    script.arg(PUT_SCRIPT).arg(1).arg(name).arg(stored).arg(begun_us).arg(ttl_ms);
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_round_trips_and_anything_else_is_refused() {
        let stored = join(1_765_000_000_123_456, b"\x00sealed:bytes");
        assert_eq!(split(&stored), Some((1_765_000_000_123_456, &b"\x00sealed:bytes"[..])));
        for other in [&b"sealed"[..], b":sealed", b"12a:sealed", b"123456789012345678901234:x"] {
            assert_eq!(split(other), None, "{other:?}");
        }
    }
}
