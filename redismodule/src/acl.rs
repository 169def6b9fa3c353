//! Who is asking: every key the module reads or writes answers to the ACL user of the client that
//! made the call (`AUTOLOC.CALL`, `AUTOLOC.INVOKE`, `AUTOLOC.MGET`) or opened the link
//! (`AUTOLOC.CONNECT`), on that client's database.
//!
//! The user is looked up by name at every check, so a changed ACL applies to the next request
//! of an open link, and a deleted user is refused (its links are closed by the data plane's
//! reaper, see [`Caller::standing`]).
//!
//! Both halves of an ACL apply, as they would to the Redis command an access stands for
//! ([`Access::command`]): a read of one key is checked as `GET key`, a read of several as
//! `MGET key...`, a write as `SET key` (its command permission, `+@read`/`-@write`/`-get`, and
//! the key's permission, `%R~`/`%W~`, under one selector, by Redis's own
//! `RM_ACLCheckCommandPermissions`), before anything is read or written. What is not a key
//! access answers to the command it stands for through [`Caller::may_run`] (`FUNCTION LOAD`,
//! `INFO`, ...).

use autoloc_functions::Error;
use redis_module::{raw, AclPermissions, Context, RedisString, RedisValue};

use crate::api::module_api;
use crate::names::key_name;

fn text(v: &RedisValue) -> Option<&str> {
    match v {
        RedisValue::SimpleString(s) | RedisValue::BulkString(s) => Some(s),
        _ => None,
    }
}

/// The ACL user and database an access is made for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The ACL user's name (shared: copied into every lock scope that looks it up).
    pub user: std::sync::Arc<str>,
    /// The database (`SELECT`) of the client.
    pub db: i32,
}

/// What an access does to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads its value: `GET` (one key) or `MGET` (several), ACL `%R~`.
    Read,
    /// Sets its value: `SET`, ACL `%W~`.
    Write,
}

/// The Redis commands key accesses stand for, as bits of a set ([`Commands`]).
const GET: u8 = 1;
const MGET: u8 = 2;
const SET: u8 = 4;
/// Every command a key access may stand for, with its bit.
const KEY_COMMANDS: [(u8, &[u8]); 3] = [(GET, b"GET"), (MGET, b"MGET"), (SET, b"SET")];

/// A set of the commands of [`KEY_COMMANDS`] (a user's permissions to run them).
type Commands = u8;

/// What the reaper last found of a user of an open link ([`Standing::Active`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    /// The key commands it may run on every key (none unless its keys are `~*`).
    all_keys: Commands,
    /// Whether it has no selectors (only its root permissions).
    plain: bool,
}

/// The users of open links, as the reaper last found them.
type AllKeys = Vec<(std::sync::Arc<str>, Seen)>;

impl Access {
    /// The Redis command an access to `keys` keys stands for, and its bit.
    fn command(self, keys: usize) -> (u8, &'static [u8]) {
        match self {
            Access::Read if keys == 1 => (GET, b"GET"),
            Access::Read => (MGET, b"MGET"),
            Access::Write => (SET, b"SET"),
        }
    }
}

/// A user looked up for a series of checks; freed when dropped.
struct User(*mut raw::RedisModuleUser);

/// Users looked up during one [`LockScope`], by name (not those allowed every key, who need no
/// lookup), each with the key commands found allowed in this scope.
type ScopeUsers = Vec<(std::sync::Arc<str>, User, Commands)>;

/// A thread's [`LockScope`]: whether one is open, and its users (the vector keeps its room from
/// one scope to the next).
struct Scope {
    open: bool,
    users: ScopeUsers,
}

thread_local! {
    /// This thread's current [`LockScope`].
    static SCOPE: std::cell::RefCell<Scope> = const {
        std::cell::RefCell::new(Scope { open: false, users: Vec::new() })
    };
}

/// The users of open links as the data plane's reaper last found them ([`Seen`]): a user allowed
/// every key (`~*`) skips the lookup and the check of an access whose command it may run, and a
/// user without selectors has a command checked once per [`LockScope`], then only each key, until
/// the next refresh, at most 100 ms later, so a changed ACL (keys, commands or selectors) applies
/// within that time. A refusal is never taken from here: it is always the live ACL's.
static ALL_KEYS: std::sync::Mutex<AllKeys> = std::sync::Mutex::new(Vec::new());
/// Changes each time [`ALL_KEYS`] does (written under its mutex).
static ALL_KEYS_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

