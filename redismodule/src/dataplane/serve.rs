//! Serving one data-plane request under Redis's lock, for the link's [`Caller`] (its ACL user, on
//! its database): reads and writes through the module's one read and write path
//! ([`crate::store`]), invocations through its one invoke path ([`crate::invoke`]).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use autoloc_dataplane::link::Replier;
use autoloc_dataplane::wire::{ErrorCode, Frame, List, Message};
use autoloc_functions::Error;
use redis_module::key::RedisKey;
use redis_module::Context;

use crate::acl::Caller;
use crate::frames::error_frame;
use crate::invoke::{self, Request, Thread};
use crate::lock::Hold;
use crate::store::{read_keys, write_keys};

/// What serving one request works with: the data-plane thread's context under Redis's lock, the
/// hold on that lock, the keys the burst's reads left open, the link's caller (`None` for a tcp
/// connection whose caller is gone), where the reply goes, when the burst was seen and whether
/// the thread is overloaded.
pub(super) struct Serving<'a> {
    pub ctx: &'a Context,
    pub hold: &'a Hold,
    pub opened: &'a mut Vec<RedisKey>,
    pub caller: Option<&'a Caller>,
    pub out: &'a mut dyn Replier,
    pub seen: Instant,
    pub overloaded: bool,
}

/// Serves one request; never panics out (a panic becomes an error reply).
pub(super) fn handle(mut s: Serving<'_>, frame: Frame<'_>) {
    let id = frame.request_id;
    let Some(caller) = s.caller else {
        let e = Error::NoPerm("this connection's user is gone".into());
        let _ = error_frame(s.out, id, &e);
        return;
    };
    // Nothing is answered while another data-plane thread's write is not in the AOF yet. The
    // keys that reads earlier in the burst left open are closed before the lock is given back.
    s.hold.settle_others(|| s.opened.clear());
    if let Err(e) = select_db(s.ctx, caller.db) {
        let _ = error_frame(s.out, id, &e);
        return;
    }
    let served = catch_unwind(AssertUnwindSafe(|| serve_one(&mut s, caller, frame)));
    if served.is_err() {
        // No key stays open past a panic.
        s.opened.clear();
        let _ = s.out.reply(
            id,
            &Message::Error {
                code: ErrorCode::Err,
                message: "internal error (panic) serving the request",
            },
        );
    }
}

/// Points `ctx` (the data-plane thread's, on no database of its own) at the caller's database.
pub(super) fn select_db(ctx: &Context, db: i32) -> Result<(), Error> {
    let select = crate::api::module_api!(RedisModule_SelectDb)?;
    // SAFETY: `ctx.ctx` is the data-plane thread's context, used under Redis's lock, which the
    // caller holds; selecting a database only changes which keyspace it opens keys in.
    match unsafe { select(ctx.ctx, db) } {
        0 => Ok(()),
        _ => Err(Error::remote(
            autoloc_functions::ErrorCode::Err,
            format!("no database {db}"),
        )),
    }
}

fn serve_one(s: &mut Serving<'_>, caller: &Caller, frame: Frame<'_>) {
    let (ctx, hold, seen, overloaded) = (s.ctx, s.hold, s.seen, s.overloaded);
    let opened = &mut *s.opened;
    let out = &mut *s.out;
    let id = frame.request_id;
    if !matches!(
        frame.message,
        Message::Get { .. } | Message::MultiGet { .. }
    ) {
        // Writes and invocations run with no key open: they may give the lock back, and a
        // write may change a key an open handle points at.
        opened.clear();
    }
    let request = |seeded| Request {
        caller,
        seen,
        overloaded,
        keep_read_set: true,
        on: Thread::DataPlane(hold),
        seeded,
    };
    let sent = match frame.message {
        Message::Get { key } => match read_keys(ctx, caller, &[key], opened) {
            Ok(values) => out.reply(id, &Message::Value { value: values[0] }),
            Err(e) => error_frame(out, id, &e),
        },
        Message::MultiGet { keys } => {
            let names: Vec<&[u8]> = keys.iter().collect();
            match read_keys(ctx, caller, &names, opened) {
                Ok(values) => out.reply(
                    id,
                    &Message::Values {
                        values: List::new(&values),
                    },
                ),
                Err(e) => error_frame(out, id, &e),
            }
        }
        Message::Set { key, value } => match write_keys(ctx, caller, &[(key, value)]) {
            Ok(()) => acknowledge(hold, out, id),
            Err(e) => error_frame(out, id, &e),
        },
        Message::MultiSet { pairs } => {
            let pairs: Vec<(&[u8], &[u8])> = pairs.iter().collect();
            match write_keys(ctx, caller, &pairs) {
                Ok(()) => acknowledge(hold, out, id),
                Err(e) => error_frame(out, id, &e),
            }
        }
        Message::CheckVersion { function, version } => {
            match crate::userfn::check(function.as_bytes(), version) {
                Ok(()) => out.reply(id, &Message::Ok),
                Err(e) => error_frame(out, id, &e),
            }
        }
        // An invocation sent here first, or forwarded with what another shard read.
        Message::Invoke { function, args } => {
            invoke_here(ctx, id, function, args, request(None), out)
        }
        Message::InvokeWith {
            function,
            args,
            read_set,
        } => invoke_here(ctx, id, function, args, request(Some(read_set)), out),
        other => {
            let e = Error::Malformed(format!("{:?} is not a request", other.kind()));
            error_frame(out, id, &e)
        }
    };
    // A read's keys stay open until the burst's replies are published (the data-plane loop
    // closes them then): closing a key frees memory, with a locked instruction that would
    // first wait for the reply just written to reach the client's core, and only then publish.
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

/// Runs an invocation of `function` with `args` for request `id`, as `req` says, and replies.
fn invoke_here(
    ctx: &Context,
    id: u64,
    function: &str,
    args: autoloc_dataplane::wire::Keys<'_>,
    req: Request<'_>,
    out: &mut dyn Replier,
) -> autoloc_dataplane::Result<()> {
    let args: Vec<&[u8]> = args.iter().collect();
    let caller = req.caller;
    let run = invoke::invoke(ctx, function.as_bytes(), &args, req);
    invoke::reply(ctx, caller, id, run, out)
}

/// Acknowledges a write just made: once it is in the AOF, as Redis answers its own clients.
fn acknowledge(hold: &Hold, out: &mut dyn Replier, id: u64) -> autoloc_dataplane::Result<()> {
    hold.wrote();
    hold.settle();
    out.reply(id, &Message::Ok)
}
