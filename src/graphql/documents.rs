//! Parsed documents, kept by query text: every transport (graphql-ws, SSE, HTTP) checks and parses
//! a query through [`Documents::prepare`], so that identical texts — the common case: every client
//! of an app sends the same few operations, and a reconnect storm sends one text thousands of
//! times — are checked and parsed once.
//!
//! A document is kept only once it has passed the guard (`super::guard`): refused texts are
//! checked again each time, so that nothing a client sends can fill the cache with refusals. The
//! cache is bounded by count and by the bytes of the texts it keeps (the parsed form is a small
//! multiple of that), and forgets the least recently used first.

use std::sync::{Arc, Mutex};

use async_graphql::parser::types::{ExecutableDocument, OperationDefinition, Selection};
use async_graphql::{Name, Pos, Positioned, ServerError};
use hashlink::LruCache;

use super::error::{code, refusal};
use super::guard::{self, Limits, OperationKind};
use crate::lock;

/// Most documents kept.
const MAX_DOCUMENTS: usize = 1_024;
/// Most bytes of query text kept, all documents together.
const MAX_BYTES: usize = 4 * 1024 * 1024;
/// Texts longer than this are parsed each time: a client that sends the same 100 KB query over
/// and over is not the case this is for, and one such text would push out hundreds of others.
const MAX_TEXT: usize = 32 * 1024;

/// One checked, parsed query text.
#[derive(Debug)]
pub struct Document {
    pub text: Arc<str>,
    pub parsed: ExecutableDocument,
}

/// A document and the operation a request selects in it.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub document: Arc<Document>,
    pub operation_name: Option<Arc<str>>,
    pub kind: OperationKind,
}

/// The one root field of a subscription.
#[derive(Debug, Clone)]
pub struct RootField {
    pub name: Name,
    pub pos: Pos,
    /// The variable that feeds its `after` argument, if one does.
    pub after_variable: Option<Name>,
}

/// The cache; one per server.
#[derive(Debug)]
pub struct Documents {
    limits: Limits,
    cache: Mutex<Cache>,
}

#[derive(Debug)]
struct Cache {
    by_text: LruCache<Arc<str>, Arc<Document>>,
    bytes: usize,
}

impl Documents {
    pub fn new(limits: Limits) -> Self {
        Self { limits, cache: Mutex::new(Cache { by_text: LruCache::new_unbounded(), bytes: 0 }) }
    }

    /// Checks and parses `query` (or finds it already done) and selects `operation_name` in it.
    pub fn prepare(&self, query: &str, operation_name: Option<&str>) -> Result<Prepared, ServerError> {
        let document = self.document(query)?;
        let kind = guard::kind(guard::select(&document.parsed, operation_name)?);
        if kind == OperationKind::Subscription {
            root_field(guard::select(&document.parsed, operation_name)?)?;
        }
        Ok(Prepared { document, operation_name: operation_name.map(Arc::from), kind })
    }

    /// The document for `query`: from the cache, or checked, parsed and kept.
    pub fn document(&self, query: &str) -> Result<Arc<Document>, ServerError> {
        if let Some(document) = lock::lock(&self.cache).by_text.get(query) {
            return Ok(document.clone());
        }
        let parsed = guard::parse(query, self.limits)?;
        let document = Arc::new(Document { text: Arc::from(query), parsed });
        if query.len() <= MAX_TEXT {
            let mut cache = lock::lock(&self.cache);
            if cache.by_text.insert(document.text.clone(), document.clone()).is_none() {
                cache.bytes += query.len();
            }
            while cache.by_text.len() > MAX_DOCUMENTS || cache.bytes > MAX_BYTES {
                let Some((text, _)) = cache.by_text.remove_lru() else { break };
                cache.bytes -= text.len();
            }
        }
        Ok(document)
    }