thread_local! {
    /// This thread's copy of [`ALL_KEYS`] and the generation it was copied at: the per-request
    /// check reads one atomic and this copy, not the mutex (two locked instructions per lock
    /// hold, each of which waits for every store still in flight, such as a reply just written
    /// to a ring another core reads).
    static ALL_KEYS_SEEN: std::cell::RefCell<(u64, AllKeys)> =
        const { std::cell::RefCell::new((0, Vec::new())) };
}

/// What the last [`refresh_standing`] found of `user`, if it was among them.
fn seen(user: &std::sync::Arc<str>) -> Option<Seen> {
    use std::sync::atomic::Ordering;
    ALL_KEYS_SEEN.with(|seen| {
        let mut seen = seen.borrow_mut();
        if ALL_KEYS_GENERATION.load(Ordering::Acquire) != seen.0 {
            let all = ALL_KEYS.lock().unwrap_or_else(|p| p.into_inner());
            seen.1.clone_from(&all);
            seen.0 = ALL_KEYS_GENERATION.load(Ordering::Relaxed);
        }
        // `Arc<str>`'s equality compares the pointers first.
        seen.1.iter().find(|(u, _)| u == user).map(|(_, s)| *s)
    })
}

/// Where a user stands, by `ACL GETUSER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Deleted or disabled (`off`): its links are closed.
    Gone,
    /// Enabled. `all_keys`: the key commands ([`KEY_COMMANDS`]) it may run on every key, if its
    /// key permissions are `~*` (every key, read and write); none otherwise. `plain`: it has no
    /// selectors, so a command and a key allowed are allowed together.
    Active { all_keys: Commands, plain: bool },
}

/// Records, for the users of open links, who may access every key and with which commands (see
/// [`ALL_KEYS`]).
pub fn refresh_standing(standings: &[(std::sync::Arc<str>, Standing)]) {
    let all: AllKeys = standings
        .iter()
        .filter_map(|(u, s)| match *s {
            Standing::Active { all_keys, plain } => Some((u.clone(), Seen { all_keys, plain })),
            Standing::Gone => None,
        })
        .collect();
    let mut current = ALL_KEYS.lock().unwrap_or_else(|p| p.into_inner());
    if *current != all {
        *current = all;
        ALL_KEYS_GENERATION.fetch_add(1, std::sync::atomic::Ordering::Release);
    }
}

/// While alive, the users this thread looks up are kept and reused: a data-plane thread opens
/// one for each hold of Redis's lock, so a burst of requests looks each user up once. A user
/// cannot change or disappear while the lock is held (ACL commands run on Redis's main thread),
/// and the scope ends before the lock is released, so nothing outlives what it points to.
#[derive(Debug)]
pub struct LockScope(());

impl LockScope {
    /// Starts keeping users; the caller holds Redis's lock until it drops the scope.
    pub fn begin() -> LockScope {
        SCOPE.with(|s| {
            let mut s = s.borrow_mut();
            s.users.clear();
            s.open = true;
        });
        LockScope(())
    }

    /// Frees the users looked up so far and starts afresh: called before the lock is given back
    /// in the middle of a scope (they may change while it is released).
    pub fn renew() {
        SCOPE.with(|s| s.borrow_mut().users.clear());
    }
}

impl Drop for LockScope {
    fn drop(&mut self) {
        SCOPE.with(|s| {
            let mut s = s.borrow_mut();
            s.users.clear();
            s.open = false;
        });
    }
}

impl Drop for User {
    fn drop(&mut self) {
        if let Ok(free) = module_api!(RedisModule_FreeModuleUser) {
            // SAFETY: `self.0` came non-null from RedisModule_GetModuleUserFromUserName and is
            // freed exactly once, here, while the caller still holds Redis's lock.
            unsafe { free(self.0) };
        }
    }
}

impl Caller {
    /// The user and database of the client running the current command.
    pub fn of_client(ctx: &Context) -> Result<Caller, Error> {
        let selected = module_api!(RedisModule_GetSelectedDb)?;
        // SAFETY: `ctx.ctx` is the live context of the command being run, under Redis's lock.
        let db = unsafe { selected(ctx.ctx) };
        Ok(Caller {
            user: ctx.get_current_user().to_string_lossy().into(),
            db,
        })
    }

    fn lookup(&self, ctx: &Context) -> Result<User, Error> {
        let name = key_name(ctx, self.user.as_bytes());
        let get = module_api!(RedisModule_GetModuleUserFromUserName)?;
        // SAFETY: `name` is a valid module string for the duration of the call; the call needs
        // Redis's lock, which every caller of this module's checks holds.
        let user = unsafe { get(name.inner) };
        if user.is_null() {
            return Err(Error::NoPerm(format!(
                "ACL user '{}' no longer exists",
                self.user
            )));
        }
        Ok(User(user))
    }

