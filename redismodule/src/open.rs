//! Opening keys to read them, so that every handle stays valid while the read lasts.
//!
//! Reading a string through DMA (`RedisModule_StringDMA`, which `RedisKey::read` calls) replaces
//! an encoded string's object in the keyspace (embstr, int, a shared integer) with a plain copy
//! and frees the old one. A second handle to the same key, opened before that, still points at
//! the freed object: a read naming a key twice returned garbage or crashed redis-server. So each
//! key is read once as soon as it is opened, before the next one is: every handle then points
//! at the key's plain object, which later reads leave where it is.

use redis_module::key::RedisKey;
use redis_module::{Context, KeyType, RedisString};

/// Opens every key of `names` (read-only) onto the end of `opened`, each made plain before the
/// next is opened.
pub fn open_for_read(ctx: &Context, names: &[RedisString], opened: &mut Vec<RedisKey>) {
    for name in names {
        let key = ctx.open_key(name);
        if key.key_type() == KeyType::String {
            // Only for its effect: the object is plain from now on. A failure shows again
            // when the value is read.
            let _ = key.read();
        }
        opened.push(key);
    }
}
