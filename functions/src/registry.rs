//! The table of functions by name.

use std::sync::Arc;

use crate::builtins::{
    aggregate::Aggregate, digest::DigestFn, get::Get, khop::Khop, pagerank::PageRank,
};
use crate::{Error, Function, Result};

/// Functions by name, each with a stable index (its slot in per-function counter tables).
#[derive(Debug, Clone)]
pub struct Registry {
    functions: Vec<Arc<dyn Function>>,
}

impl Registry {
    /// The largest number of functions a registry holds (counter tables are sized by it).
    pub const CAPACITY: usize = 64;

    /// An empty registry.
    pub fn empty() -> Registry {
        Registry {
            functions: Vec::new(),
        }
    }

    /// The built-in functions: `khop`, `digest`, `pagerank`, `aggregate`, `get`, at indices 0..5.
    pub fn builtin() -> Registry {
        let mut r = Registry::empty();
        for f in [
            Arc::new(Khop) as Arc<dyn Function>,
            Arc::new(DigestFn),
            Arc::new(PageRank),
            Arc::new(Aggregate),
            Arc::new(Get),
        ] {
            r.register(f)
                .expect("built-ins fit and have distinct names");
        }
        r
    }

    /// Adds a function; fails if the name is taken or the registry is full.
    pub fn register(&mut self, f: Arc<dyn Function>) -> Result<usize> {
        if self.lookup(f.name()).is_some() {
            return Err(Error::Registry(format!(
                "function '{}' is already registered",
                f.name()
            )));
        }
        if self.functions.len() >= Self::CAPACITY {
            return Err(Error::Registry(format!(
                "registry is full ({} functions)",
                Self::CAPACITY
            )));
        }
        self.functions.push(f);
        Ok(self.functions.len() - 1)
    }

    /// The index and function called `name` (ASCII case-insensitive).
    pub fn lookup(&self, name: &str) -> Option<(usize, &Arc<dyn Function>)> {
        self.functions
            .iter()
            .enumerate()
            .find(|(_, f)| f.name().eq_ignore_ascii_case(name))
    }

    /// Like [`Registry::lookup`], for a name in raw bytes, with an error naming the unknown one.
    pub fn resolve(&self, name: &[u8]) -> Result<(usize, &Arc<dyn Function>)> {
        std::str::from_utf8(name)
            .ok()
            .and_then(|n| self.lookup(n))
            .ok_or_else(|| Error::UnknownFunction(String::from_utf8_lossy(name).into_owned()))
    }

    /// The function at `index`.
    pub fn get(&self, index: usize) -> Option<&Arc<dyn Function>> {
        self.functions.get(index)
    }

    /// All functions, by index.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Function>> {
        self.functions.iter()
    }

    /// How many functions there are.
    pub fn len(&self) -> usize {
        self.functions.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.functions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_resolve_by_name() {
        let r = Registry::builtin();
        assert_eq!(r.len(), 5);
        assert_eq!(r.resolve(b"KHOP").unwrap().0, 0);
        assert!(matches!(r.resolve(b"nope"), Err(Error::UnknownFunction(_))));
        assert!(matches!(
            r.resolve(b"\xff\x00"),
            Err(Error::UnknownFunction(_))
        ));
    }
}
