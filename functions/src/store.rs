//! The [`Store`] trait: the only way a function touches data.

use std::future::Future;
use std::pin::Pin;

use crate::graph::Neighbours;
use crate::Error;

/// The future a store operation returns. Storage-side stores complete it at once; compute-side
/// stores complete it when the reply arrives.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + 'a>>;

/// Called once per key read, in the order the keys were given: `(index, value)`, with `None` for
/// a missing key. The value is borrowed: storage-side it points into Redis's own memory and is
/// valid only during the call, so a function decodes what it needs and keeps no reference.
pub type Visit<'a> = &'a mut dyn FnMut(usize, Option<&[u8]>) -> Result<(), Error>;

/// Called once per vertex read by [`Store::read_neighbours`], in the order the keys were given:
/// `(index, neighbours)`, with `None` for a missing key.
pub type NeighbourVisit<'a> =
    &'a mut dyn for<'n> FnMut(usize, Option<Neighbours<'n>>) -> Result<(), Error>;

/// Where a function reads and writes keys.
///
/// Every method is a suspension point of the invocation. One [`read`](Store::read) of many keys
/// is one round trip compute-side (a multi-get), so a function should read the independent keys
/// of one step together, e.g. one BFS level of `khop`.
pub trait Store {
    /// Reads `keys` and calls `visit` for each of them in order.
    ///
    /// The read rule, the same on every side and transport: a missing key is visited as `None`;
    /// a key holding something other than a string fails the whole read with
    /// [`Error::WrongType`] before any value is visited.
    fn read<'a>(&'a self, keys: &'a [Vec<u8>], visit: Visit<'a>) -> StoreFuture<'a, ()>;

    /// Reads the vertices stored at `keys` ([`crate::graph`]'s layouts) and calls `visit` with
    /// each one's neighbours, in order: one store access, as [`read`](Store::read), under its
    /// rule. A value that is no vertex fails the read with [`Error::BadValue`] naming its key.
    ///
    /// By default the neighbours come as the stored value, decoded as `visit` walks them. A
    /// store that decodes faster than its caller overrides it: a WebAssembly guest's store has
    /// its host decode natively and hand over the ids.
    fn read_neighbours<'a>(
        &'a self,
        keys: &'a [Vec<u8>],
        visit: NeighbourVisit<'a>,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.read(keys, &mut |i, value| {
                visit(
                    i,
                    value.map(|value| Neighbours::Value {
                        key: &keys[i],
                        value,
                    }),
                )
            })
            .await
        })
    }

    /// Sets `key` to `value`.
    fn write<'a>(&'a self, key: &'a [u8], value: &'a [u8]) -> StoreFuture<'a, ()>;

    /// A suspension point for long CPU loops: the storage side checks its budget here.
    fn checkpoint(&self) -> StoreFuture<'_, ()>;

    /// Until when the invocation may compute before its next access or checkpoint, if the
    /// store bounds it (storage-side: when the lock budget runs out). A guest's run is
    /// interrupted then, even in a loop that never reaches the store. An instant rather than a
    /// duration: a guest's host asks after every access, and it needs no clock read.
    fn deadline(&self) -> Option<std::time::Instant> {
        None
    }

    /// Whether this store serves `key` here: a shard of a Redis Cluster serves the keys of its
    /// own slots, and a read of another's fails (`WRONGSHARD`). A function that may go on where
    /// it reads cheaply asks first (`expand`); by default (one node, or the compute side, which
    /// reaches every shard) every key is served.
    fn serves(&self, _key: &[u8]) -> bool {
        true
    }

    /// Whom the invocation runs for, where state may outlive it: a WebAssembly guest's instance
    /// serves later invocations only of the same principal. Storage-side the caller's ACL user;
    /// by default (compute-side) the process, which holds every credential its links use and
    /// every value they read.
    fn principal(&self) -> &str {
        ""
    }
}

/// Convenience reads on any [`Store`].
pub trait StoreExt: Store {
    /// Reads one key into an owned value.
    fn get<'a>(&'a self, key: &'a [u8]) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let keys = [key.to_vec()];
            let mut out = None;
            self.read(&keys, &mut |_, v| {
                out = v.map(<[u8]>::to_vec);
                Ok(())
            })
            .await?;
            Ok(out)
        })
    }
}

impl<S: Store + ?Sized> StoreExt for S {}

/// A store borrowed is the store: a wrapper (a read set over it, say) can take either.
impl<S: Store + ?Sized> Store for &S {
    fn read<'a>(&'a self, keys: &'a [Vec<u8>], visit: Visit<'a>) -> StoreFuture<'a, ()> {
        (**self).read(keys, visit)
    }
    fn read_neighbours<'a>(
        &'a self,
        keys: &'a [Vec<u8>],
        visit: NeighbourVisit<'a>,
    ) -> StoreFuture<'a, ()> {
        (**self).read_neighbours(keys, visit)
    }
    fn write<'a>(&'a self, key: &'a [u8], value: &'a [u8]) -> StoreFuture<'a, ()> {
        (**self).write(key, value)
    }
    fn checkpoint(&self) -> StoreFuture<'_, ()> {
        (**self).checkpoint()
    }
    fn deadline(&self) -> Option<std::time::Instant> {
        (**self).deadline()
    }
    fn serves(&self, key: &[u8]) -> bool {
        (**self).serves(key)
    }
    fn principal(&self) -> &str {
        (**self).principal()
    }
}

/// A store over an in-memory map, for tests. (A pushed-back invocation's read set is replayed by
/// the compute library's `ReadSetStore`.)
#[derive(Debug, Default)]
pub struct MemStore {
    map: std::cell::RefCell<std::collections::HashMap<Vec<u8>, Vec<u8>>>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// Sets `key` to `value` outside of any invocation.
    pub fn insert(&self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.map.borrow_mut().insert(key.into(), value.into());
    }
}

impl Store for MemStore {
    fn read<'a>(&'a self, keys: &'a [Vec<u8>], visit: Visit<'a>) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let map = self.map.borrow();
            for (i, k) in keys.iter().enumerate() {
                visit(i, map.get(k).map(Vec::as_slice))?;
            }
            Ok(())
        })
    }

    fn write<'a>(&'a self, key: &'a [u8], value: &'a [u8]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.map.borrow_mut().insert(key.to_vec(), value.to_vec());
            Ok(())
        })
    }

    fn checkpoint(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
}
