//! Reading ops from the nodes of an exported graph (`crate::model::exported`): each op type's
//! [`Import`], in its own file, names the schema's ops it reads and builds itself from a
//! [`NodeReader`], which hands out the node's params and tensors one at a time so that
//! whatever is left unread is reported as unknown.

use crate::error::Error;
use crate::model::builder::Builder;
use crate::model::exported::{usizes, MAX_INT};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// How an op is read from an exported graph.
pub trait Import: Sized {
    /// The schema's op names that build it, in the order "unknown op" lists them (none: no
    /// graph names it).
    const NAMES: &'static [&'static str] = &[];

    /// The op of node `n`, whose op is one of [`Self::NAMES`].
    fn import(n: &mut NodeReader) -> Imported<Self> {
        Err(format!("op '{}' cannot be read from a graph", n.op).into())
    }
}

/// An op read from a node, or why it cannot be.
pub type Imported<T> = std::result::Result<T, NodeError>;

/// Why a node cannot be read.
pub enum NodeError {
    /// The graph document is wrong (reported with the node).
    Doc(String),
    /// A tensor is wrong (the store's own error: name, shapes).
    Load(Error),
}

impl From<Error> for NodeError {
    fn from(e: Error) -> Self {
        NodeError::Load(e)
    }
}

impl From<String> for NodeError {
    fn from(e: String) -> Self {
        NodeError::Doc(e)
    }
}

/// A node being read: its params and tensors (each read once), its number of inputs, and the
/// builder its tensors go into.
pub struct NodeReader<'n, 's> {
    pub b: &'n mut Builder<'s>,
    /// The node's name, for the params an op derives from its tensors.
    pub name: &'n str,
    /// The op, as the graph names it.
    pub op: &'n str,
    inputs: usize,
    params: &'n Map<String, Value>,
    tensors: &'n BTreeMap<String, String>,
    /// The params and tensor roles asked for so far.
    read: Vec<&'static str>,
    roles: Vec<&'static str>,
}

type Parsed<T> = std::result::Result<T, String>;

impl<'n, 's> NodeReader<'n, 's> {
    pub fn new(
        b: &'n mut Builder<'s>,
        name: &'n str,
        op: &'n str,
        inputs: usize,
        params: &'n Map<String, Value>,
        tensors: &'n BTreeMap<String, String>,
    ) -> Self {
        NodeReader {
            b,
            name,
            op,
            inputs,
            params,
            tensors,
            read: vec![],
            roles: vec![],
        }
    }

    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// Fails unless the node has `k` inputs.
    pub fn arity(&self, k: usize) -> Parsed<()> {
        match self.inputs == k {
            true => Ok(()),
            false => Err(format!("takes {k} input(s), has {}", self.inputs)),
        }
    }

    /// The state_dict key of an optional tensor.
    pub fn tensor(&mut self, role: &'static str) -> Option<String> {
        self.roles.push(role);
        self.tensors.get(role).cloned()
    }

    /// The state_dict key of a tensor the op needs.
    pub fn need_tensor(&mut self, role: &'static str) -> Parsed<String> {
        self.tensor(role)
            .ok_or_else(|| format!("missing tensor '{role}'"))
    }

    /// Whether the node has param `k` (without reading it).
    pub fn has(&self, k: &str) -> bool {
        self.params.contains_key(k)
    }

    fn get(&mut self, k: &'static str) -> Parsed<&'n Value> {
        self.read.push(k);
        self.params
            .get(k)
            .ok_or_else(|| format!("missing parameter '{k}'"))
    }

    pub fn f64(&mut self, k: &'static str) -> Parsed<f64> {
        let v = self.get(k)?;
        v.as_f64()
            .filter(|x| x.is_finite())
            .ok_or_else(|| format!("parameter '{k}' must be a finite number, not {v}"))
    }

    pub fn bool(&mut self, k: &'static str) -> Parsed<bool> {
        let v = self.get(k)?;
        v.as_bool()
            .ok_or_else(|| format!("parameter '{k}' must be true or false, not {v}"))
    }

    /// A list of `len` integers ≥ `min` (any length when len is 0).
    pub fn list(&mut self, k: &'static str, len: usize, min: usize) -> Parsed<Vec<usize>> {
        let v = self.get(k)?;
        usizes(Some(v))
            .filter(|l| (len == 0 || l.len() == len) && l.iter().all(|&d| d >= min))
            .ok_or_else(|| match len {
                0 => format!("parameter '{k}' must be a list of integers ≥ {min}, not {v}"),
                _ => format!("parameter '{k}' must be {len} integers ≥ {min}, not {v}"),
            })
    }

    pub fn pair(&mut self, k: &'static str, min: usize) -> Parsed<(usize, usize)> {
        let l = self.list(k, 2, min)?;
        Ok((l[0], l[1]))
    }

    pub fn int(&mut self, k: &'static str, min: usize) -> Parsed<usize> {
        let v = self.get(k)?;
        v.as_u64()
            .filter(|&d| d < MAX_INT)
            .map(|d| d as usize)
            .filter(|&d| d >= min)
            .ok_or_else(|| format!("parameter '{k}' must be an integer ≥ {min}, not {v}"))
    }

    /// Fails on a param, then on a tensor role, that the op did not read.
    pub fn finish(self) -> Parsed<()> {
        let listed = |l: &[&str]| match l {
            [] => "none".to_owned(),
            _ => l.join(", "),
        };
        if let Some(k) = self
            .params
            .keys()
            .find(|k| !self.read.contains(&k.as_str()))
        {
            return Err(format!(
                "unknown parameter '{k}' of op '{}' (its parameters: {})",
                self.op,
                listed(&self.read)
            ));
        }
        if let Some(role) = self
            .tensors
            .keys()
            .find(|r| !self.roles.contains(&r.as_str()))
        {
            return Err(format!(
                "unknown tensor role '{role}' of op '{}' (its tensors: {})",
                self.op,
                listed(&self.roles)
            ));
        }
        Ok(())
    }
}
