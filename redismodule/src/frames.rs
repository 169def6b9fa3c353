//! The `Error` wire frame, shared by the invoke path ([`crate::invoke::reply`]) and the data
//! plane's requests that fail before or outside any invocation.

use autoloc_dataplane::link::Replier;
use autoloc_dataplane::wire::Message;
use autoloc_functions::Error;

/// Sends `e` to request `id` as an `Error` frame.
pub fn error_frame(out: &mut dyn Replier, id: u64, e: &Error) -> autoloc_dataplane::Result<()> {
    let message = e.to_string();
    out.reply(
        id,
        &Message::Error {
            code: e.code(),
            message: &message,
        },
    )
}
