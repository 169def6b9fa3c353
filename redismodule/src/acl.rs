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
            Error::Busy(format!(
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
    /// The ACL user's name.
    pub user: String,
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
            user: ctx.get_current_user().to_string_lossy(),
            db,
        })
    }

    fn lookup(&self, ctx: &Context) -> Result<User, Error> {
        let name = RedisString::create(std::ptr::NonNull::new(ctx.ctx), self.user.as_str());
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

    /// Whether the user still exists and is enabled: a link of a deleted or disabled user is
    /// closed.
    pub fn alive(&self, ctx: &Context) -> bool {
        if self.lookup(ctx).is_err() {
            return false;
        }
        // `ACL GETUSER` lists "off" among the flags of a disabled user.
        let Ok(RedisValue::Array(fields)) = ctx.call("ACL", &["GETUSER", self.user.as_str()][..])
        else {
            return false;
        };
        let flags = fields
            .chunks(2)
            .find(|pair| text(&pair[0]) == Some("flags"))
            .and_then(|pair| pair.get(1));
        !matches!(flags, Some(RedisValue::Array(flags)) if flags.iter().any(|f| text(f) == Some("off")))
    }

    /// Fails with `NOPERM` naming the first key of `keys` the user may not access so.
    pub fn check<N: AsRef<[u8]>>(
        &self,
        ctx: &Context,
        keys: &[N],
        access: Access,
    ) -> Result<(), Error> {
        let user = self.lookup(ctx)?;
        let check = module_api!(RedisModule_ACLCheckKeyPermissions)?;
        let flags = match access {
            Access::Read => AclPermissions::ACCESS,
            Access::Write => AclPermissions::INSERT | AclPermissions::UPDATE,
        };
        for key in keys {
            let key = key.as_ref();
            let name = ctx.create_string(key);
            // SAFETY: `user` is live (freed on drop, after this loop) and `name` a valid module
            // string; Redis's lock is held.
            let status = unsafe { check(user.0, name.inner, flags.bits()) };
            if status != raw::REDISMODULE_OK as i32 {
                let verb = match access {
                    Access::Read => "read",
                    Access::Write => "write",
                };
                return Err(Error::NoPerm(format!(
                    "user '{}' has no permission to {verb} key '{}'",
                    self.user,
                    String::from_utf8_lossy(key)
                )));
            }
        }
        Ok(())
    }
}
