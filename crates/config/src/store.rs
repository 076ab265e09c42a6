//! The set of configuration resources in force, keyed as `kubectl apply` keys them (API group,
//! kind, namespace, name): applying a document creates or replaces its resource, deleting removes it,
//! and the whole set is validated together before it replaces the previous one.

use crate::split::split;
use crate::{Diagnostic, Errors, Loaded};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One document of a file, with what identifies it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Resource {
    pub kind: String,
    pub api_version: String,
    pub namespace: String,
    pub name: String,
    /// Where it came from, for diagnostics.
    pub file: PathBuf,
    pub first_line: usize,
    #[serde(skip)]
    pub text: String,
}

impl Resource {
    /// The API group (`gateway.networking.k8s.io`, `policy.linkerd.io`; empty for core): two
    /// HTTPRoutes of one name in different groups are different resources. The version is not
    /// part of the key, as `kubectl apply` of another version replaces the resource.
    pub fn group(&self) -> &str {
        self.api_version
            .rsplit_once('/')
            .map_or("", |(group, _)| group)
    }

    pub fn key(&self) -> (&str, &str, &str, &str) {
        (self.group(), &self.kind, &self.namespace, &self.name)
    }
}

/// Cuts a file into resources. Documents without a kind or name, or that are not YAML at all,
/// are kept under an empty name so that validation reports them.
pub fn resources(file: &Path, text: &str) -> Vec<Resource> {
    if crate::split::unprintable(text).is_some() {
        // Not text at all (NUL bytes…): one nameless resource, which validation refuses with
        // the file's name and the place.
        return vec![Resource {
            kind: String::new(),
            api_version: String::new(),
            namespace: model::names::DEFAULT_NAMESPACE.to_string(),
            name: String::new(),
            file: file.to_path_buf(),
            first_line: 1,
            text: text.to_string(),
        }];
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    split(text)
        .into_iter()
        .filter_map(|d| {
            let v = match serde_yaml_ng::from_str::<serde_yaml_ng::Value>(d.text) {
                Ok(v) if v.is_null() => return None,
                Ok(v) => v,
                // Only comments: nothing to keep.
                Err(_) if matches!(crate::marked::Node::parse(d.text), Ok(None)) => return None,
                Err(_) => serde_yaml_ng::Value::Null,
            };
            let s = |v: &serde_yaml_ng::Value| v.as_str().unwrap_or("").to_string();
            let ns = s(&v["metadata"]["namespace"]);
            let (kind, api_version) = (s(&v["kind"]), s(&v["apiVersion"]));
            // A Namespace is cluster-scoped: it has no namespace of its own.
            let cluster_scoped = kind == "Namespace" && api_version == "v1";
            Some(Resource {
                namespace: if cluster_scoped {
                    String::new()
                } else if ns.is_empty() {
                    model::names::DEFAULT_NAMESPACE.to_string()
                } else {
                    ns
                },
                kind,
                api_version,
                name: s(&v["metadata"]["name"]),
                file: file.to_path_buf(),
                first_line: d.first_line,
                text: d.text.to_string(),
            })
        })
        .collect()
}

/// Resources in the order they were first applied.
#[derive(Clone, Debug, Default)]
pub struct Store {
    pub resources: Vec<Resource>,
}

impl Store {
    /// The store after applying `new`: each replaces the resource with its key, or is added.
    pub fn applied(&self, new: Vec<Resource>) -> Store {
        let mut resources = self.resources.clone();
        for r in new {
            match resources.iter_mut().find(|o| o.key() == r.key()) {
                Some(old) => *old = r,
                None => resources.push(r),
            }
        }
        Store { resources }
    }

    /// The store without the resources keyed as `gone`.
    pub fn deleted(&self, gone: &[Resource]) -> Store {
        Store {
            resources: self
                .resources
                .iter()
                .filter(|r| !gone.iter().any(|g| g.key() == r.key()))
                .cloned()
                .collect(),
        }
    }

    /// Validates and translates the whole set, reporting lines of the files it came from.
    pub fn load(&self) -> Result<Loaded, Errors> {
        let mut loader = crate::loader::Loader::default();
        for r in &self.resources {
            // Padding keeps every reported line a line of the original file.
            let padded = format!("{}{}", "\n".repeat(r.first_line.saturating_sub(1)), r.text);
            loader.text(&r.file, &padded);
        }
        loader.finish()
    }
}

impl Loaded {
    /// The rejection diagnostics of the resource `kind` `namespace`/`name` (`kind` `name` for
    /// a cluster-scoped one, whose namespace is empty).
    pub fn rejected_for<'a>(
        &'a self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> impl Iterator<Item = &'a Diagnostic> + 'a {
        let prefix = if namespace.is_empty() {
            format!("{kind} {name}: ")
        } else {
            format!("{kind} {namespace}/{name}: ")
        };
        self.rejected
            .iter()
            .filter(move |d| d.message.starts_with(&prefix))
    }
}