    /// Whether the user still exists and is enabled (a link of a deleted or disabled user is
    /// closed), and whether it may access every key.
    pub fn standing(&self, ctx: &Context) -> Standing {
        // `ACL GETUSER` replies nil for a deleted user, lists "off" among the flags of a disabled
        // one, and shows its key permissions as one string ("~*" for every key).
        let Ok(RedisValue::Array(fields)) = ctx.call("ACL", &["GETUSER", &*self.user][..]) else {
            return Standing::Gone;
        };
        let field = |name: &str| {
            fields
                .chunks(2)
                .find(|pair| text(&pair[0]) == Some(name))
                .and_then(|pair| pair.get(1))
        };
        let off = matches!(field("flags"), Some(RedisValue::Array(flags)) if flags.iter().any(|f| text(f) == Some("off")));
        if off {
            return Standing::Gone;
        }
        let mut all_keys = 0;
        if field("keys").and_then(text) == Some("~*") {
            // Every key: which of the key commands it may run (any key stands for all).
            if let Ok(user) = self.lookup(ctx) {
                let any_key = [key_name(ctx, b"k")];
                for (bit, command) in KEY_COMMANDS {
                    if user.may_run(ctx, command, &any_key).is_ok() {
                        all_keys |= bit;
                    }
                }
            }
        }
        // `ACL GETUSER` lists the selectors beyond the root permissions; none is an empty list.
        let plain = matches!(field("selectors"), Some(RedisValue::Array(s)) if s.is_empty());
        Standing::Active { all_keys, plain }
    }

    /// Fails with `NOPERM` naming `command` (with its subcommand, if any: `["FUNCTION",
    /// "LOAD"]`) if the user may not run it: for what the module does on its caller's behalf
    /// that reads or writes no key, checked as the Redis command it stands for. The command must
    /// take no keys in the words given (`INFO`, `FUNCTION LOAD`).
    pub fn may_run(&self, ctx: &Context, command: &[&[u8]]) -> Result<(), Error> {
        let user = self.lookup(ctx)?;
        let words: Vec<RedisString> = command.iter().map(|w| key_name(ctx, w)).collect();
        let [name, rest @ ..] = words.as_slice() else {
            return Err(Error::Io("no command to check".into()));
        };
        user.may_run(ctx, name.as_slice(), rest).map_err(|()| {
            let words: Vec<String> = command
                .iter()
                .map(|w| String::from_utf8_lossy(w).to_ascii_uppercase())
                .collect();
            Error::NoPerm(format!(
                "user '{}' has no permission to run '{}'",
                self.user,
                words.join(" ")
            ))
        })
    }

    /// Fails with `NOPERM` naming the first key of `keys` the user may not access so.
    pub fn check<N: AsRef<[u8]>>(
        &self,
        ctx: &Context,
        keys: &[N],
        access: Access,
    ) -> Result<(), Error> {
        let names: Vec<RedisString> = keys.iter().map(|k| key_name(ctx, k.as_ref())).collect();
        self.check_names(ctx, &names, access)
    }

