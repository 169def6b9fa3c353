//! The one way the module reads keys ([`read_keys`], applying [`value_of`]'s rule), and the
//! `Store` over Redis's own keyspace that storage-side functions run against.
//!
//! **The read rule**, the same on every side and transport: a missing key reads as no value
//! (`None`; what that means is the function's business: `khop` fails with `NOKEY` on a missing
//! start vertex and counts a missing neighbour as a dangling vertex, `aggregate` skips it, `get`
//! returns nil); a key holding anything but a string fails the whole read with `WRONGTYPE`
//! naming the key, before any value of that read is looked at; a string is handed over as it
//! is, and a value the function cannot use (no vertex, no number) is the function's `BADVALUE`.

use std::cell::Cell;
use std::time::{Duration, Instant};

use autoloc_functions::{Error, ErrorCode, Store, StoreFuture, Visit};

use crate::acl::{Access, Caller};
use crate::lock::Hold;
use crate::names::key_name;
use redis_module::key::RedisKey;
use redis_module::{CallOptionsBuilder, CallResult, Context, KeyType, RedisString};

/// The value of the open key `key` (named `name`) under the read rule.
pub fn value_of<'k>(key: &'k RedisKey, name: &[u8]) -> Result<Option<&'k [u8]>, Error> {
    match key.key_type() {
        KeyType::Empty => Ok(None),
        KeyType::String => key
            .read()
            .map(|v| Some(v.unwrap_or(&[])))
            .map_err(|e| Error::Io(format!("read {}: {e}", String::from_utf8_lossy(name)))),
        _ => Err(Error::wrong_type(name)),
    }
}

/// Opens every key of `names` onto the end of `opened` and reads them under the read rule, once
/// `caller`'s ACL allows it to read every one of them (`NOPERM` naming the first it may not):
/// the values borrow Redis's own memory (no copy) for as long as `opened` keeps the keys, which
/// must be while Redis's lock is held. Keys already in `opened` stay open (the data plane closes
/// a burst's keys once its replies are published). Every key the module reads, for a function, a
/// data-plane `Get` or `MultiGet`, `AUTOLOC.MGET`, or a pushback's read set, is read here.
pub fn read_keys<'k, N: AsRef<[u8]>>(
    ctx: &Context,
    caller: &Caller,
    names: &[N],
    opened: &'k mut Vec<RedisKey>,
) -> Result<Values<'k>, Error> {
    // One key (a data-plane `Get`, most reads) needs no vector of names.
    let one: [RedisString; 1];
    let many: Vec<RedisString>;
    let strings: &[RedisString] = match names {
        [name] => {
            one = [key_name(ctx, name.as_ref())];
            &one
        }
        _ => {
            many = names.iter().map(|n| key_name(ctx, n.as_ref())).collect();
            &many
        }
    };
    caller.check_names(ctx, strings, Access::Read)?;
    let first = opened.len();
    // An open key holds its own reference to its name.
    crate::open::open_for_read(ctx, strings, opened);
    let mine = &opened[first..];
    // In a cluster, a key of a slot served elsewhere is an error, never a missing key.
    crate::cluster::check(ctx, names, |i| mine[i].key_type() != KeyType::Empty)?;
    match (mine, names) {
        ([key], [name]) => Ok(Values::One([value_of(key, name.as_ref())?])),
        _ => mine
            .iter()
            .zip(names)
            .map(|(key, name)| value_of(key, name.as_ref()))
            .collect::<Result<_, _>>()
            .map(Values::Many),
    }
}

