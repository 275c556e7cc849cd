//! The collection lookup a login uses to find which collections need a `data_access`
//! consent (auth sits below Transfer, so it takes this as a parameter).

use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use super::TransferClient;
use crate::auth::{Authorizer, CollectionLookup};
use crate::error::Result;

/// Looks collections up at the Transfer service rooted at a URL.
#[derive(Clone, Debug)]
pub struct TransferCollectionLookup {
    base_url: String,
}

impl TransferCollectionLookup {
    /// A lookup at the Transfer service rooted at `base_url` (e.g.
    /// [`Settings::transfer_url`](crate::Settings::transfer_url)).
    pub fn new(base_url: impl Into<String>) -> Self {
        TransferCollectionLookup {
            base_url: base_url.into(),
        }
    }
}

#[async_trait]
impl CollectionLookup for TransferCollectionLookup {
    async fn needs_data_access(
        &self,
        collection: &Uuid,
        authorizer: Arc<dyn Authorizer>,
    ) -> Result<bool> {
        let client = TransferClient::with_base_url(&self.base_url, authorizer)?;
        let endpoint = client.endpoint(&collection.to_string()).await?;
        Ok(endpoint.requires_data_access_scope())
    }

    async fn https_scopes(
        &self,
        collection: &Uuid,
        authorizer: Arc<dyn Authorizer>,
    ) -> Result<Vec<String>> {
        let client = TransferClient::with_base_url(&self.base_url, authorizer)?;
        let endpoint = client.endpoint(&collection.to_string()).await?;
        Ok(super::CollectionHttps::scopes(collection, &endpoint))
    }
}
