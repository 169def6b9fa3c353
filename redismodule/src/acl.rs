//! Who is asking: every key the module reads or writes answers to the ACL user of the client that
//! made the call (`AUTOLOC.CALL`, `AUTOLOC.INVOKE`, `AUTOLOC.MGET`) or opened the link
//! (`AUTOLOC.CONNECT`), on that client's database.
//!
//! The user is looked up by name at every check, so a changed ACL applies to the next request
//! of an open link, and a deleted user is refused (its links are closed by the data plane's
//! reaper, see [`Caller::alive`]). Read permission (`%R~`) is checked for reads, write permission
//! (`%W~`) for writes, each key before anything is read or written.

use autoloc_functions::Error;
use redis_module::{raw, AclPermissions, Context, RedisString, RedisValue};

/// The module API function `$name`, or an error saying this redis-server lacks it.
macro_rules! module_api {
    ($name:ident) => {{
        // SAFETY: the API table is written once, by RedisModule_Init while the module loads,
        // before any command runs or any thread starts; afterwards it is only read.
        let f = unsafe { raw::$name };
        f.ok_or_else(|| {
            autoloc_functions::Error::Busy(format!(
                "this redis-server lacks {} (Redis 7 needed)",
                stringify!($name)
            ))
        })
    }};
}
pub(crate) use module_api;

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
    /// Reads its value (ACL `%R~`).
    Read,
    /// Sets its value (ACL `%W~`).
    Write,
}

/// A user looked up for a series of checks; freed when dropped.
struct User(*mut raw::RedisModuleUser);

/// Users looked up during one [`LockScope`], by name (not those allowed every key, who need no
/// lookup).
type ScopeUsers = Vec<(std::sync::Arc<str>, User)>;

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

/// The users the data plane's reaper last found allowed every key (`~*`): their links skip the
/// per-key check until the next refresh, at most 100 ms later, so a narrowed ACL applies within
/// that time.
static ALL_KEYS: std::sync::Mutex<Vec<std::sync::Arc<str>>> = std::sync::Mutex::new(Vec::new());
/// Changes each time [`ALL_KEYS`] does (written under its mutex).
static ALL_KEYS_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

thread_local! {
    /// This thread's copy of [`ALL_KEYS`] and the generation it was copied at: the per-request
    /// check reads one atomic and this copy, not the mutex (two locked instructions per lock
    /// hold, each of which waits for every store still in flight, such as a reply just written
    /// to a ring another core reads).
    static ALL_KEYS_SEEN: std::cell::RefCell<(u64, Vec<std::sync::Arc<str>>)> =
        const { std::cell::RefCell::new((0, Vec::new())) };
}

/// Whether `user` may access every key, as of the last [`refresh_standing`].
fn allowed_all_keys(user: &std::sync::Arc<str>) -> bool {
    use std::sync::atomic::Ordering;
    ALL_KEYS_SEEN.with(|seen| {
        let mut seen = seen.borrow_mut();
        if ALL_KEYS_GENERATION.load(Ordering::Acquire) != seen.0 {
            let all = ALL_KEYS.lock().unwrap_or_else(|p| p.into_inner());
            seen.1.clone_from(&all);
            seen.0 = ALL_KEYS_GENERATION.load(Ordering::Relaxed);
        }
        // `Arc<str>`'s equality compares the pointers first.
        seen.1.contains(user)
    })
}

/// Where a user stands, by `ACL GETUSER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Deleted or disabled (`off`): its links are closed.
    Gone,
    /// Enabled; `all_keys` if its key permissions are `~*` (every key, read and write).
    Active { all_keys: bool },
}

/// Records, for the users of open links, who may access every key (see [`ALL_KEYS`]).
pub fn refresh_standing(standings: &[(std::sync::Arc<str>, Standing)]) {
    let all: Vec<std::sync::Arc<str>> = standings
        .iter()
        .filter(|(_, s)| *s == Standing::Active { all_keys: true })
        .map(|(u, _)| u.clone())
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
        let name = crate::store::key_name(ctx, self.user.as_bytes());
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
        Standing::Active {
            all_keys: field("keys").and_then(text) == Some("~*"),
        }
    }

    /// Fails with `NOPERM` naming the first key of `keys` the user may not access so.
    pub fn check<N: AsRef<[u8]>>(
        &self,
        ctx: &Context,
        keys: &[N],
        access: Access,
    ) -> Result<(), Error> {
        let names: Vec<RedisString> = keys
            .iter()
            .map(|k| crate::store::key_name(ctx, k.as_ref()))
            .collect();
        self.check_names(ctx, &names, access)
    }

    /// [`Caller::check`] for keys already made into module strings.
    pub fn check_names(
        &self,
        ctx: &Context,
        names: &[RedisString],
        access: Access,
    ) -> Result<(), Error> {
        // In a scope: `Some(Ok(None))` for a user allowed every key, `Some(Ok(Some(ptr)))` for one
        // looked up (now or earlier in the scope).
        let cached = SCOPE.with(|s| {
            let mut s = s.borrow_mut();
            if !s.open {
                return None;
            }
            let users = &mut s.users;
            if let Some((_, u)) = users.iter().find(|(n, _)| *n == self.user) {
                return Some(Ok(Some(u.0)));
            }
            if allowed_all_keys(&self.user) {
                return Some(Ok(None));
            }
            Some(self.lookup(ctx).map(|u| {
                let ptr = u.0;
                users.push((self.user.clone(), u));
                Some(ptr)
            }))
        });
        // Outside a scope, a user of our own, freed when this check ends.
        let own;
        let user = match cached {
            Some(found) => match found? {
                Some(ptr) => ptr,
                None => return Ok(()),
            },
            None => {
                own = self.lookup(ctx)?;
                own.0
            }
        };
        let check = module_api!(RedisModule_ACLCheckKeyPermissions)?;
        let flags = match access {
            Access::Read => AclPermissions::ACCESS,
            Access::Write => AclPermissions::INSERT | AclPermissions::UPDATE,
        };
        for name in names {
            // SAFETY: `user` is live (freed when its scope or `own` drops, after this loop) and
            // `name` a valid module string; Redis's lock is held.
            let status = unsafe { check(user, name.inner, flags.bits()) };
            if status != raw::REDISMODULE_OK as i32 {
                let verb = match access {
                    Access::Read => "read",
                    Access::Write => "write",
                };
                return Err(Error::NoPerm(format!(
                    "user '{}' has no permission to {verb} key '{}'",
                    self.user,
                    String::from_utf8_lossy(name.as_slice())
                )));
            }
        }
        Ok(())
    }
}
