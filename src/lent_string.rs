//! Tokens handed to JavaScript without a copy (part of the napi layer).
//!
//! A cached token lives in Rust as an `Arc<str>`. Copied into every memo
//! entry and every result, each hot token would be held twice: once here and
//! once in V8's heap (issue 19). Node-API 10's
//! `node_api_create_external_string_latin1` makes a V8 string over bytes V8
//! does not own; here the `Arc`'s, kept alive by a clone that the string's
//! finaliser drops when V8 collects the string (or tears down the thread's
//! heap), so the string can never outlive its buffer.
//!
//! The function is looked up at run time, not linked: it is experimental on
//! Node.js 20 and absent before 18.18/20.4. Without it, for text that is not
//! ASCII (Latin-1 and UTF-8 agree only there), for tokens too short to be
//! worth the bookkeeping, and once Node has reported that it copied (a V8
//! sandbox build copies and finalises at once), the token is copied as before.

use std::ffi::{c_char, c_void};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use napi::bindgen_prelude::{ToNapiValue, TypeName, ValueType};
use napi::{sys, Result};

/// Below this a copy costs V8 no more than an external string's bookkeeping does.
const SHORTEST_LENT: usize = 64;

type Finalize = unsafe extern "C" fn(env: sys::napi_env, data: *mut c_void, hint: *mut c_void);

type CreateExternalLatin1 = unsafe extern "C" fn(
    env: sys::napi_env,
    text: *const c_char,
    length: isize,
    finalize: Option<Finalize>,
    hint: *mut c_void,
    result: *mut sys::napi_value,
    copied: *mut bool,
) -> sys::napi_status;

/// Strings V8 holds over a token's buffer right now, in every thread.
static LENT: AtomicUsize = AtomicUsize::new(0);
/// Set once Node has copied instead of lending: it will do so every time.
static NODE_COPIES: AtomicBool = AtomicBool::new(false);

/// The host's `node_api_create_external_string_latin1`, if it has one.
fn create_external_latin1() -> Option<CreateExternalLatin1> {
    static FOUND: OnceLock<Option<CreateExternalLatin1>> = OnceLock::new();
    *FOUND.get_or_init(look_up)
}

#[cfg(any(unix, windows))]
fn look_up() -> Option<CreateExternalLatin1> {
    #[cfg(unix)]
    let host = libloading::os::unix::Library::this();
    #[cfg(windows)]
    let host = libloading::os::windows::Library::this().ok()?;
    // SAFETY: the symbol, where the host exports it, is Node-API's function of this signature;
    // the host program outlives the addon, so the pointer stays valid after the handle is closed.
    let symbol = unsafe { host.get::<CreateExternalLatin1>(b"node_api_create_external_string_latin1\0") }.ok()?;
    Some(*symbol)
}

#[cfg(not(any(unix, windows)))]
fn look_up() -> Option<CreateExternalLatin1> {
    None
}

unsafe extern "C" fn release(_env: sys::napi_env, _data: *mut c_void, hint: *mut c_void) {
    // SAFETY: `hint` is the `Box<Arc<str>>` that `lend` leaked for this string; Node finalises once.
    drop(unsafe { Box::from_raw(hint.cast::<Arc<str>>()) });
    LENT.fetch_sub(1, Ordering::Relaxed);
}

/// How tokens reach JavaScript in this process: `"external"` (one copy,
/// shared with the cache) or `"copy"` (the host lacks the function, or copies).
pub fn mode() -> &'static str {
    if create_external_latin1().is_some() && !NODE_COPIES.load(Ordering::Relaxed) {
        "external"
    } else {
        "copy"
    }
}

/// Strings over a token's buffer that V8 has not yet released.
pub fn lent() -> usize {
    LENT.load(Ordering::Relaxed)
}

/// A JavaScript string of `token`: over its buffer when it can be, else a copy.
///
/// # Safety
/// `env` must be the environment of the calling JavaScript thread, inside a call from it.
pub unsafe fn token_value(env: sys::napi_env, token: &Arc<str>) -> Result<sys::napi_value> {
    if token.len() >= SHORTEST_LENT && token.is_ascii() && !NODE_COPIES.load(Ordering::Relaxed) {
        if let Some(create) = create_external_latin1() {
            if let Some(value) = unsafe { lend(env, create, token) } {
                return Ok(value);
            }
        }
    }
    unsafe { ToNapiValue::to_napi_value(env, &**token) }
}

unsafe fn lend(env: sys::napi_env, create: CreateExternalLatin1, token: &Arc<str>) -> Option<sys::napi_value> {
    let hint = Box::into_raw(Box::new(token.clone()));
    // Counted before the call: a copying Node finalises inside it.
    LENT.fetch_add(1, Ordering::Relaxed);
    let mut value = ptr::null_mut();
    let mut copied = false;
    // SAFETY: the bytes stay valid while `hint` holds its clone of the Arc, which only `release` drops.
    let status = unsafe {
        create(env, token.as_ptr().cast(), token.len() as isize, Some(release), hint.cast(), &mut value, &mut copied)
    };
    if status != sys::Status::napi_ok {
        // Node took nothing and will finalise nothing.
        drop(unsafe { Box::from_raw(hint) });
        LENT.fetch_sub(1, Ordering::Relaxed);
        return None;
    }
    if copied {
        // `release` has run already; `value` is a plain copy, and so will every later one be.
        NODE_COPIES.store(true, Ordering::Relaxed);
    }
    Some(value)
}

/// A token on its way to JavaScript, as a field of a result object.
pub struct TokenString(pub Arc<str>);

impl TypeName for TokenString {
    fn type_name() -> &'static str {
        "string"
    }

    fn value_type() -> ValueType {
        ValueType::String
    }
}

impl ToNapiValue for TokenString {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        unsafe { token_value(env, &val.0) }
    }
}
