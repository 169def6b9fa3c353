//! Serving one data-plane request under Redis's lock: reads and writes through the module's one
//! read and write path ([`crate::store`]), invocations through its one invoke path
//! ([`crate::invoke`]).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use autoloc_dataplane::link::Replier;
use autoloc_dataplane::wire::{ErrorCode, Frame, List, Message};
use autoloc_functions::Error;
use redis_module::Context;

use crate::invoke::{self, error_frame, Request};
use crate::store::{read_keys, write_key};

/// Serves one request; never panics out (a panic becomes an error reply).
pub(super) fn handle(
    ctx: &Context,
    frame: Frame<'_>,
    out: &mut dyn Replier,
    seen: Instant,
    overloaded: bool,
) {
    let id = frame.request_id;
    let served = catch_unwind(AssertUnwindSafe(|| {
        serve_one(ctx, frame, out, seen, overloaded)
    }));
    if served.is_err() {
        let _ = out.reply(
            id,
            &Message::Error {
                code: ErrorCode::Err,
                message: "internal error (panic) serving the request",
            },
        );
    }
}

fn serve_one(
    ctx: &Context,
    frame: Frame<'_>,
    out: &mut dyn Replier,
    seen: Instant,
    overloaded: bool,
) {
    let id = frame.request_id;
    let mut opened = Vec::new();
    let sent = match frame.message {
        Message::Get { key } => match read_keys(ctx, &[key], &mut opened) {
            Ok(values) => out.reply(id, &Message::Value { value: values[0] }),
            Err(e) => error_frame(out, id, &e),
        },
        Message::MultiGet { keys } => {
            let names: Vec<&[u8]> = keys.iter().collect();
            match read_keys(ctx, &names, &mut opened) {
                Ok(values) => out.reply(
                    id,
                    &Message::Values {
                        values: List::new(&values),
                    },
                ),
                Err(e) => error_frame(out, id, &e),
            }
        }
        Message::Set { key, value } => match write_key(ctx, key, value) {
            Ok(()) => out.reply(id, &Message::Ok),
            Err(e) => error_frame(out, id, &e),
        },
        Message::Invoke { function, args } => {
            let req = Request {
                seen,
                overloaded,
                keep_read_set: true,
            };
            let args: Vec<&[u8]> = args.iter().collect();
            let run = invoke::invoke(ctx, function.as_bytes(), &args, req);
            invoke::reply(ctx, id, run, out)
        }
        other => {
            let e = Error::Malformed(format!("{:?} is not a request", other.kind()));
            error_frame(out, id, &e)
        }
    };
    if let Err(e) = sent {
        // The reply could not be encoded (over the wire's limit): say why instead. A broken
        // link is noticed by the serve loop, which drops it.
        let code = match &e {
            autoloc_dataplane::Error::Wire(w) => w.code(),
            _ => ErrorCode::Io,
        };
        let message = format!("reply not sent: {e}");
        let _ = out.reply(
            id,
            &Message::Error {
                code,
                message: &message,
            },
        );
    }
}
