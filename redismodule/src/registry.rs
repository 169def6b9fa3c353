//! The table of functions this module runs ([`registry`]): the built-ins, and the user functions
//! `AUTOLOC.FUNCTION LOAD` puts in it. One per process; every path that resolves a function
//! (`AUTOLOC.CALL`, `AUTOLOC.INVOKE`, the data plane, `INFO autoloc`) reads this one.

use std::sync::OnceLock;

use autoloc_functions::Registry;

/// The functions this module runs.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::builtin)
}
