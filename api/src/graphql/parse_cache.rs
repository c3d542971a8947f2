//! Parsed operations kept by their text. Clients send the same few documents over and
//! over with different variables, and parsing was about a twentieth of the server's
//! CPU for an ingested message.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{ServerResult, Variables};
use lru::LruCache;

/// Distinct documents kept.
const CAPACITY: usize = 512;
/// Longer documents are parsed each time: a one-off query is not worth keeping.
const MAX_CACHED_BYTES: usize = 16 * 1024;

/// The schema extension; documents that fail to parse are never kept.
#[derive(Clone)]
pub struct ParseCache {
    documents: Arc<Mutex<LruCache<String, ExecutableDocument>>>,
}

impl Default for ParseCache {
    fn default() -> Self {
        let capacity = NonZeroUsize::new(CAPACITY).expect("a positive capacity");
        Self { documents: Arc::new(Mutex::new(LruCache::new(capacity))) }
    }
}

impl ExtensionFactory for ParseCache {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(self.clone())
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for ParseCache {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        if query.len() > MAX_CACHED_BYTES {
            return next.run(ctx, query, variables).await;
        }
        if let Some(document) = self.documents.lock().expect("parse cache lock").get(query) {
            return Ok(document.clone());
        }
        let document = next.run(ctx, query, variables).await?;
        self.documents.lock().expect("parse cache lock").put(query.to_string(), document.clone());
        Ok(document)
    }
}