    /// [`Caller::check`] for keys already made into module strings.
    pub fn check_names(
        &self,
        ctx: &Context,
        names: &[RedisString],
        access: Access,
    ) -> Result<(), Error> {
        let (bit, command) = access.command(names.len());
        // In a scope: `Some(Ok(None))` for a user allowed every key with this command,
        // `Some(Ok(Some((ptr, verified))))` for one looked up (now or earlier in the scope), with
        // the commands found allowed earlier in the scope.
        let cached = SCOPE.with(|s| {
            let mut s = s.borrow_mut();
            if !s.open {
                return None;
            }
            let users = &mut s.users;
            if let Some((_, u, verified)) = users.iter().find(|(n, ..)| *n == self.user) {
                return Some(Ok(Some((u.0, *verified))));
            }
            if seen(&self.user).is_some_and(|s| s.all_keys & bit != 0) {
                return Some(Ok(None));
            }
            Some(self.lookup(ctx).map(|u| {
                let ptr = u.0;
                users.push((self.user.clone(), u, 0));
                Some((ptr, 0))
            }))
        });
        // Outside a scope, a user of our own, freed when this check ends.
        let own;
        let (user, verified) = match cached {
            Some(found) => match found? {
                Some(looked) => looked,
                None => return Ok(()),
            },
            None => {
                own = self.lookup(ctx)?;
                (own.0, 0)
            }
        };
        let user = Looked(user);
        // A user without selectors whose command was allowed earlier in this scope (where its
        // ACL cannot change): only its keys are left to check.
        if verified & bit != 0 {
            return match names.iter().all(|n| user.may_access(n, access)) {
                true => Ok(()),
                false => Err(self.refusal(&user, command, names, access)),
            };
        }
        let refused = match access {
            // One check for the whole read: `GET key` or `MGET key...`.
            Access::Read => user.may_run(ctx, command, names).err(),
            // `SET key` for each key (`SET` takes one).
            Access::Write => names
                .iter()
                .any(|name| {
                    user.may_run(ctx, command, std::slice::from_ref(name))
                        .is_err()
                })
                .then_some(()),
        };
        if refused.is_some() {
            return Err(self.refusal(&user, command, names, access));
        }
        // Once per scope, user and command: later checks take the path above.
        if seen(&self.user).is_some_and(|s| s.plain) {
            SCOPE.with(|s| {
                let mut s = s.borrow_mut();
                if let Some((.., verified)) = s.users.iter_mut().find(|(n, ..)| *n == self.user) {
                    *verified |= bit;
                }
            });
        }
        Ok(())
    }

    /// Why `command` on `names` was refused: the first key the user may not access so, or else
    /// the command itself (or the keys together, which no one selector of the user allows).
    fn refusal(
        &self,
        user: &Looked,
        command: &[u8],
        names: &[RedisString],
        access: Access,
    ) -> Error {
        let command = String::from_utf8_lossy(command);
        let verb = match access {
            Access::Read => "read",
            Access::Write => "write",
        };
        let key = |name: &RedisString| String::from_utf8_lossy(name.as_slice()).into_owned();
        if let Some(name) = names.iter().find(|n| !user.may_access(n, access)) {
            return Error::NoPerm(format!(
                "user '{}' has no permission to {verb} key '{}' ({command})",
                self.user,
                key(name)
            ));
        }
        let what = match names {
            [name] => format!("on key '{}'", key(name)),
            [first, ..] => format!("on keys '{}', ...", key(first)),
            [] => String::new(),
        };
        Error::NoPerm(format!(
            "user '{}' has no permission to run '{command}' {what}",
            self.user
        ))
    }
}

/// A user looked up (by the scope or a [`User`] the caller keeps alive across its use).
struct Looked(*mut raw::RedisModuleUser);

impl Looked {
    /// Whether the user may run `command` with `args` (its keys), as Redis would check a
    /// client's command: the command's permission and every key's, under one selector.
    fn may_run(&self, ctx: &Context, command: &[u8], args: &[RedisString]) -> Result<(), ()> {
        let check = module_api!(RedisModule_ACLCheckCommandPermissions).map_err(drop)?;
        let name = key_name(ctx, command);
        let mut argv: Vec<*mut raw::RedisModuleString> = Vec::with_capacity(args.len() + 1);
        argv.push(name.inner);
        argv.extend(args.iter().map(|a| a.inner));
        let argc = std::os::raw::c_int::try_from(argv.len()).map_err(drop)?;
        // SAFETY: `self.0` is live (its owner drops after this call), `argv` holds `argc` valid
        // module strings that outlive the call, which only reads them; Redis's lock is held.
        // Every command checked here is given its keys (`GET` one, whose fixed arity Redis
        // checks its key positions against), so no key position lies past `argc`.
        let status = unsafe { check(self.0, argv.as_mut_ptr(), argc) };
        if status == raw::REDISMODULE_OK as i32 {
            Ok(())
        } else {
            Err(())
        }
    }

    /// Whether the user may access `name` so, whatever the command.
    fn may_access(&self, name: &RedisString, access: Access) -> bool {
        let Ok(check) = module_api!(RedisModule_ACLCheckKeyPermissions) else {
            return false;
        };
        let flags = match access {
            Access::Read => AclPermissions::ACCESS,
            Access::Write => AclPermissions::INSERT | AclPermissions::UPDATE,
        };
        // SAFETY: `self.0` is live and `name` a valid module string; Redis's lock is held.
        let status = unsafe { check(self.0, name.inner, flags.bits()) };
        status == raw::REDISMODULE_OK as i32
    }
}

impl User {
    fn may_run(&self, ctx: &Context, command: &[u8], args: &[RedisString]) -> Result<(), ()> {
        Looked(self.0).may_run(ctx, command, args)
    }
}