/// The values of one read, in the order of its names; one value (a `Get`) without a vector.
#[derive(Debug)]
pub enum Values<'k> {
    One([Option<&'k [u8]>; 1]),
    Many(Vec<Option<&'k [u8]>>),
}

impl<'k> std::ops::Deref for Values<'k> {
    type Target = [Option<&'k [u8]>];
    fn deref(&self) -> &Self::Target {
        match self {
            Values::One(one) => one,
            Values::Many(many) => many,
        }
    }
}

/// Sets every `(key, value)` of `pairs`, all or none: the one way the module writes keys (a
/// function's writes when it finishes, a data-plane `Set` or `MultiSet`). `caller`'s ACL must
/// allow writing every key, checked before any is written. Each goes through Redis's own `SET`,
/// called to replicate (`!`): the writes reach the AOF and the replicas as a client's `SET`
/// would (in one `MULTI`/`EXEC` when there are several), and keyspace listeners are notified.
/// Under Redis's lock, which every caller holds, no client sees some of them and not others.
pub fn write_keys<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    ctx: &Context,
    caller: &Caller,
    pairs: &[(K, V)],
) -> Result<(), Error> {
    let keys: Vec<&[u8]> = pairs.iter().map(|(k, _)| k.as_ref()).collect();
    caller.check(ctx, &keys, Access::Write)?;
    if crate::cluster::enabled() {
        // Nothing is written where no client would find it (a slot served elsewhere, or one
        // migrating that the key has left).
        let present = |i: usize| ctx.open_key(&key_name(ctx, keys[i])).key_type() != KeyType::Empty;
        crate::cluster::check(ctx, &keys, present)?;
    }
    if crate::pause::writes_paused() {
        // Redis holds its own clients' writes back now, and must propagate nothing.
        return Err(Error::Busy(
            "writes are paused (CLIENT PAUSE, FAILOVER or SHUTDOWN): nothing written, retry later"
                .into(),
        ));
    }
    // As a script's writes: refused (nothing written) on a read-only replica, when the disk
    // cannot persist (MISCONF), without enough good replicas (`min-replicas-to-write`), or over
    // `maxmemory` (OOM), as Redis would refuse a client's.
    let options = CallOptionsBuilder::new()
        .replicate()
        .script_mode()
        .verify_oom()
        .errors_as_replies()
        .build();
    for (key, value) in pairs {
        let reply: CallResult<'static> =
            ctx.call_ext("SET", &options, &[key.as_ref(), value.as_ref()][..]);
        reply
            .map(drop)
            .map_err(|e| Error::from_resp(&e.to_string()))?;
    }
    Ok(())
}

/// Keys read between two budget checks inside one large read.
const CHECK_EVERY: usize = 64;

/// A key an invocation read, with the value another shard read for it if it came with the
/// invocation (`None`: read here).
pub type Remembered = (Vec<u8>, Option<Option<Vec<u8>>>);

/// Reads values in place: each key is opened read-only and its string borrowed through DMA, so
/// a function decodes Redis's own bytes with no copy. Every access checks the budget; an
/// invocation past it fails with [`Error::Pushback`] so the caller runs it compute-side. On a
/// data-plane thread, every access and checkpoint first gives Redis's lock back if it has been
/// held for `lock-us` ([`Hold::breathe`]); the budget counts only the time the lock was held.
pub struct KeyspaceStore<'c> {
    ctx: &'c Context,
    /// Whose ACL every access answers to.
    caller: &'c Caller,
    /// The data-plane thread's hold of the lock, which it may give back between accesses.
    hold: Option<&'c Hold>,
    started: Instant,
    /// `hold`'s given-back time when the run started.
    given_back_before: Duration,
    budget: Duration,
    keys_read: Cell<u64>,
    bytes_read: Cell<u64>,
    /// Calls of `read` (store accesses).
    accesses: Cell<u64>,
    /// The keys read, kept only when asked for (to hand the read set back on a pushback).
    remembered: Option<std::cell::RefCell<Vec<Vec<u8>>>>,
    /// Writes made so far, applied together by [`KeyspaceStore::commit`] when the function
    /// succeeds: a failed or pushed-back invocation leaves nothing behind. Later reads see them.
    writes: std::cell::RefCell<Vec<(Vec<u8>, Vec<u8>)>>,
    /// Values another shard read for keys of its own: an invocation it pushed back, forwarded
    /// here (`InvokeWith`). A key this node serves is read here, whatever they say.
    seeded: std::collections::HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// The keys of another shard that the read which pushed the run back met: where to forward
    /// it.
    elsewhere: std::cell::RefCell<Vec<Vec<u8>>>,
}

impl std::fmt::Debug for KeyspaceStore<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyspaceStore")
            .field("budget", &self.budget)
            .field("keys_read", &self.keys_read.get())
            .finish()
    }
}