    /// Documents kept now.
    pub fn len(&self) -> usize {
        lock::lock(&self.cache).by_text.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Prepared {
    /// The selected operation.
    pub fn operation(&self) -> &Positioned<OperationDefinition> {
        guard::select(&self.document.parsed, self.operation_name.as_deref()).expect("selected when prepared")
    }

    /// For a subscription, its root field (none when it selects only fragments there, which
    /// async-graphql reports or runs as nothing).
    pub fn root_field(&self) -> Option<RootField> {
        match self.kind {
            OperationKind::Subscription => root_field(self.operation()).ok().flatten(),
            _ => None,
        }
    }

    /// A request that runs this operation with `variables`; the document is handed over parsed.
    pub fn request(&self, variables: &serde_json::Value) -> async_graphql::Request {
        let mut request = async_graphql::Request::new(String::new());
        request.operation_name = self.operation_name.as_deref().map(str::to_owned);
        if !variables.is_null() {
            request.variables = async_graphql::Variables::from_json(variables.clone());
        }
        request.set_parsed_query(self.document.parsed.clone());
        request
    }
}

/// The one field a subscription selects at its root. The GraphQL spec allows exactly one; a
/// second is refused here. async-graphql runs only the fields selected there directly and ignores
/// fragments, so a root of fragments alone has none (and runs nothing).
fn root_field(operation: &Positioned<OperationDefinition>) -> Result<Option<RootField>, ServerError> {
    let mut fields = operation.node.selection_set.node.items.iter().filter_map(|item| match &item.node {
        Selection::Field(field) => Some(field),
        _ => None,
    });
    let Some(field) = fields.next() else { return Ok(None) };
    if let Some(second) = fields.next() {
        return Err(refusal(
            code::VALIDATION_FAILED,
            "a subscription selects exactly one root field",
            Some(second.pos),
        ));
    }
    let after_variable =
        field.node.arguments.iter().find(|(name, _)| name.node == "after").and_then(|(_, value)| match &value.node {
            async_graphql_value::Value::Variable(name) => Some(name.clone()),
            _ => None,
        });
    Ok(Some(RootField { name: field.node.name.node.clone(), pos: field.pos, after_variable }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_bytes: 100_000, max_nesting: 64, max_fields: 1000, max_directives: 50 };

    #[test]
    fn a_text_is_parsed_once_and_each_request_selects_its_operation() {
        let documents = Documents::new(LIMITS);
        let text = "query A { me { userId } } subscription B($a: String) { orderEvents(after: $a) { kind } }";
        let a = documents.prepare(text, Some("A")).unwrap();
        let b = documents.prepare(text, Some("B")).unwrap();
        assert!(Arc::ptr_eq(&a.document, &b.document), "one parse for both");
        assert_eq!((a.kind, b.kind), (OperationKind::Query, OperationKind::Subscription));
        let root = b.root_field().unwrap();
        assert_eq!((root.name.as_str(), root.after_variable.as_deref()), ("orderEvents", Some("a")));
        assert_eq!(documents.len(), 1);
        assert!(documents.prepare(text, None).is_err(), "two operations, none named");
    }

    #[test]
    fn refusals_are_not_kept_and_the_cache_is_bounded() {
        let documents = Documents::new(LIMITS);
        assert!(documents.prepare("{ me { ", None).is_err());
        assert!(documents.is_empty());
        for i in 0..MAX_DOCUMENTS + 10 {
            documents.prepare(&format!("{{ a{i}: me {{ userId }} }}"), None).unwrap();
        }
        assert_eq!(documents.len(), MAX_DOCUMENTS);
    }

    #[test]
    fn a_subscription_selects_one_root_field() {
        let documents = Documents::new(LIMITS);
        let two = "subscription { a: orderEvents { kind } b: orderEvents { kind } }";
        let error = documents.prepare(two, None).unwrap_err();
        assert!(error.message.contains("exactly one root field"), "{}", error.message);
        let fragments = "subscription { ...F } fragment F on Subscription { orderEvents { kind } }";
        assert!(documents.prepare(fragments, None).unwrap().root_field().is_none(), "async-graphql runs none");
    }
}
