//! [`guard`]: every entry point of the module (commands, the loader thread's jobs) runs behind
//! it, since a panic inside redis-server would abort it.

use std::panic::{catch_unwind, AssertUnwindSafe};

use redis_module::{RedisError, RedisResult};

/// Runs `f`, replying with an error instead of unwinding into redis-server if it panics.
pub(crate) fn guard(command: &str, f: impl FnOnce() -> RedisResult) -> RedisResult {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(RedisError::String(format!(
            "ERR internal error in {command}: {what}"
        )))
    })
}
