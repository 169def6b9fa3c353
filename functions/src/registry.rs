//! The table of functions by name.

use std::sync::{Arc, RwLock};

use crate::builtins::{
    aggregate::Aggregate, digest::DigestFn, get::Get, khop::Khop, neighbours::Expand,
    neighbours::Neighbours, pagerank::Induced, pagerank::PageRank,
};
use crate::{Error, Function, Result};

/// Functions by name, each with a stable index (its slot in per-function counter tables).
///
/// Built-ins are registered at start; user functions come and go while it is shared (LOAD,
/// REPLACE, DELETE), so it is read and changed through `&self`. A slot freed by a delete is
/// reused by the next new name.
#[derive(Debug)]
pub struct Registry {
    slots: RwLock<Vec<Option<Arc<dyn Function>>>>,
}

impl Clone for Registry {
    fn clone(&self) -> Registry {
        Registry {
            slots: RwLock::new(self.read().clone()),
        }
    }
}

impl Registry {
    /// The largest number of functions a registry holds (counter tables are sized by it).
    pub const CAPACITY: usize = 64;

    /// An empty registry.
    pub fn empty() -> Registry {
        Registry {
            slots: RwLock::new(Vec::new()),
        }
    }

    /// The built-in functions: `khop`, `digest`, `pagerank`, `aggregate`, `get`, `neighbours`,
    /// `expand`, at indices 0..7.
    pub fn builtin() -> Registry {
        let r = Registry::empty();
        for f in [
            Arc::new(Khop) as Arc<dyn Function>,
            Arc::new(DigestFn),
            Arc::new(PageRank),
            Arc::new(Aggregate),
            Arc::new(Get),
            Arc::new(Neighbours),
            Arc::new(Expand),
            Arc::new(Induced),
        ] {
            r.register(f)
                .expect("built-ins fit and have distinct names");
        }
        r
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Option<Arc<dyn Function>>>> {
        self.slots.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Option<Arc<dyn Function>>>> {
        self.slots.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a function; fails if the name is taken or the registry is full.
    pub fn register(&self, f: Arc<dyn Function>) -> Result<usize> {
        self.put(f, false)
    }

    /// Adds a function, or puts it in place of the one of the same name (same index) if
    /// `replace`; a built-in is never replaced.
    pub fn put(&self, f: Arc<dyn Function>, replace: bool) -> Result<usize> {
        let mut slots = self.write();
        if let Some(i) = find(&slots, f.name()) {
            let old = slots[i].as_ref().expect("found");
            if !replace || old.version().is_none() {
                return Err(Error::Registry(format!(
                    "function '{}' already exists{}",
                    f.name(),
                    if old.version().is_none() {
                        " (a built-in)"
                    } else {
                        " (LOAD REPLACE replaces it)"
                    }
                )));
            }
            slots[i] = Some(f);
            return Ok(i);
        }
        if let Some(i) = slots.iter().position(Option::is_none) {
            slots[i] = Some(f);
            return Ok(i);
        }
        if slots.len() >= Self::CAPACITY {
            return Err(Error::Registry(format!(
                "registry is full ({} functions)",
                Self::CAPACITY
            )));
        }
        slots.push(Some(f));
        Ok(slots.len() - 1)
    }

    /// Removes the user function called `name`; built-ins stay.
    pub fn remove(&self, name: &str) -> Result<(usize, Arc<dyn Function>)> {
        let mut slots = self.write();
        let i = find(&slots, name).ok_or_else(|| Error::UnknownFunction(name.to_string()))?;
        if slots[i].as_ref().is_some_and(|f| f.version().is_none()) {
            return Err(Error::Registry(format!(
                "'{name}' is a built-in and cannot be deleted"
            )));
        }
        Ok((i, slots[i].take().expect("found")))
    }

    /// The index and function called `name` (ASCII case-insensitive).
    pub fn lookup(&self, name: &str) -> Option<(usize, Arc<dyn Function>)> {
        let slots = self.read();
        find(&slots, name).map(|i| (i, slots[i].clone().expect("found")))
    }

    /// Like [`Registry::lookup`], for a name in raw bytes, with an error naming the unknown one.
    pub fn resolve(&self, name: &[u8]) -> Result<(usize, Arc<dyn Function>)> {
        std::str::from_utf8(name)
            .ok()
            .and_then(|n| self.lookup(n))
            .ok_or_else(|| Error::UnknownFunction(String::from_utf8_lossy(name).into_owned()))
    }

    /// The function at `index`.
    pub fn get(&self, index: usize) -> Option<Arc<dyn Function>> {
        self.read().get(index).cloned().flatten()
    }

    /// All functions with their indices, now.
    pub fn all(&self) -> Vec<(usize, Arc<dyn Function>)> {
        self.read()
            .iter()
            .enumerate()
            .filter_map(|(i, f)| f.clone().map(|f| (i, f)))
            .collect()
    }

    /// The name in each slot, by index (empty for a free slot).
    pub fn names(&self) -> Vec<String> {
        self.read()
            .iter()
            .map(|f| {
                f.as_ref()
                    .map_or_else(String::new, |f| f.name().to_string())
            })
            .collect()
    }

    /// How many functions there are.
    pub fn len(&self) -> usize {
        self.read().iter().flatten().count()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One past the highest index in use (counter tables cover `0..slots()`).
    pub fn slots(&self) -> usize {
        self.read().len()
    }
}

fn find(slots: &[Option<Arc<dyn Function>>], name: &str) -> Option<usize> {
    slots.iter().position(|f| {
        f.as_ref()
            .is_some_and(|f| f.name().eq_ignore_ascii_case(name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_resolve_by_name() {
        let r = Registry::builtin();
        assert_eq!(r.len(), 8);
        assert_eq!(r.resolve(b"KHOP").unwrap().0, 0);
        assert!(matches!(r.resolve(b"nope"), Err(Error::UnknownFunction(_))));
        assert!(matches!(
            r.resolve(b"\xff\x00"),
            Err(Error::UnknownFunction(_))
        ));
    }
}
