//! The module API functions redis-server hands the module at load, looked up where they are
//! used: [`module_api!`] gives the function, or an error saying this redis-server lacks it.
//!
//! The expansion names `raw::$name`: a caller has `redis_module::raw` in scope as `raw`.

/// The module API function `$name`, or an error saying this redis-server lacks it.
macro_rules! module_api {
    ($name:ident) => {{
        // SAFETY: the API table is written once, by RedisModule_Init while the module loads,
        // before any command runs or any thread starts; afterwards it is only read.
        let f = unsafe { redis_module::raw::$name };
        f.ok_or_else(|| {
            autoloc_functions::Error::Busy(format!(
                "this redis-server lacks {} (Redis 7 needed)",
                stringify!($name)
            ))
        })
    }};
}
pub(crate) use module_api;