impl<'c> KeyspaceStore<'c> {
    /// A store for one invocation that may run for `budget` from now.
    pub fn new(ctx: &'c Context, caller: &'c Caller, budget: Duration) -> Self {
        KeyspaceStore {
            ctx,
            caller,
            hold: None,
            started: Instant::now(),
            given_back_before: Duration::ZERO,
            budget,
            keys_read: Cell::new(0),
            bytes_read: Cell::new(0),
            accesses: Cell::new(0),
            remembered: None,
            writes: std::cell::RefCell::new(Vec::new()),
            seeded: std::collections::HashMap::new(),
            elsewhere: std::cell::RefCell::new(Vec::new()),
        }
    }

    /// Also knows the values of `read_set`, read by the shard that forwarded the invocation, for
    /// the keys this node does not serve.
    pub fn seeded<'k>(
        mut self,
        read_set: impl Iterator<Item = (&'k [u8], Option<&'k [u8]>)>,
    ) -> Self {
        self.seeded = read_set
            .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
            .collect();
        self
    }

    /// The value another shard read for `key`, if it is not one of this node's.
    fn seed(&self, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        if self.seeded.is_empty() {
            return None;
        }
        self.seeded
            .get(key)
            .filter(|_| !crate::cluster::serves(self.ctx, key))
    }

    /// Takes the keys of another shard the read that pushed the run back met.
    pub fn elsewhere(&self) -> Vec<Vec<u8>> {
        self.elsewhere.take()
    }

    /// Runs under a data-plane thread's `hold`, giving the lock back between accesses.
    pub fn holding(mut self, hold: &'c Hold) -> Self {
        self.given_back_before = hold.given_back();
        self.hold = Some(hold);
        self
    }

    /// Gives the lock back if it has been held long enough, then checks the budget: at the
    /// start of every access, where the function holds nothing of Redis's.
    fn turn(&self) -> Result<(), Error> {
        if let Some(hold) = self.hold {
            hold.breathe();
        }
        self.check_budget()
    }

    /// Also remembers the names of the keys read ([`KeyspaceStore::remembered`]).
    pub fn remembering_reads(mut self) -> Self {
        self.remembered = Some(std::cell::RefCell::new(Vec::new()));
        self
    }

    /// Takes the keys read so far, if remembered, each with the value another shard read for it
    /// if it came with the invocation (`None`: read here).
    pub fn remembered(&self) -> Vec<Remembered> {
        let keys = self
            .remembered
            .as_ref()
            .map(|r| r.take())
            .unwrap_or_default();
        keys.into_iter()
            .map(|k| {
                let seed = self.seed(&k).cloned();
                (k, seed)
            })
            .collect()
    }

    /// Keys and value bytes read so far.
    pub fn reads(&self) -> (u64, u64) {
        (self.keys_read.get(), self.bytes_read.get())
    }

    /// Store accesses (`read` calls) so far: the round trips the run would have taken
    /// compute-side.
    pub fn accesses(&self) -> u64 {
        self.accesses.get()
    }

    /// The lock time the invocation has used: the time since it started, less the time the
    /// lock was given back meanwhile.
    fn spent(&self) -> Duration {
        self.started.elapsed().saturating_sub(self.released())
    }

    /// How long the lock was given back since the run started (its `hold` counts from its own
    /// start).
    fn released(&self) -> Duration {
        self.hold
            .map_or(Duration::ZERO, |h| h.given_back() - self.given_back_before)
    }

    fn check_budget(&self) -> Result<(), Error> {
        let spent = self.spent();
        if spent > self.budget {
            return Err(Error::Pushback {
                budget_us: self.budget.as_micros() as u64,
                spent_us: spent.as_micros() as u64,
            });
        }
        Ok(())
    }

    /// Applies the invocation's writes, all or none ([`write_keys`]).
    pub fn commit(&self) -> Result<(), Error> {
        let writes = self.writes.take();
        if writes.is_empty() {
            return Ok(());
        }
        write_keys(self.ctx, self.caller, &writes)?;
        if let Some(hold) = self.hold {
            hold.wrote();
        }
        Ok(())
    }

    fn read_now(&self, keys: &[Vec<u8>], visit: Visit<'_>) -> Result<(), Error> {
        self.turn()?;
        self.accesses.set(self.accesses.get() + 1);
        self.keys_read.set(self.keys_read.get() + keys.len() as u64);
        // The values another shard read, for its keys (an invocation it forwarded here): they
        // answer to this caller's ACL as reads here would.
        let seeds: Vec<Option<&Option<Vec<u8>>>> = match self.seeded.is_empty() {
            true => Vec::new(),
            false => keys.iter().map(|k| self.seed(k)).collect(),
        };
        let here: std::borrow::Cow<'_, [Vec<u8>]> = if seeds.iter().any(Option::is_some) {
            let theirs: Vec<&Vec<u8>> = keys
                .iter()
                .zip(&seeds)
                .filter(|(_, s)| s.is_some())
                .map(|(k, _)| k)
                .collect();
            self.caller.check(self.ctx, &theirs, Access::Read)?;
            keys.iter()
                .zip(&seeds)
                .filter(|(_, s)| s.is_none())
                .map(|(k, _)| k.clone())
                .collect::<Vec<_>>()
                .into()
        } else {
            keys.into()
        };
        let mut opened = Vec::with_capacity(here.len());
        let values = match read_keys(self.ctx, self.caller, &here, &mut opened) {
            Ok(values) => values,
            // A key of another shard: the compute side, which reaches every shard, finishes
            // the invocation from what was read here (the read set of the pushback), or forwards
            // it to that shard with it. The keys of this read that are this node's join the read
            // set, so that a shard it is forwarded to finds them there.
            Err(e @ Error::WrongShard { .. }) => {
                if let Some(r) = &self.remembered {
                    let (mine, theirs): (Vec<Vec<u8>>, Vec<Vec<u8>>) = here
                        .iter()
                        .cloned()
                        .partition(|k| crate::cluster::serves(self.ctx, k));
                    let mut opened = Vec::new();
                    if read_keys(self.ctx, self.caller, &mine, &mut opened).is_ok() {
                        let mut r = r.borrow_mut();
                        r.extend(mine);
                        let seeded = keys.iter().zip(&seeds).filter(|(_, s)| s.is_some());
                        r.extend(seeded.map(|(k, _)| k.clone()));
                    }
                    *self.elsewhere.borrow_mut() = theirs;
                }
                return Err(Error::remote(
                    ErrorCode::Pushback,
                    format!("{e}; run it compute-side"),
                ));
            }
            Err(e) => return Err(e),
        };
        if let Some(r) = &self.remembered {
            r.borrow_mut().extend_from_slice(keys);
        }
        let mut read_here = values.iter().copied();
        for (i, key) in keys.iter().enumerate() {
            if i % CHECK_EVERY == CHECK_EVERY - 1 {
                self.check_budget()?;
            }
            let value = match seeds.get(i).copied().flatten() {
                Some(seed) => seed.as_deref(),
                None => read_here.next().flatten(),
            };
            let len = value.map_or(0, <[u8]>::len) as u64;
            self.bytes_read.set(self.bytes_read.get() + len);
            let writes = self.writes.borrow();
            match writes.iter().rev().find(|(k, _)| k == key) {
                // The invocation's own write, not applied yet.
                Some((_, written)) => visit(i, Some(written))?,
                None => visit(i, value)?,
            }
        }
        Ok(())
    }
}

impl Store for KeyspaceStore<'_> {
    fn read<'a>(&'a self, keys: &'a [Vec<u8>], visit: Visit<'a>) -> StoreFuture<'a, ()> {
        Box::pin(async move { self.read_now(keys, visit) })
    }

    fn write<'a>(&'a self, key: &'a [u8], value: &'a [u8]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.turn()?;
            // Checked now (NOPERM at once), applied when the function succeeds.
            self.caller.check(self.ctx, &[key], Access::Write)?;
            self.writes
                .borrow_mut()
                .push((key.to_vec(), value.to_vec()));
            Ok(())
        })
    }

    fn checkpoint(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move { self.turn() })
    }

    fn deadline(&self) -> Option<Instant> {
        // When the budget runs out: its start, plus the budget and the time the lock was given
        // back since (what `spent` leaves out); a little past it, so that a run stopped at its
        // deadline finds the budget spent at its next checkpoint and is pushed back.
        Some(self.started + self.budget + self.released() + Duration::from_micros(50))
    }

    fn serves(&self, key: &[u8]) -> bool {
        crate::cluster::serves(self.ctx, key)
    }

    fn principal(&self) -> &str {
        &self.caller.user
    }
}
