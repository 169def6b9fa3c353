//! `badimport_wasm`: a hostile test guest that imports `autoloc.launch_missiles`, which the ABI
//! does not have, and calls it. The host must refuse the module (nothing beyond the five imports
//! may be imported) and never run it.

use autoloc_guest::functions::{Output, OutputKind};
use autoloc_guest::GuestError;

autoloc_guest::export! {
    name: "badimport_wasm",
    usage: "badimport_wasm",
    output: OutputKind::Value,
    entry: launch,
}

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "autoloc")]
unsafe extern "C" {
    // No arguments, no pointers: declared safe, so calling it needs no `unsafe` block.
    #[link_name = "launch_missiles"]
    safe fn launch_missiles();
}

fn launch(_args: &[Vec<u8>]) -> Result<Output, GuestError> {
    #[cfg(target_arch = "wasm32")]
    launch_missiles();
    Ok(Output::Value(None))
}
